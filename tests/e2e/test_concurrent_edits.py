"""Concurrent edits on both sides of many pairs, applied by several real workers at once.

Found on PostgreSQL: the two twins of one pair, processed at the same moment by two workers, each locked
its own twin and then the other's (the in-process delivery to the peer, the ack back), and PostgreSQL
aborted one of them with a deadlock; its events stayed "sent" for good and sync stopped. Every round here
must converge, and a deadlock may only ever show up in the log as retried.
"""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connections

from connections.services import connection_create_local
from instances.models import Instance, Issue
from instances.tracker import services
from replicas import pipeline
from replicas.models import SyncError, SyncEvent, Twin
from tests.e2e.worker import Worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ITEMS = 8
ROUNDS = 6
PRIORITIES = ["Low", "Medium", "High"]


def _edit_all(issues: list[Issue], barrier: threading.Barrier, **fields: str) -> None:
    try:
        barrier.wait(timeout=10)
        for issue in issues:
            services.issue_update(issue=Issue.objects.get(pk=issue.pk), actor="person@example.com", **fields)
    finally:
        connections.close_all()


def test_concurrent_edits_of_both_twins_never_stall_the_pipeline(settings, tmp_path):
    settings.TASKS_INLINE = False  # the real workers do the work
    a = Instance.objects.create(name="Support", tracker_type="builtin")
    b = Instance.objects.create(name="Engineering", tracker_type="builtin")
    pa = services.project_create(instance=a, key="SUP", name="Support")
    pb = services.project_create(instance=b, key="ENG", name="Engineering")
    conn, _ = connection_create_local(name="S-E", instance_a=a, instance_b=b)
    log = tmp_path / "workers.log"
    workers = [Worker(Q_WORKERS="2").start(log) for _ in range(2)]  # four worker processes in all
    try:
        sources = [services.issue_create(project=pa, actor="u@x", summary=f"item {i}") for i in range(ITEMS)]
        for issue in sources:
            pipeline.exalate(connection=conn, key=issue.key)
        wait_for(lambda: close_old_connections() or Issue.objects.filter(project=pb).count() == ITEMS)
        wait_for(lambda: len(Twin.objects.filter(connection=conn).exclude(remote_id="")) == ITEMS)
        pairs = dict(Twin.objects.filter(connection=conn).values_list("local_id", "remote_id"))
        copies = [Issue.objects.get(pk=int(pairs[str(issue.pk)])) for issue in sources]

        for round_ in range(ROUNDS):
            description, priority = f"round {round_}", PRIORITIES[round_ % 3]
            barrier = threading.Barrier(2)
            threads = [
                threading.Thread(
                    target=_edit_all, args=(sources, barrier), kwargs={"description": description}
                ),
                threading.Thread(target=_edit_all, args=(copies, barrier), kwargs={"priority": priority}),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)

            def converged(expected: tuple[str, str] = (description, priority)) -> bool:
                close_old_connections()
                rows = Issue.objects.filter(project__in=[pa, pb]).values_list("description", "priority")
                return all(row == expected for row in rows)

            wait_for(converged, timeout=60)
        wait_for(
            lambda: (
                close_old_connections()
                or not SyncEvent.objects.filter(status__in=["pending", "processing", "sent"]).exists()
            ),
            timeout=30,
        )
        assert not SyncError.objects.exists()
    finally:
        for worker in workers:
            worker.stop()
    text = log.read_text(errors="replace")
    unretried = [
        line for line in text.splitlines() if "deadlock" in line.lower() and "retrying" not in line.lower()
    ]
    assert not unretried, "\n".join(unretried[:20])
