"""The rules editor (validate, dry-run, publish, history) and the built-in tracker pages."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from instances.models import Attachment, Comment, Issue
from syncrules.models import RulesVersion

pytestmark = pytest.mark.django_db(transaction=True)


def _post_rules(staff, connection, **data):  # type: ignore[no-untyped-def]
    current = RulesVersion.objects.filter(connection=connection).order_by("-version").first()
    payload = {"outgoing": current.outgoing, "incoming": current.incoming, "note": "", **data}
    return staff.post(reverse("ui:rules", args=[connection.pk]), payload)


def test_validate_shows_problems_with_line_numbers(staff, synced):
    a, _b, _issue = synced
    body = _post_rules(staff, a, action="validate", incoming="x = 1\nissue.summary = (\n").content.decode()
    assert "incoming script" in body and "line 2" in body or "line 3" in body
    assert 'data-problems="' in body
    ok = _post_rules(staff, a, action="validate").content.decode()
    assert "no problems found" in ok


def test_publish_adds_a_version_and_refuses_a_broken_script(staff, synced):
    a, _b, _issue = synced
    before = RulesVersion.objects.filter(connection=a).count()
    broken = _post_rules(staff, a, action="publish", outgoing="replica.summary = (")
    assert "Not published" in broken.content.decode()
    assert RulesVersion.objects.filter(connection=a).count() == before
    response = _post_rules(
        staff, a, action="publish", note="Only the summary", outgoing="replica.summary = issue.summary\n"
    )
    assert response.status_code == 302
    newest = RulesVersion.objects.filter(connection=a).order_by("-version").first()
    assert newest.note == "Only the summary" and newest.published_by == "alice"
    diff = staff.get(reverse("ui:rules", args=[a.pk]) + f"?diff={newest.version}").content.decode()
    assert 'class="d-del">-replica.description = issue.description' in diff


def test_dry_run_outgoing_shows_the_replica_and_incoming_shows_the_changes(staff, synced):
    a, b, issue = synced
    body = _post_rules(
        staff, a, action="dryrun", dry_key=issue.key, dry_direction="outgoing"
    ).content.decode()
    assert "Replica SUP-1 would send" in body and "Printer on fire, again" in body
    copy = Issue.objects.get(project__key="ENG")
    body = _post_rules(
        staff,
        b,
        action="dryrun",
        dry_key=copy.key,
        dry_direction="incoming",
        dry_replica='{"summary": "New"}',
    ).content.decode()
    assert "Changes to ENG-1" in body and "<code>summary</code>" in body
    bad = _post_rules(staff, a, action="dryrun", dry_key="SUP-404", dry_direction="outgoing").content.decode()
    assert "There is no item" in bad


def test_tracker_create_edit_comment_and_attach(staff, builtin):
    response = staff.post(
        reverse("ui:issue_create") + "?project=SUP",
        {
            "project": "SUP",
            "summary": "Paper jam",
            "status": "Open",
            "priority": "High",
            "issue_type": "Bug",
            "labels": "printer, urgent",
        },
    )
    issue = Issue.objects.get()
    assert response.status_code == 302 and issue.key == "SUP-1" and issue.labels == ["printer", "urgent"]
    assert issue.updated_by == "alice@example.com"
    url = reverse("ui:issue", args=[issue.key])
    staff.post(
        url,
        {
            "summary": "Paper jam (tray 2)",
            "status": "In Progress",
            "priority": "High",
            "issue_type": "Bug",
            "labels": "",
        },
    )
    issue.refresh_from_db()
    assert (issue.summary, issue.status, issue.labels) == ("Paper jam (tray 2)", "In Progress", [])
    staff.post(reverse("ui:comment", args=[issue.key]), {"body": "Cleared it"})
    assert Comment.objects.get().body == "Cleared it"
    upload = SimpleUploadedFile("../../etc/log.txt", b"trace", content_type="text/plain")
    staff.post(reverse("ui:attach", args=[issue.key]), {"file": upload})
    attachment = Attachment.objects.get()
    assert attachment.filename == "log.txt"
    page = staff.get(url).content.decode()
    assert "Cleared it" in page and "log.txt" in page
    download = staff.get(reverse("ui:attachment", args=[attachment.pk]))
    assert b"".join(download.streaming_content) == b"trace"
    assert "attachment" in download["Content-Disposition"]


def test_tracker_errors_say_what_to_do(staff, builtin):
    response = staff.post(reverse("ui:comment", args=["SUP-1"]), {"body": "x"})
    assert response.status_code == 404
    from instances.tracker import services

    issue = services.issue_create(project=builtin, actor="a@x.com", summary="s")
    response = staff.post(reverse("ui:comment", args=[issue.key]), {"body": ""})
    assert response.status_code == 400 and "This field is required" in response.content.decode()
    response = staff.post(
        reverse("ui:tracker"), {"instance": builtin.instance_id, "key": "SUP", "name": "Dup"}
    )
    assert response.status_code == 400 and "already exists" in response.content.decode()


def test_changes_the_node_made_name_the_sync_not_the_machine_account(staff, synced):
    _a, b, _issue = synced
    copy = Issue.objects.get(project__instance=b.local_instance)
    assert copy.updated_by.startswith("exalate-node:")
    body = staff.get(reverse("ui:issue", args=[copy.key])).content.decode()
    label = f"Sync from {b.remote_instance.name} via “{b.name}”"
    assert f'by <span title="{copy.updated_by}">{label}</span>' in body  # "Updated by" and History
    assert body.count(label) >= 2
    assert f">{copy.updated_by}<" not in body  # the machine name only in a tooltip


def test_a_synced_comment_says_who_wrote_it_and_through_which_connection(staff, synced):
    # Issue #23, item 5: synced comments showed the node's id as their author.
    a, b, issue = synced
    from instances.tracker.services import comment_add

    comment_add(issue=issue, actor="anna@example.com", body="The toner is out")
    copy = Issue.objects.get(project__instance=b.local_instance)
    comment = copy.comments.get(body="The toner is out")
    assert comment.author == "anna@example.com" and comment.updated_by.startswith("exalate-node:")
    body = staff.get(reverse("ui:issue", args=[copy.key])).content.decode()
    assert f"anna@example.com · sync from {b.remote_instance.name} via “{b.name}”" in body
