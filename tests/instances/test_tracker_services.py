"""The built-in tracker's services: keys, validation, change records, files."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from instances.models import Issue, IssueChange
from instances.tracker import services

pytestmark = pytest.mark.django_db


def test_it_numbers_issues_per_project(builtin):
    first = services.issue_create(project=builtin, actor="a@x", summary="One")
    second = services.issue_create(project=builtin, actor="a@x", summary="Two")
    assert (first.key, second.key) == ("SUP-1", "SUP-2")


def test_it_records_who_changed_what(builtin):
    issue = services.issue_create(project=builtin, actor="anna@x", summary="One")
    services.issue_update(issue=issue, actor="ben@x", summary="One!", status="In Progress")
    change = IssueChange.objects.filter(issue=issue).first()
    assert (change.actor, change.action, change.fields) == ("ben@x", "update", ["status", "summary"])
    issue.refresh_from_db()
    assert (issue.updated_by, issue.version) == ("ben@x", 2)


def test_an_update_that_changes_nothing_records_nothing(builtin):
    issue = services.issue_create(project=builtin, actor="anna@x", summary="One")
    services.issue_update(issue=issue, actor="ben@x", summary="One")
    assert IssueChange.objects.filter(issue=issue).count() == 1
    assert Issue.objects.get(pk=issue.pk).version == 1


def test_it_rejects_an_unknown_status_and_names_the_valid_ones(builtin):
    issue = services.issue_create(project=builtin, actor="a@x", summary="One")
    with pytest.raises(ValidationError) as exc:
        services.issue_update(issue=issue, actor="a@x", status="Frozen")
    assert "Open, In Progress, Resolved, Closed" in str(exc.value)
    assert Issue.objects.get(pk=issue.pk).status == "Open"


def test_an_empty_summary_is_refused(builtin):
    with pytest.raises(ValidationError, match="needs a summary"):
        services.issue_create(project=builtin, actor="a@x", summary="   ")
    assert not Issue.objects.exists()


def test_comments_touch_the_issue(builtin):
    issue = services.issue_create(project=builtin, actor="a@x", summary="One")
    comment = services.comment_add(issue=issue, actor="b@x", body="Hello")
    services.comment_update(comment=comment, actor="b@x", body="Hello again")
    services.comment_delete(comment=comment, actor="b@x")
    actions = list(IssueChange.objects.filter(issue=issue).order_by("id").values_list("action", flat=True))
    assert actions == ["create", "comment", "comment_edit", "comment_delete"]
    assert Issue.objects.get(pk=issue.pk).version == 4


def test_attachments_keep_their_digest_and_content(builtin):
    issue = services.issue_create(project=builtin, actor="a@x", summary="One")
    att = services.attachment_add(issue=issue, actor="a@x", filename="log.txt", content=b"hello")
    assert att.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert (att.size, att.mime_type) == (5, "text/plain")
    with att.file.open("rb") as fh:
        assert fh.read() == b"hello"


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b.txt", "ab.txt"),
        ("", "attachment"),
        ("....", "attachment"),
        ("x" * 500 + ".pdf", "x" * 196 + ".pdf"),
        ("\nreport\r.txt", "report.txt"),
    ],
)
def test_hostile_file_names_are_made_safe(hostile, expected):
    assert services.safe_filename(hostile) == expected


def test_attachment_size_limit(builtin, settings):
    settings.ATTACHMENT_MAX_BYTES = 10
    issue = services.issue_create(project=builtin, actor="a@x", summary="One")
    with pytest.raises(ValidationError, match="larger than the limit"):
        services.attachment_add(issue=issue, actor="a@x", filename="big.bin", content=b"x" * 11)
    assert not issue.attachments.exists()
