"""The node protocol's messages: validate a batch from a peer, then apply it to the pipeline.

Used by the ``/node/v1/messages/`` view (pushed batches) and by the private-mode poller
(``connections.tasks.poll``, fetched batches), so neither imports the other for it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from connections.models import Connection
from exalate_node.templatetags.links import is_web_url
from replicas import pipeline
from replicas.models import SyncEvent
from replicas.schema import ReplicaInvalid, validate_replica

MAX_BATCH = 1000
_ID_MAX = 200


class NodeRequestError(Exception):
    """Answer the peer with ``status`` and a JSON error body; nothing was changed."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class MessageRejected(NodeRequestError):
    def __init__(self, detail: str, code: str = "invalid_message") -> None:
        super().__init__(400, code, detail)


def _text(msg: dict[str, Any], name: str, index: int, *, required: bool = True, limit: int = _ID_MAX) -> str:
    value = msg.get(name, "")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        raise MessageRejected(
            f"Message {index}: '{name}' must be a non-empty string of at most {limit} characters."
        )
    return value


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Check a whole batch before anything is stored: one bad message refuses the batch (400)."""
    if not isinstance(messages, list):
        raise MessageRejected('The body must be {"messages": [...]}.')
    if len(messages) > MAX_BATCH:
        raise MessageRejected(f"A batch carries at most {MAX_BATCH} messages; send smaller batches.")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise MessageRejected(f"Message {i} is not an object.")
        kind = msg.get("type")
        if kind == "event":
            trace = _text(msg, "trace_id", i, limit=64)
            try:
                uuid.UUID(trace)
            except ValueError:
                raise MessageRejected(f"Message {i}: 'trace_id' is not a UUID.")
            if msg.get("kind") not in SyncEvent.Kind.values:
                raise MessageRejected(
                    f"Message {i}: 'kind' must be one of {', '.join(SyncEvent.Kind.values)}."
                )
            seq = msg.get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**31:
                raise MessageRejected(f"Message {i}: 'seq' must be a non-negative integer.")
            _text(msg, "remote_item_id", i)
            replica = msg.get("replica")
            if replica is None and msg["kind"] == SyncEvent.Kind.UNEXALATE:
                continue
            try:
                validate_replica(replica)
            except ReplicaInvalid as exc:
                raise MessageRejected(f"Message {i} (trace {trace}): {exc}", code="replica_invalid")
        elif kind == "ack":
            trace = _text(msg, "trace_id", i, limit=64)
            try:
                uuid.UUID(trace)
            except ValueError:
                raise MessageRejected(f"Message {i}: 'trace_id' is not a UUID.")
            _text(msg, "remote_item_id", i)
            _text(msg, "local_item_id", i)
            _text(msg, "remote_key", i, required=False)
            remote_url = _text(msg, "remote_url", i, required=False, limit=500)
            if remote_url and not is_web_url(remote_url):
                raise MessageRejected(
                    f"Message {i}: 'remote_url' must be an http or https URL (it becomes a link on pages)."
                )
            links = msg.get("links", [])
            if not isinstance(links, list) or len(links) > 10_000:
                raise MessageRejected(f"Message {i}: 'links' must be a list.")
            for link in links:
                if not isinstance(link, dict) or not all(
                    isinstance(link.get(k), str) and 0 < len(link[k]) <= _ID_MAX
                    for k in ("kind", "local_id", "remote_id")
                ):
                    raise MessageRejected(
                        f"Message {i}: each link needs kind, local_id and remote_id strings."
                    )
        elif kind == "status":
            if msg.get("status") not in ("active", "deactivated"):
                raise MessageRejected(f"Message {i}: 'status' must be 'active' or 'deactivated'.")
        else:
            raise MessageRejected(
                f"Message {i}: unknown type {str(kind)[:40]!r} (expected event, ack or status)."
            )
    return messages


def apply_messages(connection: Connection, messages: list[dict[str, Any]]) -> list[str]:
    """Store a validated batch in order (call inside a transaction). Idempotent: a redelivered message is a
    no-op. Returns the trace ids (status messages add none)."""
    accepted = []
    for msg in messages:
        if msg["type"] == "event":
            pipeline.receive(
                connection=connection,
                trace_id=msg["trace_id"],
                kind=msg["kind"],
                seq=msg["seq"],
                replica=msg.get("replica"),
                remote_item_id=msg["remote_item_id"],
            )
            accepted.append(msg["trace_id"])
        elif msg["type"] == "ack":
            pipeline.acknowledge(
                connection=connection,
                trace_id=msg["trace_id"],
                remote_item_id=msg["remote_item_id"],
                remote_key=msg.get("remote_key") or "",
                remote_url=msg.get("remote_url") or "",
                local_item_id=msg["local_item_id"],
                links=msg.get("links") or [],
            )
            accepted.append(msg["trace_id"])
        else:
            apply_peer_status(connection, msg["status"])
    return accepted


def apply_peer_status(connection: Connection, status: str) -> None:
    """The peer (de)activated its side: mirror it here without notifying back (no ping-pong).

    An ``error`` status here is a local fault an admin resolves; the peer's activation does not clear it.
    """
    if status == Connection.Status.DEACTIVATED:
        Connection.objects.filter(pk=connection.pk, status=Connection.Status.ACTIVE).update(
            status=Connection.Status.DEACTIVATED,
            status_message="Deactivated on the other node; changes are queued until it is activated again.",
        )
    elif status == Connection.Status.ACTIVE:
        changed = Connection.objects.filter(pk=connection.pk, status=Connection.Status.DEACTIVATED).update(
            status=Connection.Status.ACTIVE, status_message="", activated_at=timezone.now()
        )
        if changed:
            for twin_id in pipeline.pending_twins(connection.pk):
                pipeline.nudge(twin_id)
