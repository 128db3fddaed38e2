"""Triggers, bulk operations, reconciliation and items/stuck pages of a connection in the UI."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from instances.models import Issue
from instances.tracker import services
from replicas.models import BulkJob, ReconciliationReport, Trigger, Twin

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = ["triggers", "bulk", "bulk_unexalate", "reconcile", "items"]


@pytest.fixture
def pair(two_trackers):  # type: ignore[no-untyped-def]
    """A local connection SUP ⇄ ENG (tasks run inline after commit), as tests/replicas' local_pair."""
    from connections.services import connection_create_local
    from replicas import pipeline

    sup, eng = two_trackers
    a, b = connection_create_local(
        name="Support ⇄ Engineering", instance_a=sup.instance, instance_b=eng.instance
    )
    pipeline.META_CACHE.clear()
    return sup, eng, a, b


def create(project, summary: str, **fields):  # type: ignore[no-untyped-def]
    return services.issue_create(project=project, actor="anna@example.com", summary=summary, **fields)


@pytest.mark.parametrize("name", PAGES)
def test_each_page_renders_for_staff_and_redirects_anonymous(client, admin_user, pair, name):
    a = pair[2]
    url = reverse(f"ui:{name}", args=[a.pk])
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    client.force_login(admin_user)
    response = client.get(url)
    assert response.status_code == 200
    assert 'aria-label="Connection pages"' in response.content.decode()


def test_the_progress_endpoint_is_staff_only(client, plain_user, pair):
    url = reverse("ui:bulk_progress", args=[pair[2].pk])
    assert client.get(url).status_code == 302
    client.force_login(plain_user)
    assert client.get(url).status_code == 302


def test_the_connection_pages_link_to_the_new_tabs(staff, pair):
    a = pair[2]
    for url in (reverse("ui:connection", args=[a.pk]), reverse("ui:connections")):
        body = staff.get(url).content.decode()
        assert reverse("ui:triggers", args=[a.pk]) in body and reverse("ui:bulk", args=[a.pk]) in body


def test_a_trigger_is_added_edited_toggled_and_deleted_through_the_forms(staff, pair):
    sup, eng, a, _b = pair
    url = reverse("ui:triggers", args=[a.pk])
    response = staff.post(
        url, {"entity_type": "issue", "query": "labels = sync", "notes": "Backfill", "active": "on"}
    )
    assert response.status_code == 302 and response["Location"] == url
    trigger = Trigger.objects.get()
    assert (trigger.connection, trigger.query, trigger.notes, trigger.active) == (
        a,
        "labels = sync",
        "Backfill",
        True,
    )
    body = staff.get(url).content.decode()
    assert "labels = sync" in body and "Backfill" in body and "Deactivate" in body
    # The trigger works: a matching new item starts syncing.
    create(sup, "tagged", labels=["sync"])
    assert Issue.objects.filter(project=eng).count() == 1

    edit = reverse("ui:trigger_edit", args=[a.pk, trigger.pk])
    assert "labels = sync" in staff.get(edit).content.decode()
    response = staff.post(edit, {"entity_type": "issue", "query": "lables = x", "notes": "", "active": "on"})
    assert response.status_code == 400 and "Unknown field" in response.content.decode()
    staff.post(edit, {"entity_type": "issue", "query": "labels = backfill", "notes": "n", "active": "on"})
    trigger.refresh_from_db()
    assert trigger.query == "labels = backfill"

    staff.post(reverse("ui:trigger_toggle", args=[a.pk, trigger.pk]))
    trigger.refresh_from_db()
    assert trigger.active is False
    assert staff.get(reverse("ui:trigger_toggle", args=[a.pk, trigger.pk])).status_code == 405

    delete = reverse("ui:trigger_delete", args=[a.pk, trigger.pk])
    assert "Yes, delete the trigger" in staff.get(delete).content.decode()
    assert Trigger.objects.exists()  # GET only asks
    staff.post(delete)
    assert not Trigger.objects.exists()


def test_an_invalid_query_shows_the_trackers_message_and_creates_nothing(staff, pair):
    a = pair[2]
    response = staff.post(
        reverse("ui:triggers", args=[a.pk]), {"entity_type": "issue", "query": "lables = sync", "notes": ""}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "field-error" in body and "Unknown field &#x27;lables&#x27;" in body
    assert not Trigger.objects.exists()


def test_bulk_exalate_through_the_ui_runs_and_shows_100_percent(staff, admin_user, pair):
    sup, eng, a, _b = pair
    for i in range(6):
        create(sup, f"item {i}", labels=["backfill"] if i % 2 else [])
    trigger = Trigger.objects.create(connection=a, query="labels = backfill")
    response = staff.post(
        reverse("ui:bulk", args=[a.pk]), {"kind": "exalate", "trigger": trigger.pk}, follow=True
    )
    assert response.status_code == 200
    job = BulkJob.objects.get()
    assert (job.kind, job.status, job.position, job.total, job.created_by) == (
        "exalate",
        "done",
        3,
        3,
        admin_user.email,
    )
    assert Issue.objects.filter(project=eng).count() == 3
    body = response.content.decode()
    assert "Bulk Exalate started: 3 items" in body
    assert 'aria-valuenow="100.0"' in body and "3 / 3" in body and "100%" in body
    assert "data-progress-url" not in body  # nothing left to poll
    progress = staff.get(reverse("ui:bulk_progress", args=[a.pk])).json()["jobs"]
    assert [(j["id"], j["percent"], j["status"]) for j in progress] == [(job.pk, 100.0, "done")]


def test_bulk_connect_from_an_uploaded_csv(staff, pair):
    sup, eng, a, _b = pair
    one, two = create(sup, "one"), create(sup, "two")
    x, y = create(eng, "x"), create(eng, "y")
    text = f"local_key,remote_key\n{one.key},{x.key}\n{two.key},{y.key}\nSUP-99,ENG-99\n"
    upload = SimpleUploadedFile("pairs.csv", text.encode(), content_type="text/csv")
    response = staff.post(
        reverse("ui:bulk", args=[a.pk]), {"kind": "connect", "csv_file": upload}, follow=True
    )
    job = BulkJob.objects.get()
    assert (job.kind, job.status, job.total) == ("connect", "done", 3)
    assert Twin.objects.filter(connection=a, remote_key__in=[x.key, y.key]).count() == 2
    assert Issue.objects.get(key=x.key).summary == "one"
    body = response.content.decode()
    assert "1 error" in body and "SUP-99,ENG-99" in body  # the recent errors, collapsible


def test_bulk_connect_explains_a_bad_csv_and_an_empty_form(staff, pair):
    a = pair[2]
    url = reverse("ui:bulk", args=[a.pk])
    response = staff.post(url, {"kind": "connect", "csv_text": "SUP-1\n"})
    assert response.status_code == 400 and "Line 1: expected" in response.content.decode()
    response = staff.post(url, {"kind": "connect"})
    assert response.status_code == 400 and "Upload a CSV file or paste the pairs" in response.content.decode()
    assert not BulkJob.objects.exists()


def test_bulk_unexalate_asks_first_then_stops_everything(staff, pair):
    sup, _eng, a, _b = pair
    from replicas import pipeline

    for i in range(2):
        pipeline.exalate(connection=a, key=create(sup, f"item {i}").key)
    url = reverse("ui:bulk_unexalate", args=[a.pk])
    assert "Yes, unexalate 2 items" in staff.get(url).content.decode()
    assert not BulkJob.objects.exists()
    staff.post(url)
    job = BulkJob.objects.get()
    assert (job.kind, job.status, job.total) == ("unexalate", "done", 2)
    assert not Twin.objects.filter(connection=a, unexalated_at__isnull=True).exists()


def test_a_queued_job_can_be_cancelled(staff, pair):
    a = pair[2]
    job = BulkJob.objects.create(connection=a, kind="exalate", items=["SUP-1", "SUP-2"], total=2)
    body = staff.get(reverse("ui:bulk", args=[a.pk])).content.decode()
    assert "data-progress-url" in body and "Cancel</button>" in body and "0 / 2" in body
    response = staff.post(reverse("ui:bulk_cancel", args=[a.pk, job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert f"Job #{job.pk} cancelled" in response.content.decode()


def test_reconcile_now_shows_a_report(staff, pair):
    sup, _eng, a, _b = pair
    from replicas import pipeline

    issue = create(sup, "Printer on fire")
    pipeline.exalate(connection=a, key=issue.key)
    Issue.objects.filter(pk=issue.pk).update(summary="Changed behind the node's back")  # no event
    response = staff.post(reverse("ui:reconcile", args=[a.pk]), follow=True)
    report = ReconciliationReport.objects.get()
    assert (report.checked, report.drifted, report.repaired) == (1, 1, 1)
    body = response.content.decode()
    assert "Checked 1 item: 1 drifted (1 repaired), 0 missing." in body
    assert f'id="report-{report.pk}"' in body and "1 finding" in body and "summary" in body
    assert staff.get(reverse("ui:reconcile", args=[a.pk])).status_code == 200


def test_the_stuck_list_shows_a_twin_created_stuck(staff, pair):
    sup, _eng, a, _b = pair
    from replicas import pipeline

    pipeline.exalate(connection=a, key=create(sup, "fine").key)
    stuck = Twin.objects.create(connection=a, local_id="999", local_key="SUP-999", state="queued")
    Twin.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(minutes=45))
    url = reverse("ui:items", args=[a.pk])
    body = staff.get(url).content.decode()
    stuck_table = body.split('id="stuck"')[1].split('id="under-sync"')[0]
    assert "SUP-999" in stuck_table and "SUP-1" not in stuck_table
    assert f"?instance={a.local_instance_id}&amp;key=SUP-999" in stuck_table  # the Entity Sync Status page
    under_sync = body.split('id="under-sync"')[1]
    assert "SUP-1" in under_sync and "SUP-999" in under_sync
    body = staff.get(url, {"minutes": "60"}).content.decode()
    assert "Nothing is stuck." in body
    response = staff.get(url, {"minutes": "zero"})
    assert response.status_code == 400 and "Enter a whole number" in response.content.decode()


def test_the_trigger_form_shows_the_query_language_of_the_connections_tracker(client, admin_user, pair):
    from exalate_node.ui.forms import QUERY_LANGUAGES
    from instances.models import Instance, TrackerType

    assert set(QUERY_LANGUAGES) == set(TrackerType.values)
    sup, eng, a, b = pair
    client.force_login(admin_user)
    page = client.get(reverse("ui:triggers", args=[a.pk])).content.decode()
    assert "the built-in filter language" in page and 'placeholder="project = SUP AND labels = sync"' in page
    Instance.objects.filter(pk=a.local_instance_id).update(tracker_type="jira")
    page = client.get(reverse("ui:triggers", args=[a.pk])).content.decode()
    assert "JQL" in page and 'placeholder="labels = sync AND priority = High"' in page
