"""Reads for the Entity Sync Status page, the API and the management commands."""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.cache import cache
from django.db.models import QuerySet

from exalate_node.templatetags.links import item_url
from instances.connectors import get_connector
from instances.models import Instance
from replicas.models import SyncError, SyncEvent, Twin

ITEM_LOOKUP_REUSE_S = 30  # how long a page's own refreshes reuse the tracker's answer for a key


def _item_id(instance: Instance, key: str, *, reuse_lookup: bool) -> str:
    """The id of the local item with this key ("" when the tracker has none). The tracker is asked every
    time unless ``reuse_lookup``: a live page's refresh every second must not cost a tracker request."""
    cache_key = "exalate:item-id:" + hashlib.sha256(f"{instance.pk}:{key}".encode()).hexdigest()
    if reuse_lookup and (known := cache.get(cache_key)) is not None:
        return str(known)
    ref = get_connector(instance).find_item(key)
    item_id = ref.id if ref else ""
    cache.set(cache_key, item_id, ITEM_LOOKUP_REUSE_S)
    return item_id


def twins_for_item(*, instance: Instance, key: str, reuse_lookup: bool = False) -> QuerySet[Twin]:
    """Every twin of a local item, found by its key (or its remote key on this instance's connections)."""
    item_id = _item_id(instance, key, reuse_lookup=reuse_lookup) if instance.is_local else ""
    qs = Twin.objects.filter(connection__local_instance=instance).select_related(
        "connection", "connection__remote_instance"
    )
    return qs.filter(local_id=item_id) if item_id else qs.filter(local_key=key)


def sync_status(
    *, instance: Instance, key: str, events: int = 50, reuse_lookup: bool = False
) -> dict[str, Any]:
    """Entity Sync Status: for each connection the item is synced on, the twin's state, the remote item,
    the local and remote replica (and the one before), the newest ``events`` of the event timeline (and how
    many there are in all, ``event_count``) and open errors. ``reuse_lookup``: see ``_item_id``."""
    result: dict[str, Any] = {"instance": instance.name, "key": key, "twins": []}
    for twin in twins_for_item(instance=instance, key=key, reuse_lookup=reuse_lookup):
        timeline = SyncEvent.objects.filter(twin=twin).order_by("-id")[:events]
        result["twins"].append(
            {
                "id": twin.pk,
                "connection": {"id": twin.connection_id, "name": twin.connection.name},
                "state": twin.state,
                "local": {"id": twin.local_id, "key": twin.local_key, "url": item_url(twin.local_url)},
                "remote": {"id": twin.remote_id, "key": twin.remote_key, "url": item_url(twin.remote_url)},
                "last_synced_at": twin.last_synced_at,
                "local_replica": twin.local_replica,
                "remote_replica": twin.remote_replica,
                "previous_remote_replica": twin.prev_remote_replica,
                "event_count": SyncEvent.objects.filter(twin=twin).count(),
                "events": [
                    {
                        "trace_id": str(e.trace_id),
                        "direction": e.direction,
                        "kind": e.kind,
                        "status": e.status,
                        "seq": e.seq,
                        "attempts": e.attempts,
                        "error": e.error,
                        "created_at": e.created_at,
                        "processed_at": e.processed_at,
                        "rules_version": e.rules_version_id,
                    }
                    for e in timeline
                ],
                "errors": [
                    {
                        "id": err.pk,
                        "message": err.message,
                        "line": err.script_line,
                        "created_at": err.created_at,
                    }
                    for err in SyncError.objects.filter(twin=twin, resolved_at__isnull=True)
                ],
            }
        )
    return result


def twins_under_sync(*, connection_id: int) -> QuerySet[Twin]:
    """Items synced on a connection (not unexalated), newest first."""
    return (
        Twin.objects.filter(connection_id=connection_id, unexalated_at__isnull=True)
        .exclude(local_id="")
        .order_by("-id")
    )


def twins_stuck(*, connection_id: int, minutes: int) -> QuerySet[Twin]:
    """Twins not synchronized for longer than ``minutes``: queued, in progress, waiting or failed since."""
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    since = timezone.now() - timedelta(minutes=minutes)
    return (
        Twin.objects.filter(connection_id=connection_id, unexalated_at__isnull=True)
        .exclude(state=Twin.State.SYNCHRONIZED)
        .filter(Q(last_synced_at__lt=since) | Q(last_synced_at__isnull=True, created_at__lt=since))
        .order_by("id")
    )
