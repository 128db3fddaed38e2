"""The pipeline's performance work keeps its guarantees: per-task caches stay fresh enough, a task's stealing
is bounded, bulk chunks commit together, acks are idempotent, and the query budget per synced item holds."""

from __future__ import annotations

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from instances.models import Comment, Issue
from instances.tracker import services
from replicas import bulk, pipeline
from replicas.models import BulkJob, EntityLink, SyncEvent, Twin
from syncrules.services import rules_current, rules_publish


def _new_items(side, n):  # type: ignore[no-untyped-def]
    keys = []
    for i in range(n):
        issue = side.create(summary=f"item {i}")
        services.comment_add(issue=issue, actor="user@example.com", body=f"comment {i}")
        keys.append(issue.key)
    return keys


def test_queries_per_new_synced_item_stay_within_budget(local_pair):
    a, b = local_pair
    keys = _new_items(a, 11)
    pipeline.exalate(connection=a.connection, key=keys[0])  # warm the per-process caches
    with CaptureQueriesContext(db) as ctx:
        for key in keys[1:]:
            pipeline.exalate(connection=a.connection, key=key)
    assert Comment.objects.filter(issue__project=b.project).count() == 11
    per_item = len(ctx.captured_queries) / 10
    # 98 before the performance work (both sides, inline tasks); now under 85.
    assert per_item < 85, per_item


def test_a_bulk_exalate_commits_a_chunk_together_and_syncs_everything_once(local_pair, monkeypatch):
    a, b = local_pair
    keys = _new_items(a, 30)
    monkeypatch.setattr(bulk, "CHUNK", 7)
    job = bulk.bulk_start(connection=a.connection, kind=BulkJob.Kind.EXALATE, keys=[*keys, "SUP-999"])
    job.refresh_from_db()
    assert (job.status, job.position, job.total) == ("done", 31, 31)
    assert [e["item"] for e in job.errors] == ["SUP-999"]  # a failing item does not undo its chunk
    assert Issue.objects.filter(project=b.project).count() == 30
    assert Comment.objects.filter(issue__project=b.project).count() == 30
    assert set(Twin.objects.filter(connection=a.connection).values_list("state", flat=True)) == {
        "synchronized"
    }
    assert not SyncEvent.objects.filter(status__in=["pending", "processing", "failed"]).exists()


def test_rules_published_between_tasks_apply_to_the_next_change(local_pair):
    a, b = local_pair
    issue = a.create()
    pipeline.exalate(connection=a.connection, key=issue.key)
    current = rules_current(a.connection)
    rules_publish(
        connection=a.connection,
        outgoing=current.outgoing + '\nreplica.summary = "[A] " + (issue.summary or "")\n',
        incoming=current.incoming,
    )
    a.edit(issue.key, summary="Toner low")
    assert b.only_issue().summary == "[A] Toner low"


def test_the_task_cache_expires_within_a_long_task(monkeypatch):
    loads = []
    token = pipeline.task_cache.set({})
    try:
        clock = [100.0]
        monkeypatch.setattr(pipeline.base.time, "monotonic", lambda: clock[0])
        assert pipeline.task_cached("k", lambda: loads.append(1) or "v1") == "v1"
        assert pipeline.task_cached("k", lambda: loads.append(1) or "v2") == "v1"
        clock[0] += pipeline.TASK_CACHE_SECONDS + 0.1
        assert pipeline.task_cached("k", lambda: loads.append(1) or "v3") == "v3"
    finally:
        pipeline.task_cache.reset(token)
    assert len(loads) == 2
    # Outside a worker task nothing is cached.
    assert pipeline.task_cached("k", lambda: "fresh") == "fresh"


def test_a_task_stops_stealing_other_twins_after_its_budget(local_pair, monkeypatch):
    a, b = local_pair
    keys = _new_items(a, 6)
    # Queue the items without running them (as a burst whose tasks are still in the broker).
    twins = [pipeline.exalate(connection=a.connection, key=k, nudge_now=False).pk for k in keys]
    processed = []
    real = pipeline.process_twin
    monkeypatch.setattr(pipeline.worker, "process_twin", lambda t: (processed.append(t), real(t)))
    monkeypatch.setattr(pipeline.worker, "STEAL_SECONDS", 0.0)
    pipeline.run_worker_task(twins[0])
    # Its own twin and what that nudged (the peer), but no other ready twin of the connection.
    assert processed[0] == twins[0]
    assert not set(processed) & set(twins[1:])
    monkeypatch.setattr(pipeline.worker, "STEAL_SECONDS", 60.0)
    pipeline.run_worker_task(twins[1])
    assert set(twins[1:]) <= set(processed)  # with a budget, the others are taken along
    assert Issue.objects.filter(project=b.project).count() == 6


def test_a_redelivered_ack_adds_no_links_and_keeps_the_state(local_pair):
    a, b = local_pair
    issue = a.create()
    services.comment_add(issue=issue, actor="user@example.com", body="hello")
    pipeline.exalate(connection=a.connection, key=issue.key)
    twin_a = Twin.objects.get(connection=a.connection)
    twin_b = Twin.objects.get(connection=b.connection)
    event = SyncEvent.objects.filter(twin=twin_b, direction="in").get()

    def links():  # type: ignore[no-untyped-def]
        return list(EntityLink.objects.order_by("id").values_list("twin_id", "kind", "local_id", "remote_id"))

    before = links()
    assert len(before) == 2  # the comment, on each side
    pipeline.acknowledge(connection=a.connection, **pipeline.ack_payload(event, twin_b))
    assert links() == before
    twin_a.refresh_from_db()
    assert twin_a.state == Twin.State.SYNCHRONIZED


@pytest.mark.parametrize("pending", [True, False])
def test_an_ack_derives_the_senders_state_from_its_events(local_pair, pending):
    a, b = local_pair
    issue = a.create()
    pipeline.exalate(connection=a.connection, key=issue.key)
    twin_a = Twin.objects.get(connection=a.connection)
    twin_b = Twin.objects.get(connection=b.connection)
    event = SyncEvent.objects.filter(twin=twin_b, direction="in").get()
    Twin.objects.filter(pk=twin_a.pk).update(state=Twin.State.WAITING)
    if pending:
        SyncEvent.objects.create(connection=a.connection, twin=twin_a, direction="out")
    pipeline.acknowledge(connection=a.connection, **pipeline.ack_payload(event, twin_b))
    twin_a.refresh_from_db()
    assert twin_a.state == (Twin.State.QUEUED if pending else Twin.State.SYNCHRONIZED)


def test_ready_twins_lists_each_twin_once_oldest_first_and_sweep_is_bounded(local_pair, monkeypatch):
    a, b = local_pair
    keys = _new_items(a, 3)
    twins = [pipeline.exalate(connection=a.connection, key=k, nudge_now=False).pk for k in keys]
    SyncEvent.objects.create(connection=a.connection, twin_id=twins[0], direction="out")  # a second one
    assert pipeline.ready_twins(a.connection.pk, limit=8) == twins
    assert pipeline.ready_twins(a.connection.pk, limit=2) == twins[:2]
    nudged = []
    monkeypatch.setattr(pipeline.base, "nudge", nudged.append)
    monkeypatch.setattr(pipeline.worker, "SWEEP_LIMIT", 2)
    from datetime import timedelta

    assert pipeline.sweep(older_than=timedelta(0)) == 2
    assert nudged == twins[:2]
