"""A built-in tracker project and a tracker instance (backed by a fake) joined by a local connection.

What the node's webhook view and poller do is done here by hand: ``deliver`` hands a webhook body to the
connector's ``parse_webhook``, ``poll`` asks ``search_updated_since``; each item that changed (and was not
changed by the node itself, ``is_own_change``) is queued with ``pipeline.on_item_changed``. Tasks run inline
after each commit (``TASKS_INLINE``), as in ``tests/replicas/test_local_sync.py``.
"""

from __future__ import annotations

import io
from typing import Any

from django.db import transaction

from connections.services import connection_create_local
from instances.connectors import get_connector
from instances.models import Instance, Issue
from instances.tracker import services
from replicas import pipeline
from replicas.models import SyncError, SyncEvent
from tests.connectors2.conftest import make_instance


class Pair:
    def __init__(self, builtin: Instance, project: Any, tracker: Instance, a: Any, b: Any) -> None:
        self.builtin, self.project, self.tracker = builtin, project, tracker
        self.side_builtin, self.side_tracker = a, b
        self.cursor: str | None = None

    @classmethod
    def create(
        cls,
        tracker_type: str,
        url: str,
        credentials: dict[str, Any],
        settings: dict[str, Any],
        *,
        statuses: list[str] | None = None,
    ) -> Pair:
        builtin = Instance.objects.create(name="Support desk", tracker_type="builtin")
        project = services.project_create(instance=builtin, key="SUP", name="Support", statuses=statuses)
        tracker = make_instance(tracker_type, url, credentials, settings, save=True)
        a, b = connection_create_local(
            name=f"Support ⇄ {tracker_type}", instance_a=builtin, instance_b=tracker
        )
        pipeline.META_CACHE.clear()
        return cls(builtin, project, tracker, a, b)

    def connector(self):  # type: ignore[no-untyped-def]
        return get_connector(self.tracker)

    def builtin_issue(self, *, comment: str = "", attachment: tuple[str, bytes] | None = None) -> Issue:
        issue = services.issue_create(
            project=self.project, actor="anna@example.com", summary="Printer on fire"
        )
        if comment:
            services.comment_add(issue=issue, actor="anna@example.com", body=comment)
        if attachment:
            services.attachment_add(
                issue=issue,
                actor="anna@example.com",
                filename=attachment[0],
                content=io.BytesIO(attachment[1]),
            )
        return issue

    def exalate(self, issue: Issue) -> None:
        pipeline.exalate(connection=self.side_builtin, key=issue.key)

    def edit_builtin(self, issue: Issue, **fields: Any) -> None:
        services.issue_update(issue=Issue.objects.get(pk=issue.pk), actor="anna@example.com", **fields)

    def comment_builtin(self, issue: Issue, body: str) -> None:
        services.comment_add(issue=Issue.objects.get(pk=issue.pk), actor="anna@example.com", body=body)

    def _changed(self, refs: list[Any]) -> None:
        connector = self.connector()
        for ref in refs:
            if connector.is_own_change({"id": ref.id}):
                continue
            with transaction.atomic():
                pipeline.on_item_changed(
                    instance_id=self.tracker.pk, item_id=ref.id, item_key=ref.key, actor="tracker-user"
                )

    def deliver(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._changed(self.connector().parse_webhook(headers or {}, body))

    def poll(self) -> None:
        refs, self.cursor = self.connector().search_updated_since(self.cursor)
        self._changed(refs)

    def assert_settled(self) -> None:
        stuck = list(
            SyncEvent.objects.filter(status__in=["pending", "processing", "failed"]).values_list(
                "status", "error"
            )
        )
        assert not stuck, stuck
        errors = list(SyncError.objects.values_list("message", flat=True))
        assert not errors, errors
