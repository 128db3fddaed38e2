from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from connections.transport import HttpTransport


def http_transport() -> HttpTransport:
    """The pipeline's node-to-node transport, imported on first use (not at every process's start)."""
    from connections.transport import HttpTransport

    return HttpTransport()


class ConnectionsConfig(AppConfig):
    name = "connections"

    def ready(self) -> None:
        # The pipeline (a lower layer) sends node-to-node messages through this app's transport.
        from replicas.transport import register_remote_transport

        register_remote_transport(http_transport)
