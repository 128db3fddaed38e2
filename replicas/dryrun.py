"""Dry-run: a connection's scripts run on real items and replicas, with the pipeline's script context,
writing nothing. The rules editor (UI and ``POST /api/v1/connections/<id>/rules/dry-run/``) shows the
result."""

from __future__ import annotations

import copy
from typing import Any

from connections.models import Connection
from instances.connectors import get_connector
from replicas.models import Twin
from replicas.pipeline import ITEM_FIELDS, OperationError, annotate, blank_item, script_context
from syncrules import sandbox
from syncrules.services import rules_current


def dry_run_outgoing(*, connection: Connection, key: str, outgoing: str | None = None) -> dict[str, Any]:
    """Run the outgoing script on a real local item and return the replica it would send. Writes nothing."""

    connector = get_connector(connection.local_instance)
    ref = connector.find_item(key)
    if ref is None:
        raise OperationError(f"There is no item '{key}' in {connection.local_instance.name}.")
    item = connector.get_item(ref.id)
    source = outgoing if outgoing is not None else rules_current(connection).outgoing
    result = sandbox.run_outgoing(source, issue=item, context=script_context(connection))
    return {"replica": result.replica, "log": result.log, "duration_ms": result.duration_ms}


def dry_run_incoming(
    *, connection: Connection, replica: dict[str, Any], key: str | None = None, incoming: str | None = None
) -> dict[str, Any]:
    """Run the incoming script on a given replica (against a local item, or as a first sync) and return the
    changes it would make to the local item. Writes nothing."""

    hub = replica.get("hubIssue", replica)
    connector = get_connector(connection.local_instance)
    twin = None
    if key:
        ref = connector.find_item(key)
        if ref is None:
            raise OperationError(f"There is no item '{key}' in {connection.local_instance.name}.")
        twin = Twin.objects.filter(connection=connection, local_id=ref.id).first()
        before = connector.get_item(ref.id)
        if twin is not None:
            before = annotate(before, twin)
    else:
        before = blank_item()
    source = incoming if incoming is not None else rules_current(connection).incoming
    result = sandbox.run_incoming(
        source,
        replica=hub,
        issue=copy.deepcopy(before),
        previous=(twin.remote_replica if twin else None) or {},
        first_sync=not key,
        context=script_context(connection),
    )
    after = result.issue or {}
    changes = {
        k: {"from": before.get(k), "to": after.get(k)} for k in ITEM_FIELDS if after.get(k) != before.get(k)
    }
    new_comments = [c for c in after.get("comments") or [] if not c.get("id")]
    new_attachments = [a for a in after.get("attachments") or [] if not a.get("id")]
    kept_c = {c.get("id") for c in after.get("comments") or []}
    kept_a = {a.get("id") for a in after.get("attachments") or []}
    return {
        "first_sync": not key,
        "changes": changes,
        "comments_added": new_comments,
        "comments_removed": [c["id"] for c in before.get("comments") or [] if c.get("id") not in kept_c],
        "attachments_added": new_attachments,
        "attachments_removed": [
            a["id"] for a in before.get("attachments") or [] if a.get("id") not in kept_a
        ],
        "log": result.log,
        "unexalate": result.unexalate,
        "duration_ms": result.duration_ms,
    }
