"""Writes to the built-in tracker. Every change records who made it and when (``IssueChange``) and, in the
same transaction, tells the sync pipeline which item changed (the outbox), so no change is missed."""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterable
from datetime import date
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from instances.models import (
    DEFAULT_PRIORITIES,
    DEFAULT_STATUSES,
    DEFAULT_TYPES,
    Attachment,
    Comment,
    Instance,
    Issue,
    IssueChange,
    Project,
)
from instances.outbox import record_item_change

EDITABLE_FIELDS = (
    "summary",
    "description",
    "status",
    "priority",
    "issue_type",
    "labels",
    "assignee",
    "reporter",
    "due_date",
    "parent",
    "custom_fields",
)
MAX_FILENAME = 200


def _notify(issue: Issue, actor: str) -> None:
    """Hand the change to the sync pipeline (same transaction: the outbox row commits with the change)."""
    record_item_change(
        instance_id=issue.project.instance_id, item_id=str(issue.pk), item_key=issue.key, actor=actor
    )


def project_create(
    *,
    instance: Instance,
    key: str,
    name: str,
    statuses: Iterable[str] | None = None,
    priorities: Iterable[str] | None = None,
    issue_types: Iterable[str] | None = None,
) -> Project:
    if instance.tracker_type != "builtin" or not instance.is_local:
        raise ValidationError("Projects can only be created on a local built-in tracker instance.")
    project = Project(
        instance=instance,
        key=key.upper(),
        name=name,
        statuses=list(statuses or DEFAULT_STATUSES),
        priorities=list(priorities or DEFAULT_PRIORITIES),
        issue_types=list(issue_types or DEFAULT_TYPES),
    )
    project.full_clean()
    project.save()
    return project


def _check_choice(project: Project, field: str, value: str, options: list[str]) -> str:
    if options and value not in options:
        raise ValidationError(
            {
                field: f"'{value}' is not a {field.replace('_', ' ')} of project {project.key}. "
                f"Use one of: {', '.join(options)}."
            }
        )
    return value


def _clean(project: Project, fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown issue field(s): {', '.join(sorted(unknown))}.")
    if "summary" in fields:
        summary = (fields["summary"] or "").strip()
        if not summary:
            raise ValidationError({"summary": "An issue needs a summary."})
        fields["summary"] = summary[:500]
    if "status" in fields:
        _check_choice(project, "status", fields["status"], project.statuses)
    if "priority" in fields:
        _check_choice(project, "priority", fields["priority"], project.priorities)
    if "issue_type" in fields:
        _check_choice(project, "issue_type", fields["issue_type"], project.issue_types)
    if "labels" in fields:
        labels = fields["labels"] or []
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValidationError({"labels": "Labels must be a list of strings."})
        fields["labels"] = sorted({x.strip() for x in labels if x.strip()})
    if "due_date" in fields and isinstance(fields["due_date"], str):
        try:
            fields["due_date"] = date.fromisoformat(fields["due_date"]) if fields["due_date"] else None
        except ValueError:
            raise ValidationError({"due_date": "Use a date like 2026-12-31."})
    if "description" in fields and fields["description"] is None:
        fields["description"] = ""
    for email_field in ("assignee", "reporter"):
        if email_field in fields and fields[email_field] is None:
            fields[email_field] = ""
    return fields


@transaction.atomic
def issue_create(*, project: Project, actor: str, summary: str, **fields: Any) -> Issue:
    """Create an issue with the next key of its project."""
    fields = _clean(project, {"summary": summary, **fields})
    Project.objects.filter(pk=project.pk).update(next_number=F("next_number") + 1)
    number = Project.objects.values_list("next_number", flat=True).get(pk=project.pk) - 1
    issue = Issue(project=project, number=number, key=f"{project.key}-{number}", updated_by=actor, **fields)
    issue.full_clean(exclude=["project", "parent"])
    issue.save()
    IssueChange.objects.create(issue=issue, actor=actor, action="create", fields=sorted(fields))
    _notify(issue, actor)
    return issue


@transaction.atomic
def issue_update(*, issue: Issue, actor: str, **fields: Any) -> Issue:
    """Change the given fields; fields whose value is unchanged are ignored (no change, no event)."""
    fields = _clean(issue.project, fields)
    current = Issue.objects.select_for_update().get(pk=issue.pk)
    changed = {k: v for k, v in fields.items() if getattr(current, k) != v}
    if not changed:
        return current
    for name, value in changed.items():
        setattr(current, name, value)
    current.updated_by = actor
    current.version = F("version") + 1
    current.save()
    current.refresh_from_db()
    IssueChange.objects.create(issue=current, actor=actor, action="update", fields=sorted(changed))
    _notify(current, actor)
    return current


def _touch(issue: Issue, actor: str, action: str, fields: list[str]) -> None:
    """Record a change to an issue's comments or attachments as a change of the issue."""
    Issue.objects.filter(pk=issue.pk).update(
        updated_by=actor, version=F("version") + 1, updated_at=timezone.now()
    )
    IssueChange.objects.create(issue=issue, actor=actor, action=action, fields=fields)
    _notify(issue, actor)


@transaction.atomic
def comment_add(*, issue: Issue, actor: str, body: str, author: str = "", internal: bool = False) -> Comment:
    if not (body or "").strip():
        raise ValidationError({"body": "A comment needs some text."})
    comment = Comment.objects.create(
        issue=issue, body=body, author=author or actor, internal=internal, updated_by=actor
    )
    _touch(issue, actor, "comment", ["comments"])
    return comment


@transaction.atomic
def comment_update(*, comment: Comment, actor: str, body: str, internal: bool | None = None) -> Comment:
    if not (body or "").strip():
        raise ValidationError({"body": "A comment needs some text."})
    if comment.body == body and (internal is None or internal == comment.internal):
        return comment
    comment.body = body
    if internal is not None:
        comment.internal = internal
    comment.updated_by = actor
    comment.save()
    _touch(comment.issue, actor, "comment_edit", ["comments"])
    return comment


@transaction.atomic
def comment_delete(*, comment: Comment, actor: str) -> None:
    issue = comment.issue
    comment.delete()
    _touch(issue, actor, "comment_delete", ["comments"])


def safe_filename(name: str) -> str:
    """A file name with no path, control characters or NUL, no invisible format characters (bidi overrides
    such as U+202E, which make "invoice<U+202E>txt.exe" display as "invoiceexe.txt"; zero-width
    characters), of bounded length; never empty."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = name.replace("\\", "/").split("/")[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) != "Cf").strip().lstrip(".")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: MAX_FILENAME - len(ext) - 1] + (f".{ext}" if ext else "")
    return name or "attachment"


@transaction.atomic
def attachment_add(
    *, issue: Issue, actor: str, filename: str, content: IO[bytes] | bytes, mime_type: str = ""
) -> Attachment:
    """Store a file under the media root with its SHA-256 (read in chunks)."""
    from django.conf import settings

    data = content if isinstance(content, bytes) else content.read(settings.ATTACHMENT_MAX_BYTES + 1)
    if len(data) > settings.ATTACHMENT_MAX_BYTES:
        raise ValidationError(
            {
                "file": f"The file is larger than the limit of {settings.ATTACHMENT_MAX_BYTES} bytes "
                "(ATTACHMENT_MAX_BYTES)."
            }
        )
    name = safe_filename(filename)
    mime = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    attachment = Attachment(
        issue=issue,
        filename=name,
        mime_type=mime[:100],
        size=len(data),
        sha256=Attachment.digest(data),
        created_by=actor,
    )
    attachment.file.save(name, ContentFile(data), save=False)
    attachment.save()
    _touch(issue, actor, "attach", ["attachments"])
    return attachment


@transaction.atomic
def attachment_delete(*, attachment: Attachment, actor: str) -> None:
    issue = attachment.issue
    storage, path = attachment.file.storage, attachment.file.name
    attachment.delete()
    transaction.on_commit(lambda: storage.delete(path))
    _touch(issue, actor, "detach", ["attachments"])
