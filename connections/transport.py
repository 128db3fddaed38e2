"""Node-to-node delivery (HTTP, signed). Placeholder until the node protocol lands."""

from __future__ import annotations

from typing import Any


class HttpTransport:
    def send(self, event: Any) -> None:
        raise NotImplementedError("Node-to-node delivery is not available yet.")

    def ack(self, event: Any, twin: Any) -> None:
        raise NotImplementedError("Node-to-node delivery is not available yet.")

    def fetch_attachment(self, connection: Any, remote_item_id: str, attachment_id: str) -> Any:
        raise NotImplementedError("Node-to-node delivery is not available yet.")


def notify_peer_status(connection: Any, status: str) -> None:
    return None


def notify_peer_deleted(connection: Any) -> None:
    return None
