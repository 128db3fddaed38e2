"""The script context: what the rules see of the connection and the two instances (``script_context``)."""

from __future__ import annotations

import time
from typing import Any

from connections.models import Connection
from instances.connectors import get_connector
from replicas.models import Twin

META_CACHE: dict[int, tuple[float, dict[str, Any]]] = {}


class _ScriptServices:
    """What sync_helper can ask about this connection's twins."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def is_under_sync(self, key: str) -> bool:
        return Twin.objects.filter(connection=self.conn, local_key=key, unexalated_at__isnull=True).exists()

    def local_key_for_remote(self, remote_id: str) -> str | None:
        return (
            Twin.objects.filter(connection=self.conn, remote_id=remote_id)
            .values_list("local_key", flat=True)
            .first()
        )

    def remote_url(self, remote_key: str) -> str | None:
        return (
            Twin.objects.filter(connection=self.conn, remote_key=remote_key)
            .values_list("remote_url", flat=True)
            .first()
        )


def _instance_info(instance: Any) -> dict[str, str]:
    if instance is None:
        return {}
    return {
        "name": instance.name,
        "tracker_type": instance.tracker_type,
        "url": instance.url,
        "uid": instance.uid,
    }


def script_context(conn: Connection) -> dict[str, Any]:
    """What the rules see besides the item: the connection, both instances, and the local tracker's
    metadata (cached per instance for 30 s in ``META_CACHE``)."""
    cached = META_CACHE.get(conn.local_instance_id)
    if cached is None or cached[0] < time.monotonic():
        meta = get_connector(conn.local_instance).metadata()
        cached = (time.monotonic() + 30, meta)
        META_CACHE[conn.local_instance_id] = cached
    return {
        "connection": {
            "name": conn.name,
            "local_instance": _instance_info(conn.local_instance),
            "remote_instance": _instance_info(conn.remote_instance),
        },
        **cached[1],
        "services": _ScriptServices(conn),
    }
