"""Nodes on different releases: a node reads every 1.x replica (an older minor without the newer optional
fields, a newer minor with fields it does not know, which it ignores) and refuses another major version
with a message that says what to do. docs/backup.md ("Upgrade") relies on this."""

from __future__ import annotations

import uuid

import pytest

from replicas import pipeline
from replicas.models import SyncEvent
from replicas.schema import REPLICA_VERSION, ReplicaInvalid, validate_replica, wrap
from tests.replicas.conftest import local_pair  # noqa: F401  (fixture)

HUB = {"id": "7", "key": "SUP-7", "summary": "From another release", "labels": [], "comments": []}


def test_older_and_newer_minor_versions_are_read_and_another_major_is_refused() -> None:
    older = {"version": {"major": 1, "minor": 0, "patch": 0}, "hubIssue": dict(HUB)}
    assert validate_replica(older) is older  # 1.0: no per-field ``edited`` times
    newer = {"version": {"major": 1, "minor": 9, "patch": 3}, "hubIssue": {**HUB, "sprint": {"name": "S1"}}}
    assert validate_replica(newer) is newer  # 1.9: a field this release does not know yet
    with pytest.raises(ReplicaInvalid, match=r"version 2 is not supported .* Upgrade the older node\."):
        validate_replica({"version": {"major": 2, "minor": 0, "patch": 0}, "hubIssue": dict(HUB)})
    assert wrap(HUB)["version"] == REPLICA_VERSION


@pytest.mark.django_db(transaction=True)
def test_a_replica_from_a_newer_minor_release_is_applied_and_its_unknown_fields_ignored(local_pair) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = local_pair
    issue = a.create("Synced across releases")
    pipeline.exalate(connection=a.connection, key=issue.key)
    twin = b.connection.twins.get()
    payload = {
        "version": {"major": 1, "minor": 9, "patch": 0},
        "hubIssue": {**twin.remote_replica, "summary": "Edited on a newer node", "sprint": {"name": "S1"}},
    }
    pipeline.receive(
        connection=b.connection,
        trace_id=str(uuid.uuid4()),
        kind="update",
        seq=twin.applied_seq + 1,
        replica=validate_replica(payload),
        remote_item_id=twin.remote_id,
    )
    copy = b.only_issue()
    assert copy.summary == "Edited on a newer node"
    assert SyncEvent.objects.filter(direction="in", status="done", connection=b.connection).count() == 2
