"""Connector for the built-in tracker: reads and writes the node's own issue store through its services."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Prefetch

from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.models import Attachment, Comment, Issue, IssueChange, Project
from instances.tracker import services


def _iso(dt: Any) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def _person(email: str) -> dict[str, str] | None:
    return {"email": email, "displayName": email.split("@")[0]} if email else None


def _refused(exc: ValidationError) -> ConnectorError:
    messages = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
    text = "; ".join(f"{k}: {' '.join(v)}" if k else " ".join(v) for k, v in messages.items())
    return ConnectorError(f"The built-in tracker refused the change: {text}", retryable=False)


# IssueChange.fields names the model's fields; the hubIssue names some differently.
_HUB_FIELD = {
    "summary": "summary",
    "description": "description",
    "status": "status",
    "priority": "priority",
    "issue_type": "type",
    "labels": "labels",
    "assignee": "assignee",
    "reporter": "reporter",
    "due_date": "dueDate",
    "custom_fields": "customFields",
    "parent": "parentId",
}


@register
class BuiltinConnector(Connector):
    """The built-in tracker. Item ids are issue primary keys; comments and attachments likewise."""

    tracker_type = "builtin"

    def _issues(self):  # type: ignore[no-untyped-def]
        return Issue.objects.filter(project__instance=self.instance).select_related("project", "parent")

    def _issue(self, item_id: str) -> Issue:
        try:
            return self._issues().get(pk=int(item_id))
        except (Issue.DoesNotExist, ValueError):
            raise ConnectorError(f"Issue {item_id} does not exist in {self.instance.name}.", status=404)

    def url_for(self, issue: Issue) -> str:
        # The item's page in the node's UI (by id, so it survives a key change), not the admin change form.
        return f"{settings.NODE_URL.rstrip('/')}/ui/tracker/issues/{issue.pk}/"

    def ref(self, issue: Issue) -> ItemRef:
        return ItemRef(
            id=str(issue.pk), key=issue.key, url=self.url_for(issue), updated=_iso(issue.updated_at) or ""
        )

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        issue = (
            self._issues()
            .prefetch_related(
                Prefetch("comments", queryset=Comment.objects.order_by("created_at", "id")),
                Prefetch("attachments", queryset=Attachment.objects.order_by("created_at", "id")),
            )
            .filter(pk=int(item_id) if str(item_id).isdigit() else -1)
            .first()
        )
        if issue is None:
            raise ConnectorError(f"Issue {item_id} does not exist in {self.instance.name}.", status=404)
        return self.to_hub(issue)

    def to_hub(self, issue: Issue) -> dict[str, Any]:
        project = issue.project
        return {
            "id": str(issue.pk),
            "key": issue.key,
            "url": self.url_for(issue),
            "summary": issue.summary,
            "description": issue.description or None,
            "status": {"name": issue.status},
            "priority": {"name": issue.priority},
            "type": {"name": issue.issue_type},
            "labels": list(issue.labels),
            "assignee": _person(issue.assignee),
            "reporter": _person(issue.reporter),
            "dueDate": issue.due_date.isoformat() if issue.due_date else None,
            "parentId": str(issue.parent_id) if issue.parent_id else None,
            "created": _iso(issue.created_at),
            "updated": _iso(issue.updated_at),
            "project": {"idStr": str(project.pk), "key": project.key, "name": project.name},
            "customFields": dict(issue.custom_fields),
            "comments": [
                {
                    "id": str(c.pk),
                    "body": c.body,
                    "author": _person(c.author if "@" in c.author else ""),
                    "created": _iso(c.created_at),
                    "updated": _iso(c.updated_at),
                    "internal": c.internal,
                }
                for c in issue.comments.all()
            ],
            "attachments": [
                {
                    "id": str(a.pk),
                    "filename": a.filename,
                    "mimeType": a.mime_type,
                    "size": a.size,
                    "sha256": a.sha256,
                    "created": _iso(a.created_at),
                }
                for a in issue.attachments.all()
            ],
        }

    def find_item(self, key: str) -> ItemRef | None:
        issue = self._issues().filter(key=key.upper()).first()
        return self.ref(issue) if issue else None

    # --- queries: the built-in tracker's filter language (instances/tracker/query.py) ----------------------
    def query_validate(self, query: str) -> None:
        from instances.tracker.query import QueryError, parse

        try:
            parse(query)
        except QueryError as exc:
            raise ConnectorError(f"Invalid query: {exc}", status=400)

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        from instances.tracker.query import QueryError, parse

        try:
            return parse(query)(item)
        except QueryError as exc:
            raise ConnectorError(f"Invalid query: {exc}", status=400)

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        from instances.tracker.query import QueryError, parse

        try:
            predicate = parse(query)
        except QueryError as exc:
            raise ConnectorError(f"Invalid query: {exc}", status=400)
        found: list[ItemRef] = []
        start = int(after) if after and after.isdigit() else 0
        # Scan in id order, a page at a time, until a page of matches is full.
        while len(found) < limit:
            page = list(
                self._issues()
                .filter(pk__gt=start)
                .order_by("pk")
                .prefetch_related("comments", "attachments")[:500]
            )
            if not page:
                break
            for issue in page:
                if predicate(self.to_hub(issue)):
                    found.append(self.ref(issue))
                    if len(found) >= limit:
                        break
            start = page[-1].pk
        return found

    def is_own_change(self, item: Mapping[str, Any]) -> bool | None:
        """Whether the issue's latest recorded change (``IssueChange``) was made under this actor."""
        actor = (
            IssueChange.objects.filter(issue_id=int(item["id"]), issue__project__instance=self.instance)
            .order_by("-id")
            .values_list("actor", flat=True)
            .first()
        )
        return None if actor is None else actor == self.actor

    def field_edit_times(self, item: Mapping[str, Any]) -> dict[str, str]:
        """From the issue's ``IssueChange`` rows that other actors made (newest first; one query): the
        history is complete, so a field without such a row is one nobody but the node has set ("")."""
        times: dict[str, str] = {}
        changes = (
            IssueChange.objects.filter(issue_id=int(item["id"]), issue__project__instance=self.instance)
            .exclude(actor=self.actor)
            .order_by("-id")
            .values_list("at", "fields")
        )
        for at, fields in changes:
            for name in fields or []:
                if name in _HUB_FIELD:
                    times.setdefault(_HUB_FIELD[name], _iso(at) or "")
            if len(times) >= len(_HUB_FIELD):
                break
        return {field: times.get(field, "") for field in _HUB_FIELD.values()}

    def metadata(self) -> dict[str, list[Any]]:
        statuses: list[str] = []
        priorities: list[str] = []
        types: list[str] = []
        for p in Project.objects.filter(instance=self.instance):
            statuses += [s for s in p.statuses if s not in statuses]
            priorities += [s for s in p.priorities if s not in priorities]
            types += [s for s in p.issue_types if s not in types]
        from django.contrib.auth import get_user_model

        users = [
            {"email": u.email, "displayName": u.get_full_name() or u.get_username(), "id": str(u.pk)}
            for u in get_user_model()
            .objects.exclude(email="")
            .only("email", "first_name", "last_name", "username")
        ]
        return {"statuses": statuses, "priorities": priorities, "types": types, "users": users}

    # --- writes ------------------------------------------------------------------------------------------
    def _fields(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("summary", "description", "labels"):
                out[name] = value if value is not None or name == "description" else []
            elif name in ("status", "priority", "type"):
                if value and value.get("name"):
                    out["issue_type" if name == "type" else name] = value["name"]
            elif name in ("assignee", "reporter"):
                out[name] = (value or {}).get("email") or ""
            elif name == "dueDate":
                out["due_date"] = value or None
            elif name == "customFields":
                out["custom_fields"] = dict(value or {})
            elif name == "parentId":
                parent = self._issues().filter(pk=int(value)).first() if str(value or "").isdigit() else None
                out["parent"] = parent
        if out.get("summary") is not None:
            out["summary"] = str(out["summary"])
        return out

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        projects = Project.objects.filter(instance=self.instance)
        wanted = (fields.get("project") or {}).get("key") or self.instance.settings.get("project")
        project = projects.filter(key=wanted).first() if wanted else None
        project = project or projects.order_by("id").first()
        if project is None:
            raise ConnectorError(
                f"{self.instance.name} has no project to create the issue in. Create one first."
            )
        data = self._fields({k: v for k, v in fields.items() if k != "project"})
        try:
            issue = services.issue_create(
                project=project, actor=self.actor, **{"summary": "(no summary)", **data}
            )
        except ValidationError as exc:
            raise _refused(exc)
        return self.ref(issue)

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        data = self._fields(changes)
        if data:
            try:
                services.issue_update(issue=self._issue(item_id), actor=self.actor, **data)
            except ValidationError as exc:
                raise _refused(exc)

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        try:
            comment = services.comment_add(
                issue=self._issue(item_id), actor=self.actor, body=body, internal=internal, author=author
            )
        except ValidationError as exc:
            raise _refused(exc)
        return str(comment.pk)

    def _comment(self, item_id: str, comment_id: str) -> Comment:
        comment = (
            Comment.objects.filter(issue__project__instance=self.instance, issue_id=int(item_id))
            .filter(pk=int(comment_id))
            .select_related("issue")
            .first()
        )
        if comment is None:
            raise ConnectorError(f"Comment {comment_id} does not exist on issue {item_id}.", status=404)
        return comment

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        try:
            services.comment_update(comment=self._comment(item_id, comment_id), actor=self.actor, body=body)
        except ValidationError as exc:
            raise _refused(exc)

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        try:
            comment = self._comment(item_id, comment_id)
        except ConnectorError:
            return  # already gone: deleting is idempotent
        services.comment_delete(comment=comment, actor=self.actor)

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        try:
            att = services.attachment_add(
                issue=self._issue(item_id),
                actor=self.actor,
                filename=filename,
                content=content,
                mime_type=mime_type,
            )
        except ValidationError as exc:
            raise _refused(exc)
        return str(att.pk)

    def _attachment(self, item_id: str, attachment_id: str) -> Attachment | None:
        return (
            Attachment.objects.filter(issue__project__instance=self.instance, issue_id=int(item_id))
            .filter(pk=int(attachment_id))
            .select_related("issue")
            .first()
        )

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        att = self._attachment(item_id, attachment_id)
        if att is not None:
            services.attachment_delete(attachment=att, actor=self.actor)

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        att = self._attachment(item_id, attachment_id)
        if att is None:
            raise ConnectorError(f"Attachment {attachment_id} does not exist on issue {item_id}.", status=404)
        with att.file.open("rb") as fh:
            while chunk := fh.read(64 * 1024):
                yield chunk

    def test_credentials(self) -> str:
        count = Project.objects.filter(instance=self.instance).count()
        return f"Built-in tracker with {count} project(s)."
