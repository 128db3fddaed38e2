"""Triggers: items that match a connection's query start syncing when they are created or changed."""

from __future__ import annotations

import logging

from django.db import transaction

from connections.models import Connection
from instances.connectors import ConnectorError, get_connector
from replicas.models import SyncError, Trigger, Twin

logger = logging.getLogger(__name__)


def trigger_validate(*, connection: Connection, query: str) -> None:
    """Raise ConnectorError with the tracker's own message when the query is not valid there."""
    get_connector(connection.local_instance).query_validate(query)


def trigger_create(
    *, connection: Connection, query: str, entity_type: str = "issue", notes: str = ""
) -> Trigger:
    trigger_validate(connection=connection, query=query)
    return Trigger.objects.create(connection=connection, query=query, entity_type=entity_type, notes=notes)


def trigger_update(*, trigger: Trigger, **fields: object) -> Trigger:
    if "query" in fields:
        trigger_validate(connection=trigger.connection, query=str(fields["query"]))
    for name, value in fields.items():
        setattr(trigger, name, value)
    trigger.save()
    return trigger


def fire_triggers(*, instance_id: int, item_id: str, exclude: set[int]) -> None:
    """Start syncing the item on every connection whose active trigger matches it (and where it is not
    synced already). Runs in the transaction of the change."""
    from replicas.pipeline import queue_outgoing

    triggers = list(
        Trigger.objects.filter(
            active=True,
            connection__local_instance_id=instance_id,
            connection__status__in=[Connection.Status.ACTIVE, Connection.Status.DEACTIVATED],
        )
        .exclude(connection_id__in=exclude)
        .select_related("connection", "connection__local_instance")
    )
    if not triggers:
        return
    connector = get_connector(triggers[0].connection.local_instance)
    try:
        item = connector.get_item(item_id)
    except ConnectorError:
        return  # deleted meanwhile
    started: set[int] = set()
    for trigger in triggers:
        if trigger.connection_id in started:
            continue
        try:
            matches = connector.query_matches(trigger.query, item)
        except ConnectorError as exc:
            _trigger_error(trigger, str(exc))
            continue
        if not matches:
            continue
        with transaction.atomic():
            twin, created = Twin.objects.get_or_create(
                connection=trigger.connection,
                local_id=str(item["id"]),
                defaults={"local_key": item.get("key") or "", "local_url": (item.get("url") or "")[:500]},
            )
            if created:
                queue_outgoing(twin, item_key=twin.local_key)
        started.add(trigger.connection_id)


def _trigger_error(trigger: Trigger, message: str) -> None:
    logger.warning("Trigger %s failed: %s", trigger.pk, message)
    if not SyncError.objects.filter(
        impact="trigger", connection=trigger.connection, resolved_at=None
    ).exists():
        SyncError.objects.create(
            impact=SyncError.Impact.TRIGGER,
            connection=trigger.connection,
            message=f"Trigger #{trigger.pk} ({trigger.query[:100]}) could not be evaluated: {message} "
            "Fix or deactivate the trigger.",
        )
