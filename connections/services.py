"""Connection life-cycle: create a local connection, activate, deactivate, delete."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from connections.models import Connection
from instances.models import Instance


class ConnectionError_(ValueError):
    """A connection operation that cannot be done; the message says why and what to do."""


@transaction.atomic
def connection_create_local(
    *, name: str, instance_a: Instance, instance_b: Instance, type: str = Connection.Type.BASIC
) -> tuple[Connection, Connection]:
    """A local connection between two instances on this node: two active sides, each with default rules."""
    from syncrules.services import rules_publish_defaults

    if instance_a.pk == instance_b.pk:
        raise ConnectionError_("A connection needs two different instances.")
    if not (instance_a.is_local and instance_b.is_local):
        raise ConnectionError_("A local connection joins two local instances of this node.")
    now = timezone.now()
    side_a = Connection.objects.create(
        name=name,
        type=type,
        status=Connection.Status.ACTIVE,
        local_instance=instance_a,
        remote_instance=instance_b,
        initiated_by=Connection.Side.LOCAL,
        activated_at=now,
    )
    side_b = Connection.objects.create(
        name=name,
        type=type,
        status=Connection.Status.ACTIVE,
        local_instance=instance_b,
        remote_instance=instance_a,
        initiated_by=Connection.Side.REMOTE,
        activated_at=now,
        peer=side_a,
        peer_uid=side_a.uid,
    )
    Connection.objects.filter(pk=side_a.pk).update(peer=side_b, peer_uid=side_b.uid)
    side_a.refresh_from_db()
    rules_publish_defaults(connection=side_a)
    rules_publish_defaults(connection=side_b)
    return side_a, side_b


def _sides(connection: Connection) -> list[Connection]:
    return [connection, connection.peer] if connection.peer_id else [connection]


@transaction.atomic
def connection_deactivate(*, connection: Connection) -> None:
    """Pause: changes keep being recorded and queued; nothing is sent or applied until activation."""
    if connection.status == Connection.Status.PENDING:
        raise ConnectionError_("A pending connection is not active yet; accept its invitation first.")
    for side in _sides(connection):
        Connection.objects.filter(pk=side.pk).update(status=Connection.Status.DEACTIVATED)
    if not connection.is_local:
        from connections import transport

        transport.notify_peer_status(connection, Connection.Status.DEACTIVATED)


@transaction.atomic
def connection_activate(*, connection: Connection) -> None:
    """Resume: queued changes flow in order."""
    from replicas.pipeline import nudge, pending_twins

    if connection.status == Connection.Status.PENDING:
        raise ConnectionError_(
            "A pending connection is activated when the other side accepts the invitation."
        )
    for side in _sides(connection):
        Connection.objects.filter(pk=side.pk).update(
            status=Connection.Status.ACTIVE, status_message="", activated_at=timezone.now()
        )
        for twin_id in pending_twins(side.pk):
            nudge(twin_id)
    if not connection.is_local:
        from connections import transport

        transport.notify_peer_status(connection, Connection.Status.ACTIVE)


@transaction.atomic
def connection_delete(*, connection: Connection) -> None:
    """Delete the connection (both sides of a local one): its twins stop; the items stay as they are."""
    if not connection.is_local and connection.status != Connection.Status.PENDING:
        from connections import transport

        transport.notify_peer_deleted(connection)
    for side in _sides(connection):
        Connection.objects.filter(pk=side.pk).update(peer=None)
    for side in _sides(connection):
        Connection.objects.filter(pk=side.pk).delete()
