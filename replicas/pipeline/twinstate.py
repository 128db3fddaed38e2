"""The twin's state as SQL: settled from its events in one statement, an event finished, and both twins
of a local pair locked in id order."""

from __future__ import annotations

from django.db.models import Case, Exists, OuterRef, Q, Value, When
from django.utils import timezone

from replicas.models import SyncEvent, Twin
from replicas.pipeline.base import Direction, Status


def state_case() -> Case:
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


def settle_state(twin_id: int) -> None:
    """Derive the twin's state from its events, in one UPDATE (failed and unexalated twins stay so).

    The same statement as ``Twin.objects.filter(pk=..).exclude(state__in=..).update(state=state_case())``,
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


def finish_event(event: SyncEvent, status: str, note: str = "") -> None:
    """The event is done with ``status`` (and a note an admin sees), its backoff cleared."""
    SyncEvent.objects.filter(pk=event.pk).update(
        status=status, processed_at=timezone.now(), error=note, not_before=None
    )


def lock_pair(twin: Twin) -> Twin:
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
