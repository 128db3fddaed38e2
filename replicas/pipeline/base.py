"""What every part of the pipeline shares: event statuses, the node's actor name, the per-task cache, the
rules in force, and ``nudge`` (a twin has work: run it in this task or enqueue it)."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from connections.models import Connection
from exalate_node.tasks import enqueue
from replicas.models import SyncEvent

logger = logging.getLogger("replicas.pipeline")

Status = SyncEvent.Status
Direction = SyncEvent.Direction


def actor_for(connection: Connection) -> str:
    """The name the node writes under for this connection, so its own writes are recognised."""
    return f"exalate-node:{connection.uid}"


# While a worker runs ``run_worker_task``, nudges for twins are collected here and worked through by the same
# task after its own twin (no broker round trip); outside it, a nudge enqueues a task.
followups: ContextVar[list[int] | None] = ContextVar("pipeline_followups", default=None)

FOLLOWUP_LIMIT = 200


# Per worker task: what does not need reading again for every twin (the rules in force per connection, the
# peer of a connection). Bounded in age, so a task that runs long still picks up newly published rules.
task_cache: ContextVar[dict[Any, tuple[float, Any]] | None] = ContextVar("pipeline_task_cache", default=None)

TASK_CACHE_SECONDS = 2.0


def task_cached(key: Any, load: Any) -> Any:
    """``load()``, kept for ``TASK_CACHE_SECONDS`` under ``key`` while a worker task runs (else not kept)."""
    cache = task_cache.get()
    if cache is None:
        return load()
    hit = cache.get(key)
    now = time.monotonic()
    if hit is None or hit[0] < now:
        hit = (now + TASK_CACHE_SECONDS, load())
        cache[key] = hit
    return hit[1]


def rules_for(conn: Connection) -> Any:
    """The rules in force on ``conn`` (read once per worker task and connection, at most 2 s old)."""
    from syncrules.services import rules_current

    return task_cached(("rules", conn.pk), lambda: rules_current(conn))


def nudge(twin_id: int) -> None:
    """The twin has work: the running task takes it after its own twin, or a task is enqueued for it."""
    pending = followups.get()
    if pending is not None and len(pending) < FOLLOWUP_LIMIT:
        # Processed by this task once it is done with its twin, i.e. after every transaction committed.
        pending.append(twin_id)
        return
    enqueue("replicas.tasks.process_twin", twin_id, group=f"twin-{twin_id}")


class OperationError(ValueError):
    """An operation an admin asked for cannot be done; the message says why and what to do."""
