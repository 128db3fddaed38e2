"""A local connection between two built-in tracker projects, with tasks run inline after each commit."""

from __future__ import annotations

import pytest

from connections.services import connection_create_local
from instances.models import Instance, Issue
from instances.tracker import services


class Side:
    """One side of the local connection: its instance, project and connection, with shortcuts."""

    def __init__(self, instance: Instance, project, connection) -> None:  # type: ignore[no-untyped-def]
        self.instance, self.project, self.connection = instance, project, connection

    def create(self, summary: str = "Printer on fire", **fields):  # type: ignore[no-untyped-def]
        return services.issue_create(
            project=self.project, actor="user@example.com", summary=summary, **fields
        )

    def issue(self, key: str) -> Issue:
        return Issue.objects.get(key=key)

    def issue_by_id(self, item_id: str) -> Issue:
        return Issue.objects.get(pk=int(item_id), project=self.project)

    def only_issue(self) -> Issue:
        issues = list(Issue.objects.filter(project=self.project))
        assert len(issues) == 1, [i.key for i in issues]
        return issues[0]

    def edit(self, key: str, **fields):  # type: ignore[no-untyped-def]
        return services.issue_update(issue=self.issue(key), actor="user@example.com", **fields)


@pytest.fixture
def local_pair(transactional_db):  # type: ignore[no-untyped-def]
    support = Instance.objects.create(name="Support desk", tracker_type="builtin")
    engineering = Instance.objects.create(name="Engineering", tracker_type="builtin")
    sup = services.project_create(instance=support, key="SUP", name="Support")
    eng = services.project_create(instance=engineering, key="ENG", name="Engineering")
    a, b = connection_create_local(name="Support ⇄ Engineering", instance_a=support, instance_b=engineering)
    from replicas import pipeline

    pipeline.META_CACHE.clear()
    return Side(support, sup, a), Side(engineering, eng, b)
