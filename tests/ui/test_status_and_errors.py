"""Entity Sync Status (replicas, diff, timeline, actions), the sync queue and the errors page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from instances.models import Issue
from instances.tracker import services
from replicas.models import SyncError, SyncEvent, Twin

pytestmark = pytest.mark.django_db(transaction=True)

BROKEN_INCOMING = """
if "boom" in (replica.summary or ""):
    x = 1 / 0
issue.summary = replica.summary
"""


def _status_url(connection, key):  # type: ignore[no-untyped-def]
    return reverse("ui:status") + f"?instance={connection.local_instance_id}&key={key}"


def test_the_status_page_shows_replicas_diff_and_timeline(staff, synced):
    a, b, issue = synced
    copy = Issue.objects.get(project__key="ENG")
    # On the receiving side the remote replica changed between the two syncs: a diff is shown.
    body = staff.get(_status_url(b, copy.key)).content.decode()
    assert "Show local replica" in body and "Show remote replica" in body
    assert "&quot;summary&quot;: &quot;Printer on fire, again&quot;" in body
    assert 'class="d-del">-  &quot;summary&quot;: &quot;Printer on fire&quot;' in body
    assert issue.key in body  # the remote item's key
    trace = str(SyncEvent.objects.filter(connection=b, direction="in").first().trace_id)
    assert trace in body
    # On the sending side the remote item's key is shown with the twin's state.
    body = staff.get(_status_url(a, issue.key)).content.decode()
    assert copy.key in body and "badge-synchronized" in body


def test_an_item_that_is_not_synced_offers_to_exalate_it(staff, synced):
    a, _b, issue = synced
    other = services.issue_create(project=issue.project, actor="x@example.com", summary="Lonely")
    body = staff.get(_status_url(a, other.key)).content.decode()
    assert "is not synced on any connection" in body and "Exalate on" in body


def test_an_unknown_key_without_instance_says_what_to_do(staff, synced):
    body = staff.get(reverse("ui:status") + "?key=NOPE-1").content.decode()
    assert "Choose the instance" in body


def test_sync_now_and_unexalate(staff, synced):
    a, _b, issue = synced
    twin = Twin.objects.get(connection=a)
    before = SyncEvent.objects.filter(connection=a, direction="out").count()
    staff.post(reverse("ui:twin_sync", args=[twin.pk]))
    assert SyncEvent.objects.filter(connection=a, direction="out").count() == before + 1
    staff.post(reverse("ui:twin_unexalate", args=[twin.pk]))
    assert Twin.objects.get(pk=twin.pk).unexalated_at is not None


def test_the_queue_filters_by_direction_connection_status_and_key(staff, synced):
    a, b, issue = synced
    body = staff.get(
        reverse("ui:queue") + f"?direction=out&connection={a.pk}&key={issue.key}"
    ).content.decode()
    assert (
        body.count('class="dir dir-out"') == SyncEvent.objects.filter(connection=a, direction="out").count()
    )
    body = staff.get(reverse("ui:queue") + "?direction=in&status=failed").content.decode()
    assert "No events yet." in body


def test_errors_are_grouped_and_resolve_and_retry_resumes(staff, synced):
    from syncrules.defaults import default_rules
    from syncrules.services import rules_publish

    a, b, issue = synced
    rules_publish(connection=b, outgoing=default_rules("builtin")[0], incoming=BROKEN_INCOMING)
    services.issue_update(issue=issue, actor="anna@example.com", summary="boom")
    error = SyncError.objects.get(resolved_at=None)
    body = staff.get(reverse("ui:errors")).content.decode()
    assert (
        "Entity errors" in body and "ZeroDivisionError" in body and "script line <strong>3</strong>" in body
    )
    assert "Resolve and retry" in body
    # Retrying before the fix fails again and says so.
    response = staff.post(reverse("ui:error_retry", args=[error.pk]), follow=True)
    assert "failed again" in response.content.decode()
    error = SyncError.objects.get(resolved_at=None)
    rules_publish(connection=b, outgoing=default_rules("builtin")[0], incoming=default_rules("builtin")[1])
    response = staff.post(reverse("ui:error_retry", args=[error.pk]), follow=True)
    assert "Resolved and retried" in response.content.decode()
    assert Issue.objects.get(project__key="ENG").summary == "boom"
    assert not SyncError.objects.filter(resolved_at=None).exists()


def test_resolve_without_retry_skips_the_change(staff, synced):
    from syncrules.defaults import default_rules
    from syncrules.services import rules_publish

    _a, b, issue = synced
    rules_publish(connection=b, outgoing=default_rules("builtin")[0], incoming=BROKEN_INCOMING)
    services.issue_update(issue=issue, actor="anna@example.com", summary="boom")
    error = SyncError.objects.get(resolved_at=None)
    staff.post(reverse("ui:error_resolve", args=[error.pk]))
    assert SyncEvent.objects.get(pk=error.event_id).status == "skipped"
    assert "No open errors" in staff.get(reverse("ui:errors")).content.decode()
