"""Whether a tracker answers, so that an outage heals by itself instead of stranding work.

Every retryable failure of a local instance's tracker (connection refused, timeout, 429, 5xx) is counted
(``instance_failed``); after ``OUTAGE_AFTER_FAILURES`` in a row the instance is *unreachable*: the dashboard,
the connection pages and the API say so ("Redmine at … unreachable since 12:04 …, next try at 12:09"), the
work for it waits instead of hammering the tracker, and one probe at a time (``claim_probe``) tries it again
with a backoff that doubles up to ``OUTAGE_MAX_BACKOFF_SECONDS``. The first success (``instance_answered``)
clears the state, and the caller resumes what waited. Nothing here gives up: only an error that retrying
cannot fix (refused data, rules, permissions) blocks an item until an admin acts.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from instances.models import Instance

LAST_ERROR_MAX_CHARS = 500


def backoff_seconds(failures: int) -> float:
    """The wait before the next try after ``failures`` failures in a row: doubling from 1 s up to the cap,
    with jitter so that the probes of several nodes do not line up."""
    cap = float(settings.OUTAGE_MAX_BACKOFF_SECONDS)
    return min(cap, 2.0 ** max(0, failures - 1)) * random.uniform(0.8, 1.0)  # noqa: S311 - not crypto


def instance_failed(instance_id: int, message: str) -> Instance:
    """Count a retryable failure of the instance's tracker; return the instance as it now is."""
    now = timezone.now()
    Instance.objects.filter(pk=instance_id).update(
        failures=F("failures") + 1, last_error=message[:LAST_ERROR_MAX_CHARS]
    )
    instance = Instance.objects.get(pk=instance_id)
    wait = timedelta(seconds=backoff_seconds(instance.failures))
    fields = {"next_try_at": now + wait}
    if instance.failures >= settings.OUTAGE_AFTER_FAILURES and instance.unreachable_since is None:
        fields["unreachable_since"] = now
    # The first failure of an outage sets since; later ones only move the next try (never backwards).
    Instance.objects.filter(pk=instance_id).update(**fields)
    for name, value in fields.items():
        setattr(instance, name, value)
    return instance


def instance_answered(instance: Instance) -> bool:
    """The tracker answered: clear its failure count. True when it had been unreachable (the caller then
    resumes the work that waited for it). Costs nothing while the instance has no failure on record."""
    if not instance.failures and instance.unreachable_since is None:
        return False
    was_unreachable = instance.unreachable_since is not None
    Instance.objects.filter(pk=instance.pk).update(
        failures=0, unreachable_since=None, next_try_at=None, last_error=""
    )
    instance.failures, instance.unreachable_since, instance.next_try_at, instance.last_error = (
        0,
        None,
        None,
        "",
    )
    return was_unreachable


def waiting_for(instance: Instance, *, now: datetime | None = None) -> bool:
    """Whether work for this instance must wait now (it is unreachable and its next try is not due)."""
    if instance.unreachable_since is None or instance.next_try_at is None:
        return False
    return instance.next_try_at > (now or timezone.now())


def claim_probe(instance: Instance) -> bool:
    """For an unreachable instance whose next try is due: take that try (one caller wins; the next try
    moves on by the backoff, so the others wait for the outcome). True for the caller that may try."""
    if instance.unreachable_since is None:
        return True
    now = timezone.now()
    if instance.next_try_at is not None and instance.next_try_at > now:
        return False
    later = now + timedelta(seconds=backoff_seconds(instance.failures + 1))
    taken = Instance.objects.filter(pk=instance.pk, next_try_at=instance.next_try_at).update(
        next_try_at=later
    )
    if taken:
        instance.next_try_at = later
    return taken == 1


def outage_message(instance: Instance) -> str:
    """What an admin reads about an unreachable instance: which, since when, why, when the next try is."""
    since = (
        timezone.localtime(instance.unreachable_since).strftime("%H:%M") if instance.unreachable_since else ""
    )
    next_try = (
        timezone.localtime(instance.next_try_at).strftime("%H:%M:%S") if instance.next_try_at else "soon"
    )
    where = f" at {instance.url}" if instance.url else ""
    reason = f" ({instance.last_error.rstrip('.')})" if instance.last_error else ""
    return (
        f"{instance.get_tracker_type_display()} {instance.name!r}{where} has been unreachable since {since}"
        f"{reason}. The node tries it again at {next_try} and resumes on its own when it answers; "
        "nothing is lost meanwhile."
    )
