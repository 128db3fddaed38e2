"""URLs that come from data (a peer's replica, a peer's ack) become links only when they are ``http`` or
``https`` URLs with a host. A ``javascript:`` URL sent by a peer was rendered as ``<a href="javascript:…">``
on the tracker, status, connection and items pages, and clicking it ran the script in the admin's browser.

The replica JSON Schema and the ack check refuse other schemes at the door (a 400 naming the field), and
every template turns a URL into a link through one filter (``exalate_node/templatetags/links.py``), so a
bad URL already stored is shown as plain text.
"""

from __future__ import annotations

import json
import uuid
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from exalate_node.templatetags.links import is_web_url, web_url
from replicas.models import SyncEvent, Twin
from tests.security.test_hostile_catalogue import _signed, _state, node_conn  # noqa: F401

HOSTILE_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "\tjavascript:alert(1)",
    "java\nscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/x",
    "/relative/path",
    "http://",
    "http:///no-host",
    "https://exa mple.com/",
    "http://example.com/\nSet-Cookie:x",
    "http://exa\\mple.com/",
]
GOOD_URLS = ["https://tracker.example/browse/SUP-1", "HTTP://Tracker.Example:8080/a?b=c#d", ""]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_only_http_and_https_urls_with_a_host_may_become_links(url):
    assert not is_web_url(url) and web_url(url) == ""


@pytest.mark.parametrize("url", GOOD_URLS[:2])
def test_http_and_https_urls_become_links(url):
    assert is_web_url(url) and web_url(url) == url


# --- refused at the door ------------------------------------------------------------------------------------


def _event_body(url: str) -> bytes:
    hub = {"id": "77", "key": "FAR-77", "summary": "From afar", "url": url}
    message = {
        "type": "event",
        "trace_id": str(uuid.uuid4()),
        "kind": "update",
        "seq": 1,
        "remote_item_id": "77",
        "replica": {"version": {"major": 1, "minor": 0, "patch": 0}, "hubIssue": hub},
    }
    return json.dumps({"messages": [message]}).encode()


def _post(client, conn, body: bytes):  # type: ignore[no-untyped-def]
    return client.generic(
        "POST", "/node/v1/messages/", data=body, content_type="application/json", **_signed(conn, body)
    )


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_peer_replica_whose_url_is_not_a_web_url_is_a_400_naming_the_field(client, node_conn, url):  # noqa: F811
    before = _state()
    response = _post(client, node_conn, _event_body(url))
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["code"] == "replica_invalid"
    assert "hubIssue/url" in answer["detail"] and "is not an http or https URL" in answer["detail"]
    after = _state()
    after["counts"]["connections.SeenNonce"] = before["counts"]["connections.SeenNonce"]  # the nonce is spent
    assert after == before


@pytest.mark.parametrize("url", GOOD_URLS)
def test_a_peer_replica_with_a_web_url_or_none_is_accepted(client, node_conn, url):  # noqa: F811
    response = _post(client, node_conn, _event_body(url))
    assert response.status_code == 202, response.content
    assert SyncEvent.objects.filter(connection=node_conn, direction="in").count() == 1


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "ftp://files.example/x"])
def test_a_peer_ack_whose_remote_url_is_not_a_web_url_is_a_400(client, node_conn, url):  # noqa: F811
    ack = {
        "type": "ack",
        "trace_id": str(uuid.uuid4()),
        "remote_item_id": "77",
        "local_item_id": "1",
        "remote_key": "FAR-77",
        "remote_url": url,
    }
    body = json.dumps({"messages": [ack]}).encode()
    before = _state()
    response = _post(client, node_conn, body)
    assert (
        response.status_code == 400
        and "'remote_url' must be an http or https URL" in response.json()["detail"]
    )
    after = _state()
    after["counts"]["connections.SeenNonce"] = before["counts"]["connections.SeenNonce"]
    assert after == before


# --- a bad URL already stored is shown as text, never as a link ---------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs.extend(
            value or "" for name, value in attrs if name in ("href", "src", "action", "formaction")
        )


def _hrefs(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


def _pages(world, twin: Twin) -> list[str]:  # type: ignore[no-untyped-def]
    """Every page that shows a twin's remote link: tracker item, status, connection, items, admin."""
    return [
        reverse("ui:issue", args=[world.issue.key]),
        reverse("ui:status") + f"?instance={world.sup.instance_id}&key={world.issue.key}",
        reverse("ui:connection", args=[twin.connection_id]),
        reverse("ui:items", args=[twin.connection_id]),
        reverse("admin:replicas_twin_change", args=[twin.pk]),
        reverse("admin:replicas_twin_changelist"),
    ]


@pytest.mark.parametrize("url", HOSTILE_URLS[:8])
def test_a_stored_url_that_is_not_a_web_url_is_shown_as_text_on_every_page(client, admin_user, world, url):
    client.force_login(admin_user)
    twin = Twin.objects.get(connection=world.a)
    Twin.objects.filter(pk=twin.pk).update(remote_url=url, remote_key="FAR-77")
    for page in _pages(world, twin):
        response = client.get(page)
        assert response.status_code == 200, page
        hrefs = _hrefs(response.content.decode())
        bad = [
            h
            for h in hrefs
            if h.strip()
            .lower()
            .replace("\t", "")
            .replace("\n", "")
            .startswith(("javascript:", "data:", "vbscript:", "file:"))
        ]
        assert bad == [], (page, bad)
        assert url.strip() not in hrefs, page


def test_a_stored_web_url_is_still_a_link(client, admin_user, world):
    """The filter lets good links through (a filter that dropped every link would pass the test above)."""
    client.force_login(admin_user)
    twin = Twin.objects.get(connection=world.a)
    good = "https://tracker.example/browse/FAR-77"
    Twin.objects.filter(pk=twin.pk).update(remote_url=good, remote_key="FAR-77")
    for page in _pages(world, twin)[:4]:
        assert good in _hrefs(client.get(page).content.decode()), page
