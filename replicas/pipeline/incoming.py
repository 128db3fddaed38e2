"""Incoming: apply the sender's change to the local item, in the sender's order, settling conflicts."""

from __future__ import annotations

import copy
import functools
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from instances.connectors import get_connector
from replicas.models import EntityLink, SyncEvent, Twin
from replicas.pipeline.adoption import CREATE_CLOCK_SKEW, created_earlier
from replicas.pipeline.base import Direction, Status, actor_for, logger, rules_for
from replicas.pipeline.context import script_context
from replicas.pipeline.entries import apply_attachments, apply_comments, fetch_attachments
from replicas.pipeline.intake import queue_outgoing
from replicas.pipeline.merge import (
    ITEM_FIELDS,
    agreed_before,
    blank_item,
    echo_replica,
    incoming_previous,
    person_time,
    resolve_conflicts,
)
from replicas.pipeline.outgoing import build_outgoing
from replicas.pipeline.services import unexalate
from replicas.pipeline.twinstate import APPLY_FIELDS, finish_event, lock_pair
from replicas.pipeline.written import Written
from replicas.schema import validate_replica
from replicas.transport import transport_for


def _links(twin: Twin, kind: str) -> dict[str, str]:
    """local id -> remote id"""
    return dict(twin.links.filter(kind=kind).values_list("local_id", "remote_id"))


def annotate(item: dict[str, Any], twin: Twin) -> dict[str, Any]:
    """Give the item's comments and attachments the other side's ids (``remoteId``) the twin links."""
    for kind, field in ((EntityLink.Kind.COMMENT, "comments"), (EntityLink.Kind.ATTACHMENT, "attachments")):
        links = _links(twin, kind) if twin.pk else {}
        for entry in item.get(field) or []:
            if entry.get("id") in links:
                entry["remoteId"] = links[entry["id"]]
    return item


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


@dataclass
class _Plan:
    """What an apply found and decided before writing: the item before (as the script saw it, and as the
    apply found it), the sender's ``previous`` after conflicts, and the incoming script's result."""

    first_sync: bool
    before: dict[str, Any]
    previous: dict[str, Any]
    lost: list[str]  # fields whose local value was kept (edited later here)
    ours: dict[str, Any] | None  # the item before, through the outgoing rules
    ours_edited: str | None  # its person-edit time
    unannotated: dict[str, Any] | None  # the item as read, without the other side's ids
    held: dict[str, Any] | None  # the item as this apply found it
    changed: set[str]  # fields the sender changed and that were not kept
    result: Any
    after: dict[str, Any]

    @property
    def create_fields(self) -> dict[str, Any]:
        return {
            k: self.after.get(k)
            for k in (*ITEM_FIELDS, "project")
            if self.after.get(k) not in (None, "", [], {})
        }


def process_incoming(twin: Twin, head: SyncEvent) -> None:
    """Apply an incoming event to the local item: read it, settle conflicts, run the incoming rules, write
    what they changed (adopting what an earlier attempt wrote), record what is now in sync, ack."""
    conn = twin.connection
    SyncEvent.objects.filter(pk=head.pk).update(status=Status.PROCESSING, attempts=head.attempts + 1)
    transport = transport_for(conn)
    if head.kind == SyncEvent.Kind.UNEXALATE:
        _apply_unexalate(twin, head)
        return
    payload = validate_replica(head.replica)
    rules = rules_for(conn)
    connector = get_connector(conn.local_instance, actor=actor_for(conn))
    plan = _plan(twin, head, payload, connector, rules)
    # On the built-in tracker every write shares one transaction with the twin's bookkeeping: all or nothing.
    builtin = conn.local_instance.tracker_type == "builtin"
    # Elsewhere an earlier attempt of this event may have written without hearing back (its answer was
    # lost, or its worker died waiting): this attempt adopts what it finds written instead of repeating it.
    # (An admin's retry sets attempts to 1, so it counts too.)
    retrying = not builtin and head.attempts > 0
    if plan.first_sync and retrying and _adopt_created(twin, head, connector, plan.create_fields):
        connector = get_connector(conn.local_instance, actor=actor_for(conn))
        plan = _plan(twin, head, payload, connector, rules)  # now an update of that item
    wrote = Written()
    downloads = ExitStack()  # attachments to add, downloaded before the transaction (see fetch_attachments)
    try:
        fetched = fetch_attachments(
            twin,
            plan.before,
            plan.after,
            transport,
            downloads,
            remote_item_id=payload["hubIssue"]["id"],
            adopt=retrying,
            wrote=wrote,
        )
    except BaseException:
        downloads.close()
        raise
    with downloads, transaction.atomic() if builtin else nullcontext():
        created = _write(twin, connector, plan, wrote, builtin=builtin)
        apply_comments(connector, twin, plan.before, plan.after, wrote, created=created, adopt=retrying)
        apply_attachments(connector, twin, plan.before, plan.after, fetched, wrote)
        flush = getattr(connector, "flush", None)
        if callable(flush):
            flush()  # connectors that coalesce writes (Zendesk's per-ticket limit) write them now
        with transaction.atomic(savepoint=False):  # a failure here rolls back the apply too (built-in)
            note = _record(twin, head, payload["hubIssue"], connector, plan, wrote, rules)
            transport.ack(head, twin)
    logger.info(
        "Applied message %d from %s to %s%s",
        head.seq,
        conn.name,
        twin.local_key,
        f" ({note})" if note else "",
    )
    if plan.result.sync_back:
        queue_outgoing(twin)
    if plan.result.unexalate:
        unexalate(twin=twin)


def _apply_unexalate(twin: Twin, head: SyncEvent) -> None:
    """The sender stopped syncing the item: so does this side."""
    with transaction.atomic():
        Twin.objects.filter(pk=twin.pk).update(
            unexalated_at=timezone.now(),
            state=Twin.State.UNEXALATED,
            applied_seq=max(head.seq, twin.applied_seq),
        )
        finish_event(head, Status.DONE)


def _plan(twin: Twin, head: SyncEvent, payload: dict[str, Any], connector: Any, rules: Any) -> _Plan:
    """Read the local item (none on first sync), settle conflicts and run the incoming rules. Writes
    nothing to the tracker."""
    from syncrules import sandbox

    conn = twin.connection
    hub = payload["hubIssue"]
    first_sync = not twin.local_id
    connect_to = (hub.get("eventTriggerContext") or {}).get("connectTo")
    if first_sync and connect_to:
        ref = connector.find_item(str(connect_to))
        if ref is not None:
            twin.local_id, twin.local_key, twin.local_url = ref.id, ref.key, ref.url[:500]
            first_sync = False
    if first_sync:
        before, previous, lost, ours, ours_edited = blank_item(), {}, [], None, None
        unannotated = held = None  # set once the item exists (``_write``)
    else:
        current = connector.get_item(twin.local_id)
        ours, _ = build_outgoing(conn, current, rules)
        unannotated = copy.deepcopy(current)
        held = unannotated  # the item as this apply found it
        before = annotate(current, twin)
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
    return _Plan(
        first_sync=first_sync,
        before=before,
        previous=previous,
        lost=lost,
        ours=ours,
        ours_edited=ours_edited,
        unannotated=unannotated,
        held=held,
        changed=changed,
        result=result,
        after=result.issue or {},
    )


def _adopt_created(twin: Twin, head: SyncEvent, connector: Any, create_fields: dict[str, Any]) -> bool:
    """A retried first sync: the item an earlier attempt created, if any, becomes the twin's item."""
    earlier = created_earlier(connector, twin, create_fields, since=head.created_at - CREATE_CLOCK_SKEW)
    if earlier is None:
        return False
    twin.local_id, twin.local_key, twin.local_url = earlier.id, earlier.key, earlier.url[:500]
    Twin.objects.filter(pk=twin.pk).update(
        local_id=earlier.id, local_key=earlier.key, local_url=twin.local_url
    )
    logger.warning("Adopted %s, created by an earlier attempt of %s", earlier.key, head.trace_id)
    return True


def _write(twin: Twin, connector: Any, plan: _Plan, wrote: Written, *, builtin: bool) -> bool:
    """Create the item (first sync) or update the fields the rules changed. True when the item was created
    inside the tracker's transaction (so no earlier run got this far)."""
    if not plan.first_sync:
        after, before = plan.after, plan.before
        changes = {k: after.get(k) for k in ITEM_FIELDS if k in after and after.get(k) != before.get(k)}
        if changes:
            connector.update_item(twin.local_id, changes)
            wrote.fields.update(copy.deepcopy(changes))
        return False
    ref = connector.create_item(plan.create_fields)
    twin.local_id, twin.local_key, twin.local_url = ref.id, ref.key, ref.url[:500]
    # Record the created item at once: a retry after a crash updates it instead of creating another.
    Twin.objects.filter(pk=twin.pk).update(local_id=ref.id, local_key=ref.key, local_url=twin.local_url)
    if not builtin:
        # The new item as created (with the tracker's defaults), read at once: the echo bookkeeping
        # records it as in sync, but not a person's edit made between now and the final read-back.
        # (On the built-in tracker nobody sees the item before this transaction commits.)
        plan.unannotated = connector.get_item(ref.id)
    plan.before = {"id": ref.id, "comments": [], "attachments": []}  # a new item has neither yet
    return builtin


def _record(
    twin: Twin,
    head: SyncEvent,
    hub: dict[str, Any],
    connector: Any,
    plan: _Plan,
    wrote: Written,
    rules: Any,
) -> str:
    """The twin's bookkeeping after the writes (inside the apply's transaction): the replicas, what is now
    in sync (no echo), the person-edit time, and the event done. Returns the event's note."""
    conn = twin.connection
    lock_pair(twin)
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
    if not plan.result.sync_back:
        # No echo: what the apply changed is what the other side already has. Only what it wrote:
        # a person's edit that landed between the two reads is still a change to send.
        seen = applied
        if plan.unannotated is not None:
            seen, person_edit = wrote.view(
                plan.unannotated,
                applied,
                own_change=functools.cache(lambda: connector.is_own_change(applied)),
            )
        now, _ = build_outgoing(conn, seen, rules)
        agreed = agreed_before(twin, plan.ours, plan.changed, plan.after, plan.held)
        twin.local_replica = echo_replica(twin.local_replica, agreed, now)
    # A person's edit made while the apply ran is timed as what it is, not as the node's write.
    twin.person_updated = str((applied.get("updated") if person_edit else plan.ours_edited) or "")[:64]
    twin.state = Twin.State.SYNCHRONIZED
    # Only what this apply sets: the peer's ack (on another worker) writes the twin's remote side and
    # acked_seq, and the lease keeps every other writer of these fields away.
    twin.save(update_fields=APPLY_FIELDS)
    note = f"Kept the local value of {', '.join(plan.lost)} (edited later here)." if plan.lost else ""
    SyncEvent.objects.filter(pk=head.pk).update(
        status=Status.DONE,
        processed_at=timezone.now(),
        rules_version=rules,
        error=note,
        not_before=None,
    )
    return note
