"""Change detection by polling, for trackers without webhooks (and as the backstop for those with them).

Each local instance that is synced on some connection is polled every ``poll_interval_s`` seconds (its
settings; default 60): ``search_updated_since(cursor)`` returns the items changed since the last poll
(connectors apply an overlap window and drop what they already returned). Each becomes an item change in
the outbox, and the cursor advances in the same transaction, so a crash re-polls instead of losing work.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from instances.connectors import ConnectorError, get_connector
from instances.connectors.base import NODE_ACTOR_PREFIX
from instances.models import Instance

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60
POLLED_ACTOR = f"{NODE_ACTOR_PREFIX}:poll"


def poll_instance(instance_id: int) -> int:
    """Poll one instance now; returns the number of changed items recorded."""
    from replicas.outbox import record_item_change

    # A lease, so two workers do not poll one instance at once. It is short and renewed before each page:
    # a worker killed while polling holds the instance for at most POLL_LEASE_SECONDS, not until some
    # long timeout (a 5-minute lease once stopped a Redmine instance's polling that long after a SIGKILL).
    lease = timedelta(seconds=settings.POLL_LEASE_SECONDS)
    now = timezone.now()
    taken = (
        Instance.objects.filter(pk=instance_id)
        .filter(Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=now))
        .update(poll_lease_until=now + lease)
    )
    if taken != 1:
        return 0  # another worker is polling it
    recorded = 0
    try:
        instance = Instance.objects.get(pk=instance_id)
        connector = get_connector(instance)
        cursor = instance.poll_cursor or None
        first = True
        while True:
            if not first:
                Instance.objects.filter(pk=instance_id).update(poll_lease_until=timezone.now() + lease)
            first = False
            refs, next_cursor = connector.search_updated_since(cursor, limit=100)
            with transaction.atomic():
                for ref in refs:
                    record_item_change(
                        instance_id=instance.pk, item_id=ref.id, item_key=ref.key, actor=POLLED_ACTOR
                    )
                Instance.objects.filter(pk=instance.pk).update(
                    poll_cursor=next_cursor or "", polled_at=timezone.now()
                )
            recorded += len(refs)
            if len(refs) < 100 or next_cursor == cursor:
                break
            cursor = next_cursor
    except ConnectorError as exc:
        logger.warning("Polling %s failed: %s", instance_id, exc.message)
    finally:
        Instance.objects.filter(pk=instance_id).update(poll_lease_until=None)
    return recorded


def poll_due() -> int:
    """Queue a poll of every local instance that is synced on a connection and whose interval has passed."""
    from exalate_node.tasks import enqueue

    now = timezone.now()
    queued = 0
    candidates = (
        Instance.objects.filter(kind=Instance.Kind.LOCAL, connections__isnull=False)
        .exclude(tracker_type="builtin")  # the built-in tracker reports its changes itself
        .distinct()
    )
    for instance in candidates:
        interval = int((instance.settings or {}).get("poll_interval_s", DEFAULT_INTERVAL_S))
        due = Q(polled_at__isnull=True) | Q(polled_at__lt=now - timedelta(seconds=interval))
        # Claim the slot, so the next sweep does not queue the same poll again.
        if Instance.objects.filter(due, pk=instance.pk).update(polled_at=now) == 1:
            enqueue("instances.tasks.poll_instance", instance.pk, group=f"poll-{instance.pk}")
            queued += 1
    return queued
