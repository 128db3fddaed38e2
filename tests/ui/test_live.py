"""The live parts of the UI pages: relative times, and a page's own refresh leaving the messages alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from exalate_node.templatetags.when import ago

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "just now"),
        (-3, "just now"),
        (4, "just now"),
        (5, "5 seconds ago"),
        (59, "59 seconds ago"),
        (60, "1 minute ago"),
        (150, "2 minutes ago"),
        (3600, "1 hour ago"),
        (2 * 86400, "2 days ago"),
    ],
)
def test_relative_times_count_seconds_in_the_first_minute(seconds, text):
    now = timezone.now()
    assert ago(now - timedelta(seconds=seconds), now) == text


def test_relative_times_older_than_a_week_are_dates():
    now = timezone.now()
    assert ago(now - timedelta(days=30), now)[:4].isdigit()
    assert ago(None) == ""


def test_the_pages_mark_their_live_parts(staff, synced):
    a, _b, issue = synced
    pages = {
        reverse("ui:dashboard"): b'id="live-dashboard" data-live',
        reverse("ui:queue"): b'id="live-queue" data-live',
        reverse("ui:errors"): b'id="live-errors" data-live',
        reverse("ui:connection", args=[a.pk]): b'id="live-connection-items" data-live',
        reverse("ui:connections"): b'id="live-connections" data-live',
        reverse("ui:status")
        + f"?instance={a.local_instance_id}&key={issue.key}": b'id="live-status" data-live',
    }
    for url, marker in pages.items():
        response = staff.get(url)
        assert marker in response.content, url
        assert b'class="live-status"' in response.content, url


def test_a_live_refresh_does_not_use_up_the_message_for_the_page(staff, synced):
    a, _b, issue = synced
    url = reverse("ui:status") + f"?instance={a.local_instance_id}&key={issue.key}"
    response = staff.post(reverse("ui:twin_sync", args=[a.twins.first().pk]), {"next": url})
    assert response.status_code == 302

    polled = staff.get(url, headers={"X-Live-Poll": "1"})
    assert b"is queued on" not in polled.content and b"messagelist" not in polled.content

    shown = staff.get(url)
    assert "its current state is queued" in shown.content.decode()


def test_a_live_refresh_of_the_status_page_does_not_ask_the_tracker_each_time(staff, synced, monkeypatch):
    from django.core.cache import cache

    from instances.connectors.builtin import BuiltinConnector

    a, _b, issue = synced
    cache.clear()
    asked = []
    real = BuiltinConnector.find_item
    monkeypatch.setattr(BuiltinConnector, "find_item", lambda self, key: asked.append(key) or real(self, key))
    url = reverse("ui:status") + f"?instance={a.local_instance_id}&key={issue.key}"

    assert "badge-synchronized" in staff.get(url).content.decode()
    for _ in range(3):
        assert "badge-synchronized" in staff.get(url, headers={"X-Live-Poll": "1"}).content.decode()
    assert asked == [issue.key]  # the page load asked; its refreshes reused the answer
    staff.get(url)
    assert asked == [issue.key, issue.key]  # a load by the admin always asks
