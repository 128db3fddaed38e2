"""Bulk operations: exalate everything a trigger matches, connect pairs from a CSV, unexalate many.

A job keeps its work list and position in its row; it runs in one worker at a time, a chunk at a time,
re-enqueueing itself between chunks, so other tasks interleave (an individual edit is never stuck behind
10,000 backfilled items) and a restart resumes after the last finished item.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connections.models import Connection
from exalate_node.tasks import enqueue
from instances.connectors import ConnectorError, get_connector
from replicas.models import BulkJob, Trigger, Twin

CHUNK = 25
SLICE_SECONDS = 1.0
STALE = timedelta(seconds=60)
MAX_ITEMS = 100_000
MAX_ERRORS_KEPT = 200


class BulkError(ValueError):
    """A bulk job that cannot start; the message says why and what to do."""


def parse_pairs(text: str) -> list[list[str]]:
    """``local key, remote key`` per line (a header line is skipped); clear errors for anything else."""
    pairs: list[list[str]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) != 2 or not all(cells):
            raise BulkError(f"Line {number}: expected 'local key,remote key', found {','.join(cells)!r}.")
        if number == 1 and cells[0].lower().replace(" ", "_") in ("local_key", "local", "key"):
            continue  # header
        pairs.append(cells)
    if not pairs:
        raise BulkError("The CSV has no pairs. Write one 'local key,remote key' per line.")
    if len(pairs) > MAX_ITEMS:
        raise BulkError(f"At most {MAX_ITEMS} pairs per job; split the file.")
    return pairs


def bulk_start(
    *,
    connection: Connection,
    kind: str,
    trigger: Trigger | None = None,
    keys: list[str] | None = None,
    pairs_csv: str | None = None,
    user: str = "",
) -> BulkJob:
    """Create a job and start it in the background."""
    if connection.status not in (Connection.Status.ACTIVE, Connection.Status.DEACTIVATED):
        raise BulkError(f"Connection '{connection.name}' is {connection.status}; activate it first.")
    items: list[Any]
    if kind == BulkJob.Kind.EXALATE:
        if keys:
            items = list(dict.fromkeys(keys))
        elif trigger is not None:
            items = _matching_keys(connection, trigger.query)
        else:
            raise BulkError("Bulk Exalate needs a trigger (or a list of keys).")
        # ...and send updates for items already in sync.
        known = set(items)
        items += [k for k in _synced_keys(connection) if k not in known]
    elif kind == BulkJob.Kind.CONNECT:
        items = parse_pairs(pairs_csv or "")
    elif kind == BulkJob.Kind.UNEXALATE:
        items = list(dict.fromkeys(keys)) if keys else _synced_keys(connection)
    else:
        raise BulkError(f"Unknown bulk operation {kind!r}.")
    job = BulkJob.objects.create(
        connection=connection, kind=kind, trigger=trigger, items=items, total=len(items), created_by=user
    )
    enqueue("replicas.tasks.run_bulk", job.pk, group=f"bulk-{job.pk}")
    return job


def _matching_keys(connection: Connection, query: str) -> list[str]:
    connector = get_connector(connection.local_instance)
    keys: list[str] = []
    after: str | None = None
    while len(keys) < MAX_ITEMS:
        page = connector.query_search(query, after=after, limit=500)
        if not page:
            break
        keys += [ref.key for ref in page]
        after = page[-1].id
    return keys


def _synced_keys(connection: Connection) -> list[str]:
    return list(
        Twin.objects.filter(connection=connection, unexalated_at__isnull=True)
        .exclude(local_id="")
        .order_by("id")
        .values_list("local_key", flat=True)
    )


def bulk_cancel(*, job: BulkJob) -> None:
    BulkJob.objects.filter(pk=job.pk, status__in=[BulkJob.Status.QUEUED, BulkJob.Status.RUNNING]).update(
        status=BulkJob.Status.CANCELLED, finished_at=timezone.now(), message="Cancelled."
    )


def run_bulk(job_id: int) -> None:
    """Work through the job for a slice of time, then hand over to the broker again."""
    from replicas import pipeline

    now = timezone.now()
    claimed = (
        BulkJob.objects.filter(pk=job_id)
        .filter(
            Q(status=BulkJob.Status.QUEUED)
            | Q(status=BulkJob.Status.RUNNING, heartbeat_at__lt=now - STALE)
            | Q(status=BulkJob.Status.RUNNING, heartbeat_at__isnull=True)
        )
        .update(status=BulkJob.Status.RUNNING, heartbeat_at=now)
    )
    if claimed != 1:
        return  # finished, cancelled, or another worker is on it
    job = BulkJob.objects.select_related("connection").get(pk=job_id)
    if job.started_at is None:
        BulkJob.objects.filter(pk=job_id).update(started_at=now)
    started = time.monotonic()
    while time.monotonic() - started < SLICE_SECONDS:
        current = BulkJob.objects.filter(pk=job_id).values_list("status", "position").get()
        if current[0] != BulkJob.Status.RUNNING:
            return  # cancelled
        position = current[1]
        chunk = job.items[position : position + CHUNK]
        if not chunk:
            BulkJob.objects.filter(pk=job_id, status=BulkJob.Status.RUNNING).update(
                status=BulkJob.Status.DONE, finished_at=timezone.now(), heartbeat_at=timezone.now()
            )
            return
        errors: list[dict[str, str]] = []
        twins: list[int] = []
        # One transaction for the chunk's events (each item's own writes are a savepoint inside it, so a
        # failing item is rolled back alone): the work of a chunk becomes visible, and is done, at once.
        with transaction.atomic():
            for entry in chunk:
                try:
                    twin_id = _do(job, entry)
                    if twin_id:
                        twins.append(twin_id)
                except (pipeline.OperationError, ConnectorError, ValueError) as exc:
                    errors.append(
                        {"item": entry if isinstance(entry, str) else ",".join(entry), "error": str(exc)}
                    )
        # The job does the sync work itself (lower priority than individual changes, which have their own
        # tasks): the twins of this chunk, and what they nudge (the peer side of a local connection), in
        # one pass that shares its per-task reads (rules, peer).
        pipeline.run_twins(list(dict.fromkeys(twins)), connection_id=job.connection_id)
        with transaction.atomic():
            fresh = BulkJob.objects.select_for_update().defer("items").get(pk=job_id)
            fresh.position = position + len(chunk)
            fresh.errors = (fresh.errors + errors)[-MAX_ERRORS_KEPT:]
            fresh.heartbeat_at = timezone.now()
            fresh.save(update_fields=["position", "errors", "heartbeat_at"])
    # Let other tasks have the worker, then continue.
    BulkJob.objects.filter(pk=job_id, status=BulkJob.Status.RUNNING).update(status=BulkJob.Status.QUEUED)
    enqueue("replicas.tasks.run_bulk", job_id, group=f"bulk-{job_id}")


def _do(job: BulkJob, entry: Any) -> int | None:
    from replicas import pipeline

    if job.kind == BulkJob.Kind.EXALATE:
        return pipeline.exalate(connection=job.connection, key=entry, nudge_now=False).pk
    if job.kind == BulkJob.Kind.CONNECT:
        local_key, remote_key = entry
        return pipeline.connect(connection=job.connection, local_key=local_key, remote_key=remote_key).pk
    twin = Twin.objects.filter(connection=job.connection, local_key=entry, unexalated_at__isnull=True).first()
    if twin is None:
        raise pipeline.OperationError(f"{entry} is not synced on this connection.")
    pipeline.unexalate(twin=twin)
    return None


def progress(job: BulkJob) -> dict[str, Any]:
    """Done / total, rate, time left and errors, for the progress bar."""
    elapsed = (
        ((job.finished_at or timezone.now()) - job.started_at).total_seconds() if job.started_at else 0.0
    )
    rate = job.position / elapsed if elapsed > 0 else 0.0
    left = (job.total - job.position) / rate if rate > 0 and job.status in ("queued", "running") else None
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "done": job.position,
        "total": job.total,
        "percent": round(100 * job.position / job.total, 1) if job.total else 100.0,
        "rate_per_s": round(rate, 1),
        "seconds_left": round(left) if left is not None else None,
        "errors": len(job.errors),
        "recent_errors": job.errors[-10:],
        "message": job.message,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def resume_stale_jobs() -> int:
    """Re-start jobs whose worker died (no heartbeat for a minute), and queued jobs whose task was lost."""
    now = timezone.now()
    stale = BulkJob.objects.filter(
        Q(status=BulkJob.Status.RUNNING, heartbeat_at__lt=now - STALE)
        | Q(status=BulkJob.Status.QUEUED, created_at__lt=now - STALE, heartbeat_at__isnull=True)
        | Q(status=BulkJob.Status.QUEUED, heartbeat_at__lt=now - STALE)
    ).values_list("pk", flat=True)
    for job_id in stale:
        enqueue("replicas.tasks.run_bulk", job_id, group=f"bulk-{job_id}")
    return len(stale)
