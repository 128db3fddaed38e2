"""The activity charts' data: sync events rolled up into per-minute and per-hour ``ActivityBucket`` rows, and
the series the charts draw from them (events, failures and change-to-applied latency p50/p95, for the node
or one connection, over the last hour, day or week).

The roll-up reads the events after ``ActivityCursor.event_id`` in id order and stops at the first one still
open (queued, in progress, waiting for the remote), so each event is counted once, when it has finished;
an event still open after an hour is passed over uncounted, so one stuck event cannot hold the charts. It
runs when the charts ask for data, at most one caller at a time (the cursor row is locked, a second caller
skips), in batches, and prunes old rows. Reading a week is 168 hour rows per connection and direction,
whatever the event volume.

Latency is an outgoing event's life from the change being recorded to the other side's acknowledgement that
it was applied; percentiles come from a histogram (``LATENCY_EDGES_MS``), so they are the bucket's upper
edge: "p95 ≤ 500 ms".
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from exalate_node.models import LATENCY_EDGES_MS, ActivityBucket, ActivityCursor
from replicas.models import SyncEvent

BATCH = 5_000
MAX_BATCHES = 20  # per call: a long backlog is caught up over a few calls, never in one long request
GIVE_UP_OPEN = timedelta(hours=1)
KEEP = {ActivityBucket.Size.MINUTE: timedelta(days=2), ActivityBucket.Size.HOUR: timedelta(days=40)}
LAT_FIELDS = [f"lat_{i}" for i in range(len(LATENCY_EDGES_MS) + 1)]
OPEN = (SyncEvent.Status.PENDING, SyncEvent.Status.PROCESSING, SyncEvent.Status.SENT)

# range name -> (bucket size, bin length, number of bins)
RANGES: dict[str, tuple[str, timedelta, int]] = {
    "hour": (ActivityBucket.Size.MINUTE, timedelta(minutes=1), 60),
    "day": (ActivityBucket.Size.HOUR, timedelta(hours=1), 24),
    "week": (ActivityBucket.Size.HOUR, timedelta(hours=1), 168),
}


def _latency_bucket(ms: float) -> int:
    for i, edge in enumerate(LATENCY_EDGES_MS):
        if ms <= edge:
            return i
    return len(LATENCY_EDGES_MS)


def _starts(at: datetime) -> list[tuple[str, datetime]]:
    minute = at.replace(second=0, microsecond=0)
    return [(ActivityBucket.Size.MINUTE, minute), (ActivityBucket.Size.HOUR, minute.replace(minute=0))]


def activity_rollup(*, now: datetime | None = None) -> int:
    """Count the events that finished since the last roll-up into the buckets; returns how many events were
    passed (counted or given up). Safe to call from any number of processes."""
    now = now or timezone.now()
    ActivityCursor.objects.get_or_create(pk=1)
    passed = 0
    for _ in range(MAX_BATCHES):
        with transaction.atomic():
            cursor = ActivityCursor.objects.select_for_update(skip_locked=True).filter(pk=1).first()
            if cursor is None:  # another process is rolling up right now
                return passed
            rows = list(
                SyncEvent.objects.filter(id__gt=cursor.event_id)
                .order_by("id")
                .values_list("id", "connection_id", "direction", "status", "created_at", "processed_at")[
                    :BATCH
                ]
            )
            counts: dict[tuple[str, datetime, int, str], dict[str, int]] = defaultdict(
                lambda: defaultdict(int)
            )
            last = cursor.event_id
            for event_id, connection_id, direction, status, created, processed in rows:
                if status in OPEN and created > now - GIVE_UP_OPEN:
                    break  # not finished yet: count it (and everything after it) next time
                last = event_id
                if status not in (SyncEvent.Status.DONE, SyncEvent.Status.FAILED):
                    continue  # skipped (nothing to send), or given up while still open
                for size, start in _starts(processed or created):
                    bucket = counts[(size, start, connection_id, direction)]
                    if status == SyncEvent.Status.FAILED:
                        bucket["failed"] += 1
                        continue
                    bucket["done"] += 1
                    if processed and direction == SyncEvent.Direction.OUTGOING:
                        ms = (processed - created).total_seconds() * 1000
                        bucket[LAT_FIELDS[_latency_bucket(ms)]] += 1
            _write(counts)
            passed += sum(1 for r in rows if r[0] <= last)
            moved = last != cursor.event_id
            if moved:
                cursor.event_id = last
                cursor.save(update_fields=["event_id", "updated_at"])
            if not moved or len(rows) < BATCH:
                break
    _prune(now)
    return passed


def _write(counts: dict[tuple[str, datetime, int, str], dict[str, int]]) -> None:
    from connections.models import Connection

    alive = set(Connection.objects.filter(pk__in={k[2] for k in counts}).values_list("pk", flat=True))
    for (size, start, connection_id, direction), added in counts.items():
        if connection_id not in alive:
            continue  # deleted meanwhile; its buckets went with it
        key = {"size": size, "start": start, "connection_id": connection_id, "direction": direction}
        updated = ActivityBucket.objects.filter(**key).update(**{f: F(f) + n for f, n in added.items()})
        if not updated:
            ActivityBucket.objects.create(**key, **added)


def _prune(now: datetime) -> None:
    for size, keep in KEEP.items():
        ActivityBucket.objects.filter(size=size, start__lt=now - keep).delete()


def percentile(histogram: list[int], p: float) -> int | None:
    """The upper edge (ms) of the histogram bucket holding the ``p`` quantile; None without samples. The
    last bucket (slower than the last edge) answers the last edge."""
    total = sum(histogram)
    if not total:
        return None
    running = 0
    for i, n in enumerate(histogram):
        running += n
        if running >= p * total:
            return LATENCY_EDGES_MS[min(i, len(LATENCY_EDGES_MS) - 1)]
    return LATENCY_EDGES_MS[-1]


class Series(TypedDict):
    range: str
    x: list[int]
    outgoing: list[int]
    incoming: list[int]
    failed: list[int]
    p50: list[int | None]
    p95: list[int | None]
    totals: dict[str, Any]
    connections: list[dict[str, Any]]


def activity_series(
    *, range_name: str, connection_id: int | None = None, now: datetime | None = None
) -> Series:
    """The charts' data over ``range_name`` (hour, day or week): per bin (x in Unix seconds) the finished
    outgoing and incoming events, failed events and outgoing latency p50/p95 in ms; totals; and per
    connection the same totals, busiest first."""
    size, step, bins = RANGES[range_name]
    now = now or timezone.now()
    last_start = _starts(now)[0 if size == ActivityBucket.Size.MINUTE else 1][1]
    first_start = last_start - step * (bins - 1)
    rows = ActivityBucket.objects.filter(size=size, start__gte=first_start)
    if connection_id is not None:
        rows = rows.filter(connection_id=connection_id)
    sums = {f: Sum(f) for f in ["done", "failed", *LAT_FIELDS]}
    index = {first_start + step * i: i for i in range(bins)}
    out, inc, failed = [0] * bins, [0] * bins, [0] * bins
    hist: list[list[int]] = [[0] * len(LAT_FIELDS) for _ in range(bins)]
    for row in rows.values("start", "direction").annotate(**sums):
        i = index.get(row["start"])
        if i is None:
            continue
        (out if row["direction"] == SyncEvent.Direction.OUTGOING else inc)[i] += row["done"]
        failed[i] += row["failed"]
        hist[i] = [a + (row[f] or 0) for a, f in zip(hist[i], LAT_FIELDS, strict=True)]
    all_hist = [sum(col) for col in zip(*hist, strict=True)]
    per_connection = []
    by_connection = rows.values("connection_id", "connection__name", "connection__local_instance__name")
    for row in by_connection.annotate(**sums).order_by("-done", "connection_id"):
        h = [row[f] or 0 for f in LAT_FIELDS]
        per_connection.append(
            {
                "id": row["connection_id"],
                "name": row["connection__name"],
                "side": row["connection__local_instance__name"],  # a local connection has two sides
                "events": row["done"],
                "failed": row["failed"],
                "p50": percentile(h, 0.5),
                "p95": percentile(h, 0.95),
            }
        )
    return {
        "range": range_name,
        "x": [int((first_start + step * i).timestamp()) for i in range(bins)],
        "outgoing": out,
        "incoming": inc,
        "failed": failed,
        "p50": [percentile(h, 0.5) for h in hist],
        "p95": [percentile(h, 0.95) for h in hist],
        "totals": {
            "events": sum(out) + sum(inc),
            "failed": sum(failed),
            "p50": percentile(all_hist, 0.5),
            "p95": percentile(all_hist, 0.95),
        },
        "connections": per_connection,
    }
