"""The pipeline with a real django-q2 worker: on SQLite with the ORM broker, and on PostgreSQL with Redis
when DATABASE_URL/REDIS_URL point there (CI runs both). A SIGKILLed worker loses nothing and a restart
duplicates nothing."""

from __future__ import annotations

import time

import pytest
from django.db import close_old_connections

from connections.services import connection_create_local
from instances.models import Comment, Instance, Issue
from instances.tracker import services
from replicas import pipeline
from replicas.models import SyncEvent
from tests.e2e.worker import Worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pair(settings):  # type: ignore[no-untyped-def]
    settings.TASKS_INLINE = False  # enqueue to the real broker; the worker does the work
    a = Instance.objects.create(name="Support", tracker_type="builtin")
    b = Instance.objects.create(name="Engineering", tracker_type="builtin")
    pa = services.project_create(instance=a, key="SUP", name="Support")
    pb = services.project_create(instance=b, key="ENG", name="Engineering")
    conn, _ = connection_create_local(name="S-E", instance_a=a, instance_b=b)
    return conn, pa, pb


@pytest.fixture
def worker():  # type: ignore[no-untyped-def]
    workers: list[Worker] = []

    def start() -> Worker:
        w = Worker().start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


def _count(project) -> int:  # type: ignore[no-untyped-def]
    close_old_connections()
    return Issue.objects.filter(project=project).count()


def test_a_change_is_applied_by_the_worker(pair, worker):
    conn, pa, pb = pair
    worker()
    issue = services.issue_create(project=pa, actor="u@x", summary="Via the worker")
    services.comment_add(issue=issue, actor="u@x", body="hello")
    started = time.monotonic()
    pipeline.exalate(connection=conn, key=issue.key)
    wait_for(lambda: _count(pb) == 1)
    copy = Issue.objects.get(project=pb)
    assert copy.summary == "Via the worker"
    wait_for(lambda: Comment.objects.filter(issue=copy).count() == 1)
    services.issue_update(issue=copy, actor="u@x", status="Resolved")
    wait_for(lambda: Issue.objects.get(pk=issue.pk).status == "Resolved")
    assert time.monotonic() - started < 30


def test_a_killed_worker_loses_nothing_and_the_restart_duplicates_nothing(pair, worker):
    conn, pa, pb = pair
    first = worker()
    keys = []
    for i in range(15):
        issue = services.issue_create(project=pa, actor="u@x", summary=f"item {i}")
        services.comment_add(issue=issue, actor="u@x", body=f"comment {i}")
        keys.append(issue.key)
    for key in keys:
        pipeline.exalate(connection=conn, key=key)
    time.sleep(0.3)  # let it get going, then pull the plug mid-stream
    first.kill()
    done_before = _count(pb)
    assert done_before < 15, "the worker finished before it could be killed; the test proves nothing"
    worker()
    # The sweeper (scheduled every minute in production) finds the work the dead worker held.
    time.sleep(3.5)  # its leases expire (PIPELINE_LEASE_SECONDS=3 for this worker)
    wait_for(lambda: pipeline.sweep(older_than=__import__("datetime").timedelta(0)) == 0 and _count(pb) == 15)
    wait_for(lambda: not SyncEvent.objects.filter(status__in=["pending", "processing", "sent"]).exists())
    assert sorted(Issue.objects.filter(project=pb).values_list("summary", flat=True)) == sorted(
        f"item {i}" for i in range(15)
    )
    assert Comment.objects.filter(issue__project=pb).count() == 15
