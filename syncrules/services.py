"""Rules life-cycle: publish (a new version every time), read the version in force, validate, dry-run."""

from __future__ import annotations

import copy
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from connections.models import Connection
from syncrules.models import RulesVersion


class RulesInvalid(ValueError):
    """Rules with compile errors cannot be published; ``problems`` lists them with line numbers."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]
        line = first.get("line") or "?"
        super().__init__(f"The {first['direction']} script has an error on line {line}: {first['message']}")
        self.problems = problems


def rules_current(connection: Connection) -> RulesVersion:
    """The version in force; a connection without rules gets its tracker type's defaults published."""
    rules = RulesVersion.objects.filter(connection=connection).order_by("-version").first()
    return rules or rules_publish_defaults(connection=connection)


def rules_publish_defaults(*, connection: Connection) -> RulesVersion:
    from syncrules.defaults import default_rules

    outgoing, incoming = default_rules(connection.local_instance.tracker_type)
    return rules_publish(connection=connection, outgoing=outgoing, incoming=incoming, note="Default rules")


def rules_validate(*, outgoing: str, incoming: str) -> list[dict[str, Any]]:
    from syncrules import engine

    return engine.validate(outgoing, incoming)


def rules_publish(
    *, connection: Connection, outgoing: str, incoming: str, note: str = "", published_by: str = ""
) -> RulesVersion:
    """Validate and publish a new version; a script with a compile error is refused."""
    errors = [p for p in rules_validate(outgoing=outgoing, incoming=incoming) if p["severity"] == "error"]
    if errors:
        raise RulesInvalid(errors)
    for _ in range(5):
        try:
            with transaction.atomic():
                latest = (
                    RulesVersion.objects.filter(connection=connection).aggregate(v=Max("version"))["v"] or 0
                )
                return RulesVersion.objects.create(
                    connection=connection,
                    version=latest + 1,
                    outgoing=outgoing,
                    incoming=incoming,
                    note=note[:300],
                    published_by=published_by[:150],
                )
        except IntegrityError:  # two publishes raced for the same number
            continue
    raise RuntimeError("Could not allocate a rules version number; try again.")


def dry_run_outgoing(*, connection: Connection, key: str, outgoing: str | None = None) -> dict[str, Any]:
    """Run the outgoing script on a real local item and return the replica it would send. Writes nothing."""
    from instances.connectors import get_connector
    from replicas.pipeline import OperationError, script_context
    from syncrules import sandbox

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
    from instances.connectors import get_connector
    from replicas.models import Twin
    from replicas.pipeline import ITEM_FIELDS, OperationError, _annotate, _blank_item, script_context
    from syncrules import sandbox

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
            before = _annotate(before, twin)
    else:
        before = _blank_item()
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
