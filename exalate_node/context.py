"""Template context shared by every page: who this node is."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from exalate_node import __version__


def node(request: HttpRequest) -> dict[str, str]:
    return {"node_name": settings.NODE_NAME, "node_url": settings.NODE_URL, "node_version": __version__}
