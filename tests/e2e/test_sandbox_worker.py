"""A script that crashes the process running it, published and run by a real django-q2 worker: the worker
stays up (its sandbox process crashes instead; in-process, the worker died on every event and the event
stayed "processing" with no error), the event is blocked with a ``crash`` error, and other items sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import close_old_connections

from connections.services import connection_create_local
from instances.models import Instance, Issue
from instances.tracker import services
from replicas import pipeline
from replicas.models import SyncError, SyncEvent
from syncrules.defaults import default_rules
from syncrules.services import rules_publish
from tests.e2e.worker import Worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OUTGOING, INCOMING = default_rules("builtin")
CRASH = (
    "if issue.summary == 'boom':\n"
    "    t = ()\n"
    "    for i in range(200000):\n"
    "        t = (t,)\n"
    "    replica.labels = [len({t})]\n"
)


def _processes(pgid: int) -> dict[int, str]:
    """pid -> command line of the live processes in a process group."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _qcluster(pgid: int) -> set[int]:
    return {pid for pid, cmd in _processes(pgid).items() if "qcluster" in cmd}


def _count(project) -> int:  # type: ignore[no-untyped-def]
    close_old_connections()
    return Issue.objects.filter(project=project).count()


def test_a_script_that_crashes_its_process_leaves_the_worker_up_and_blocks_only_its_item(settings):
    settings.TASKS_INLINE = False  # enqueue to the real broker; the worker does the work
    a = Instance.objects.create(name="Support", tracker_type="builtin")
    b = Instance.objects.create(name="Engineering", tracker_type="builtin")
    pa = services.project_create(instance=a, key="SUP", name="Support")
    pb = services.project_create(instance=b, key="ENG", name="Engineering")
    conn, _ = connection_create_local(name="S-E", instance_a=a, instance_b=b)
    rules_publish(connection=conn, outgoing=CRASH + OUTGOING, incoming=INCOMING)
    worker = Worker().start()
    try:
        assert worker.proc is not None
        first = services.issue_create(project=pa, actor="u@x", summary="first")
        pipeline.exalate(connection=conn, key=first.key)
        wait_for(lambda: _count(pb) == 1)  # the cluster and its workers are up and syncing
        before = _qcluster(worker.proc.pid)

        boom = services.issue_create(project=pa, actor="u@x", summary="boom")
        pipeline.exalate(connection=conn, key=boom.key)
        error = wait_for(lambda: SyncError.objects.filter(resolved_at=None).first())
        assert error.impact == "entity" and error.script_line == 5
        assert "crashed the process that runs it (SIGSEGV)" in error.message
        assert SyncEvent.objects.get(pk=error.event_id).status == SyncEvent.Status.FAILED

        later = services.issue_create(project=pa, actor="u@x", summary="later")
        pipeline.exalate(connection=conn, key=later.key)
        wait_for(lambda: _count(pb) == 2)
        assert sorted(Issue.objects.filter(project=pb).values_list("summary", flat=True)) == [
            "first",
            "later",
        ]

        # The worker processes are the ones from before: none died and none was replaced.
        assert _qcluster(worker.proc.pid) == before
        sandboxes = [cmd for cmd in _processes(worker.proc.pid).values() if "syncrules.sandbox_child" in cmd]
        assert sandboxes, "the scripts ran in sandbox processes of the worker"
    finally:
        worker.stop()
