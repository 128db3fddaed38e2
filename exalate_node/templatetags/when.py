"""``{% load when %}``: how the UI says when something happened.

``ago`` is a relative time for things that change while a page is open ("just now", "12 seconds ago",
"3 minutes ago"); Django's ``timesince`` says "0 minutes" for the first minute, which reads as broken on a
page that refreshes itself every second. Absolute times use one format everywhere: ``Y-m-d H:i`` (``:s`` where
seconds matter), with the time zone in the ``title``.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.template.defaultfilters import date as date_filter
from django.utils import timezone

register = template.Library()

JUST_NOW_SECONDS = 5


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'} ago"


@register.filter
def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``value`` relative to now: "just now", "N seconds ago", "N minutes ago", "N hours ago", "N days ago";
    older than a week, the date. Empty for no value."""
    if not isinstance(value, datetime):
        return ""
    now = now or timezone.now()
    seconds = int((now - value).total_seconds())
    if seconds < JUST_NOW_SECONDS:  # also a clock a little ahead of ours
        return "just now"
    if seconds < 60:
        return _plural(seconds, "second")
    if seconds < 3600:
        return _plural(seconds // 60, "minute")
    if seconds < 86400:
        return _plural(seconds // 3600, "hour")
    if seconds < 7 * 86400:
        return _plural(seconds // 86400, "day")
    return date_filter(timezone.localtime(value) if timezone.is_aware(value) else value, "Y-m-d H:i")
