"""Failures: entity, connection and transient errors, backoff and outages (waiting for a tracker that is
unreachable, resuming when it answers)."""

from __future__ import annotations

import errno
import traceback
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from requests import RequestException

from connections.models import Connection
from instances import health
from instances.connectors import ConnectorError
from replicas.models import SyncError, SyncEvent, Twin
from replicas.pipeline import base
from replicas.pipeline.base import Status, logger
from replicas.schema import ReplicaInvalid

# A transaction the database aborted to break a deadlock, or for a serialization failure, is retried at
# once (PostgreSQL's advice): a few times, then with the event's usual backoff. SQLite's "database is
# locked" (its busy timeout ran out) is the same kind of transient failure.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure

DB_RETRIES = 5


def transient_db_error(exc: BaseException) -> str | None:
    """What went wrong when ``exc`` is a transient database failure worth retrying, else None."""
    if not isinstance(exc, OperationalError):
        return None
    cause = exc.__cause__
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if state in TRANSIENT_SQLSTATES:
        return "deadlock" if state == "40P01" else "serialization failure"
    if "database is locked" in str(exc):
        return "lock timeout"
    return None


# File-system failures an admin can fix (full disk or quota, permissions, a missing or wrong MEDIA_ROOT).
FILE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
    | {errno.ENOTDIR, errno.EISDIR, errno.ENOENT}
)


def handle_failure(twin: Twin, event: SyncEvent, exc: Exception) -> bool:
    """Record a failure. Returns True when the twin may go on with its next event (never, today)."""
    from syncrules.engine import ScriptError

    conn = twin.connection
    if isinstance(exc, ScriptError):
        if exc.kind == "compile":
            connection_error(conn, event, str(exc), line=exc.line)
        else:
            entity_error(twin, event, str(exc), line=exc.line)
    elif isinstance(exc, ConnectorError) and exc.retryable:
        # The local tracker's outage, unless the other side's attachment could not be fetched.
        retry_later(twin, event, exc.message, instance=None if _from_peer(exc) else conn.local_instance)
    elif isinstance(exc, ConnectorError):
        entity_error(twin, event, exc.message)
    elif isinstance(exc, ReplicaInvalid):
        entity_error(twin, event, f"{exc} Check the outgoing rules of the sending side.")
    elif isinstance(exc, OSError) and exc.errno in FILE_ERRNOS and not isinstance(exc, RequestException):
        where = f" ({exc.filename})" if exc.filename else ""
        entity_error(
            twin,
            event,
            f"The node could not store or read a file: {exc.strerror or exc}{where}. Check that MEDIA_ROOT "
            f"({settings.MEDIA_ROOT}) is a writable directory with free space, then resolve and retry.",
            details="".join(traceback.format_exception(exc))[-8000:],
        )
    else:
        logger.exception("Sync event %s failed", event.trace_id)
        entity_error(
            twin,
            event,
            f"Unexpected error while processing this change: {type(exc).__name__}: {exc}. "
            "Resolve and retry; if it fails again, report it with the details.",
            details="".join(traceback.format_exception(exc))[-8000:],
        )
    return False


def entity_error(
    twin: Twin, event: SyncEvent, message: str, *, line: int | None = None, details: str = ""
) -> None:
    """The event failed in a way retrying cannot fix: it blocks its twin until an admin resolves it."""
    with transaction.atomic():
        SyncEvent.objects.filter(pk=event.pk).update(status=Status.FAILED, error=message)
        Twin.objects.filter(pk=twin.pk).update(state=Twin.State.FAILED)
        SyncError.objects.create(
            impact=SyncError.Impact.ENTITY,
            connection=twin.connection,
            twin=twin,
            event=event,
            message=message,
            details=details,
            script_line=line,
        )


def connection_error(
    conn: Connection, event: SyncEvent | None, message: str, *, line: int | None = None
) -> None:
    """Hold the whole connection (bad rules, auth failure): events stay queued until resolved."""
    with transaction.atomic():
        if event is not None:
            SyncEvent.objects.filter(pk=event.pk).update(status=Status.PENDING, error=message)
        Connection.objects.filter(pk=conn.pk).update(status=Connection.Status.ERROR, status_message=message)
        if not SyncError.objects.filter(
            connection=conn, impact="connection", message=message, resolved_at=None
        ).exists():
            SyncError.objects.create(
                impact=SyncError.Impact.CONNECTION,
                connection=conn,
                event=event,
                message=message,
                script_line=line,
            )


def retry_later(twin: Twin, event: SyncEvent, message: str, *, instance: Any = None) -> None:
    """A failure that retrying fixes: the event waits and goes again, however long that takes. ``instance``:
    the local tracker failed, which counts towards marking it unreachable (then the event waits for its
    next try, and the message says so)."""
    attempts = SyncEvent.objects.filter(pk=event.pk).values_list("attempts", flat=True).first() or 1
    not_before = timezone.now() + timedelta(seconds=health.backoff_seconds(attempts))
    note = message
    if instance is not None:
        instance = health.instance_failed(instance.pk, message)
        if instance.unreachable_since is not None and instance.next_try_at:
            not_before = max(not_before, instance.next_try_at)
            note = health.outage_message(instance)
    if note is message:
        when = _clock(not_before)
        note = f"{message.rstrip('.')}. The node tries again at {when} and keeps trying on its own."
    SyncEvent.objects.filter(pk=event.pk).update(status=Status.PENDING, error=note, not_before=not_before)
    Twin.objects.filter(pk=twin.pk).update(state=Twin.State.QUEUED)


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def _from_peer(exc: BaseException) -> bool:
    return bool(getattr(exc, "from_peer", False))


def wait_for(instance: Any, twin: Twin) -> None:
    """The twin's due events wait for the next try of its unreachable tracker (the sweeper skips them till
    then; the try that succeeds resumes them at once)."""
    SyncEvent.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lt=instance.next_try_at),
        twin_id=twin.pk,
        status__in=[Status.PENDING, Status.PROCESSING],
    ).update(status=Status.PENDING, not_before=instance.next_try_at, error=health.outage_message(instance))
    Twin.objects.filter(pk=twin.pk, state=Twin.State.IN_PROGRESS).update(state=Twin.State.QUEUED)


def resume_instance(instance: Any) -> None:
    """An unreachable tracker answered again: everything that waited for it goes now."""
    waiting = SyncEvent.objects.filter(
        connection__local_instance=instance, status=Status.PENDING, not_before__isnull=False
    )
    twin_ids = list(waiting.values_list("twin_id", flat=True).distinct())
    waiting.update(not_before=None)
    logger.warning("%s answers again: resuming %d items", instance.name, len(twin_ids))
    for twin_id in twin_ids:
        if twin_id:
            base.nudge(twin_id)
