"""``{% load links %}``: the one way a URL that comes from data (a peer's replica, an ack, a tracker) becomes
a link on a page.

Only ``http`` and ``https`` URLs with a host may be an ``href``: a peer could send ``javascript:alert(1)``
(it ran in the admin's browser when clicked) or ``data:`` URLs. Anything else is shown as plain text::

    {% with href=t.remote_url|web_url %}{% if href %}<a href="{{ href }}">…</a>{% else %}…{% endif %}
    {% endwith %}

``is_web_url`` is also what the node protocol checks URLs with (``connections.node_views``), so what a page
would not link is refused at the door too.

``item_url`` turns the Django admin change-form URL that built-in tracker items of this node used to carry
(``/admin/instances/issue/<pk>/change/``, still stored on older twins and replicas) into the item's own UI
page; ``web_url`` applies it, and so do the API's ``url`` fields.
"""

from __future__ import annotations

import re
from typing import Any

from django import template
from django.conf import settings
from django.urls import reverse

register = template.Library()

# Scheme, "://", a host with no whitespace, control character or backslash; the rest without whitespace or
# control characters. Browsers strip leading whitespace and control characters and drop tabs and newlines
# inside an href before they read the scheme, so none of those may appear anywhere.
_WEB_URL = re.compile(r"https?://[^\s/?#\\\x00-\x1f\x7f]+(?:[/?#][^\s\x00-\x1f\x7f]*)?", re.IGNORECASE)


def is_web_url(value: Any) -> bool:
    """Whether ``value`` is an ``http``/``https`` URL with a host, safe to use as a link target."""
    return isinstance(value, str) and len(value) <= 2000 and _WEB_URL.fullmatch(value) is not None


_ADMIN_ISSUE = re.compile(r"/admin/instances/issue/(\d{1,18})/change/?")


def item_url(value: Any) -> Any:
    """A built-in tracker item's admin change-form URL on this node becomes its UI page's URL (same node
    URL); anything else is returned as it is."""
    if not isinstance(value, str) or not value.startswith(settings.NODE_URL.rstrip("/") + "/"):
        return value
    match = _ADMIN_ISSUE.fullmatch(value[len(settings.NODE_URL.rstrip("/")) :])
    if match is None:
        return value
    return settings.NODE_URL.rstrip("/") + reverse("ui:issue_by_id", args=[int(match[1])])


@register.filter
def web_url(value: Any) -> str:
    """``value`` (through ``item_url``) when it may be a link target (``is_web_url``), else ``""``."""
    return item_url(value) if is_web_url(value) else ""
