"""django-q2 tasks of node-to-node delivery: send the outbox, poll a private peer, sweep for due work.

Like the pipeline, these only take an id and work from rows: ``deliver`` takes the connection's delivery
lease (a conditional UPDATE, so two workers never send for one connection at once and the order holds),
sends undelivered messages oldest first in batches, and records the outcome. A failure sets the connection's
backoff (exponential, full jitter, capped) and a status message an admin can read; ``sweep`` re-nudges
connections whose backoff is over or whose task was lost.
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from connections.messages import MessageRejected, apply_messages, validate_messages
from connections.models import Connection, OutboundMessage, SeenNonce
from connections.transport import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    REFUSED_ANSWER_CODES,
    PeerError,
    PeerUnreachable,
    peer_request,
)
from exalate_node import outbound
from exalate_node.tasks import enqueue

logger = logging.getLogger(__name__)

# One sender per connection: the lease outlives one request to the peer (its total deadline,
# OUTBOUND_PEER_DEADLINE, 30 s by default) with a margin, and is renewed after every batch. A worker killed
# while holding it stalls that connection's delivery for at most this long (was 90 s; the fault-injection
# suite saw the stall).
LEASE = timedelta(seconds=CONNECT_TIMEOUT + READ_TIMEOUT + 10)


def _lease() -> timedelta:
    return max(LEASE, timedelta(seconds=outbound.peer_deadline() + 15))


BATCH_MESSAGES = 100
BATCH_BYTES = 5 * 1024 * 1024
BACKOFF_BASE = 1.0


def _backoff_cap() -> float:
    return float(getattr(settings, "NODE_RETRY_MAX_SECONDS", 300))


# --- lease --------------------------------------------------------------------------------------------------


def _acquire(connection_id: int) -> str | None:
    token = uuid.uuid4().hex
    now = timezone.now()
    taken = (
        Connection.objects.filter(pk=connection_id)
        .filter(Q(delivery_until__isnull=True) | Q(delivery_until__lt=now))
        .update(delivery_token=token, delivery_until=now + _lease())
    )
    return token if taken == 1 else None


def _renew(connection_id: int, token: str) -> bool:
    return (
        Connection.objects.filter(pk=connection_id, delivery_token=token).update(
            delivery_until=timezone.now() + _lease()
        )
        == 1
    )


def _release(connection_id: int, token: str) -> None:
    Connection.objects.filter(pk=connection_id, delivery_token=token).update(
        delivery_token="", delivery_until=None
    )


# --- deliver ------------------------------------------------------------------------------------------------


def deliver(connection_id: int, force: bool = False) -> int:
    """Send the connection's undelivered messages in order. Returns how many were delivered.

    Safe to call any number of times from any worker; ``force`` ignores the backoff (an admin's "retry now",
    or the peer just proved it is back).
    """
    delivered = 0
    for _ in range(3):
        token = _acquire(connection_id)
        if token is None:
            return delivered  # another worker is sending: it drains the queue
        try:
            delivered += _drain(connection_id, token, force=force)
        finally:
            _release(connection_id, token)
        # A nudge that came while we held the lease was dropped: look once more.
        if not _due(connection_id):
            break
        force = False
    return delivered


def _queue(connection_id: int):  # type: ignore[no-untyped-def]
    return OutboundMessage.objects.filter(connection_id=connection_id, delivered_at__isnull=True)


def _due(connection_id: int) -> bool:
    now = timezone.now()
    return (
        Connection.objects.filter(pk=connection_id)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .exists()
        and _queue(connection_id).exists()
    )


def next_batch(connection_id: int, *, after: int = 0, limit: int | None = None) -> list[OutboundMessage]:
    """The oldest undelivered messages, at most ``limit`` and about ``BATCH_BYTES`` (at least one)."""
    limit = limit or BATCH_MESSAGES
    batch: list[OutboundMessage] = []
    size = 0
    for msg in _queue(connection_id).filter(id__gt=after).order_by("id")[:limit]:
        if batch and size + msg.size > BATCH_BYTES:
            break
        batch.append(msg)
        size += msg.size
    return batch


def mark_delivered(connection: Connection, ids: list[int]) -> int:
    """The peer stored these messages: take them off the queue and mark their events delivered."""
    from replicas.models import SyncEvent

    with transaction.atomic():
        msgs = OutboundMessage.objects.filter(connection=connection, pk__in=ids, delivered_at__isnull=True)
        traces = list(msgs.filter(kind=OutboundMessage.Kind.EVENT).values_list("trace_id", flat=True))
        count = msgs.update(delivered_at=timezone.now())
        if traces:
            SyncEvent.objects.filter(connection=connection, direction="out", trace_id__in=traces).update(
                delivered=True
            )
    return count


def _drain(connection_id: int, token: str, *, force: bool) -> int:
    delivered = 0
    while True:
        conn = Connection.objects.select_related("local_instance").filter(pk=connection_id).first()
        if conn is None or conn.status == Connection.Status.PENDING or not conn.key or conn.polled_by_peer:
            return delivered
        if not force and conn.next_attempt_at and conn.next_attempt_at > timezone.now():
            return delivered  # backing off: the sweeper nudges it when due
        batch = next_batch(conn.pk)
        if not batch:
            _recovered(conn)
            return delivered
        try:
            peer_request(conn, "POST", "/messages/", {"messages": [m.payload for m in batch]})
        except PeerUnreachable as exc:
            _failed(conn, str(exc))
            return delivered
        except PeerError as exc:
            _rejected(conn, exc)
            return delivered
        delivered += mark_delivered(conn, [m.pk for m in batch])
        if conn.delivery_attempts or conn.status_message:
            _recovered(conn)
        force = False
        if not _renew(conn.pk, token):
            return delivered


def _recovered(conn: Connection) -> None:
    """Delivery works (again): clear the backoff, the status message and the errors delivery reported."""
    from replicas.models import SyncError

    Connection.objects.filter(pk=conn.pk).update(delivery_attempts=0, next_attempt_at=None)
    Connection.objects.filter(pk=conn.pk, status=Connection.Status.ACTIVE).exclude(status_message="").update(
        status_message=""
    )
    SyncError.objects.filter(connection=conn, details=DELIVERY_ERROR, resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )


_WAITING = "Waiting for the other node"
# Marks the SyncErrors delivery records, so it can resolve them itself once the peer accepts again.
DELIVERY_ERROR = (
    "Reported by node-to-node delivery; resolved automatically once the other node accepts again."
)


def backoff_delay(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, capped; never less than the peer's Retry-After."""
    ceiling = min(_backoff_cap(), BACKOFF_BASE * 2 ** min(attempts, 30))
    delay = random.uniform(0.5, max(0.5, ceiling))
    return max(delay, retry_after or 0.0)


def _failed(conn: Connection, reason: str, retry_after: float | None = None) -> None:
    attempts = conn.delivery_attempts + 1
    delay = backoff_delay(attempts, retry_after)
    queued = _queue(conn.pk).count()
    reason = reason.rstrip(".")
    message = (
        f"{_WAITING} ({conn.remote_node_url}): {reason}. "
        f"{queued} message{'s' if queued != 1 else ''} queued; "
        f"next try in {delay:.0f} s."
    )
    Connection.objects.filter(pk=conn.pk).update(
        delivery_attempts=attempts,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
    )
    # An 'error' status message (connection-level fault) is more important than "waiting": keep it.
    Connection.objects.filter(pk=conn.pk).exclude(status=Connection.Status.ERROR).update(
        status_message=message
    )
    logger.info("Delivery to %s failed (attempt %s): %s", conn.remote_node_url, attempts, reason)


def _rejected(conn: Connection, exc: PeerError) -> None:
    if exc.code in REFUSED_ANSWER_CODES:
        # This node refused the address or the answer (a hostile or wrong server at the node URL): the admin
        # sees it; delivery keeps retrying with backoff, and resolves the error once the peer answers well.
        message = f"{exc.detail} Then resolve and retry."
        _connection_error(conn, message)
        _failed(conn, f"answer refused ({exc.code})")
        Connection.objects.filter(pk=conn.pk).exclude(status=Connection.Status.ERROR).update(
            status_message=message
        )
        return
    if exc.status == 429 or exc.status >= 500 or exc.status == 409:
        what = {429: "it is busy (429)", 409: "its side of the connection is not active yet (409)"}.get(
            exc.status, f"it answered {exc.status} ({exc.detail})"
        )
        _failed(conn, what, exc.retry_after)
        return
    if exc.status == 401:
        message = (
            f"The other node ({conn.remote_node_url}) refuses this node's signature: {exc.detail} "
            "If the connection was deleted or re-created on the other side, delete it here and connect again "
            "with a new invitation; if the clocks differ, fix the time (NTP) on both machines. Then resolve "
            "and retry."
        )
    elif exc.status == 404:
        message = (
            f"The other node ({conn.remote_node_url}) does not know this connection or has no node "
            "protocol at that URL. Check the node URL; if the connection was deleted there, delete it here "
            "and connect again."
        )
    else:
        message = (
            f"The other node ({conn.remote_node_url}) refused a batch of messages ({exc.status}): "
            f"{exc.detail} "
            "Check that both nodes run compatible versions, then resolve and retry."
        )
    _connection_error(conn, message)
    _failed(conn, f"refused ({exc.status})")
    Connection.objects.filter(pk=conn.pk).exclude(status=Connection.Status.ERROR).update(
        status_message=message
    )


def _connection_error(conn: Connection, message: str) -> None:
    """A connection-level problem: visible as a SyncError. Delivery keeps retrying with backoff (the cause is
    often fixed on the other side, e.g. a clock) and resolves the error itself once the peer accepts again."""
    from replicas.models import SyncError

    with transaction.atomic():
        exists = SyncError.objects.filter(
            connection=conn, impact=SyncError.Impact.CONNECTION, message=message, resolved_at__isnull=True
        ).exists()
        if not exists:
            SyncError.objects.create(
                impact=SyncError.Impact.CONNECTION, connection=conn, message=message, details=DELIVERY_ERROR
            )


# --- private mode: the polling side -------------------------------------------------------------------------


def poll(connection_id: int) -> int:
    """Fetch and apply the peer's messages for a private-mode connection, then acknowledge them."""
    token = _acquire(connection_id)
    if token is None:
        return 0
    applied = 0
    try:
        for _ in range(50):  # bounded: the next sweep continues
            conn = Connection.objects.filter(pk=connection_id).first()
            if conn is None or not conn.polls_peer or not conn.accepts_messages or not conn.key:
                return applied
            try:
                resp = peer_request(conn, "GET", f"/messages/?after={conn.poll_after}&limit={BATCH_MESSAGES}")
            except PeerUnreachable as exc:
                _failed(conn, str(exc))
                return applied
            except PeerError as exc:
                _rejected(conn, exc)
                return applied
            items = resp.body.get("messages") or []
            if not isinstance(items, list) or not items:
                _recovered(conn)
                return applied
            ids = [m.get("id") for m in items if isinstance(m, dict)]
            if not all(isinstance(i, int) for i in ids) or len(ids) != len(items):
                _connection_error(conn, "The other node sent malformed polled messages (no ids).")
                return applied
            messages = [{k: v for k, v in m.items() if k != "id"} for m in items]
            try:
                validate_messages(messages)
                with transaction.atomic():
                    apply_messages(conn, messages)
                    Connection.objects.filter(pk=conn.pk).update(poll_after=max(ids))
            except MessageRejected as exc:
                _connection_error(
                    conn,
                    f"A message fetched from the other node is invalid: {exc.detail} "
                    "Check that both nodes run compatible versions, then resolve and retry.",
                )
                return applied
            applied += len(messages)
            try:
                peer_request(conn, "POST", "/messages/ack/", {"ids": ids})
            except (PeerUnreachable, PeerError) as exc:
                # Applied and recorded here; the peer serves them again and we skip them (idempotent).
                logger.info("Could not acknowledge polled messages: %s", exc)
            _recovered(conn)
            if not _renew(conn.pk, token):
                return applied
        return applied
    finally:
        _release(connection_id, token)
        # Acks of what we applied were queued while we held the lease, so their nudge was dropped.
        if _due(connection_id):
            enqueue("connections.tasks.deliver", connection_id, group=f"deliver-{connection_id}")


# --- sweeper ------------------------------------------------------------------------------------------------


def sweep() -> int:
    """Re-nudge delivery whose backoff is over or whose task was lost; poll private-mode peers; prune nonces.

    Meant to run every few seconds (a schedule, or the node's sweeper loop). Returns the number of nudges.
    """
    now = timezone.now()
    nudged = 0
    pushing = (
        Connection.objects.exclude(status=Connection.Status.PENDING)
        .exclude(private_mode=True, remote_node_url="")
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(delivery_until__isnull=True) | Q(delivery_until__lt=now))
        # Only connections with a message still to deliver. (A join with ``outbox__delivered_at__isnull``
        # also matched connections with no message at all, local ones included: an idle node queued a
        # delivery task per connection on every sweep, every 2 s.)
        .filter(Exists(OutboundMessage.objects.filter(connection=OuterRef("pk"), delivered_at__isnull=True)))
        .values_list("pk", flat=True)
    )
    for pk in pushing:
        enqueue("connections.tasks.deliver", pk, group=f"deliver-{pk}")
        nudged += 1
    polling = (
        Connection.objects.filter(private_mode=True)
        .exclude(remote_node_url="")
        .exclude(status=Connection.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .values_list("pk", flat=True)
    )
    for pk in polling:
        enqueue("connections.tasks.poll", pk, group=f"deliver-{pk}")
        nudged += 1
    prune_nonces()
    return nudged


def prune_nonces(*, now: Any = None) -> int:
    """Forget nonces older than twice the accepted clock skew: their timestamps are refused anyway."""
    from connections.signing import DEFAULT_MAX_SKEW

    cutoff = (now or timezone.now()) - timedelta(seconds=2 * DEFAULT_MAX_SKEW)
    deleted, _ = SeenNonce.objects.filter(seen_at__lt=cutoff).delete()
    return deleted


def announce(connection_id: int) -> None:
    """Tell the peer this node is up (an empty signed batch), so it retries what it queued for us at once
    instead of after its backoff. Sent by the node sweeper when it starts."""
    conn = Connection.objects.filter(pk=connection_id).first()
    if conn is None or not conn.key or conn.polled_by_peer or conn.status == Connection.Status.PENDING:
        return
    try:
        peer_request(conn, "POST", "/messages/", {"messages": []}, timeout=5)
    except (PeerUnreachable, PeerError) as exc:
        logger.info("Could not announce this node to %s: %s", conn.remote_node_url, exc)


def announce_all() -> int:
    ids = list(
        Connection.objects.exclude(status=Connection.Status.PENDING)
        .exclude(private_mode=True, remote_node_url="")
        .exclude(key="")
        .filter(peer__isnull=True)
        .values_list("pk", flat=True)
    )
    for pk in ids:
        enqueue("connections.tasks.announce", pk)
    return len(ids)


def peer_is_back(connection_id: int) -> None:
    """The peer just called us with a valid signature: if we were backing off, try again now."""
    conn = Connection.objects.filter(pk=connection_id).only("delivery_attempts", "next_attempt_at").first()
    if conn is not None and conn.delivery_attempts and _queue(connection_id).exists():
        Connection.objects.filter(pk=connection_id).update(next_attempt_at=None)
        enqueue("connections.tasks.deliver", connection_id, group=f"deliver-{connection_id}")
