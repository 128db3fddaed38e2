"""Entity Sync Status says one thing about what was received, shows replicas as they travel and folds a long
timeline."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from instances.models import Issue
from instances.tracker import services

pytestmark = pytest.mark.django_db(transaction=True)


def _status_url(connection, key: str, extra: str = "") -> str:  # type: ignore[no-untyped-def]
    return reverse("ui:status") + f"?instance={connection.local_instance_id}&key={key}{extra}"


def _section(body: str, css: str) -> str:
    match = re.search(rf'<details class="replica {css}".*?</details>', body, re.S)
    assert match, css
    return match[0]


def test_a_side_that_received_nothing_says_so_once(staff, synced):
    a, _b, issue = synced
    body = staff.get(_status_url(a, issue.key)).content.decode()
    assert "Nothing received yet" in _section(body, "remote-replica")
    assert "Only one remote replica so far" not in body
    assert "Nothing received yet, so nothing to compare" in body


def test_replicas_are_shown_as_they_travel_with_their_version(staff, synced):
    a, b, issue = synced
    sent = _section(staff.get(_status_url(a, issue.key)).content.decode(), "local-replica")
    assert (
        "&quot;version&quot;: {" in sent
        and "&quot;major&quot;: 1" in sent
        and "&quot;hubIssue&quot;: {" in sent
    )

    copy = Issue.objects.get(project__instance=b.local_instance)
    received = _section(staff.get(_status_url(b, copy.key)).content.decode(), "remote-replica")
    assert "&quot;version&quot;: {" in received and "&quot;hubIssue&quot;: {" in received
    assert "Printer on fire, again" in received


def test_a_long_timeline_shows_the_newest_twenty_and_unfolds(staff, synced):
    a, _b, issue = synced
    for n in range(25):
        services.issue_update(issue=issue, actor="anna@example.com", summary=f"Edit {n}")
    count = a.events.count()
    assert count > 25

    body = staff.get(_status_url(a, issue.key)).content.decode()
    assert body.count('<td class="nowrap" title=') == 20
    assert f"newest 20 of {count} events" in body
    assert "Show older events" in body and "events=40" in body

    body = staff.get(_status_url(a, issue.key, "&events=1000")).content.decode()
    assert body.count('<td class="nowrap" title=') == count
    assert "Show older events" not in body


@pytest.mark.parametrize("value", ["abc", "-5", "0", "99999999999999999999"])
def test_a_bad_events_parameter_is_the_default_or_the_maximum(staff, synced, value):
    a, _b, issue = synced
    response = staff.get(_status_url(a, issue.key, f"&events={value}"))
    assert response.status_code == 200
    assert response.content.decode().count('<td class="nowrap" title=') <= 1000
