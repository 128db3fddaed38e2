"""The per-twin worker: a task drains its twin under the lease, then the twins its work nudged and other
ready twins of the connection; the sweeper re-nudges lost work."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from django.db import OperationalError
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from connections.models import Connection
from exalate_node import logs
from exalate_node.tasks import enqueue
from instances import health
from replicas.models import SyncEvent, Twin
from replicas.pipeline import base
from replicas.pipeline.base import (
    FOLLOWUP_LIMIT,
    Direction,
    Status,
    followups,
    logger,
    task_cache,
    task_cached,
)
from replicas.pipeline.failures import (
    DB_RETRIES,
    handle_failure,
    resume_instance,
    retry_later,
    transient_db_error,
    wait_for,
)
from replicas.pipeline.incoming import process_incoming
from replicas.pipeline.leases import acquire_lease, release_lease, renew_lease
from replicas.pipeline.outgoing import process_outgoing
from replicas.pipeline.twinstate import finish_event, settle_state

# How long a task keeps taking other ready twins of its connection once its own work is done. Bounded, so
# a worker that took a single change goes back to the broker soon, where the next single change waits: a
# backfill (a bulk job, a burst of thousands) must not keep every worker busy for seconds.
STEAL_SECONDS = 0.3

STEAL_BATCH = 8


def run_worker_task(twin_id: int) -> None:
    """The worker's entry point: drain the twin, then the twins its work nudged (the peer of a local
    connection, acks), then other ready twins of the same connection, so a burst costs few tasks.
    Every twin is still taken under its own lease, so several workers can do this at once."""
    outer = followups.get()
    if outer is not None:  # called inline from within a task: the running loop takes it
        if twin_id not in outer:
            outer.append(twin_id)
        return
    run_twins([twin_id])


def run_twins(twin_ids: list[int], *, connection_id: int | None = None) -> None:
    """Work through the given twins (and what they nudge, and other ready twins of their connection) in
    this task; see ``run_worker_task``."""
    outer = followups.get()
    if outer is not None:
        outer.extend(t for t in twin_ids if t not in outer)
        return
    if not twin_ids:
        return
    pending: list[int] = list(twin_ids)
    token = followups.set(pending)
    cache_token = task_cache.set({}) if task_cache.get() is None else None
    try:
        rounds = 0
        stolen: set[int] = set()
        steal_until: float | None = None
        skip: set[int] = set()
        if connection_id is None:
            # A task's own twin, with whether it has work: in a burst, another task has often drained it
            # already (stealing), and then this task takes no lease and writes nothing for it.
            row = (
                Twin.objects.filter(pk=twin_ids[0])
                .annotate(ready=Exists(_ready_events(OuterRef("pk"))))
                .values_list("connection_id", "ready")
                .first()
            )
            connection_id = row[0] if row else None
            if not (row and row[1]):
                skip.add(twin_ids[0])
        while rounds < FOLLOWUP_LIMIT + len(twin_ids):
            rounds += 1
            if pending:
                current = pending.pop(0)
                if current in pending:
                    continue  # nudged twice: once is enough, later in the list
                if current in skip:
                    skip.discard(current)
                else:
                    process_twin(current)
            if not pending:
                if connection_id is None:
                    break
                now = time.monotonic()
                if steal_until is None:
                    steal_until = now + STEAL_SECONDS
                if now >= steal_until:
                    break  # the rest is left to the broker's tasks (and the sweeper)
                # Steal each other ready twin at most once per task; a blocked twin must not spin here.
                extra = [t for t in ready_twins(connection_id, limit=STEAL_BATCH) if t not in stolen]
                if not extra:
                    break
                stolen.update(extra)
                pending.extend(extra)
    finally:
        followups.reset(token)
        if cache_token is not None:
            task_cache.reset(cache_token)
        for leftover in pending:  # over the limit: hand them to the broker
            enqueue("replicas.tasks.process_twin", leftover, group=f"twin-{leftover}")


def ready_twins(connection_id: int, *, limit: int) -> list[int]:
    """Twins of a connection (or its local peer) with queued events that no worker holds right now."""
    now = timezone.now()
    connections = [connection_id]
    peer = task_cached(
        ("peer", connection_id),
        lambda: Connection.objects.filter(pk=connection_id).values_list("peer_id", flat=True).first(),
    )
    if peer:
        connections.append(peer)
    # The oldest ready events, deduplicated here: a DISTINCT made the database sort every pending event of
    # the connection on each call (16 ms with 10,000 queued on SQLite); this reads a few index entries.
    rows = (
        SyncEvent.objects.filter(connection_id__in=connections, status=Status.PENDING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(connection__status=Connection.Status.ACTIVE)
        .exclude(twin__lease_until__gt=now)
        .order_by("id")
        .values_list("twin_id", flat=True)[: limit * 4]
    )
    return [t for t in dict.fromkeys(rows) if t][:limit]


def _ready_events(twin_id: Any) -> Any:
    """A twin's events that are due: queued or interrupted, not backing off."""
    return SyncEvent.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lte=timezone.now()),
        twin_id=twin_id,
        status__in=[Status.PENDING, Status.PROCESSING],
    )


def _ready(twin_id: int) -> bool:
    return _ready_events(twin_id).exists()


def process_twin(twin_id: int) -> None:
    """Drain a twin's queue under its lease. Safe to call any number of times, from any worker."""
    for _ in range(3):
        token = acquire_lease(twin_id)
        if token is None:
            return
        try:
            _drain(twin_id, token)
        finally:
            release_lease(twin_id, token)
        # A nudge that arrived while we held the lease was dropped: look once more. (A deleted twin has no
        # events left: they cascade.)
        if not _ready(twin_id):
            return


def _drain(twin_id: int, token: str) -> None:
    db_retries = 0
    while True:
        # The head first: a drained twin costs one read (a deleted twin's events are gone with it).
        head = (
            SyncEvent.objects.filter(
                twin_id=twin_id, status__in=[Status.PENDING, Status.PROCESSING, Status.FAILED]
            )
            .order_by("id")
            .first()
        )
        if head is None:
            return
        twin = (
            Twin.objects.select_related(
                "connection__local_instance", "connection__remote_instance", "connection__peer"
            )
            .filter(pk=twin_id)
            .first()
        )
        if twin is None:
            return
        conn = twin.connection
        head.twin = twin
        head.connection = conn
        if head.status == Status.FAILED:
            Twin.objects.filter(pk=twin.pk).update(state=Twin.State.FAILED)
            return  # blocked until the error is resolved and retried
        if conn.status != Connection.Status.ACTIVE:
            Twin.objects.filter(pk=twin.pk).exclude(state=Twin.State.FAILED).update(state=Twin.State.PAUSED)
            return  # deactivated means queued: activation nudges every twin
        if head.not_before and head.not_before > timezone.now():
            return  # backing off; the sweeper nudges it when due
        if head.direction == Direction.INCOMING and head.kind == SyncEvent.Kind.UPDATE:
            if head.seq and head.seq <= twin.applied_seq:
                finish_event(head, Status.SKIPPED, "Already applied (duplicate delivery).")
                continue
            if head.seq and head.seq != twin.applied_seq + 1:
                return  # an earlier message has not arrived yet: keep order
        instance = conn.local_instance
        if not health.claim_probe(instance):
            # Its tracker is unreachable and this is not the moment to try it: the work waits (no request).
            wait_for(instance, twin)
            return
        if not renew_lease(twin.pk, token):
            return
        try:
            _process(twin, head)
        except OperationalError as exc:
            what = transient_db_error(exc)
            if what is None:
                if not handle_failure(twin, head, exc):
                    return
            elif db_retries < DB_RETRIES:
                # Rolled back as a whole: read the head and the twin again and redo the event.
                db_retries += 1
                logger.warning(
                    "Database %s while processing %s %s; retrying (%d of %d)",
                    what,
                    head.get_direction_display().lower(),
                    head.trace_id,
                    db_retries,
                    DB_RETRIES,
                )
                time.sleep(random.uniform(0.01, 0.05 * db_retries))
                continue
            else:
                retry_later(twin, head, f"The database reported a {what} {db_retries + 1} times in a row.")
                return
        except Exception as exc:  # every failure becomes a row an admin can see and retry
            if not handle_failure(twin, head, exc):
                return
        db_retries = 0
        if health.instance_answered(instance):
            resume_instance(instance)
        settle_state(twin.pk)


def _process(twin: Twin, head: SyncEvent) -> None:
    """One event, with its trace id, connection and item on every log line it causes."""
    item = head.item_key or twin.local_key
    with logs.bind(trace_id=head.trace_id, connection=twin.connection.pk, item=item):
        if head.direction == Direction.OUTGOING:
            process_outgoing(twin, head)
        else:
            process_incoming(twin, head)


SWEEP_LIMIT = 200


def sweep(*, older_than: timedelta = timedelta(seconds=20)) -> int:
    """Re-nudge twins whose work was lost or whose wait is over: an event left in progress by a worker that
    died (its twin's lease ran out: the heartbeat stopped), one queued whose task was lost (queued for longer
    than ``older_than``), one whose backoff or tracker's next try is due. Not one that still waits."""
    now = timezone.now()
    stale = (
        SyncEvent.objects.filter(
            status__in=[Status.PENDING, Status.PROCESSING],
            connection__status=Connection.Status.ACTIVE,
        )
        .filter(
            Q(status=Status.PROCESSING)
            | Q(not_before__isnull=True, updated_at__lt=now - older_than)
            | Q(not_before__lte=now)
        )
        .exclude(twin__lease_until__gt=now)
        .order_by("id")
        .values_list("twin_id", flat=True)[: SWEEP_LIMIT * 4]
    )
    # The oldest first, and a bounded number per run: in a backlog of thousands (a burst still queued, not
    # lost) re-nudging every twin every few seconds would flood the broker with tasks that find no work.
    twin_ids = [t for t in dict.fromkeys(stale) if t][:SWEEP_LIMIT]
    for twin_id in twin_ids:
        base.nudge(twin_id)
    return len(twin_ids)
