"""How sync messages reach the other side of a connection.

The pipeline speaks to one interface: ``send`` an outgoing event (the peer stores it as an incoming event
with the same trace id), ``ack`` an applied incoming event (the sender's twin learns the local key and URL,
and the comment and attachment id mapping), and ``fetch_attachment`` content from the sender. A *local*
connection delivers in-process, inside the caller's transaction; a node-to-node connection queues the
message for the HTTP sender (``connections.transport``).

This module is a port: ``connections`` sits above the pipeline and implements the node-to-node transport;
it registers it when the app is ready (``connections.apps``), so the pipeline never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from connections.models import Connection
    from replicas.models import SyncEvent, Twin


class Transport(Protocol):
    def send(self, event: SyncEvent) -> None: ...

    def ack(self, event: SyncEvent, twin: Twin) -> None: ...

    def fetch_attachment(
        self, connection: Connection, remote_item_id: str, attachment_id: str
    ) -> Iterator[bytes]: ...


class LocalTransport:
    """Both sides on this node: write straight into the peer connection's inbox."""

    def send(self, event: SyncEvent) -> None:
        from replicas.pipeline import receive

        peer = event.connection.peer
        if peer is None:
            raise RuntimeError(f"Connection {event.connection} has no local peer.")
        receive(
            connection=peer,
            trace_id=str(event.trace_id),
            kind=event.kind,
            seq=event.seq,
            replica=event.replica,
            remote_item_id=event.twin.local_id,
        )
        type(event).objects.filter(pk=event.pk).update(delivered=True)

    def ack(self, event: SyncEvent, twin: Twin) -> None:
        from replicas.pipeline import ack_payload, acknowledge

        peer = twin.connection.peer
        if peer is not None:
            acknowledge(connection=peer, **ack_payload(event, twin))

    def fetch_attachment(
        self, connection: Connection, remote_item_id: str, attachment_id: str
    ) -> Iterator[bytes]:
        from instances.connectors import get_connector

        return get_connector(connection.peer.local_instance).open_attachment(remote_item_id, attachment_id)


_remote: Callable[[], Transport] | None = None


def register_remote_transport(factory: Callable[[], Transport]) -> None:
    """Install the transport of node-to-node connections (``connections.transport.HttpTransport``)."""
    global _remote
    _remote = factory


def transport_for(connection: Connection) -> Transport:
    """In-process for a local connection; the registered node-to-node transport otherwise."""
    if connection.is_local:
        return LocalTransport()
    if _remote is None:
        raise RuntimeError(
            "No node-to-node transport is registered: add 'connections' to INSTALLED_APPS "
            "(its AppConfig.ready registers it)."
        )
    return _remote()
