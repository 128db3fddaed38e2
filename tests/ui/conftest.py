"""Personas and data for the admin UI tests: a staff client, two built-in instances with projects."""

from __future__ import annotations

import pytest

from instances.models import Instance
from instances.tracker import services


@pytest.fixture
def staff(client, admin_user):  # type: ignore[no-untyped-def]
    client.force_login(admin_user)
    return client


@pytest.fixture
def plain(client, plain_user):  # type: ignore[no-untyped-def]
    client.force_login(plain_user)
    return client


@pytest.fixture
def two_trackers(db):  # type: ignore[no-untyped-def]
    """Two local built-in instances, with projects SUP and ENG."""
    support = Instance.objects.create(name="Support desk", tracker_type="builtin")
    engineering = Instance.objects.create(name="Engineering", tracker_type="builtin")
    sup = services.project_create(instance=support, key="SUP", name="Support")
    eng = services.project_create(instance=engineering, key="ENG", name="Engineering")
    return sup, eng


@pytest.fixture
def synced(two_trackers):  # type: ignore[no-untyped-def]
    """A local connection with SUP-1 exalated (tasks run inline after commit)."""
    from connections.services import connection_create_local
    from replicas import pipeline

    sup, eng = two_trackers
    a, b = connection_create_local(
        name="Support ⇄ Engineering", instance_a=sup.instance, instance_b=eng.instance
    )
    pipeline.META_CACHE.clear()
    issue = services.issue_create(project=sup, actor="anna@example.com", summary="Printer on fire")
    pipeline.exalate(connection=a, key=issue.key)
    services.issue_update(issue=issue, actor="anna@example.com", summary="Printer on fire, again")
    return a, b, issue
