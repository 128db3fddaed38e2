"""Outgoing: the outgoing rules build the replica from the local item, and the transport sends it."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connections.models import Connection
from instances.connectors import get_connector
from replicas.models import SyncEvent, Twin
from replicas.pipeline.base import Direction, Status, actor_for, logger, rules_for
from replicas.pipeline.context import script_context
from replicas.pipeline.merge import ITEM_FIELDS, VOLATILE, comparable, person_time
from replicas.pipeline.services import unexalate
from replicas.pipeline.twinstate import finish_event, lock_pair
from replicas.schema import validate_replica, wrap
from replicas.transport import transport_for


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


def process_outgoing(twin: Twin, head: SyncEvent) -> None:
    """Send an outgoing event (and the queued updates it covers): build the replica from the item, skip it
    if nothing changed since what was last sent, else number it, record it as sent and hand it over."""
    conn = twin.connection
    batch = _claim_batch(twin, head)
    transport = transport_for(conn)
    if head.kind == SyncEvent.Kind.UNEXALATE:
        _send_unexalate(twin, head, transport)
        return
    rules = rules_for(conn)
    connector = get_connector(conn.local_instance, actor=actor_for(conn))
    item = connector.get_item(twin.local_id)
    hub, result = build_outgoing(conn, item, rules)
    payload = _payload(twin, connector, item, hub)
    with transaction.atomic():
        others = [i for i in batch if i != head.pk]
        if others:
            SyncEvent.objects.filter(pk__in=others).update(
                status=Status.SKIPPED,
                processed_at=timezone.now(),
                error=f"Sent together with {head.trace_id}.",
            )
        locked = lock_pair(twin)
        locked.connection = conn  # the connection (and its peer) as read for this event
        twin = head.twin = locked
        if comparable(hub) == comparable(twin.local_replica) and not result.sync_back:
            finish_event(head, Status.SKIPPED, "Nothing to send: the replica did not change.")
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


def _claim_batch(twin: Twin, head: SyncEvent) -> list[int]:
    """Claim the head and every later queued outgoing update: one read of the item covers them all (their
    changes committed before this read), so a burst of edits costs one message. An incoming event queued
    after the head ends the batch (one query for both)."""
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
    return batch


def _send_unexalate(twin: Twin, head: SyncEvent, transport: Any) -> None:
    with transaction.atomic():
        twin.sent_seq += 1
        Twin.objects.filter(pk=twin.pk).update(sent_seq=twin.sent_seq)
        SyncEvent.objects.filter(pk=head.pk).update(status=Status.SENT, seq=twin.sent_seq)
        head.status, head.seq = Status.SENT, twin.sent_seq
        transport.send(head)


def _payload(twin: Twin, connector: Any, item: dict[str, Any], hub: dict[str, Any]) -> dict[str, Any]:
    """The message for ``hub``: its person-edit time, a connect request, and the baseline and per-field
    edit times of what changed since the last sync; validated against the replica schema."""
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
    return validate_replica(payload)
