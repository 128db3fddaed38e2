"""Polling's lease: a worker killed while polling must not stop an instance's polling for long."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from instances import polling
from instances.connectors.base import ItemRef
from instances.models import Instance

pytestmark = pytest.mark.django_db


class StubConnector:
    """Two pages of changes; records the instance's lease at each page request."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.leases: list[Any] = []
        self.pages = [[ItemRef(id=str(i), key=f"#{i}") for i in range(100)], [ItemRef(id="100", key="#100")]]

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        self.leases.append((Instance.objects.get(pk=self.instance.pk).poll_lease_until, timezone.now()))
        page = self.pages.pop(0) if self.pages else []
        return page, f"2026-01-01T00:00:0{len(self.leases)}Z"


@pytest.fixture
def redmine_instance(monkeypatch: pytest.MonkeyPatch) -> tuple[Instance, StubConnector]:
    instance = Instance.objects.create(name="Redmine", tracker_type="redmine", url="http://127.0.0.1:9/")
    stub = StubConnector(instance)
    monkeypatch.setattr(polling, "get_connector", lambda inst: stub)
    return instance, stub


def test_a_poll_holds_the_instance_briefly_and_renews_per_page(redmine_instance, settings) -> None:  # type: ignore[no-untyped-def]
    settings.POLL_LEASE_SECONDS = 30
    instance, stub = redmine_instance
    assert polling.poll_instance(instance.pk) == 101
    assert len(stub.leases) == 2
    for lease_until, at in stub.leases:  # held while polling, for at most 30 s from each page
        assert at < lease_until <= at + timedelta(seconds=30)
    instance.refresh_from_db()
    assert instance.poll_lease_until is None and instance.poll_cursor == "2026-01-01T00:00:02Z"


def test_a_poll_left_by_a_killed_worker_blocks_the_next_one_only_until_its_lease_ends(
    redmine_instance, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.POLL_LEASE_SECONDS = 30
    instance, stub = redmine_instance
    # What a worker SIGKILLed in the middle of a poll leaves behind: its lease, never released.
    Instance.objects.filter(pk=instance.pk).update(poll_lease_until=timezone.now() + timedelta(seconds=30))
    assert polling.poll_instance(instance.pk) == 0 and stub.leases == []  # held: no second poll
    Instance.objects.filter(pk=instance.pk).update(poll_lease_until=timezone.now() - timedelta(seconds=1))
    assert polling.poll_instance(instance.pk) == 101  # the lease ended: polling goes on
