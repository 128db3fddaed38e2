"""The sync pipeline: outgoing and incoming sync events per twin, in order, exactly once in effect.

Rules it keeps (see docs/architecture.md, "The pipeline"):

* The database is the truth. A change records an outgoing ``SyncEvent`` in the same transaction
  (``on_item_changed``); tasks only nudge ``process_twin(twin_id)``, which takes the twin's lease (a
  conditional UPDATE, so two workers never work one twin) and drains its events oldest first.
* Strict order per twin: a failed event blocks the later events of its twin only (an entity error);
  incoming events apply in the sender's sequence order. Parallel across twins.
* At-least-once delivery, exactly-once effect: incoming events are unique on (connection, trace id);
  an item is created at most once (the twin records the local item in the same transaction on the built-in
  tracker); comments and attachments are matched through ``EntityLink`` rows.
* No echo: after applying an incoming replica the twin records the item's resulting outgoing replica as
  already sent, and writes made under this connection's actor do not queue events for it.
* Field-level merge with deterministic conflicts: when both sides changed the same field since their last
  exchange, the edit with the later ``updated`` time wins on both sides (ties: the higher instance UID).

The package, by concern (each module imports only those listed before it):

* ``base``: statuses, the node's actor name, the per-task cache, the rules in force, ``nudge``;
  ``merge``: the merge rule, pure (no database; an import contract checks it); ``context``: the script
  context; ``leases``: twin leases and their heartbeat; ``twinstate``: the twin's state as SQL, locks;
  ``written``: what an apply wrote.
* ``intake``: the outbox and a peer's events and acks; ``failures``: errors, backoff, outages;
  ``services``: exalate, unexalate, connect, error_resolve.
* ``outgoing`` and ``incoming`` (its phases: plan, adopt, write, record), with ``adoption`` and
  ``entries`` (comments and attachments).
* ``worker``: draining twins under their leases, stealing ready twins, the sweeper.

This module re-exports the public names callers use. A test that patches a name patches the module that
uses it (``pipeline.worker.STEAL_SECONDS``, ``pipeline.leases.LEASE``, ``pipeline.base.nudge``): patching
the re-export here changes nothing.
"""

from __future__ import annotations

from replicas.pipeline.adoption import CREATE_CLOCK_SKEW
from replicas.pipeline.base import (
    FOLLOWUP_LIMIT,
    TASK_CACHE_SECONDS,
    Direction,
    OperationError,
    Status,
    actor_for,
    nudge,
    task_cache,
    task_cached,
)
from replicas.pipeline.context import META_CACHE, script_context
from replicas.pipeline.failures import (
    DB_RETRIES,
    FILE_ERRNOS,
    TRANSIENT_SQLSTATES,
    connection_error,
    entity_error,
    resume_instance,
    retry_later,
    transient_db_error,
)
from replicas.pipeline.incoming import annotate, edited_here
from replicas.pipeline.intake import (
    ack_payload,
    acknowledge,
    on_item_changed,
    pending_twins,
    queue_outgoing,
    receive,
)
from replicas.pipeline.leases import LEASE, acquire_lease, heartbeat, release_lease
from replicas.pipeline.merge import (
    ITEM_FIELDS,
    LISTS_BY_ID,
    NEVER,
    VOLATILE,
    agreed_before,
    blank_item,
    comparable,
    echo_replica,
    field_time,
    incoming_previous,
    parse_time,
    person_time,
    resolve_conflicts,
)
from replicas.pipeline.outgoing import build_outgoing
from replicas.pipeline.services import connect, error_resolve, exalate, unexalate
from replicas.pipeline.twinstate import APPLY_FIELDS
from replicas.pipeline.worker import (
    STEAL_BATCH,
    STEAL_SECONDS,
    SWEEP_LIMIT,
    process_twin,
    ready_twins,
    run_twins,
    run_worker_task,
    sweep,
)
from replicas.pipeline.written import Written

__all__ = [
    "Status",
    "Direction",
    "actor_for",
    "FOLLOWUP_LIMIT",
    "task_cache",
    "TASK_CACHE_SECONDS",
    "task_cached",
    "nudge",
    "OperationError",
    "ITEM_FIELDS",
    "VOLATILE",
    "LISTS_BY_ID",
    "comparable",
    "echo_replica",
    "blank_item",
    "parse_time",
    "incoming_previous",
    "person_time",
    "NEVER",
    "field_time",
    "resolve_conflicts",
    "agreed_before",
    "META_CACHE",
    "script_context",
    "LEASE",
    "heartbeat",
    "acquire_lease",
    "release_lease",
    "APPLY_FIELDS",
    "on_item_changed",
    "queue_outgoing",
    "receive",
    "ack_payload",
    "acknowledge",
    "pending_twins",
    "TRANSIENT_SQLSTATES",
    "DB_RETRIES",
    "transient_db_error",
    "FILE_ERRNOS",
    "entity_error",
    "connection_error",
    "retry_later",
    "resume_instance",
    "exalate",
    "unexalate",
    "connect",
    "error_resolve",
    "build_outgoing",
    "Written",
    "CREATE_CLOCK_SKEW",
    "annotate",
    "edited_here",
    "STEAL_SECONDS",
    "STEAL_BATCH",
    "run_worker_task",
    "run_twins",
    "ready_twins",
    "process_twin",
    "SWEEP_LIMIT",
    "sweep",
]
