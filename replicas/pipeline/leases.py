"""Twin leases: a worker drains a twin only while it holds its lease (a conditional UPDATE), and a thread
of the worker renews the leases the process holds (``heartbeat``)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from replicas.models import Twin
from replicas.pipeline.base import logger

LEASE = timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)


class _Heartbeat:
    """Renews the twin leases this process holds, every third of the lease, from a thread of its own: an
    event that waits long on a tracker keeps its twin, while a worker that dies loses its leases within
    ``PIPELINE_LEASE_SECONDS`` (not a long lease's worth), and the sweeper hands its work to another."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, str] = {}
        self.pid = 0
        self.wake = threading.Event()
        self.due = 0.0  # when the next renewal is due (time.monotonic)

    def hold(self, twin_id: int, token: str) -> None:
        with self.lock:
            first = len(self.held) == 0
            self.held[twin_id] = token
            if first:  # the first lease after an idle spell: renew it a third of a lease from now
                self.due = time.monotonic() + LEASE.total_seconds() / 3
                self.wake.set()
            if self.pid != os.getpid():  # first lease in this process (or in a forked worker): start beating
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="lease-heartbeat", daemon=True).start()

    def drop(self, twin_id: int) -> None:
        with self.lock:
            self.held.pop(twin_id, None)

    def _run(self) -> None:
        from django.db import connections

        pid = os.getpid()
        while self.pid == pid:
            self.wake.wait(timeout=max(0.01, self.due - time.monotonic()))
            self.wake.clear()
            if time.monotonic() < self.due:
                continue
            self.due = time.monotonic() + LEASE.total_seconds() / 3
            with self.lock:
                held = dict(self.held)
            if not held:
                continue
            try:
                until = timezone.now() + LEASE
                for twin_id, token in held.items():
                    Twin.objects.filter(pk=twin_id, lease_token=token).update(lease_until=until)
            except Exception:  # a beat that fails is retried at the next one; the lease still has 2/3 left
                logger.warning("Could not renew the twin leases of this worker", exc_info=True)
            finally:
                connections.close_all()  # this thread's own connection


heartbeat = _Heartbeat()


def acquire_lease(twin_id: int) -> str | None:
    """Take the twin's lease (a conditional UPDATE): its token, or None when another worker holds it."""
    token = uuid.uuid4().hex
    now = timezone.now()
    taken = (
        Twin.objects.filter(pk=twin_id)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_token=token, lease_until=now + LEASE)
    )
    if taken != 1:
        return None  # another worker holds it: it will drain the queue
    heartbeat.hold(twin_id, token)
    return token


def renew_lease(twin_id: int, token: str) -> bool:
    """Extend the lease before each event, and show the twin as in progress (unless failed or unexalated)."""
    updated = Twin.objects.filter(pk=twin_id, lease_token=token).update(
        lease_until=timezone.now() + LEASE,
        state=Case(
            When(state__in=[Twin.State.FAILED, Twin.State.UNEXALATED], then=F("state")),
            default=Value(Twin.State.IN_PROGRESS),
        ),
    )
    return updated == 1


def release_lease(twin_id: int, token: str) -> None:
    """Give the lease back (only if still ours) and stop renewing it."""
    heartbeat.drop(twin_id)
    Twin.objects.filter(pk=twin_id, lease_token=token).update(lease_token="", lease_until=None)
