"""When the tracker behind a connection fails, the API and the UI say so; they never answer 500.

Every tracker type, answering every request with 401, with 500, or with something that is not JSON: dry-run
(outgoing and incoming), exalate, connect and the sync status through the API are a 502 problem
``{"detail", "code": "tracker_error"}`` whose detail names the instance and what the tracker said; the UI's
exalate, sync now and dry-run show the same message. (Before: 54 of 84 such tries were a 500.)

The trackers are reached through the connectors' transport seam (``_common.use_transport``; Redmine's client
gets the same session), so nothing leaves the process and retries cost no time.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from django.urls import reverse
from requests.adapters import BaseAdapter
from rest_framework.test import APIClient

from connections.services import connection_create_local
from instances.connectors import ConnectorError, _common
from instances.connectors import redmine as redmine_module
from instances.connectors.http import HttpClient
from instances.models import Instance
from instances.tracker import services
from replicas.models import Twin

pytestmark = pytest.mark.django_db

# tracker type -> (credentials, settings, a key that the connector looks up in the tracker)
TRACKERS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "github": ({"token": "ghp_x"}, {"repo": "octo/widgets"}, "#1"),
    "jira": ({"email": "a@example.com", "api_token": "t"}, {"project": "SUP"}, "SUP-1"),
    "gitlab": ({"token": "glpat-x"}, {"project": "group/proj"}, "#1"),
    "azure": ({"pat": "p"}, {"project": "Demo"}, "#1"),
    "zendesk": ({"email": "a@example.com", "api_token": "t"}, {}, "#1"),
    "servicenow": ({"username": "u", "password": "p"}, {}, "INC0010001"),
    "salesforce": ({"client_id": "c", "client_secret": "s"}, {}, "00001001"),
    "redmine": ({"api_key": "k" * 40}, {"project": "sup"}, "#1"),
}

# fault -> (status, content type, body, what the message must quote)
FAULTS: dict[str, tuple[int, str, bytes, str]] = {
    "401": (401, "application/json", b'{"message": "Bad credentials"}', "401"),
    "500": (500, "text/html", b"<html>Internal Server Error</html>", "500"),
    "not-json": (200, "text/html", b"<html><body>Sign in</body></html>", "not JSON"),
}


class BrokenTracker(BaseAdapter):
    """A requests transport that answers every request with the same fault."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__()
        self.status, self.content_type, self.body = status, content_type, body
        self.calls: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls.append(f"{request.method} {request.url}")
        response = requests.Response()
        response.status_code = self.status
        response.reason = {200: "OK", 401: "Unauthorized", 500: "Internal Server Error"}[self.status]
        response.headers["Content-Type"] = self.content_type
        response._content = self.body
        response.raw = io.BytesIO(self.body)  # as a real answer has: the client closes it when done
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass

    def session(self, tracker_type: str = "") -> requests.Session:
        session = requests.Session()
        session.mount("https://", self)
        session.mount("http://", self)
        return session


@pytest.fixture(params=list(FAULTS))
def fault(request, monkeypatch) -> Iterator[tuple[BrokenTracker, str]]:  # type: ignore[no-untyped-def]
    status, content_type, body, quoted = FAULTS[request.param]
    broken = BrokenTracker(status, content_type, body)
    # Redmine builds its client itself: give it the same session and no sleeping between retries.
    monkeypatch.setattr(
        redmine_module,
        "HttpClient",
        functools.partial(HttpClient, session=broken.session(), sleep=lambda s: None),
    )
    with _common.use_transport(broken.session, sleep=lambda s: None):
        yield broken, quoted


@pytest.fixture(params=list(TRACKERS))
def tracker(request, db):  # type: ignore[no-untyped-def]
    """(the tracker's side of a local connection to a built-in project, the key to look up)."""
    creds, settings, key = TRACKERS[request.param]
    desk = Instance.objects.create(name="Support desk", tracker_type="builtin")
    services.project_create(instance=desk, key="SUP", name="Support")
    remote = Instance.objects.create(
        name=f"Broken {request.param}",
        tracker_type=request.param,
        url=f"https://{request.param}.tracker.example",
        credentials=json.dumps(creds),
        settings={"rate_limit_per_s": 1000, **settings},
    )
    _, side = connection_create_local(name="Desk ⇄ tracker", instance_a=desk, instance_b=remote)
    return side, key


def _is_tracker_problem(response, instance: Instance, quoted: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 502, (response.status_code, response.content[:500])
    body = response.json()
    assert body["code"] == "tracker_error" and set(body) == {"detail", "code"}
    assert body["detail"].startswith(f"{instance.name} ({instance.tracker_type}): "), body["detail"]
    assert quoted in body["detail"], body["detail"]
    return body["detail"]


def test_the_api_answers_a_502_naming_the_tracker_and_what_it_said(admin_user, tracker, fault):
    side, key = tracker
    broken, quoted = fault
    api = APIClient()
    api.force_authenticate(admin_user)
    base = f"/api/v1/connections/{side.pk}"
    calls = [
        ("post", f"{base}/rules/dry-run/", {"direction": "outgoing", "key": key}),
        (
            "post",
            f"{base}/rules/dry-run/",
            {"direction": "incoming", "key": key, "replica": {"summary": "x"}},
        ),
        ("post", f"{base}/exalate/", {"key": key}),
        ("post", f"{base}/connect/", {"local_key": key, "remote_key": "SUP-9"}),
        ("get", f"/api/v1/entities/{side.local_instance_id}/{quote(key, safe='')}/sync-status/", None),
    ]
    for method, path, body in calls:
        before = len(broken.calls)
        response = getattr(api, method)(path, body, format="json") if body else api.get(path)
        assert len(broken.calls) > before, f"{path} did not reach the tracker"
        _is_tracker_problem(response, side.local_instance, quoted)
    assert not Twin.objects.filter(connection=side).exists()  # nothing was half-done


def test_the_ui_shows_the_same_message(client, admin_user, tracker, fault):
    side, key = tracker
    broken, quoted = fault
    client.force_login(admin_user)
    instance = side.local_instance
    prefix = f"{instance.name} ({instance.tracker_type}): "

    page = client.post(reverse("ui:exalate", args=[side.pk]), {"key": key}, follow=True)
    assert page.status_code == 200
    text = page.content.decode()
    assert prefix in text and quoted in text

    rules_page = client.post(
        reverse("ui:rules", args=[side.pk]),
        {"action": "dryrun", "outgoing": "", "incoming": "", "dry_direction": "outgoing", "dry_key": key},
    )
    assert rules_page.status_code in (200, 400)
    assert prefix in rules_page.content.decode() and quoted in rules_page.content.decode()

    status = client.get(reverse("ui:status"), {"instance": instance.pk, "key": key})
    assert status.status_code == 200 and quoted in status.content.decode()


def test_sync_now_on_an_item_whose_tracker_fails_says_so(client, admin_user, tracker, fault):
    side, key = tracker
    _, quoted = fault
    client.force_login(admin_user)
    twin = Twin.objects.create(connection=side, local_id="1", local_key=key)
    page = client.post(reverse("ui:twin_sync", args=[twin.pk]), follow=True)
    assert page.status_code == 200
    text = page.content.decode()
    assert f"{side.local_instance.name} ({side.local_instance.tracker_type}): " in text and quoted in text


@pytest.mark.parametrize(
    "exc,said",
    [
        (ConnectorError("GitHub refused the request (401 Unauthorized): check the token."), "(401 Unauth"),
        (requests.JSONDecodeError("Expecting value", "<html>", 0), "not JSON"),
        (requests.ConnectionError("Connection refused"), "could not be reached (Connection refused)"),
    ],
)
def test_a_tracker_failure_that_no_view_handles_is_still_a_502(exc, said):
    """The API's exception handler is the net under views that call a tracker without naming it."""
    from exalate_node.api import exception_handler

    response = exception_handler(exc, {})
    assert response.status_code == 502
    assert response.data["code"] == "tracker_error" and said in response.data["detail"]
