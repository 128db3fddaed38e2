"""Change detection by polling, for trackers without webhooks (and as the backstop for those with them).

``search_updated_since(cursor)`` returns the items changed since the last poll (connectors apply an overlap
window and drop what they already returned). Each becomes an item change in the outbox, and the cursor
advances in the same transaction, so a crash re-polls instead of losing work. A poll that finds nothing
costs the tracker one request (``tests/instances/test_poll_cost.py`` holds every connector to it).

When to poll is decided in one place, ``poll_plan`` (an outage backoff plugs in there):

* a tracker whose webhooks are set up (its connector takes webhooks and its credentials hold a
  ``webhook_secret``) is polled as a backstop every ``POLL_BACKSTOP_INTERVAL_S`` (60 s);
* any other tracker every ``POLL_INTERVAL_S`` (10 s) when idle, and every ``POLL_BUSY_INTERVAL_S`` (2 s)
  for ``POLL_BUSY_WINDOW_S`` (60 s) after activity: a poll that found changes, or a write of the node's
  to the tracker (``note_activity``), since a person often answers a change within that minute;
* an instance's settings ``poll_interval_s`` and ``poll_busy_interval_s`` override the node's defaults;
* never faster than the connector allows (``Connector.min_poll_interval_s``: Zendesk's incremental export
  takes 10 requests a minute).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from instances import health
from instances.connectors import ConnectorError, get_connector
from instances.connectors.base import NODE_ACTOR_PREFIX, Connector, load_connectors
from instances.models import Instance
from instances.outbox import record_item_change, resume_instance

logger = logging.getLogger(__name__)

POLLED_ACTOR = f"{NODE_ACTOR_PREFIX}:poll"
# An instance's own cadence must lie within these bounds (seconds); see ``validate_poll_settings``.
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 86_400.0
POLL_SETTINGS = ("poll_interval_s", "poll_busy_interval_s")


@dataclass(frozen=True)
class PollPlan:
    """When an instance is polled: ``due`` now or not, the time of the next poll, the interval in force and
    why (``busy``: recent activity; ``idle``; ``backstop``: webhooks report changes, polling catches what
    they miss; ``running``: a poll holds the instance)."""

    due: bool
    next_at: datetime
    interval_s: float
    mode: str


def poll_plan(instance: Instance, now: datetime) -> PollPlan:
    """Whether ``instance`` is due for a poll at ``now``, and when its next poll is: the one decision."""
    interval, mode = _cadence(instance, now)
    next_at = now if instance.polled_at is None else instance.polled_at + timedelta(seconds=interval)
    if instance.poll_lease_until is not None and instance.poll_lease_until > now:
        return PollPlan(False, max(next_at, instance.poll_lease_until), interval, "running")
    if instance.unreachable_since is not None and instance.next_try_at is not None:
        # Unreachable: its polls wait for the next try of the tracker (instances/health.py), not the cadence.
        return PollPlan(instance.next_try_at <= now, instance.next_try_at, interval, "unreachable")
    # A little slack, so a 2 s cadence checked by a 2 s sweep is not stretched to 4 s by the moment that
    # separates the claim (polled_at) from this check.
    slack = timedelta(seconds=min(1.0, interval / 10))
    return PollPlan(next_at - slack <= now, next_at, interval, mode)


def _cadence(instance: Instance, now: datetime) -> tuple[float, str]:
    own = instance.settings if isinstance(instance.settings, dict) else {}
    floor = _min_interval(instance.tracker_type)
    if _has_webhooks(instance):
        return max(floor, _seconds(own, "poll_interval_s", settings.POLL_BACKSTOP_INTERVAL_S)), "backstop"
    idle = _seconds(own, "poll_interval_s", settings.POLL_INTERVAL_S)
    busy = min(idle, _seconds(own, "poll_busy_interval_s", settings.POLL_BUSY_INTERVAL_S))
    window = timedelta(seconds=settings.POLL_BUSY_WINDOW_S)
    if instance.poll_active_at is not None and now - instance.poll_active_at < window:
        return max(floor, busy), "busy"
    return max(floor, idle), "idle"


def _seconds(own: dict, key: str, default: float) -> float:
    """A cadence from an instance's settings; an unusable value (refused by the API, but settings can be
    edited elsewhere) falls back to the node's default rather than stopping or flooding the polling."""
    value = own.get(key)
    if value is None:
        return float(default)
    problem = poll_setting_problem(key, value)
    if problem:
        logger.warning("Ignoring the setting %s=%r: %s", key, value, problem)
        return float(default)
    return float(value)


def poll_setting_problem(key: str, value: object) -> str:
    """Why ``value`` cannot be the polling setting ``key`` ("" when it can)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f'"{key}" must be a number of seconds, e.g. 10.'
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        return f'"{key}" must be between {MIN_INTERVAL_S:g} and {MAX_INTERVAL_S:g} seconds; it is {value:g}.'
    return ""


def _connector_class(tracker_type: str) -> type[Connector] | None:
    load_connectors()
    return Connector.registry.get(tracker_type)


def _min_interval(tracker_type: str) -> float:
    cls = _connector_class(tracker_type)
    return float(getattr(cls, "min_poll_interval_s", 0.0) or 0.0)


def _has_webhooks(instance: Instance) -> bool:
    """Webhooks report this instance's changes: its connector takes them and a secret is set up for them
    (the webhook view refuses unsigned deliveries, so without a secret none arrive)."""
    cls = _connector_class(instance.tracker_type)
    if cls is None or not (hasattr(cls, "verify_webhook") and hasattr(cls, "parse_webhook")):
        return False
    try:
        creds = json.loads(instance.credentials or "{}")
    except ValueError:
        return False
    return isinstance(creds, dict) and bool(creds.get("webhook_secret"))


# --- activity ---------------------------------------------------------------------------------------------

# Per process: when each instance's activity was last written, so a burst of writes costs one UPDATE.
_noted: dict[int, float] = {}
_noted_lock = threading.Lock()
NOTE_EVERY_S = 5.0


def note_activity(instance: Instance) -> None:
    """The node wrote to ``instance``: poll it at the busy cadence for a while. At most one UPDATE per
    instance every few seconds per process, made after the current transaction commits (never inside the
    pipeline's own transactions, whose lock order it would change)."""
    if instance.pk is None or instance.tracker_type == "builtin" or not instance.is_local:
        return
    pk = instance.pk
    now = time.monotonic()
    with _noted_lock:
        if now - _noted.get(pk, -math.inf) < NOTE_EVERY_S:
            return
        _noted[pk] = now
    transaction.on_commit(lambda: Instance.objects.filter(pk=pk).update(poll_active_at=timezone.now()))


# --- polling ----------------------------------------------------------------------------------------------


def poll_instance(instance_id: int, *, now: datetime | None = None) -> int:
    """Poll one instance now; returns the number of changed items recorded. ``now`` is for simulations
    (bench/bench_polling.py): the times the poll records."""
    # A lease, so two workers do not poll one instance at once. It is short and renewed before each page:
    # a worker killed while polling holds the instance for at most POLL_LEASE_SECONDS, not until some
    # long timeout (a 5-minute lease once stopped a Redmine instance's polling that long after a SIGKILL).
    clock = (lambda: now) if now is not None else timezone.now
    lease = timedelta(seconds=settings.POLL_LEASE_SECONDS)
    started = clock()
    taken = (
        Instance.objects.filter(pk=instance_id)
        .filter(Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=started))
        .update(poll_lease_until=started + lease, polled_at=started)
    )
    if taken != 1:
        return 0  # another worker is polling it
    recorded = 0
    try:
        instance = Instance.objects.get(pk=instance_id)
        if not health.claim_probe(instance):
            return 0  # unreachable, and another poll or sync is trying it right now
        connector = get_connector(instance)
        cursor = instance.poll_cursor or None
        first = True
        while True:
            if not first:
                Instance.objects.filter(pk=instance_id).update(poll_lease_until=clock() + lease)
            first = False
            refs, next_cursor = connector.search_updated_since(cursor, limit=100)
            with transaction.atomic():
                for ref in refs:
                    record_item_change(
                        instance_id=instance.pk, item_id=ref.id, item_key=ref.key, actor=POLLED_ACTOR
                    )
                update: dict = {"poll_cursor": next_cursor or ""}
                if refs:
                    update["poll_active_at"] = clock()  # changes come in bursts: look again soon
                Instance.objects.filter(pk=instance.pk).update(**update)
            recorded += len(refs)
            if len(refs) < 100 or next_cursor == cursor:
                break
            cursor = next_cursor
        if health.instance_answered(instance):
            resume_instance(instance)  # it answers again: what waited for it goes now
    except ConnectorError as exc:
        logger.warning("Polling %s failed: %s", instance_id, exc.message)
        if exc.retryable:
            health.instance_failed(instance_id, exc.message)
    finally:
        Instance.objects.filter(pk=instance_id).update(poll_lease_until=None)
    return recorded


def poll_due(*, now: datetime | None = None) -> int:
    """Queue a poll of every local instance that is synced on a connection and is due (``poll_plan``)."""
    from exalate_node.tasks import enqueue

    now = now or timezone.now()
    queued = 0
    candidates = (
        Instance.objects.filter(kind=Instance.Kind.LOCAL, connections__isnull=False)
        .exclude(tracker_type="builtin")  # the built-in tracker reports its changes itself
        .distinct()
    )
    for instance in candidates:
        if not poll_plan(instance, now).due:
            continue
        # Claim the slot (only if nobody moved it since it was read), so the next sweep, or a second
        # sweeper, does not queue the same poll again.
        same = Q(polled_at__isnull=True) if instance.polled_at is None else Q(polled_at=instance.polled_at)
        if Instance.objects.filter(same, pk=instance.pk).update(polled_at=now) == 1:
            enqueue("instances.tasks.poll_instance", instance.pk, group=f"poll-{instance.pk}")
            queued += 1
    return queued
