"""Tracker traffic counters for ``/metrics``: requests by outcome and time spent waiting on rate limits.

The HTTP seam (``instances/connectors/http.py``) counts in memory (``record``, ``waited``), which costs
nothing on the request path; ``flush`` adds the counts to ``TrackerTraffic`` rows, at most every
``FLUSH_SECONDS`` and never inside a transaction of the caller (a sync's rollback must not take the counts
with it, and a counter must never make a sync fail). Counts of a process killed between two flushes are lost:
at most a few seconds of traffic, which a counter's rate tolerates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from django.db import DatabaseError, connection, transaction
from django.db.models import F

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0

_lock = threading.Lock()
_requests: Counter[tuple[str, str]] = Counter()
_waited: Counter[str] = Counter()
_last_flush = time.monotonic()


def record(instance_uid: str, outcome: str) -> None:
    """One request answered with ``outcome`` (its status code), or "error" when no answer came."""
    with _lock:
        _requests[(instance_uid[:64], outcome[:16])] += 1


def waited(instance_uid: str, seconds: float) -> None:
    """Time spent waiting before a request because the tracker's rate limit (or the node's budget) said so."""
    if seconds > 0:
        with _lock:
            _waited[instance_uid[:64]] += seconds


def maybe_flush() -> None:
    """``flush`` when the last one is ``FLUSH_SECONDS`` old and the caller is not inside a transaction."""
    if time.monotonic() - _last_flush >= FLUSH_SECONDS and not connection.in_atomic_block:
        flush()


def flush() -> None:
    """Add the counts gathered in this process to the shared rows (one upsert per instance and outcome)."""
    global _last_flush
    from instances.models import TrackerTraffic

    with _lock:
        counts, waits = dict(_requests), dict(_waited)
        _requests.clear()
        _waited.clear()
        _last_flush = time.monotonic()
    rows: dict[tuple[str, str], tuple[int, float]] = {key: (n, 0.0) for key, n in counts.items()}
    for uid, seconds in waits.items():
        # Waits are kept on the instance's "wait" row: no request outcome of its own.
        n, before = rows.get((uid, "wait"), (0, 0.0))
        rows[(uid, "wait")] = (n, before + seconds)
    try:
        with transaction.atomic():
            for (uid, outcome), (n, seconds) in rows.items():
                updated = TrackerTraffic.objects.filter(instance_uid=uid, outcome=outcome).update(
                    requests=F("requests") + n, waited_seconds=F("waited_seconds") + seconds
                )
                if not updated:
                    TrackerTraffic.objects.create(
                        instance_uid=uid, outcome=outcome, requests=n, waited_seconds=seconds
                    )
    except (DatabaseError, RuntimeError) as exc:  # counted again next time: never break a sync for a counter
        logger.warning("Tracker traffic counters not saved (%s); keeping them for the next try", exc)
        with _lock:
            for key, n in counts.items():
                _requests[key] += n
            for uid, seconds in waits.items():
                _waited[uid] += seconds
