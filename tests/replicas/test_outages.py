"""A tracker that stops answering for a while: its work waits and resumes by itself, in order, with nothing
lost or duplicated and no admin action; the node says what is going on meanwhile and does not hammer it.

Found with a real Redmine stopped for 4.5 minutes: after 8 attempts the event was failed ("…the node will
retry later. (gave up after 8 attempts)"), the connection said nothing, and nothing arrived after Redmine came
back until an admin retried."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from instances.connectors import ConnectorError
from instances.connectors.builtin import BuiltinConnector
from instances.models import Instance
from replicas import pipeline
from replicas.models import SyncError, SyncEvent, Twin


class Down:
    """Makes side B's tracker refuse connections (every read and write of its items), counting the tries."""

    def __init__(self, monkeypatch, instance: Instance) -> None:  # type: ignore[no-untyped-def]
        self.tries = 0
        self.down = True
        for name in ("get_item", "update_item", "create_item", "find_item"):
            original = getattr(BuiltinConnector, name)

            def failing(connector, *args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
                if self.down and connector.instance.pk == instance.pk:
                    self.tries += 1
                    raise ConnectorError("Connection refused", retryable=True)
                return _original(connector, *args, **kwargs)

            monkeypatch.setattr(BuiltinConnector, name, failing)


def _due_now(instance: Instance) -> None:
    """Let time pass up to every wait: the events' backoff and the tracker's next try."""
    past = timezone.now() - timedelta(seconds=1)
    SyncEvent.objects.filter(status="pending").update(not_before=past)
    Instance.objects.filter(pk=instance.pk, next_try_at__isnull=False).update(next_try_at=past)


def _run_due(twin_ids: list[int]) -> None:
    for twin_id in twin_ids:
        pipeline.process_twin(twin_id)


@pytest.fixture
def synced(local_pair):  # type: ignore[no-untyped-def]
    a, b = local_pair
    issues = [a.create(summary=f"item {i}") for i in range(3)]
    for issue in issues:
        pipeline.exalate(connection=a.connection, key=issue.key)
    return a, b, issues


def test_an_outage_never_fails_an_event_and_heals_by_itself(synced, monkeypatch):
    a, b, issues = synced
    down = Down(monkeypatch, b.instance)
    for i, issue in enumerate(issues):
        a.edit(issue.key, summary=f"edited during the outage {i}")
    b_twins = list(Twin.objects.filter(connection=b.connection).values_list("pk", flat=True))
    for _ in range(20):  # far more tries than the old limit of 8
        _due_now(b.instance)
        _run_due(b_twins)
    instance = Instance.objects.get(pk=b.instance.pk)
    assert instance.unreachable_since is not None and instance.failures >= 3
    assert "Connection refused" in instance.last_error
    assert not SyncEvent.objects.filter(status="failed").exists()
    assert not SyncError.objects.exists()
    waiting = SyncEvent.objects.filter(connection=b.connection, direction="in", status="pending")
    assert waiting.count() == 3
    for event in waiting:
        assert "unreachable since" in event.error and "tries it again at" in event.error
        assert "gave up" not in event.error

    down.down = False
    _due_now(b.instance)
    pipeline.process_twin(b_twins[0])  # the first try that succeeds resumes everything that waited
    instance.refresh_from_db()
    assert (instance.unreachable_since, instance.failures, instance.last_error) == (None, 0, "")
    for i, issue in enumerate(issues):
        copy = Twin.objects.get(connection=a.connection, local_id=str(issue.pk)).remote_id
        assert b.issue_by_id(copy).summary == f"edited during the outage {i}"
    assert not SyncEvent.objects.filter(status__in=["pending", "processing", "sent", "failed"]).exists()


def test_an_unreachable_tracker_is_probed_once_per_try_not_hammered(synced, monkeypatch):
    a, b, issues = synced
    down = Down(monkeypatch, b.instance)
    for issue in issues:
        a.edit(issue.key, summary="changed")
    b_twins = list(Twin.objects.filter(connection=b.connection).values_list("pk", flat=True))
    while Instance.objects.get(pk=b.instance.pk).unreachable_since is None:
        _due_now(b.instance)
        _run_due(b_twins)
    # Its next try is not due: however often the work is nudged, nobody calls the tracker.
    before = down.tries
    for _ in range(5):
        SyncEvent.objects.filter(status="pending").update(not_before=None)
        _run_due(b_twins)
        pipeline.sweep(older_than=timedelta(0))
    assert down.tries == before
    # When it is due, one probe tries it (one item), and the others wait for its outcome.
    _due_now(b.instance)
    _run_due(b_twins)
    assert down.tries == before + 1
    instance = Instance.objects.get(pk=b.instance.pk)
    assert instance.next_try_at > timezone.now()


def test_the_outage_shows_on_the_pages_and_in_the_api(synced, monkeypatch, admin_client):
    a, b, issues = synced
    Down(monkeypatch, b.instance)
    a.edit(issues[0].key, summary="changed")
    twin = Twin.objects.get(connection=b.connection, remote_id=str(issues[0].pk))
    while Instance.objects.get(pk=b.instance.pk).unreachable_since is None:
        _due_now(b.instance)
        pipeline.process_twin(twin.pk)
    for url in ("/ui/", f"/ui/connections/{b.connection.pk}/", "/ui/errors/"):
        page = admin_client.get(url).content.decode()
        assert "has been unreachable since" in page and "Engineering" in page, url
    data = admin_client.get(f"/api/v1/instances/{b.instance.pk}/").json()
    assert data["reachable"] is False
    assert "Connection refused" in data["outage"]["last_error"] and data["outage"]["next_try_at"]
    assert admin_client.get(f"/api/v1/instances/{a.instance.pk}/").json()["outage"] is None


def test_a_refused_write_still_blocks_its_item_for_an_admin(synced, monkeypatch):
    a, b, issues = synced

    def refuse(connector, item_id, changes):  # type: ignore[no-untyped-def]
        raise ConnectorError("Field 'summary' is too long for this tracker.", retryable=False)

    monkeypatch.setattr(BuiltinConnector, "update_item", refuse)
    a.edit(issues[0].key, summary="x" * 10)
    error = SyncError.objects.get()
    assert error.impact == "entity" and "too long" in error.message
    assert Instance.objects.get(pk=b.instance.pk).failures == 0  # not an outage


def test_a_worker_renews_the_lease_of_a_long_event_and_a_dead_one_loses_it_in_seconds(
    local_pair, monkeypatch
):
    import time

    a, b = local_pair
    issue = a.create()
    twin = Twin.objects.get(pk=pipeline.exalate(connection=a.connection, key=issue.key).pk)
    monkeypatch.setattr(pipeline.leases, "LEASE", timedelta(seconds=0.6))
    token = pipeline.acquire_lease(twin.pk)
    try:
        time.sleep(1.5)  # far past the lease: the heartbeat kept renewing it, as for a slow tracker call
        taken_meanwhile = pipeline.acquire_lease(twin.pk)
        assert taken_meanwhile is None, "another worker took a twin that was still being worked on"
    finally:
        pipeline.heartbeat.drop(twin.pk)  # as a worker that dies: nothing renews its lease any more
    time.sleep(1.0)
    taken = pipeline.acquire_lease(twin.pk)
    assert taken is not None, "the dead worker's lease did not run out"
    pipeline.release_lease(twin.pk, taken)
    assert token


def test_a_poll_that_fails_counts_towards_the_outage_and_one_that_answers_resumes_the_work(
    local_pair, monkeypatch
):
    from instances import polling

    a, b = local_pair
    instance = b.instance
    Instance.objects.filter(pk=instance.pk).update(tracker_type="redmine", url="http://redmine.invalid")

    class Tracker:
        down = True
        polls = 0

        def search_updated_since(self, cursor, *, limit=100):  # type: ignore[no-untyped-def]
            Tracker.polls += 1
            if Tracker.down:
                raise ConnectorError("Connection refused", retryable=True)
            return [], cursor

    monkeypatch.setattr(polling, "get_connector", lambda inst: Tracker())
    for _ in range(3):
        polling.poll_instance(instance.pk)
        Instance.objects.filter(pk=instance.pk).update(next_try_at=timezone.now() - timedelta(seconds=1))
    inst = Instance.objects.get(pk=instance.pk)
    assert inst.unreachable_since is not None and "Connection refused" in inst.last_error
    # While its next try is not due, no poll is due either (no request).
    Instance.objects.filter(pk=instance.pk).update(next_try_at=timezone.now() + timedelta(minutes=1))
    inst.refresh_from_db()
    assert not polling.poll_plan(inst, timezone.now()).due
    before = Tracker.polls
    polling.poll_instance(instance.pk)
    assert Tracker.polls == before  # a poll asked for anyway does not call it before its next try
    Tracker.down = False
    Instance.objects.filter(pk=instance.pk).update(next_try_at=timezone.now() - timedelta(seconds=1))
    polling.poll_instance(instance.pk)
    inst.refresh_from_db()
    assert (inst.unreachable_since, inst.failures) == (None, 0)
