"""Readiness: is this node able to do its work right now? (``/readyz``; ``/healthz`` is only liveness.)

Three parts are checked: the database answers, the task broker answers (Redis, or django-q2's ORM queue
table), and a worker ran a task recently. The worker's heartbeat is a tiny task (``worker_beat``) that the
sweeper enqueues every ``HEARTBEAT_SECONDS`` (``sweeper_tick``, called from its loop): when the worker runs
it, the ``Heartbeat`` row "worker" is updated, which proves the broker carries tasks and a worker takes them.
The answer names a failing part and what to do, and carries no address, password or exception text (those go
to the log).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)

# How often the sweeper asks the worker for a heartbeat, and how old the last one may be for /readyz.
HEARTBEAT_SECONDS = 10.0


def beat(role: str) -> None:
    """Record that ``role`` is working now (one row per role)."""
    from exalate_node.models import Heartbeat

    Heartbeat.objects.update_or_create(
        role=role, defaults={"beat_at": timezone.now(), "host": socket.gethostname()[:255]}
    )


def worker_beat() -> None:
    """The task the worker runs to show it takes tasks from the broker."""
    beat("worker")


@dataclass
class SweeperHeartbeat:
    """The sweeper's side: beat for itself each tick, and enqueue a worker beat every ``interval`` seconds,
    but while the worker has not answered the last one at most one a minute (the queue must not fill up with
    beats while no worker runs)."""

    interval: float = HEARTBEAT_SECONDS
    last_enqueued: float | None = None  # monotonic
    enqueued_at: datetime | None = None  # wall clock, to compare with the worker's beat

    def tick(self, now: float | None = None) -> None:
        from exalate_node.models import Heartbeat
        from exalate_node.tasks import enqueue

        now = time.monotonic() if now is None else now
        beat("sweeper")
        if self.last_enqueued is not None:
            waited = now - self.last_enqueued
            if waited < self.interval:
                return
            answered = Heartbeat.objects.filter(role="worker", beat_at__gte=self.enqueued_at).exists()
            if not answered and waited < 60:
                return
        self.last_enqueued, self.enqueued_at = now, timezone.now()
        enqueue("exalate_node.health.worker_beat")


@dataclass
class Check:
    ok: bool
    problem: str = ""
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"ok": True} if self.ok else {"ok": False, "problem": self.problem, "fix": self.fix}


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        logger.warning("Readiness: the database does not answer: %s: %s", type(exc).__name__, exc)
        return Check(
            False,
            "The database does not answer.",
            "Check that the database server is running and reachable at DATABASE_URL, and its credentials; "
            "the node's log has the error.",
        )
    return Check(True)


def check_broker() -> Check:
    redis_url = settings.REDIS_URL
    try:
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        else:
            from django_q.models import OrmQ

            OrmQ.objects.exists()
    except Exception as exc:
        logger.warning("Readiness: the task broker does not answer: %s: %s", type(exc).__name__, exc)
        if redis_url:
            return Check(
                False,
                "The task broker (Redis) does not answer.",
                "Check that Redis is running and reachable at REDIS_URL; the node's log has the error.",
            )
        return Check(
            False,
            "The task queue table (django-q2's ORM broker) cannot be read.",
            "Check the database, and run `manage.py migrate`; the node's log has the error.",
        )
    return Check(True)


def check_worker(max_age: float) -> Check:
    from exalate_node.models import Heartbeat

    fix = (
        "Check that the worker (`manage.py qcluster`, started by `manage.py runnode`) and the sweeper "
        "(`manage.py node_sweeper`, which asks the worker for its heartbeat) are running, and their log."
    )
    try:
        last = Heartbeat.objects.filter(role="worker").values_list("beat_at", flat=True).first()
    except Exception as exc:
        logger.warning("Readiness: cannot read the worker heartbeat: %s: %s", type(exc).__name__, exc)
        return Check(False, "The worker's heartbeat cannot be read.", "Run `manage.py migrate`. " + fix)
    if last is None:
        return Check(False, "No worker has run a task yet.", fix)
    age = (timezone.now() - last).total_seconds()
    if age > max_age:
        return Check(False, f"The last worker heartbeat is {age:.0f} s old (more than {max_age:g} s).", fix)
    return Check(True)


def readiness() -> tuple[bool, dict[str, dict[str, Any]]]:
    """Every check, by part, and whether all passed."""
    database = check_database()
    unknown = Check(False, "Unknown: the database does not answer.", "Fix the database first.")
    checks = {
        "database": database,
        # The ORM broker is a table of that database.
        "broker": check_broker() if database.ok or settings.REDIS_URL else unknown,
        "worker": check_worker(settings.READY_WORKER_MAX_AGE) if database.ok else unknown,
    }
    return all(c.ok for c in checks.values()), {name: c.as_json() for name, c in checks.items()}
