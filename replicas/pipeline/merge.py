"""The merge rule, pure: no database, no tracker. What changed, who edited a field last, which side wins a
conflict, and what to record as in sync after an apply (docs/architecture.md, "The pipeline" 5 and 6)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from django.utils import timezone

from instances.connectors.base import written_value_seen


class TwinView(Protocol):
    """What the merge rule reads of a twin (``replicas.models.Twin``): no queries."""

    local_replica: dict[str, Any] | None
    sync_written_updated: str
    person_updated: str


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

LISTS_BY_ID = ("comments", "attachments")


def _by_id(entries: Any) -> list[Any]:
    if not isinstance(entries, list):
        return entries
    return sorted(entries, key=lambda e: str(e.get("id")) if isinstance(e, dict) else str(e))


def comparable(hub: dict[str, Any] | None) -> dict[str, Any]:
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


def blank_item() -> dict[str, Any]:
    """The item an incoming script sees on first sync: nothing there yet."""
    return {"labels": [], "comments": [], "attachments": [], "customFields": {}}


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from a replica (``Z`` allowed; naive means UTC), or None if it is not one."""
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


def person_time(twin: TwinView, item_updated: str | None) -> str | None:
    """When the item's values were last edited by a person (not by this node applying the other side's
    changes): its ``updated``, unless that is the time of our own last apply; then the person's time
    recorded at that apply (None when nobody edited it here)."""
    if item_updated and twin.sync_written_updated and item_updated == twin.sync_written_updated:
        return twin.person_updated or None
    return item_updated


NEVER = datetime.min.replace(tzinfo=UTC)


def field_time(times: dict[str, Any], field: str, fallback: datetime | None) -> datetime | None:
    """When a person last edited ``field``, from per-field history (``Connector.field_edit_times``: "" is
    never since the item was created), else ``fallback`` (the item's person-edit time)."""
    if field not in times:
        return fallback
    value = times[field]
    if value == "":
        return NEVER
    return parse_time(value) or fallback


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
    remote_item, local_item = parse_time(hub.get("updated")), parse_time(ours.get("updated"))
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
    twin: TwinView,
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
