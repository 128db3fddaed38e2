"""Admin operations on items under sync: exalate, unexalate, connect, resolve an error (and retry)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from connections.models import Connection
from instances.connectors import get_connector
from replicas.models import SyncError, SyncEvent, Twin
from replicas.pipeline import base
from replicas.pipeline.base import Direction, OperationError, Status
from replicas.pipeline.intake import pending_twins, queue_outgoing


def exalate(*, connection: Connection, key: str, nudge_now: bool = True) -> Twin:
    """Start syncing a local item on a connection (or send its current state again).

    ``nudge_now=False`` leaves the processing to the caller (bulk jobs work through their items themselves).
    """
    if connection.status not in (Connection.Status.ACTIVE, Connection.Status.DEACTIVATED):
        raise OperationError(f"Connection '{connection.name}' is {connection.status}; activate it first.")
    ref = get_connector(connection.local_instance).find_item(key)
    if ref is None:
        raise OperationError(f"There is no item '{key}' in {connection.local_instance.name}.")
    with transaction.atomic():
        twin, _created = Twin.objects.get_or_create(
            connection=connection,
            local_id=ref.id,
            defaults={"local_key": ref.key, "local_url": ref.url[:500]},
        )
        if twin.unexalated_at:
            Twin.objects.filter(pk=twin.pk).update(
                unexalated_at=None, state=Twin.State.QUEUED, local_replica=None
            )
            twin.refresh_from_db()
        queue_outgoing(twin, item_key=ref.key, nudge_now=nudge_now)
    return twin


def unexalate(*, twin: Twin) -> None:
    """Stop syncing an item on this connection; both items stay. The other side is told to stop too."""
    with transaction.atomic():
        updated = Twin.objects.filter(pk=twin.pk, unexalated_at__isnull=True).update(
            unexalated_at=timezone.now(), state=Twin.State.UNEXALATED
        )
        if updated:
            SyncEvent.objects.filter(twin=twin, direction=Direction.OUTGOING, status=Status.PENDING).update(
                status=Status.SKIPPED, error="Item unexalated."
            )
            queue_outgoing(twin, kind=SyncEvent.Kind.UNEXALATE)


def connect(*, connection: Connection, local_key: str, remote_key: str) -> Twin:
    """Link two items that already exist on both sides; the local side's state is sent to the remote one."""
    ref = get_connector(connection.local_instance).find_item(local_key)
    if ref is None:
        raise OperationError(f"There is no item '{local_key}' in {connection.local_instance.name}.")
    with transaction.atomic():
        twin, created = Twin.objects.get_or_create(
            connection=connection,
            local_id=ref.id,
            defaults={"local_key": ref.key, "local_url": ref.url[:500], "remote_key": remote_key},
        )
        if not created and twin.remote_id:
            raise OperationError(
                f"{ref.key} is already synced with {twin.remote_key} on '{connection.name}'."
            )
        Twin.objects.filter(pk=twin.pk).update(remote_key=remote_key, unexalated_at=None)
        queue_outgoing(twin, item_key=ref.key)
    return twin


def error_resolve(*, error: SyncError, retry: bool) -> None:
    """Mark an error resolved; with ``retry`` the blocked event (or held connection) goes again."""
    with transaction.atomic():
        SyncError.objects.filter(pk=error.pk, resolved_at__isnull=True).update(resolved_at=timezone.now())
        if not retry:
            if error.event_id and error.impact == SyncError.Impact.ENTITY:
                SyncEvent.objects.filter(pk=error.event_id, status=Status.FAILED).update(
                    status=Status.SKIPPED, error="Skipped: error resolved without retry."
                )
                if error.twin_id:
                    base.nudge(error.twin_id)
            return
        if error.impact == SyncError.Impact.CONNECTION and error.connection_id:
            Connection.objects.filter(pk=error.connection_id, status=Connection.Status.ERROR).update(
                status=Connection.Status.ACTIVE, status_message=""
            )
            for twin_id in pending_twins(error.connection_id):
                base.nudge(twin_id)
        if error.event_id:
            SyncEvent.objects.filter(pk=error.event_id, status=Status.FAILED).update(
                # 1, not 0: the retry must know an earlier attempt ran (it adopts what that one wrote).
                status=Status.PENDING,
                attempts=1,
                not_before=None,
            )
        if error.twin_id:
            Twin.objects.filter(pk=error.twin_id, state=Twin.State.FAILED).update(state=Twin.State.QUEUED)
            base.nudge(error.twin_id)
