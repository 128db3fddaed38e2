"""The sync pipeline: outgoing and incoming sync events per twin, in order, exactly once in effect.

Rules it keeps (see docs/architecture.md, "The pipeline"):

* The database is the truth. A change records an outgoing ``SyncEvent`` in the same transaction
  (``on_item_changed``); tasks only nudge ``process_twin(twin_id)``, which takes the twin's lease (a
  conditional UPDATE, so two workers never work one twin) and drains its events oldest first.
* Strict order per twin: a failed event blocks the later events of its twin only (an entity error);
  incoming events apply in the sender's sequence order. Parallel across twins.
* At-least-once delivery, exactly-once effect: incoming events are unique on (connection, trace id);
  an item is created at most once (the twin records the local item in the same transaction on the built-in
  tracker); comments and attachments are matched through ``EntityLink`` rows.
* No echo: after applying an incoming replica the twin records the item's resulting outgoing replica as
  already sent, and writes made under this connection's actor do not queue events for it.
* Field-level merge with deterministic conflicts: when both sides changed the same field since their last
  exchange, the edit with the later ``updated`` time wins on both sides (ties: the higher instance UID).
"""

from __future__ import annotations

import copy
import errno
import functools
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Case, Exists, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from requests import RequestException

from connections.models import Connection
from exalate_node import logs
from exalate_node.tasks import enqueue
from instances import health
from instances.connectors import ConnectorError, get_connector
from instances.connectors.base import written_value_seen
from replicas.models import EntityLink, SyncError, SyncEvent, Trigger, Twin
from replicas.schema import ReplicaInvalid, validate_replica, wrap
from replicas.transport import transport_for

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
# Fields of the item the incoming side writes through the connector (comments/attachments apart).
ITEM_FIELDS = (
    "summary",
    "description",
    "status",
    "priority",
    "type",
    "labels",
    "assignee",
    "reporter",
    "dueDate",
    "customFields",
)
# Parts of a replica that change without the item changing in a way worth sending. ``edited`` holds, for
# each field a message changes, when a person last edited it on the sending side (per-field conflict times).
VOLATILE = ("updated", "eventTriggerContext", "edited")
Status = SyncEvent.Status
Direction = SyncEvent.Direction


def actor_for(connection: Connection) -> str:
    """The name the node writes under for this connection, so its own writes are recognised."""
    return f"exalate-node:{connection.uid}"


# --- intake -------------------------------------------------------------------------------------------------


def on_item_changed(*, instance_id: int, item_id: str, item_key: str, actor: str) -> None:
    """A local item changed: queue an outgoing event on each connection it is synced on (outbox).

    Called inside the tracker's transaction. A write made by this node for connection C does not queue an
    event for C (no echo), but does for the item's other connections.
    """
    twins = list(
        Twin.objects.filter(connection__local_instance_id=instance_id, local_id=item_id).select_related(
            "connection"
        )
    )
    for twin in twins:
        if twin.unexalated_at or twin.connection.status == Connection.Status.PENDING:
            continue
        if actor == actor_for(twin.connection):
            continue
        queue_outgoing(twin, item_key=item_key)
    from replicas.triggers import fire_triggers

    if actor.startswith("exalate-node:") and not _cached(
        ("triggers", instance_id),
        lambda: Trigger.objects.filter(active=True, connection__local_instance_id=instance_id).exists(),
    ):
        return  # a sync write in a worker task, and no trigger on this instance (checked at most 2 s ago)
    fire_triggers(instance_id=instance_id, item_id=item_id, exclude={t.connection_id for t in twins})


def queue_outgoing(
    twin: Twin, *, item_key: str = "", kind: str = SyncEvent.Kind.UPDATE, nudge_now: bool = True
) -> SyncEvent:
    event = SyncEvent.objects.create(
        connection_id=twin.connection_id,
        twin=twin,
        direction=Direction.OUTGOING,
        kind=kind,
        item_key=item_key or twin.local_key,
    )
    Twin.objects.filter(pk=twin.pk, state__in=[Twin.State.SYNCHRONIZED, Twin.State.WAITING]).update(
        state=Twin.State.QUEUED
    )
    if nudge_now:
        nudge(twin.pk)
    return event


# While a worker runs ``run_worker_task``, nudges for twins are collected here and worked through by the same
# task after its own twin (no broker round trip); outside it, a nudge enqueues a task.
_followups: ContextVar[list[int] | None] = ContextVar("pipeline_followups", default=None)
FOLLOWUP_LIMIT = 200
# How long a task keeps taking other ready twins of its connection once its own work is done. Bounded, so
# a worker that took a single change goes back to the broker soon, where the next single change waits: a
# backfill (a bulk job, a burst of thousands) must not keep every worker busy for seconds.
STEAL_SECONDS = 0.3
STEAL_BATCH = 8


# Per worker task: what does not need reading again for every twin (the rules in force per connection, the
# peer of a connection). Bounded in age, so a task that runs long still picks up newly published rules.
_task_cache: ContextVar[dict[Any, tuple[float, Any]] | None] = ContextVar("pipeline_task_cache", default=None)
TASK_CACHE_SECONDS = 2.0


def _cached(key: Any, load: Any) -> Any:
    cache = _task_cache.get()
    if cache is None:
        return load()
    hit = cache.get(key)
    now = time.monotonic()
    if hit is None or hit[0] < now:
        hit = (now + TASK_CACHE_SECONDS, load())
        cache[key] = hit
    return hit[1]


def _rules_for(conn: Connection) -> Any:
    """The rules in force on ``conn`` (read once per worker task and connection, at most 2 s old)."""
    from syncrules.services import rules_current

    return _cached(("rules", conn.pk), lambda: rules_current(conn))


def nudge(twin_id: int) -> None:
    pending = _followups.get()
    if pending is not None and len(pending) < FOLLOWUP_LIMIT:
        # Processed by this task once it is done with its twin, i.e. after every transaction committed.
        pending.append(twin_id)
        return
    enqueue("replicas.tasks.process_twin", twin_id, group=f"twin-{twin_id}")


def run_worker_task(twin_id: int) -> None:
    """The worker's entry point: drain the twin, then the twins its work nudged (the peer of a local
    connection, acks), then other ready twins of the same connection, so a burst costs few tasks.
    Every twin is still taken under its own lease, so several workers can do this at once."""
    outer = _followups.get()
    if outer is not None:  # called inline from within a task: the running loop takes it
        if twin_id not in outer:
            outer.append(twin_id)
        return
    run_twins([twin_id])


def run_twins(twin_ids: list[int], *, connection_id: int | None = None) -> None:
    """Work through the given twins (and what they nudge, and other ready twins of their connection) in
    this task; see ``run_worker_task``."""
    outer = _followups.get()
    if outer is not None:
        outer.extend(t for t in twin_ids if t not in outer)
        return
    if not twin_ids:
        return
    pending: list[int] = list(twin_ids)
    token = _followups.set(pending)
    cache_token = _task_cache.set({}) if _task_cache.get() is None else None
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
        _followups.reset(token)
        if cache_token is not None:
            _task_cache.reset(cache_token)
        for leftover in pending:  # over the limit: hand them to the broker
            enqueue("replicas.tasks.process_twin", leftover, group=f"twin-{leftover}")


def ready_twins(connection_id: int, *, limit: int) -> list[int]:
    """Twins of a connection (or its local peer) with queued events that no worker holds right now."""
    now = timezone.now()
    connections = [connection_id]
    peer = _cached(
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


def receive(
    *,
    connection: Connection,
    trace_id: str,
    kind: str,
    seq: int,
    replica: dict[str, Any] | None,
    remote_item_id: str,
) -> tuple[SyncEvent, bool]:
    """Store an incoming event idempotently (unique on connection + trace id) and nudge its twin.

    Returns the event and whether it was new. The replica must already be validated by the caller.
    """
    existing = SyncEvent.objects.filter(
        connection=connection, direction=Direction.INCOMING, trace_id=trace_id
    ).first()
    if existing is not None:
        return existing, False
    hub = (replica or {}).get("hubIssue") or {}
    twin = Twin.objects.filter(connection=connection, remote_id=remote_item_id).first()
    if twin is None:
        twin = Twin.objects.create(
            connection=connection,
            remote_id=remote_item_id,
            remote_key=hub.get("key") or "",
            remote_url=(hub.get("url") or "")[:500],
        )
    try:
        with transaction.atomic():
            event = SyncEvent.objects.create(
                connection=connection,
                twin=twin,
                direction=Direction.INCOMING,
                kind=kind,
                trace_id=trace_id,
                seq=seq,
                replica=replica,
                item_key=hub.get("key") or "",
                peer_seen_seq=twin.acked_seq,
            )
    except IntegrityError:  # a concurrent delivery of the same message got there first
        return SyncEvent.objects.get(
            connection=connection, direction=Direction.INCOMING, trace_id=trace_id
        ), False
    nudge(twin.pk)
    return event, True


def ack_payload(event: SyncEvent, twin: Twin) -> dict[str, Any]:
    """What the receiver tells the sender after applying ``event``: where the item lives here, and which
    of our comments and attachments copy which of theirs (so the sender can match them too)."""
    return {
        "trace_id": str(event.trace_id),
        "remote_item_id": twin.local_id,
        "remote_key": twin.local_key,
        "remote_url": twin.local_url,
        "local_item_id": twin.remote_id,
        "links": [
            {"kind": kind, "local_id": local_id, "remote_id": remote_id}
            for kind, local_id, remote_id in twin.links.values_list("kind", "local_id", "remote_id")
        ],
    }


def acknowledge(
    *,
    connection: Connection,
    trace_id: str,
    remote_item_id: str,
    remote_key: str,
    remote_url: str,
    local_item_id: str,
    links: list[dict[str, str]] | None = None,
) -> None:
    """The peer applied our event: learn the remote item (and comment/attachment ids), mark the event done."""
    now = timezone.now()
    events = SyncEvent.objects.filter(connection=connection, direction=Direction.OUTGOING, trace_id=trace_id)
    events.update(status=Status.DONE, processed_at=now, delivered=True)
    twin = Twin.objects.filter(connection=connection, local_id=local_item_id).first()
    if twin is None:
        return
    twin.remote_id = twin.remote_id or remote_item_id
    twin.remote_key = remote_key or twin.remote_key
    twin.remote_url = (remote_url or twin.remote_url)[:500]
    twin.last_synced_at = now
    # The state follows from the events, in the same UPDATE (a failed twin has no events in flight here, so
    # only waiting, queued and in-progress twins change).
    Twin.objects.filter(pk=twin.pk).update(
        remote_id=twin.remote_id,
        remote_key=twin.remote_key,
        remote_url=twin.remote_url,
        last_synced_at=now,
        acked_seq=Greatest(F("acked_seq"), Coalesce(Subquery(events.values("seq")[:1]), Value(0))),
        state=Case(
            When(
                state__in=[Twin.State.WAITING, Twin.State.QUEUED, Twin.State.IN_PROGRESS],
                then=_state_case(),
            ),
            default=F("state"),
        ),
    )
    if not links:
        return
    # The peer's link (its id -> our id) is ours reversed. A link we know already (a redelivered ack, a
    # concurrent one) is left as it is: one INSERT, conflicts ignored, no savepoint.
    new_links = [
        EntityLink(
            twin=twin,
            kind=link.get("kind"),
            local_id=str(link.get("remote_id")),
            remote_id=str(link.get("local_id")),
        )
        for link in links
        if link.get("kind") in EntityLink.Kind.values
    ]
    if new_links:
        EntityLink.objects.bulk_create(new_links, ignore_conflicts=True)


# --- the per-twin worker ------------------------------------------------------------------------------------


class _Heartbeat:
    """Renews the twin leases this process holds, every third of the lease, from a thread of its own: an
    event that waits long on a tracker keeps its twin, while a worker that dies loses its leases within
    ``PIPELINE_LEASE_SECONDS`` (not a long lease's worth), and the sweeper hands its work to another."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, str] = {}
        self.pid = 0
        self.wake = threading.Event()
        self.due = 0.0  # when the next renewal is due (time.monotonic)

    def hold(self, twin_id: int, token: str) -> None:
        with self.lock:
            first = len(self.held) == 0
            self.held[twin_id] = token
            if first:  # the first lease after an idle spell: renew it a third of a lease from now
                self.due = time.monotonic() + LEASE.total_seconds() / 3
                self.wake.set()
            if self.pid != os.getpid():  # first lease in this process (or in a forked worker): start beating
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="lease-heartbeat", daemon=True).start()

    def drop(self, twin_id: int) -> None:
        with self.lock:
            self.held.pop(twin_id, None)

    def _run(self) -> None:
        from django.db import connections

        pid = os.getpid()
        while self.pid == pid:
            self.wake.wait(timeout=max(0.01, self.due - time.monotonic()))
            self.wake.clear()
            if time.monotonic() < self.due:
                continue
            self.due = time.monotonic() + LEASE.total_seconds() / 3
            with self.lock:
                held = dict(self.held)
            if not held:
                continue
            try:
                until = timezone.now() + LEASE
                for twin_id, token in held.items():
                    Twin.objects.filter(pk=twin_id, lease_token=token).update(lease_until=until)
            except Exception:  # a beat that fails is retried at the next one; the lease still has 2/3 left
                logger.warning("Could not renew the twin leases of this worker", exc_info=True)
            finally:
                connections.close_all()  # this thread's own connection


_heartbeat = _Heartbeat()


def _acquire(twin_id: int) -> str | None:
    token = uuid.uuid4().hex
    now = timezone.now()
    taken = (
        Twin.objects.filter(pk=twin_id)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_token=token, lease_until=now + LEASE)
    )
    if taken != 1:
        return None  # another worker holds it: it will drain the queue
    _heartbeat.hold(twin_id, token)
    return token


def _renew(twin_id: int, token: str) -> bool:
    """Extend the lease before each event, and show the twin as in progress (unless failed or unexalated)."""
    updated = Twin.objects.filter(pk=twin_id, lease_token=token).update(
        lease_until=timezone.now() + LEASE,
        state=Case(
            When(state__in=[Twin.State.FAILED, Twin.State.UNEXALATED], then=F("state")),
            default=Value(Twin.State.IN_PROGRESS),
        ),
    )
    return updated == 1


def _release(twin_id: int, token: str) -> None:
    _heartbeat.drop(twin_id)
    Twin.objects.filter(pk=twin_id, lease_token=token).update(lease_token="", lease_until=None)


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
        token = _acquire(twin_id)
        if token is None:
            return
        try:
            _drain(twin_id, token)
        finally:
            _release(twin_id, token)
        # A nudge that arrived while we held the lease was dropped: look once more. (A deleted twin has no
        # events left: they cascade.)
        if not _ready(twin_id):
            return


# A transaction the database aborted to break a deadlock, or for a serialization failure, is retried at
# once (PostgreSQL's advice): a few times, then with the event's usual backoff. SQLite's "database is
# locked" (its busy timeout ran out) is the same kind of transient failure.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
DB_RETRIES = 5


def transient_db_error(exc: BaseException) -> str | None:
    """What went wrong when ``exc`` is a transient database failure worth retrying, else None."""
    if not isinstance(exc, OperationalError):
        return None
    cause = exc.__cause__
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if state in TRANSIENT_SQLSTATES:
        return "deadlock" if state == "40P01" else "serialization failure"
    if "database is locked" in str(exc):
        return "lock timeout"
    return None


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
                _finish(head, Status.SKIPPED, "Already applied (duplicate delivery).")
                continue
            if head.seq and head.seq != twin.applied_seq + 1:
                return  # an earlier message has not arrived yet: keep order
        instance = conn.local_instance
        if not health.claim_probe(instance):
            # Its tracker is unreachable and this is not the moment to try it: the work waits (no request).
            _wait_for(instance, twin)
            return
        if not _renew(twin.pk, token):
            return
        try:
            with logs.bind(trace_id=head.trace_id, connection=conn.pk, item=head.item_key or twin.local_key):
                if head.direction == Direction.OUTGOING:
                    _process_outgoing(twin, head)
                else:
                    _process_incoming(twin, head)
        except OperationalError as exc:
            what = transient_db_error(exc)
            if what is None:
                if not _handle_failure(twin, head, exc):
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
            if not _handle_failure(twin, head, exc):
                return
        db_retries = 0
        if health.instance_answered(instance):
            resume_instance(instance)
        _settle_state(twin.pk)


def _state_case() -> Case:
    """The twin's state derived from its events (for an UPDATE of twins)."""
    events = SyncEvent.objects.filter(twin_id=OuterRef("pk"))
    return Case(
        When(Exists(events.filter(status=Status.FAILED)), then=Value(Twin.State.FAILED)),
        When(
            Exists(events.filter(status__in=[Status.PENDING, Status.PROCESSING])),
            then=Value(Twin.State.QUEUED),
        ),
        When(
            Exists(events.filter(direction=Direction.OUTGOING, status=Status.SENT)),
            then=Value(Twin.State.WAITING),
        ),
        default=Value(Twin.State.SYNCHRONIZED),
    )


_SETTLE_SQL: dict[str, str] = {}


def _settle_state(twin_id: int) -> None:
    """Derive the twin's state from its events, in one UPDATE (failed and unexalated twins stay so).

    The same statement as ``Twin.objects.filter(pk=..).exclude(state__in=..).update(state=_state_case())``,
    written once per process: building the ORM's CASE with three EXISTS cost more than running it."""
    from django.db import connection as db

    sql = _SETTLE_SQL.get(db.vendor)
    if sql is None:
        q = db.ops.quote_name
        twin, event = q(Twin._meta.db_table), q(SyncEvent._meta.db_table)
        status, direction = q("status"), q("direction")

        def exists(where: str) -> str:
            # Identifiers from the models only; every value is a parameter.
            return f"EXISTS (SELECT 1 FROM {event} e WHERE e.{q('twin_id')} = {twin}.{q('id')} AND {where})"  # noqa: S608

        sql = _SETTLE_SQL[db.vendor] = (
            f"UPDATE {twin} SET {q('state')} = CASE"  # noqa: S608 - identifiers from the models
            f" WHEN {exists(f'e.{status} = %s')} THEN %s"
            f" WHEN {exists(f'e.{status} IN (%s, %s)')} THEN %s"
            f" WHEN {exists(f'e.{direction} = %s AND e.{status} = %s')} THEN %s"
            f" ELSE %s END WHERE {q('id')} = %s AND {q('state')} NOT IN (%s, %s)"
        )
    with db.cursor() as cursor:
        cursor.execute(
            sql,
            [  # plain values (not the enum members) for every driver
                Status.FAILED.value,
                Twin.State.FAILED.value,
                Status.PENDING.value,
                Status.PROCESSING.value,
                Twin.State.QUEUED.value,
                Direction.OUTGOING.value,
                Status.SENT.value,
                Twin.State.WAITING.value,
                Twin.State.SYNCHRONIZED.value,
                twin_id,
                Twin.State.FAILED.value,
                Twin.State.UNEXALATED.value,
            ],
        )


def _finish(event: SyncEvent, status: str, note: str = "") -> None:
    SyncEvent.objects.filter(pk=event.pk).update(
        status=status, processed_at=timezone.now(), error=note, not_before=None
    )


def _lock_pair(twin: Twin) -> Twin:
    """Lock the twin's row for this transaction and return it as it is now.

    On a local connection the transaction also writes the peer's twin of the same pair (the in-process
    delivery inserts its event, the ack updates it), and the peer's worker does the same the other way
    round: each locking its own twin first made PostgreSQL abort one of them with a deadlock. Both twins
    are therefore locked up front, in id order. ``no_key``: FOR NO KEY UPDATE does not block the foreign-key
    checks (FOR KEY SHARE) of events inserted for the twin meanwhile; FOR UPDATE did.
    """
    conn = twin.connection
    ids = [twin.pk]
    if conn.peer_id:
        pairing = Q(local_id=twin.remote_id) if twin.remote_id else Q(remote_id=twin.local_id)
        if twin.remote_id or twin.local_id:
            ids += Twin.objects.filter(pairing, connection_id=conn.peer_id).values_list("pk", flat=True)[:1]
    locked = None
    for pk in sorted(ids):  # one row at a time, so the order holds whatever plan the database picks
        row = Twin.objects.select_for_update(no_key=True).filter(pk=pk).first()
        if pk == twin.pk:
            locked = row
    if locked is None:
        raise Twin.DoesNotExist(f"Twin {twin.pk} was deleted while it was being processed.")
    return locked


# What an apply writes to its twin (``Twin.save(update_fields=...)``).
APPLY_FIELDS = [
    "local_id",
    "local_key",
    "local_url",
    "prev_remote_replica",
    "remote_replica",
    "remote_id",
    "remote_key",
    "remote_url",
    "applied_seq",
    "last_synced_at",
    "unexalated_at",
    "sync_written_updated",
    "person_updated",
    "local_replica",
    "state",
]


# --- outgoing -----------------------------------------------------------------------------------------------


LISTS_BY_ID = ("comments", "attachments")


def _by_id(entries: Any) -> list[Any]:
    if not isinstance(entries, list):
        return entries
    return sorted(entries, key=lambda e: str(e.get("id")) if isinstance(e, dict) else str(e))


def _strip(hub: dict[str, Any] | None) -> dict[str, Any]:
    """A replica as compared for "did anything change": no volatile fields, comments and attachments in
    id order."""
    return {k: _by_id(v) if k in LISTS_BY_ID else v for k, v in (hub or {}).items() if k not in VOLATILE}


def echo_replica(
    sent: dict[str, Any] | None, before: dict[str, Any] | None, after: dict[str, Any]
) -> dict[str, Any]:
    """The local replica to record after applying an incoming change (so it does not echo back).

    Only what the apply changed (``before`` → ``after``, both built by the outgoing rules) counts as
    already sent; a local change still waiting in the queue keeps its old value here, so it is still seen
    as a change and sent when its turn comes.
    """
    if sent is None or before is None:
        return after
    result = dict(sent)
    for key in set(after) | set(before):
        if key in LISTS_BY_ID or key in VOLATILE:
            continue
        if before.get(key) != after.get(key):
            result[key] = after.get(key)
    for key in LISTS_BY_ID:
        was = {e.get("id"): e for e in before.get(key) or [] if isinstance(e, dict)}
        now = {e.get("id"): e for e in after.get(key) or [] if isinstance(e, dict)}
        merged = []
        for entry in sent.get(key) or []:
            eid = entry.get("id") if isinstance(entry, dict) else None
            if eid in now and was.get(eid) != now[eid]:
                merged.append(now[eid])  # edited by the apply
            elif eid in was and eid not in now:
                continue  # deleted by the apply
            else:
                merged.append(entry)  # untouched by the apply: what we had sent
        known = {e.get("id") for e in merged if isinstance(e, dict)}
        merged += [e for eid, e in now.items() if eid not in was and eid not in known]  # created by the apply
        result[key] = merged
    result["updated"] = after.get("updated")
    return result


def build_outgoing(conn: Connection, item: dict[str, Any], rules: Any) -> tuple[dict[str, Any], Any]:
    """Run the outgoing rules on a local item: the hubIssue to send and the engine's result."""
    from syncrules import sandbox

    result = sandbox.run_outgoing(rules.outgoing, issue=item, context=script_context(conn))
    hub = dict(result.replica or {})
    # The pipeline's own bookkeeping fields are not the script's to choose.
    hub["id"] = item["id"]
    hub.setdefault("key", item.get("key"))
    hub.setdefault("url", item.get("url"))
    hub.setdefault("updated", item.get("updated"))
    return hub, result


def _process_outgoing(twin: Twin, head: SyncEvent) -> None:
    conn = twin.connection
    # Claim the head and every later queued outgoing update: one read of the item covers them all
    # (their changes committed before this read), so a burst of edits costs one message. An incoming
    # event queued after the head ends the batch (one query for both).
    if head.kind == SyncEvent.Kind.UPDATE:
        queued = (
            SyncEvent.objects.filter(twin_id=twin.pk, status__in=[Status.PENDING, Status.PROCESSING])
            .filter(
                Q(direction=Direction.OUTGOING, kind=head.kind)
                | Q(direction=Direction.INCOMING, id__gt=head.id, status=Status.PENDING)
            )
            .order_by("id")
            .values_list("id", "direction")
        )
        batch = []
        for event_id, direction in queued:
            if direction == Direction.INCOMING:
                break
            batch.append(event_id)
    else:
        batch = [head.id]
    SyncEvent.objects.filter(pk__in=batch).update(status=Status.PROCESSING, attempts=head.attempts + 1)
    transport = transport_for(conn)

    if head.kind == SyncEvent.Kind.UNEXALATE:
        with transaction.atomic():
            twin.sent_seq += 1
            Twin.objects.filter(pk=twin.pk).update(sent_seq=twin.sent_seq)
            SyncEvent.objects.filter(pk=head.pk).update(status=Status.SENT, seq=twin.sent_seq)
            head.status, head.seq = Status.SENT, twin.sent_seq
            transport.send(head)
        return

    rules = _rules_for(conn)
    connector = get_connector(conn.local_instance, actor=actor_for(conn))
    item = connector.get_item(twin.local_id)
    hub, result = build_outgoing(conn, item, rules)
    if hub.get("updated") == item.get("updated"):
        # The time of the last edit by a person here, so the receiver settles conflicts on the same times.
        hub["updated"] = person_time(twin, item.get("updated")) or item.get("updated")
    if not twin.remote_id and twin.remote_key:
        # Connect: the receiver links this item to its existing one instead of creating an item.
        hub["eventTriggerContext"] = {**(hub.get("eventTriggerContext") or {}), "connectTo": twin.remote_key}
    payload = wrap(hub)
    if twin.local_replica is not None:
        # What the receiver needs to tell our changes from values it simply has not seen change: the
        # previous value of every field that differs from what we last sent (or recorded as in sync).
        sent = twin.local_replica
        payload["baseline"] = {
            k: sent.get(k) for k in set(hub) | set(sent) if k not in VOLATILE and hub.get(k) != sent.get(k)
        }
        # When a person last edited each field this message changes, where the tracker keeps per-field
        # history: the receiver settles a conflict on that field with it (else with ``updated``).
        times = connector.field_edit_times(item) if set(payload["baseline"]) & set(ITEM_FIELDS) else {}
        # "" (no person ever edited it here) is sent too: the receiver must not time such a field with
        # this item's latest edit, which was another field's.
        edited = {k: times[k] for k in payload["baseline"] if k in times}
        if edited:
            hub["edited"] = edited
    payload = validate_replica(payload)
    with transaction.atomic():
        others = [i for i in batch if i != head.pk]
        if others:
            SyncEvent.objects.filter(pk__in=others).update(
                status=Status.SKIPPED,
                processed_at=timezone.now(),
                error=f"Sent together with {head.trace_id}.",
            )
        locked = _lock_pair(twin)
        locked.connection = conn  # the connection (and its peer) as read for this event
        twin = head.twin = locked
        if _strip(hub) == _strip(twin.local_replica) and not result.sync_back:
            _finish(head, Status.SKIPPED, "Nothing to send: the replica did not change.")
            logger.info("Nothing to send for %s: the replica did not change", item.get("key"))
        else:
            twin.sent_seq += 1
            twin.local_replica = hub
            twin.local_key = item.get("key") or twin.local_key
            twin.local_url = (item.get("url") or twin.local_url)[:500]
            twin.state = Twin.State.WAITING
            twin.save(update_fields=["sent_seq", "local_replica", "local_key", "local_url", "state"])
            SyncEvent.objects.filter(pk=head.pk).update(
                status=Status.SENT, seq=twin.sent_seq, replica=payload, rules_version=rules, error=""
            )
            head.status, head.seq, head.replica, head.rules_version, head.error = (
                Status.SENT,
                twin.sent_seq,
                payload,
                rules,
                "",
            )
            transport.send(head)
            logger.info("Sent %s to %s as message %d", twin.local_key, conn.name, twin.sent_seq)
    if result.unexalate:
        unexalate(twin=twin)


# --- incoming -----------------------------------------------------------------------------------------------


class Written:
    """What one apply wrote to the local item: fields (with the values written), and the ids of the comments
    and attachments it created or edited, and of those it deleted."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.entries: dict[str, set[str]] = {key: set() for key in LISTS_BY_ID}
        self.removed: dict[str, set[str]] = {key: set() for key in LISTS_BY_ID}

    def view(
        self, before: dict[str, Any], applied: dict[str, Any], *, own_change: Callable[[], bool | None]
    ) -> tuple[dict[str, Any], bool]:
        """The item as the apply left it, seen only through what the apply wrote, and whether a person
        edited the item while the apply ran (between its first read and its read-back).

        ``applied`` (read back from the tracker, so its own formatting counts) gives the written fields and
        entries, ``before`` everything else: whatever else differs between the two reads is a person's edit
        made while the apply ran, and stays a change to send. A written field read back with another value
        than the one written (``written_value_seen``) is the tracker's reformatting when ``own_change()``
        (the tracker's history) says the item's latest change is the node's; otherwise a person edited that
        very field after the write, and the view keeps the value written, so the person's value is sent.
        """
        seen = dict(applied)
        person = False
        for field in ITEM_FIELDS:
            if field in self.fields:
                written = self.fields[field]
                if not written_value_seen(field, written, applied.get(field)):
                    if own_change() is not True:
                        seen[field], person = written, True
                continue
            if field in before:
                seen[field] = before[field]
            else:
                seen.pop(field, None)
            person = person or not written_value_seen(field, before.get(field), applied.get(field))
        for key in LISTS_BY_ID:
            old = {str(e.get("id")): e for e in before.get(key) or [] if isinstance(e, dict)}
            written, removed = self.entries[key], self.removed[key]
            entries, listed = [], set()
            for entry in applied.get(key) or []:
                eid = str(entry.get("id")) if isinstance(entry, dict) else None
                if eid in written:
                    entries.append(entry)
                elif eid in old:
                    entries.append(old[eid])  # as it was: a person may have edited it meanwhile
                    person = person or old[eid] != entry
                else:
                    person = True
                    continue  # added by a person meanwhile
                listed.add(eid)
            # Gone from the re-read but not deleted by the apply: a person deleted it meanwhile.
            gone = [e for eid, e in old.items() if eid not in listed and eid not in removed]
            entries += gone
            person = person or bool(gone)
            seen[key] = entries
        return seen, person


def _blank_item() -> dict[str, Any]:
    return {"labels": [], "comments": [], "attachments": [], "customFields": {}}


def _links(twin: Twin, kind: str) -> dict[str, str]:
    """local id -> remote id"""
    return dict(twin.links.filter(kind=kind).values_list("local_id", "remote_id"))


def _annotate(item: dict[str, Any], twin: Twin) -> dict[str, Any]:
    for kind, field in ((EntityLink.Kind.COMMENT, "comments"), (EntityLink.Kind.ATTACHMENT, "attachments")):
        links = _links(twin, kind) if twin.pk else {}
        for entry in item.get(field) or []:
            if entry.get("id") in links:
                entry["remoteId"] = links[entry["id"]]
    return item


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def incoming_previous(payload: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """``previous`` for the incoming rules: the sender's state before this change. The sender's
    ``baseline`` says exactly which fields it changed; a peer that sends none is compared with the replica
    received last time."""
    baseline = payload.get("baseline")
    if isinstance(baseline, dict):
        return {**payload["hubIssue"], **baseline}
    return stored or {}


def person_time(twin: Twin, item_updated: str | None) -> str | None:
    """When the item's values were last edited by a person (not by this node applying the other side's
    changes): its ``updated``, unless that is the time of our own last apply; then the person's time
    recorded at that apply (None when nobody edited it here)."""
    if item_updated and twin.sync_written_updated and item_updated == twin.sync_written_updated:
        return twin.person_updated or None
    return item_updated


def edited_here(twin: Twin, ours: dict[str, Any], head: SyncEvent) -> set[str] | None:
    """The fields this side edited that the sender of ``head`` had not seen when it built it.

    A field counts when its value here differs from the value this side had after the last sync (``ours``,
    built by the outgoing rules, against ``Twin.local_replica``: what we last sent, or recorded as in sync
    after an apply), or when one of our messages that crossed ``head`` on the way changed it (sent after the
    last of ours the sender had applied: ``head.peer_seen_seq``). A value the incoming rules mapped, kept or
    could not translate is therefore never a local edit: the sides may name it differently (Redmine's New,
    our Open) without anyone having touched it. None when this cannot be told (an event stored before the
    node recorded ``peer_seen_seq``, or nothing sent yet).
    """
    agreed = twin.local_replica
    if head.peer_seen_seq is None or agreed is None:
        return None
    fields = {field for field in ITEM_FIELDS if ours.get(field) != agreed.get(field)}
    crossed = SyncEvent.objects.filter(
        twin_id=twin.pk,
        direction=Direction.OUTGOING,
        kind=SyncEvent.Kind.UPDATE,
        seq__gt=head.peer_seen_seq,
        status__in=[Status.SENT, Status.DONE],
    ).values_list("replica", flat=True)
    for payload in crossed:
        baseline = payload.get("baseline") if isinstance(payload, dict) else None
        fields |= set(ITEM_FIELDS) & set(baseline) if isinstance(baseline, dict) else set(ITEM_FIELDS)
    return fields


NEVER = datetime.min.replace(tzinfo=UTC)


def field_time(times: dict[str, Any], field: str, fallback: datetime | None) -> datetime | None:
    """When a person last edited ``field``, from per-field history (``Connector.field_edit_times``: "" is
    never since the item was created), else ``fallback`` (the item's person-edit time)."""
    if field not in times:
        return fallback
    value = times[field]
    if value == "":
        return NEVER
    return _parse_time(value) or fallback


def resolve_conflicts(
    hub: dict[str, Any],
    previous: dict[str, Any],
    ours: dict[str, Any],
    *,
    edited: set[str] | None,
    local_times: Callable[[], dict[str, str]],
    local_wins_ties: bool,
) -> tuple[dict[str, Any], list[str]]:
    """Settle fields both sides edited since they last agreed: the later edit of that field wins.

    The sender edited field F when its replica differs from its baseline (``previous``: the sender says so);
    this side edited F when F is in ``edited`` (``edited_here``). A conflict is both, to different values.
    When ours is later, F is marked unchanged in ``previous`` so the incoming rules keep it. (``edited`` None:
    this side's edit is guessed as a value differing from the sender's baseline, which is wrong wherever the
    two sides name values differently.)

    The times are person-edit times, per field where the tracker keeps a per-field history (the sender's
    ``edited``; ``local_times()`` here, asked only when there is a conflict), else the item's (``updated``:
    ``person_time``, and the sender's replica carries its own). Both nodes compare the same two times and
    agree on the winner, even after one of them applied some of the other's changes in between.
    """
    remote_item, local_item = _parse_time(hub.get("updated")), _parse_time(ours.get("updated"))
    if not previous or remote_item is None or local_item is None:
        return previous, []
    remote_times = hub.get("edited") if isinstance(hub.get("edited"), dict) else {}
    adjusted = dict(previous)
    kept: list[str] = []
    mine_times: dict[str, str] | None = None
    for field in ITEM_FIELDS:
        remote, before, mine = hub.get(field), previous.get(field), ours.get(field)
        here = field in edited if edited is not None else mine != before
        if remote == before or not here or mine == remote:
            continue
        if mine_times is None:
            mine_times = local_times()
        remote_time = field_time(remote_times, field, remote_item)
        local_time = field_time(mine_times, field, local_item)
        if local_time > remote_time or (local_time == remote_time and local_wins_ties):
            adjusted[field] = remote
            kept.append(field)
    return adjusted, kept


def agreed_before(
    twin: Twin,
    ours: dict[str, Any] | None,
    changed: set[str],
    wanted: dict[str, Any],
    held: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """``ours`` (the item before this apply, through the outgoing rules) as ``echo_replica`` should see it.

    A field the sender changed in this message (``changed``) that already held, before this apply (``held``),
    the value the incoming rules want (``wanted``) was written by an earlier attempt of this event (it wrote,
    then died or never heard back) or typed by a person to the same value: either way the two sides now agree
    on it. It counts as changed by this apply (its value before is the one last recorded), so it is recorded
    as in sync. Otherwise the stale value recorded makes the node send the field back later as a change of
    its own, which can beat a person's newer edit on the other side (found by the tracker-fault run, seed
    502654: a summary written just before the worker was SIGKILLed came back over a later one).
    """
    if ours is None or held is None or twin.local_replica is None:
        return ours
    agreed = dict(ours)
    for field in changed & set(ITEM_FIELDS):
        if field in wanted and written_value_seen(field, wanted.get(field), held.get(field)):
            agreed[field] = twin.local_replica.get(field)
    return agreed


def _process_incoming(twin: Twin, head: SyncEvent) -> None:
    from syncrules import sandbox

    conn = twin.connection
    SyncEvent.objects.filter(pk=head.pk).update(status=Status.PROCESSING, attempts=head.attempts + 1)
    transport = transport_for(conn)
    if head.kind == SyncEvent.Kind.UNEXALATE:
        with transaction.atomic():
            Twin.objects.filter(pk=twin.pk).update(
                unexalated_at=timezone.now(),
                state=Twin.State.UNEXALATED,
                applied_seq=max(head.seq, twin.applied_seq),
            )
            _finish(head, Status.DONE)
        return

    payload = validate_replica(head.replica)
    hub = payload["hubIssue"]
    rules = _rules_for(conn)
    connector = get_connector(conn.local_instance, actor=actor_for(conn))
    first_sync = not twin.local_id
    connect_to = (hub.get("eventTriggerContext") or {}).get("connectTo")
    if first_sync and connect_to:
        ref = connector.find_item(str(connect_to))
        if ref is not None:
            twin.local_id, twin.local_key, twin.local_url = ref.id, ref.key, ref.url[:500]
            first_sync = False
    if first_sync:
        before, previous, lost, ours, ours_edited = _blank_item(), {}, [], None, None
        unannotated = held = None  # set once the item exists (below)
    else:
        current = connector.get_item(twin.local_id)
        ours, _ = build_outgoing(conn, current, rules)
        unannotated = copy.deepcopy(current)
        held = unannotated  # the item as this apply found it
        before = _annotate(current, twin)
        ours_edited = person_time(twin, current.get("updated"))
        previous, lost = resolve_conflicts(
            hub,
            incoming_previous(payload, twin.remote_replica),
            {**ours, "updated": ours_edited},
            edited=edited_here(twin, ours, head),
            local_times=lambda: connector.field_edit_times(current),
            local_wins_ties=conn.local_instance.uid
            > (conn.remote_instance.uid if conn.remote_instance else ""),
        )
    changed = {field for field in hub if hub.get(field) != previous.get(field)}  # by the sender, not kept
    result = sandbox.run_incoming(
        rules.incoming,
        replica=hub,
        issue=copy.deepcopy(before),
        previous=previous,
        first_sync=first_sync,
        context=script_context(conn),
    )
    after = result.issue or {}
    create_fields = {
        k: after.get(k) for k in (*ITEM_FIELDS, "project") if after.get(k) not in (None, "", [], {})
    }

    # On the built-in tracker every write shares one transaction with the twin's bookkeeping: all or nothing.
    builtin = conn.local_instance.tracker_type == "builtin"
    atomic = transaction.atomic() if builtin else nullcontext()
    # Elsewhere an earlier attempt of this event may have written without hearing back (its answer was
    # lost, or its worker died waiting): this attempt adopts what it finds written instead of repeating it.
    # (An admin's retry sets attempts to 1, so it counts too.)
    retrying = not builtin and head.attempts > 0
    if first_sync and retrying:
        earlier = _created_earlier(connector, twin, create_fields, since=head.created_at - CREATE_CLOCK_SKEW)
        if earlier is not None:
            twin.local_id, twin.local_key, twin.local_url = earlier.id, earlier.key, earlier.url[:500]
            Twin.objects.filter(pk=twin.pk).update(
                local_id=earlier.id, local_key=earlier.key, local_url=twin.local_url
            )
            logger.warning("Adopted %s, created by an earlier attempt of %s", earlier.key, head.trace_id)
            return _process_incoming(twin, head)  # now an update of that item
    created = False
    wrote = Written()
    downloads = ExitStack()  # attachments to add, downloaded before the transaction (see _fetch_attachments)
    try:
        fetched = _fetch_attachments(
            twin, before, after, transport, downloads, remote_item_id=hub["id"], adopt=retrying, wrote=wrote
        )
    except BaseException:
        downloads.close()
        raise
    with downloads, atomic:
        if first_sync:
            ref = connector.create_item(create_fields)
            twin.local_id, twin.local_key, twin.local_url = ref.id, ref.key, ref.url[:500]
            # Record the created item at once: a retry after a crash updates it instead of creating another.
            Twin.objects.filter(pk=twin.pk).update(
                local_id=ref.id, local_key=ref.key, local_url=twin.local_url
            )
            if not builtin:
                # The new item as created (with the tracker's defaults), read at once: the echo bookkeeping
                # records it as in sync, but not a person's edit made between now and the final read-back.
                # (On the built-in tracker nobody sees the item before this transaction commits.)
                unannotated = connector.get_item(ref.id)
            before = {"id": ref.id, "comments": [], "attachments": []}  # a new item has neither yet
            # Only inside the tracker's transaction is "created here" also "no earlier run got this far".
            created = conn.local_instance.tracker_type == "builtin"
        else:
            changes = {k: after.get(k) for k in ITEM_FIELDS if k in after and after.get(k) != before.get(k)}
            if changes:
                connector.update_item(twin.local_id, changes)
                wrote.fields.update(copy.deepcopy(changes))
        _apply_comments(connector, twin, before, after, wrote, created=created, adopt=retrying)
        _apply_attachments(connector, twin, before, after, fetched, wrote)
        flush = getattr(connector, "flush", None)
        if callable(flush):
            flush()  # connectors that coalesce writes (Zendesk's per-ticket limit) write them now
        with transaction.atomic(savepoint=False):  # a failure here rolls back the apply too (built-in)
            _lock_pair(twin)
            twin.prev_remote_replica = twin.remote_replica
            twin.remote_replica = hub
            twin.remote_id = hub["id"]
            twin.remote_key = hub.get("key") or twin.remote_key
            twin.remote_url = (hub.get("url") or twin.remote_url or "")[:500]
            twin.applied_seq = max(twin.applied_seq, head.seq)
            twin.last_synced_at = timezone.now()
            twin.unexalated_at = None
            applied = connector.get_item(twin.local_id)
            twin.sync_written_updated = str(applied.get("updated") or "")[:64]
            person_edit = False
            if not result.sync_back:
                # No echo: what the apply changed is what the other side already has. Only what it wrote:
                # a person's edit that landed between the two reads is still a change to send.
                seen = applied
                if unannotated is not None:
                    seen, person_edit = wrote.view(
                        unannotated,
                        applied,
                        own_change=functools.cache(lambda: connector.is_own_change(applied)),
                    )
                now, _ = build_outgoing(conn, seen, rules)
                twin.local_replica = echo_replica(
                    twin.local_replica, agreed_before(twin, ours, changed, after, held), now
                )
            # A person's edit made while the apply ran is timed as what it is, not as the node's write.
            twin.person_updated = str((applied.get("updated") if person_edit else ours_edited) or "")[:64]
            twin.state = Twin.State.SYNCHRONIZED
            # Only what this apply sets: the peer's ack (on another worker) writes the twin's remote side and
            # acked_seq, and the lease keeps every other writer of these fields away.
            twin.save(update_fields=APPLY_FIELDS)
            note = f"Kept the local value of {', '.join(lost)} (edited later here)." if lost else ""
            SyncEvent.objects.filter(pk=head.pk).update(
                status=Status.DONE,
                processed_at=timezone.now(),
                rules_version=rules,
                error=note,
                not_before=None,
            )
            transport.ack(head, twin)
    logger.info(
        "Applied message %d from %s to %s%s",
        head.seq,
        conn.name,
        twin.local_key,
        f" ({note})" if note else "",
    )
    if result.sync_back:
        queue_outgoing(twin)
    if result.unexalate:
        unexalate(twin=twin)


# How far the tracker's clock may lag ours when looking for an item an earlier attempt created.
CREATE_CLOCK_SKEW = timedelta(minutes=5)


def _created_earlier(connector: Any, twin: Twin, fields: dict[str, Any], *, since: datetime) -> Any:
    """The item an earlier attempt of this create made without hearing back, or None: the newest item
    the tracker says this node created since then with the same summary that no twin of the instance has."""
    for ref in connector.find_created(fields, since=since):
        taken = Twin.objects.filter(
            connection__local_instance_id=twin.connection.local_instance_id, local_id=ref.id
        ).exists()
        if not taken:
            return ref
    return None


def _unlinked(twin: Twin, kind: str, entries: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The entries (comments or attachments, by local id) that copy nothing on the other side."""
    linked = set(twin.links.filter(kind=kind).values_list("local_id", flat=True))
    return {k: e for k, e in entries.items() if str(k) not in linked}


def _same_text(a: Any, b: Any) -> bool:
    return str(a or "").replace("\r\n", "\n").strip() == str(b or "").replace("\r\n", "\n").strip()


def _same_file(local: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Same name, and the same size and SHA-256 where both sides know them (a tracker that reports
    neither for its attachments, like GitLab, is matched by name)."""
    if (local.get("filename") or "") != (incoming.get("filename") or ""):
        return False
    for field in ("size", "sha256"):
        if local.get(field) is not None and incoming.get(field) is not None:
            if str(local[field]).lower() != str(incoming[field]).lower():
                return False
    return True


def _adopt(
    twin: Twin,
    kind: str,
    local_id: Any,
    remote_id: Any,
    unlinked: dict[Any, Any],
    wrote: Written | None,
    kept: set[Any],
) -> None:
    """Link an entry an earlier attempt wrote unheard to the remote one it copies."""
    del unlinked[local_id]
    kept.add(local_id)
    EntityLink.objects.create(twin=twin, kind=kind, local_id=str(local_id), remote_id=str(remote_id))
    if wrote is not None:
        wrote.entries["comments" if kind == EntityLink.Kind.COMMENT else "attachments"].add(str(local_id))
    logger.warning("Adopted %s %s, written by an earlier attempt, copying %s", kind, local_id, remote_id)


def _apply_comments(
    connector: Any,
    twin: Twin,
    before: dict[str, Any],
    after: dict[str, Any],
    wrote: Written,
    *,
    created: bool = False,
    adopt: bool = False,
) -> None:
    """``created``: the item was created in this same transaction, so no earlier run left links to it.
    ``adopt``: an earlier attempt may have added comments without hearing back; a comment to add whose
    text an unlinked comment already has is that one (linked, not added again)."""
    old = {c["id"]: c for c in before.get("comments") or [] if c.get("id")}
    unlinked = _unlinked(twin, EntityLink.Kind.COMMENT, old) if adopt else {}
    kept = set()
    for comment in after.get("comments") or []:
        cid = comment.get("id")
        if cid and cid in old:
            kept.add(cid)
            if comment.get("body") != old[cid].get("body"):
                connector.update_comment(twin.local_id, cid, body=comment.get("body") or "")
                wrote.entries["comments"].add(str(cid))
            continue
        remote_id = comment.get("remoteId")
        if (
            remote_id
            and not created
            and twin.links.filter(kind=EntityLink.Kind.COMMENT, remote_id=remote_id).exists()
        ):
            continue  # already created by an earlier (interrupted) run
        same = [k for k, c in unlinked.items() if _same_text(c.get("body"), comment.get("body"))]
        if remote_id and same:
            _adopt(twin, EntityLink.Kind.COMMENT, same[0], remote_id, unlinked, wrote, kept)
            continue
        new_id = connector.add_comment(
            twin.local_id,
            body=comment.get("body") or "",
            internal=bool(comment.get("internal")),
            author=((comment.get("author") or {}).get("email") or ""),
        )
        wrote.entries["comments"].add(str(new_id))
        if remote_id:
            with transaction.atomic(savepoint=False):  # nothing here catches its failure
                EntityLink.objects.create(
                    twin=twin, kind=EntityLink.Kind.COMMENT, local_id=new_id, remote_id=remote_id
                )
    for cid in set(old) - kept:
        connector.delete_comment(twin.local_id, cid)
        wrote.removed["comments"].add(str(cid))
        twin.links.filter(kind=EntityLink.Kind.COMMENT, local_id=cid).delete()


def _fetch_attachments(
    twin: Twin,
    before: dict[str, Any],
    after: dict[str, Any],
    transport: Any,
    stack: ExitStack,
    *,
    remote_item_id: str,
    adopt: bool = False,
    wrote: Written | None = None,
) -> dict[str, IO[bytes]]:
    """Download the attachments the apply will add, before its transaction: on SQLite that transaction
    holds the database's write lock, and two nodes downloading from each other inside theirs would wait on
    each other (each peer's attachment endpoint records the request's nonce). Checked against the size
    limit and the replica's SHA-256; the files stay open until ``stack`` closes.

    ``adopt``: an earlier attempt may have attached files without hearing back; an unlinked attachment
    with the same name and size (and SHA-256, where both are known) is that one, linked and not fetched."""
    old = {a["id"]: a for a in before.get("attachments") or [] if a.get("id")}
    unlinked = _unlinked(twin, EntityLink.Kind.ATTACHMENT, old) if adopt else {}
    fetched: dict[str, IO[bytes]] = {}
    for att in after.get("attachments") or []:
        remote_id = att.get("remoteId")
        if (att.get("id") and att["id"] in old) or not remote_id or remote_id in fetched:
            continue
        if twin.links.filter(kind=EntityLink.Kind.ATTACHMENT, remote_id=remote_id).exists():
            continue
        same = [k for k, a in unlinked.items() if _same_file(a, att)]
        if same:
            _adopt(twin, EntityLink.Kind.ATTACHMENT, same[0], remote_id, unlinked, wrote, set())
            continue
        buffer = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=1024 * 1024))
        digest = hashlib.sha256()
        size = 0
        for chunk in _from_the_peer(transport.fetch_attachment(twin.connection, remote_item_id, remote_id)):
            size += len(chunk)
            if size > settings.ATTACHMENT_MAX_BYTES:
                raise ConnectorError(
                    f"Attachment '{att.get('filename')}' is larger than ATTACHMENT_MAX_BYTES "
                    f"({settings.ATTACHMENT_MAX_BYTES} bytes) on this node. Raise the limit or remove "
                    "the file.",
                )
            digest.update(chunk)
            buffer.write(chunk)
        expected = att.get("sha256")
        if expected and digest.hexdigest() != expected:
            raise ConnectorError(
                f"Attachment '{att.get('filename')}' arrived corrupted (SHA-256 mismatch); it will be "
                "fetched again.",
                retryable=True,
            )
        buffer.seek(0)
        fetched[remote_id] = buffer
    return fetched


def _from_the_peer(chunks: Any) -> Any:
    """The other side's attachment content; its failures are marked as the peer's (not our tracker's)."""
    try:
        yield from chunks
    except ConnectorError as exc:
        exc.from_peer = True  # type: ignore[attr-defined]
        raise


def _apply_attachments(
    connector: Any,
    twin: Twin,
    before: dict[str, Any],
    after: dict[str, Any],
    fetched: dict[str, IO[bytes]],
    wrote: Written,
) -> None:
    """Add what ``_fetch_attachments`` downloaded, delete what the incoming side removed."""
    old = {a["id"]: a for a in before.get("attachments") or [] if a.get("id")}
    kept = set()
    for att in after.get("attachments") or []:
        aid = att.get("id")
        if aid and aid in old:
            kept.add(aid)
            continue
        remote_id = att.get("remoteId")
        buffer = fetched.pop(remote_id, None) if remote_id else None
        if buffer is None:
            continue  # no remote id, or already added by an earlier (interrupted) run
        new_id = connector.add_attachment(
            twin.local_id,
            filename=att.get("filename") or "attachment",
            mime_type=att.get("mimeType") or "",
            content=buffer,
        )
        wrote.entries["attachments"].add(str(new_id))
        with transaction.atomic(savepoint=False):  # nothing here catches its failure
            EntityLink.objects.create(
                twin=twin, kind=EntityLink.Kind.ATTACHMENT, local_id=new_id, remote_id=remote_id
            )
    for aid in set(old) - kept:
        connector.delete_attachment(twin.local_id, aid)
        wrote.removed["attachments"].add(str(aid))
        twin.links.filter(kind=EntityLink.Kind.ATTACHMENT, local_id=aid).delete()


# --- failures -----------------------------------------------------------------------------------------------


# File-system failures an admin can fix (full disk or quota, permissions, a missing or wrong MEDIA_ROOT).
FILE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
    | {errno.ENOTDIR, errno.EISDIR, errno.ENOENT}
)


def _handle_failure(twin: Twin, event: SyncEvent, exc: Exception) -> bool:
    """Record a failure. Returns True when the twin may go on with its next event (never, today)."""
    from syncrules.engine import ScriptError

    conn = twin.connection
    if isinstance(exc, ScriptError):
        if exc.kind == "compile":
            connection_error(conn, event, str(exc), line=exc.line)
        else:
            entity_error(twin, event, str(exc), line=exc.line)
    elif isinstance(exc, ConnectorError) and exc.retryable:
        # The local tracker's outage, unless the other side's attachment could not be fetched.
        retry_later(twin, event, exc.message, instance=None if _from_peer(exc) else conn.local_instance)
    elif isinstance(exc, ConnectorError):
        entity_error(twin, event, exc.message)
    elif isinstance(exc, ReplicaInvalid):
        entity_error(twin, event, f"{exc} Check the outgoing rules of the sending side.")
    elif isinstance(exc, OSError) and exc.errno in FILE_ERRNOS and not isinstance(exc, RequestException):
        where = f" ({exc.filename})" if exc.filename else ""
        entity_error(
            twin,
            event,
            f"The node could not store or read a file: {exc.strerror or exc}{where}. Check that MEDIA_ROOT "
            f"({settings.MEDIA_ROOT}) is a writable directory with free space, then resolve and retry.",
            details="".join(traceback.format_exception(exc))[-8000:],
        )
    else:
        logger.exception("Sync event %s failed", event.trace_id)
        entity_error(
            twin,
            event,
            f"Unexpected error while processing this change: {type(exc).__name__}: {exc}. "
            "Resolve and retry; if it fails again, report it with the details.",
            details="".join(traceback.format_exception(exc))[-8000:],
        )
    return False


def entity_error(
    twin: Twin, event: SyncEvent, message: str, *, line: int | None = None, details: str = ""
) -> None:
    with transaction.atomic():
        SyncEvent.objects.filter(pk=event.pk).update(status=Status.FAILED, error=message)
        Twin.objects.filter(pk=twin.pk).update(state=Twin.State.FAILED)
        SyncError.objects.create(
            impact=SyncError.Impact.ENTITY,
            connection=twin.connection,
            twin=twin,
            event=event,
            message=message,
            details=details,
            script_line=line,
        )


def connection_error(
    conn: Connection, event: SyncEvent | None, message: str, *, line: int | None = None
) -> None:
    """Hold the whole connection (bad rules, auth failure): events stay queued until resolved."""
    with transaction.atomic():
        if event is not None:
            SyncEvent.objects.filter(pk=event.pk).update(status=Status.PENDING, error=message)
        Connection.objects.filter(pk=conn.pk).update(status=Connection.Status.ERROR, status_message=message)
        if not SyncError.objects.filter(
            connection=conn, impact="connection", message=message, resolved_at=None
        ).exists():
            SyncError.objects.create(
                impact=SyncError.Impact.CONNECTION,
                connection=conn,
                event=event,
                message=message,
                script_line=line,
            )


def retry_later(twin: Twin, event: SyncEvent, message: str, *, instance: Any = None) -> None:
    """A failure that retrying fixes: the event waits and goes again, however long that takes. ``instance``:
    the local tracker failed, which counts towards marking it unreachable (then the event waits for its
    next try, and the message says so)."""
    attempts = SyncEvent.objects.filter(pk=event.pk).values_list("attempts", flat=True).first() or 1
    not_before = timezone.now() + timedelta(seconds=health.backoff_seconds(attempts))
    note = message
    if instance is not None:
        instance = health.instance_failed(instance.pk, message)
        if instance.unreachable_since is not None and instance.next_try_at:
            not_before = max(not_before, instance.next_try_at)
            note = health.outage_message(instance)
    if note is message:
        when = _clock(not_before)
        note = f"{message.rstrip('.')}. The node tries again at {when} and keeps trying on its own."
    SyncEvent.objects.filter(pk=event.pk).update(status=Status.PENDING, error=note, not_before=not_before)
    Twin.objects.filter(pk=twin.pk).update(state=Twin.State.QUEUED)


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def _from_peer(exc: BaseException) -> bool:
    return bool(getattr(exc, "from_peer", False))


def _wait_for(instance: Any, twin: Twin) -> None:
    """The twin's due events wait for the next try of its unreachable tracker (the sweeper skips them till
    then; the try that succeeds resumes them at once)."""
    SyncEvent.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lt=instance.next_try_at),
        twin_id=twin.pk,
        status__in=[Status.PENDING, Status.PROCESSING],
    ).update(status=Status.PENDING, not_before=instance.next_try_at, error=health.outage_message(instance))
    Twin.objects.filter(pk=twin.pk, state=Twin.State.IN_PROGRESS).update(state=Twin.State.QUEUED)


def resume_instance(instance: Any) -> None:
    """An unreachable tracker answered again: everything that waited for it goes now."""
    waiting = SyncEvent.objects.filter(
        connection__local_instance=instance, status=Status.PENDING, not_before__isnull=False
    )
    twin_ids = list(waiting.values_list("twin_id", flat=True).distinct())
    waiting.update(not_before=None)
    logger.warning("%s answers again: resuming %d items", instance.name, len(twin_ids))
    for twin_id in twin_ids:
        if twin_id:
            nudge(twin_id)


# --- context for the scripts --------------------------------------------------------------------------------

_META_CACHE: dict[int, tuple[float, dict[str, Any]]] = {}


class _ScriptServices:
    """What sync_helper can ask about this connection's twins."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def is_under_sync(self, key: str) -> bool:
        return Twin.objects.filter(connection=self.conn, local_key=key, unexalated_at__isnull=True).exists()

    def local_key_for_remote(self, remote_id: str) -> str | None:
        return (
            Twin.objects.filter(connection=self.conn, remote_id=remote_id)
            .values_list("local_key", flat=True)
            .first()
        )

    def remote_url(self, remote_key: str) -> str | None:
        return (
            Twin.objects.filter(connection=self.conn, remote_key=remote_key)
            .values_list("remote_url", flat=True)
            .first()
        )


def _instance_info(instance: Any) -> dict[str, str]:
    if instance is None:
        return {}
    return {
        "name": instance.name,
        "tracker_type": instance.tracker_type,
        "url": instance.url,
        "uid": instance.uid,
    }


def script_context(conn: Connection) -> dict[str, Any]:
    cached = _META_CACHE.get(conn.local_instance_id)
    if cached is None or cached[0] < time.monotonic():
        meta = get_connector(conn.local_instance).metadata()
        cached = (time.monotonic() + 30, meta)
        _META_CACHE[conn.local_instance_id] = cached
    return {
        "connection": {
            "name": conn.name,
            "local_instance": _instance_info(conn.local_instance),
            "remote_instance": _instance_info(conn.remote_instance),
        },
        **cached[1],
        "services": _ScriptServices(conn),
    }


# --- operations ---------------------------------------------------------------------------------------------


class OperationError(ValueError):
    """An operation an admin asked for cannot be done; the message says why and what to do."""


def exalate(*, connection: Connection, key: str, nudge_now: bool = True) -> Twin:
    """Start syncing a local item on a connection (or send its current state again).

    ``nudge_now=False`` leaves the processing to the caller (bulk jobs work through their items themselves).
    """
    if connection.status not in (Connection.Status.ACTIVE, Connection.Status.DEACTIVATED):
        raise OperationError(f"Connection '{connection.name}' is {connection.status}; activate it first.")
    ref = get_connector(connection.local_instance).find_item(key)
    if ref is None:
        raise OperationError(f"There is no item '{key}' in {connection.local_instance.name}.")
    with transaction.atomic():
        twin, _created = Twin.objects.get_or_create(
            connection=connection,
            local_id=ref.id,
            defaults={"local_key": ref.key, "local_url": ref.url[:500]},
        )
        if twin.unexalated_at:
            Twin.objects.filter(pk=twin.pk).update(
                unexalated_at=None, state=Twin.State.QUEUED, local_replica=None
            )
            twin.refresh_from_db()
        queue_outgoing(twin, item_key=ref.key, nudge_now=nudge_now)
    return twin


def unexalate(*, twin: Twin) -> None:
    """Stop syncing an item on this connection; both items stay. The other side is told to stop too."""
    with transaction.atomic():
        updated = Twin.objects.filter(pk=twin.pk, unexalated_at__isnull=True).update(
            unexalated_at=timezone.now(), state=Twin.State.UNEXALATED
        )
        if updated:
            SyncEvent.objects.filter(twin=twin, direction=Direction.OUTGOING, status=Status.PENDING).update(
                status=Status.SKIPPED, error="Item unexalated."
            )
            queue_outgoing(twin, kind=SyncEvent.Kind.UNEXALATE)


def connect(*, connection: Connection, local_key: str, remote_key: str) -> Twin:
    """Link two items that already exist on both sides; the local side's state is sent to the remote one."""
    ref = get_connector(connection.local_instance).find_item(local_key)
    if ref is None:
        raise OperationError(f"There is no item '{local_key}' in {connection.local_instance.name}.")
    with transaction.atomic():
        twin, created = Twin.objects.get_or_create(
            connection=connection,
            local_id=ref.id,
            defaults={"local_key": ref.key, "local_url": ref.url[:500], "remote_key": remote_key},
        )
        if not created and twin.remote_id:
            raise OperationError(
                f"{ref.key} is already synced with {twin.remote_key} on '{connection.name}'."
            )
        Twin.objects.filter(pk=twin.pk).update(remote_key=remote_key, unexalated_at=None)
        queue_outgoing(twin, item_key=ref.key)
    return twin


def error_resolve(*, error: SyncError, retry: bool) -> None:
    """Mark an error resolved; with ``retry`` the blocked event (or held connection) goes again."""
    with transaction.atomic():
        SyncError.objects.filter(pk=error.pk, resolved_at__isnull=True).update(resolved_at=timezone.now())
        if not retry:
            if error.event_id and error.impact == SyncError.Impact.ENTITY:
                SyncEvent.objects.filter(pk=error.event_id, status=Status.FAILED).update(
                    status=Status.SKIPPED, error="Skipped: error resolved without retry."
                )
                if error.twin_id:
                    nudge(error.twin_id)
            return
        if error.impact == SyncError.Impact.CONNECTION and error.connection_id:
            Connection.objects.filter(pk=error.connection_id, status=Connection.Status.ERROR).update(
                status=Connection.Status.ACTIVE, status_message=""
            )
            for twin_id in pending_twins(error.connection_id):
                nudge(twin_id)
        if error.event_id:
            SyncEvent.objects.filter(pk=error.event_id, status=Status.FAILED).update(
                # 1, not 0: the retry must know an earlier attempt ran (it adopts what that one wrote).
                status=Status.PENDING,
                attempts=1,
                not_before=None,
            )
        if error.twin_id:
            Twin.objects.filter(pk=error.twin_id, state=Twin.State.FAILED).update(state=Twin.State.QUEUED)
            nudge(error.twin_id)


def pending_twins(connection_id: int) -> list[int]:
    return list(
        SyncEvent.objects.filter(connection_id=connection_id, status__in=[Status.PENDING, Status.PROCESSING])
        .values_list("twin_id", flat=True)
        .distinct()
    )


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
        nudge(twin_id)
    return len(twin_ids)
