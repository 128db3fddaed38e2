"""Intake: a local change becomes outgoing events (the outbox), a peer's event or ack is stored
(idempotent)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, DateTimeField, DurationField, ExpressionWrapper, F, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from connections.models import Connection
from replicas.models import EntityLink, SyncEvent, Trigger, Twin
from replicas.pipeline import base
from replicas.pipeline.base import Direction, Status, actor_for, task_cached
from replicas.pipeline.twinstate import state_case


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

    if actor.startswith("exalate-node:") and not task_cached(
        ("triggers", instance_id),
        lambda: Trigger.objects.filter(active=True, connection__local_instance_id=instance_id).exists(),
    ):
        return  # a sync write in a worker task, and no trigger on this instance (checked at most 2 s ago)
    fire_triggers(instance_id=instance_id, item_id=item_id, exclude={t.connection_id for t in twins})


def queue_outgoing(
    twin: Twin, *, item_key: str = "", kind: str = SyncEvent.Kind.UPDATE, nudge_now: bool = True
) -> SyncEvent:
    """Queue an outgoing event for the twin (and nudge it, unless the caller works through it)."""
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
        base.nudge(twin.pk)
    return event


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
    base.nudge(twin.pk)
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
    # ``latency`` (change to applied) is kept on the row: /metrics counts it without per-row arithmetic.
    took = ExpressionWrapper(
        Value(now, output_field=DateTimeField()) - F("created_at"), output_field=DurationField()
    )
    events.update(status=Status.DONE, processed_at=now, delivered=True, latency=took)
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
                then=state_case(),
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


def pending_twins(connection_id: int) -> list[int]:
    """Twins of a connection with queued or interrupted events."""
    return list(
        SyncEvent.objects.filter(connection_id=connection_id, status__in=[Status.PENDING, Status.PROCESSING])
        .values_list("twin_id", flat=True)
        .distinct()
    )
