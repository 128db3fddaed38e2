"""Template context shared by every page: who this node is, and which of its trackers do not answer."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from exalate_node import __version__


def node(request: HttpRequest) -> dict[str, object]:
    """Who this node is; ``live_poll`` is true when the page is fetched again by its own live refresh
    (``static/ui/ui.js``), which must not use up the messages meant for the page the admin is looking at."""
    return {
        "node_name": settings.NODE_NAME,
        "node_url": settings.NODE_URL,
        "node_version": __version__,
        "live_poll": request.headers.get("X-Live-Poll") == "1",
    }


def outages(request: HttpRequest) -> dict[str, object]:
    """The local instances whose tracker is unreachable (instances/health.py), for the banner on every UI
    page; read only when a page shows it."""
    from django.utils.functional import SimpleLazyObject

    from instances.health import outage_message
    from instances.models import Instance

    def load() -> list[str]:
        rows = Instance.objects.filter(kind=Instance.Kind.LOCAL, unreachable_since__isnull=False)
        return [outage_message(instance) for instance in rows.order_by("name")]

    return {"outages": SimpleLazyObject(load)}
