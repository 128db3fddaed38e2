"""Reconciliation: find the drift no webhook, poll or apply delivered, report it field by field, repair it.

Two checks per twin of a connection:

* **Unsent here.** The local item, through the outgoing rules, differs from what was last sent (a change
  behind the node's back): a sync is queued.
* **The two live items.** The other side's item as its outgoing rules would send it now, run through this
  side's incoming rules with every field marked changed: a field the rules would change here differs
  between the two sides, although both sides consider it in sync (a person's edit the node once took for
  its own, say). Each such field is reported with both values; the side with the later person edit of that
  field re-sends it (so each side repairs its own winning fields; on a local connection both sides are
  checked in one run).

A value the rules map, keep or cannot translate is no drift (Redmine's New against our Open, when the rules
leave unknown names alone): the comparison goes through the rules. The other side's live item is read
in-process on a local connection; for a node-to-node connection the replica last received stands for it.
"""

from __future__ import annotations

import copy
from typing import Any

from django.utils import timezone

from connections.models import Connection
from instances.connectors import ConnectorError, get_connector
from instances.connectors.base import written_value_seen
from replicas.models import ReconciliationReport, SyncEvent, Twin
from replicas.pipeline import ITEM_FIELDS

MAX_FINDINGS = 500
# Fields compared between the two live items: those an apply writes, but the reporter (set when an item is
# created, never changed by sync afterwards). Comments and attachments merge by id; the unsent-here scan
# checks them.
COMPARED = tuple(field for field in ITEM_FIELDS if field != "reporter")
RESEND = {"reconcile": "resend"}  # recorded as "last sent" for a field that must go again: never equal


class _Side:
    """One side of the connection as reconciliation sees it: its connector, rules and twins."""

    def __init__(self, connection: Connection) -> None:
        from replicas.pipeline import actor_for
        from syncrules.services import rules_current

        self.connection = connection
        self.connector = get_connector(connection.local_instance, actor=actor_for(connection))
        self.rules = rules_current(connection)

    def live(self, twin: Twin) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """The twin's item, the replica the outgoing rules would send now (``updated`` = the last person
        edit), and the per-field person-edit times."""
        from replicas.pipeline import build_outgoing, person_time

        item = self.connector.get_item(twin.local_id)
        hub, _ = build_outgoing(self.connection, item, self.rules)
        hub["updated"] = person_time(twin, item.get("updated")) or item.get("updated")
        return item, hub, self.connector.field_edit_times(item)


def reconcile(*, connection: Connection, repair: bool = True) -> ReconciliationReport:
    """Scan every active twin of the connection; re-send what drifted from here when ``repair``."""
    from replicas.pipeline import comparable, queue_outgoing

    report = ReconciliationReport.objects.create(connection=connection)
    here = _Side(connection)
    there = _Side(connection.peer) if connection.is_local and connection.peer_id else None
    findings: list[dict[str, Any]] = []
    busy = set(
        SyncEvent.objects.filter(
            connection__in=[connection.pk, connection.peer_id or connection.pk],
            status__in=[SyncEvent.Status.PENDING, SyncEvent.Status.PROCESSING, SyncEvent.Status.SENT],
        ).values_list("twin_id", flat=True)
    )
    twins = Twin.objects.filter(connection=connection, unexalated_at__isnull=True).exclude(local_id="")
    for twin in twins.order_by("id").iterator():
        report.checked += 1
        if twin.pk in busy or twin.local_replica is None:
            continue  # a sync is under way (here or there): not drift
        try:
            item, hub, times = here.live(twin)
        except ConnectorError as exc:
            _unreadable(report, findings, connection, twin, exc)
            continue
        unsent = sorted(
            k
            for k in set(comparable(hub)) | set(comparable(twin.local_replica))
            if comparable(hub).get(k) != comparable(twin.local_replica).get(k)
        )
        if unsent:
            report.drifted += 1
            finding: dict[str, Any] = {"key": twin.local_key, "problem": "drift", "fields": unsent}
            if repair:
                queue_outgoing(twin, item_key=twin.local_key)
                report.repaired += 1
                finding["repaired"] = True
            findings.append(finding)
            continue
        other = _other_side(connection, twin, there)
        if other is None:
            continue
        theirs, their_times = other
        values = _differing(here, item, hub, times, theirs, their_times, twin)
        if not values:
            continue
        report.drifted += 1
        finding = {"key": twin.local_key, "problem": "drift", "fields": sorted(values), "values": values}
        if repair:
            # Each field goes again from the side that edited it last: this side's now; on a local
            # connection the other side's too (another node re-sends its own when it reconciles).
            # Against another node's last replica (its live item unseen), only a field this side's history
            # shows a later person edit of is sent again; the other node repairs its own.
            ours = [f for f, v in values.items() if v["later"] == "here" and (there or times.get(f))]
            resent = _resend(twin, ours)
            if there is not None:
                peer_twin = Twin.objects.filter(connection=connection.peer, local_id=twin.remote_id).first()
                if peer_twin is not None:
                    resent |= _resend(peer_twin, [f for f, v in values.items() if v["later"] == "there"])
            if resent:
                report.repaired += 1
                finding["repaired"] = True
        findings.append(finding)
    report.findings = findings[:MAX_FINDINGS]
    report.finished_at = timezone.now()
    report.save()
    return report


def _resend(twin: Twin, fields: list[str]) -> bool:
    """Send these fields of the twin's item again: they are recorded as never sent, and a sync is queued."""
    from replicas.pipeline import queue_outgoing

    if not fields or twin.local_replica is None:
        return False
    sent = dict(twin.local_replica)
    sent.update({field: RESEND for field in fields})
    Twin.objects.filter(pk=twin.pk).update(local_replica=sent)
    twin.local_replica = sent
    queue_outgoing(twin, item_key=twin.local_key)
    return True


def _other_side(
    connection: Connection, twin: Twin, there: _Side | None
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The other side's item as its rules would send it now, with its per-field edit times; None when
    there is nothing to compare (yet)."""
    from replicas.pipeline import comparable, queue_outgoing

    if there is None:  # another node: the replica it sent last (its live item needs the peer's help)
        received = twin.remote_replica
        if not received:
            return None
        edited = received.get("edited")
        return received, dict(edited) if isinstance(edited, dict) else {}
    peer_twin = Twin.objects.filter(connection=connection.peer, local_id=twin.remote_id).first()
    if peer_twin is None or not twin.remote_id:
        return None
    try:
        _item, hub, times = there.live(peer_twin)
    except ConnectorError:
        return None  # reported when the other side's connection is reconciled
    if peer_twin.local_replica is None or comparable(hub) != comparable(peer_twin.local_replica):
        # A change there that was never sent (a poll not yet run, say): it is on its way, and no drift.
        queue_outgoing(peer_twin, item_key=peer_twin.local_key)
        return None
    return hub, times


def _differing(
    here: _Side,
    item: dict[str, Any],
    hub: dict[str, Any],
    times: dict[str, str],
    theirs: dict[str, Any],
    their_times: dict[str, str],
    twin: Twin,
) -> dict[str, dict[str, Any]]:
    """The fields this side's incoming rules would change if the other side's item arrived now, with both
    values and which side edited the field last ("here" or "there")."""
    from replicas.pipeline import annotate, field_time, parse_time, script_context
    from syncrules import sandbox

    result = sandbox.run_incoming(
        here.rules.incoming,
        replica=theirs,
        issue=annotate(copy.deepcopy(item), twin),
        previous={},  # every field counts as changed there
        first_sync=False,
        context=script_context(here.connection),
    )
    after = result.issue or {}
    ties_here = here.connection.local_instance.uid > (
        here.connection.remote_instance.uid if here.connection.remote_instance else ""
    )
    values: dict[str, dict[str, Any]] = {}
    for field in COMPARED:
        if field not in after or written_value_seen(field, after.get(field), item.get(field)):
            continue
        mine = field_time(times, field, parse_time(hub.get("updated")))
        other = field_time(their_times, field, parse_time(theirs.get("updated")))
        later_here = bool(mine and (other is None or mine > other or (mine == other and ties_here)))
        values[field] = {
            "here": _shown(hub.get(field)),
            "there": _shown(theirs.get(field)),
            "later": "here" if later_here else "there",
        }
    return values


def _shown(value: Any) -> Any:
    """A field's value as a person reads it in the report: a status by its name, a person by e-mail."""
    if isinstance(value, dict):
        for key in ("name", "email", "displayName", "value"):
            if value.get(key) not in (None, ""):
                return value[key]
    return value


def _unreadable(
    report: ReconciliationReport,
    findings: list[dict[str, Any]],
    connection: Connection,
    twin: Twin,
    exc: ConnectorError,
) -> None:
    if exc.status == 404:
        report.missing += 1
        findings.append(
            {
                "key": twin.local_key,
                "problem": "deleted",
                "detail": f"{twin.local_key} no longer exists in {connection.local_instance.name}; "
                f"its twin {twin.remote_key} is kept. Unexalate it, or restore the item.",
            }
        )
    else:
        findings.append({"key": twin.local_key, "problem": "unreadable", "detail": exc.message})


def reconcile_all() -> int:
    """The scheduled scan: every active connection of this node."""
    count = 0
    for connection in Connection.objects.filter(status=Connection.Status.ACTIVE).select_related(
        "local_instance", "remote_instance", "peer"
    ):
        reconcile(connection=connection)
        count += 1
    return count
