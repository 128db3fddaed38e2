"""Reconciliation: compare each twin's local item with what was last sent, find drift that no webhook or
poll delivered (and items deleted behind the node's back), repair or report it.

Each node reconciles its own side of a connection; drift on the other side is found by the other node.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from connections.models import Connection
from instances.connectors import ConnectorError, get_connector
from replicas.models import ReconciliationReport, SyncEvent, Twin

MAX_FINDINGS = 500


def reconcile(*, connection: Connection, repair: bool = True) -> ReconciliationReport:
    """Scan every active twin of the connection; queue a sync for each drifted item when ``repair``."""
    from replicas.pipeline import _strip, build_outgoing, queue_outgoing
    from syncrules.services import rules_current

    report = ReconciliationReport.objects.create(connection=connection)
    connector = get_connector(connection.local_instance)
    rules = rules_current(connection)
    findings: list[dict[str, Any]] = []
    busy = set(
        SyncEvent.objects.filter(
            connection=connection, status__in=[SyncEvent.Status.PENDING, SyncEvent.Status.PROCESSING]
        ).values_list("twin_id", flat=True)
    )
    twins = Twin.objects.filter(connection=connection, unexalated_at__isnull=True).exclude(local_id="")
    for twin in twins.order_by("id").iterator():
        report.checked += 1
        if twin.pk in busy:
            continue  # a sync is under way: not drift
        try:
            item = connector.get_item(twin.local_id)
        except ConnectorError as exc:
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
            continue
        hub, _ = build_outgoing(connection, item, rules)
        if twin.local_replica is None or _strip(hub) == _strip(twin.local_replica):
            continue
        changed = sorted(
            k
            for k in set(_strip(hub)) | set(_strip(twin.local_replica))
            if _strip(hub).get(k) != _strip(twin.local_replica).get(k)
        )
        report.drifted += 1
        finding = {"key": twin.local_key, "problem": "drift", "fields": changed}
        if repair:
            queue_outgoing(twin, item_key=twin.local_key)
            report.repaired += 1
            finding["repaired"] = True
        findings.append(finding)
    report.findings = findings[:MAX_FINDINGS]
    report.finished_at = timezone.now()
    report.save()
    return report


def reconcile_all() -> int:
    """The scheduled scan: every active connection of this node."""
    count = 0
    for connection in Connection.objects.filter(status=Connection.Status.ACTIVE).select_related(
        "local_instance"
    ):
        reconcile(connection=connection)
        count += 1
    return count
