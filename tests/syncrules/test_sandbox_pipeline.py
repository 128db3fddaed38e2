"""Hostile scripts published on a local connection: the pipeline records an entity error of the right kind
on that twin's event (in-process they killed the worker, or held it for seconds), other twins still sync,
and resolve & retry after publishing a fix delivers."""

from __future__ import annotations

import pytest

from instances.models import Issue
from replicas import pipeline
from replicas.models import SyncError, SyncEvent, Twin
from syncrules.defaults import default_rules
from syncrules.services import rules_publish

OUTGOING, INCOMING = default_rules("builtin")
NESTED = "    t = ()\n    for i in range(200000):\n        t = (t,)\n"
CASES = {
    # name: (the side and script that fails for items named "boom", what the error says, its line)
    "crash-outgoing": (
        "a",
        "outgoing",
        "if issue.summary == 'boom':\n" + NESTED + "    replica.labels = [len({t})]\n" + OUTGOING,
        "crashed the process that runs it (SIGSEGV)",
        5,
    ),
    "memory-incoming": (
        "b",
        "incoming",
        "if replica.summary == 'boom':\n    r = range(1000000)\n    x = [tuple(r) for i in range(60)]\n"
        + INCOMING,
        "needed more than the 256 MB of memory",
        3,
    ),
    "timeout-incoming": (
        "b",
        "incoming",
        "if replica.summary == 'boom':\n    s = set(range(0, 7919000000, 7919))\n"
        "    for i in range(127):\n        y = sorted(s)\n" + INCOMING,
        "took longer than 1 s and was stopped",
        4,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_script_that_kills_its_process_blocks_only_its_twin_and_a_fix_and_retry_delivers(
    local_pair, settings, name
):
    settings.SCRIPT_SANDBOX_MEMORY_MB = 256  # reached well before the deadline, even on a loaded machine
    a, b = local_pair
    side_name, direction, script, says, line = CASES[name]
    side = a if side_name == "a" else b
    rules = {"outgoing": OUTGOING, "incoming": INCOMING, direction: script}
    rules_publish(connection=side.connection, **rules)

    bad, good = a.create("boom"), a.create("fine")
    pipeline.exalate(connection=a.connection, key=bad.key)
    pipeline.exalate(connection=a.connection, key=good.key)

    # The other item synced; the failing one is blocked with an entity error the admin sees.
    assert list(Issue.objects.filter(project=b.project).values_list("summary", flat=True)) == ["fine"]
    error = SyncError.objects.get()
    assert error.impact == "entity" and error.connection == side.connection
    assert error.script_line == line
    assert says in error.message and error.message.startswith(f"{direction.capitalize()} script, line {line}")
    assert error.event.status == SyncEvent.Status.FAILED
    assert error.twin.state == Twin.State.FAILED

    # Publish the fix, resolve & retry: delivered.
    rules_publish(connection=side.connection, outgoing=OUTGOING, incoming=INCOMING)
    pipeline.error_resolve(error=error, retry=True)
    assert sorted(Issue.objects.filter(project=b.project).values_list("summary", flat=True)) == [
        "boom",
        "fine",
    ]
    assert Twin.objects.get(pk=error.twin.pk).state == Twin.State.SYNCHRONIZED
    assert not SyncError.objects.filter(resolved_at=None).exists()


def test_sync_helper_questions_are_answered_from_the_database_of_the_node(local_pair):
    """``sync_helper`` reads twins: the sandbox process asks the node for the answers, during the run."""
    a, b = local_pair
    parent = a.create("parent")
    pipeline.exalate(connection=a.connection, key=parent.key)
    parent_copy = b.only_issue()
    parent_url = Twin.objects.get(connection=b.connection, local_key=parent_copy.key).remote_url
    assert parent_url
    outgoing = OUTGOING + "replica.parentId = issue.parentId\n"
    incoming = INCOMING + (
        "if replica.parentId:\n"
        "    mine = sync_helper.local_key(replica.parentId)\n"
        "    issue.description = ' | '.join([mine, str(sync_helper.is_under_sync(mine)),\n"
        "        str(sync_helper.is_under_sync('ENG-99')),\n"
        f"        sync_helper.remote_url('{parent.key}'), str(sync_helper.local_key('no-such-id'))])\n"
    )
    rules_publish(connection=a.connection, outgoing=outgoing, incoming=INCOMING)
    rules_publish(connection=b.connection, outgoing=OUTGOING, incoming=incoming)
    child = a.create("child")
    Issue.objects.filter(pk=child.pk).update(parent=parent)
    pipeline.exalate(connection=a.connection, key=child.key)
    copy = Issue.objects.get(project=b.project, summary="child")
    assert copy.description == f"{parent_copy.key} | True | False | {parent_url} | None"
