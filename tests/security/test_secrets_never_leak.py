"""Secrets (tracker credentials, connection keys, invitation secrets and codes) never appear in an API
answer, a UI or admin page, or a log line, and are encrypted at rest."""

from __future__ import annotations

import json
import logging

import pytest
import requests
from django.db import connection as db
from rest_framework.test import APIClient

from connections import signing
from connections.models import Connection, Invitation
from instances.models import Instance
from tests.api.test_permissions import API_PATHS
from tests.security.conftest import PASSWORD, TOKEN, WEBHOOK_SECRET
from tests.ui.test_pages import _pages


@pytest.fixture
def staff_api(world, admin_user):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def _assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}…) appears in {where}"


def _api_gets(world) -> list[str]:  # type: ignore[no-untyped-def]
    a, inst, key = world.a.pk, world.sup.instance_id, world.issue.key
    explicit = [
        "/api/v1/instances/",
        f"/api/v1/instances/{inst}/",
        f"/api/v1/instances/{world.pending.local_instance_id}/",
        "/api/v1/connections/",
        f"/api/v1/connections/{a}/",
        f"/api/v1/connections/{world.pending.pk}/",
        f"/api/v1/connections/{a}/rules/",
        f"/api/v1/connections/{a}/triggers/",
        f"/api/v1/connections/{a}/triggers/{world.trigger_id}/",
        f"/api/v1/connections/{a}/bulk/",
        f"/api/v1/connections/{a}/reconcile/",
        f"/api/v1/connections/{a}/twins/",
        f"/api/v1/entities/{inst}/{key}/sync-status/",
        "/api/v1/events/",
        "/api/v1/errors/",
        "/api/v1/tracker/projects/",
        "/api/v1/tracker/issues/",
        f"/api/v1/tracker/issues/{key}/",
        "/api/schema/",
    ]
    ids = {"1": str(a)}
    walked = [p.replace("/1/", f"/{ids['1']}/") for p in API_PATHS]
    return sorted(set(explicit + walked))


def test_secrets_are_encrypted_at_rest(world):
    with db.cursor() as cur:
        cur.execute("SELECT credentials FROM instances_instance")
        creds = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT key FROM connections_connection WHERE key != ''")
        keys = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT secret FROM connections_invitation")
        invitation_secrets = [row[0] for row in cur.fetchall()]
    assert creds and invitation_secrets
    for stored in creds + keys + invitation_secrets:
        assert stored.startswith("enc1:"), stored[:10]
        _assert_clean(stored, world.secrets(), "the database")


def test_no_api_answer_contains_a_secret(staff_api, world):
    secrets = world.secrets()
    paths = _api_gets(world)
    assert len(paths) > 25
    seen_ok = 0
    for path in paths:
        response = staff_api.get(path)
        assert response.status_code < 500, path
        seen_ok += response.status_code == 200
        _assert_clean(response.content.decode("utf-8", "replace"), secrets, path)
    assert seen_ok > 20
    detail = staff_api.get(f"/api/v1/instances/{world.sup.instance_id}/").json()
    assert detail["has_credentials"] is True and "credentials" not in detail


def test_writing_credentials_does_not_echo_them(staff_api, world):
    response = staff_api.patch(
        f"/api/v1/instances/{world.sup.instance_id}/", {"credentials": {"token": TOKEN}}, format="json"
    )
    assert response.status_code == 200
    _assert_clean(response.content.decode(), [TOKEN], "the PATCH answer")


def _admin_pages(world) -> list[str]:  # type: ignore[no-untyped-def]
    pages = ["/admin/", "/admin/instances/instance/", "/admin/connections/connection/"]
    pages += [f"/admin/instances/instance/{i.pk}/change/" for i in Instance.objects.all()]
    pages += [f"/admin/connections/connection/{c.pk}/change/" for c in Connection.objects.all()]
    pages += ["/admin/connections/invitation/"]
    pages += [f"/admin/connections/invitation/{i.pk}/change/" for i in Invitation.objects.all()]
    return pages


def test_no_ui_or_admin_page_contains_a_secret(client, admin_user, world):
    client.force_login(admin_user)
    secrets = world.secrets()
    pages = _pages((world.a, world.b, world.issue)) + [
        f"/ui/connections/{world.pending.pk}/",
        f"/ui/connections/{world.pending.pk}/rules/",
        f"/ui/tracker/{world.issue.key}/",
    ]
    pages += _admin_pages(world)
    rendered = 0
    for url in pages:
        response = client.get(url)
        assert response.status_code in (200, 302, 404), (url, response.status_code)
        rendered += response.status_code == 200
        _assert_clean(response.content.decode("utf-8", "replace"), secrets, url)
    assert rendered > 20


def _logged(caplog) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)


def test_a_sync_logs_no_secret(world, caplog, django_capture_on_commit_callbacks):
    from instances.tracker import services
    from replicas.models import SyncEvent

    caplog.set_level(logging.DEBUG)
    done = SyncEvent.objects.filter(status="done").count()
    with django_capture_on_commit_callbacks(execute=True):
        services.issue_update(issue=world.issue, actor="anna@example.com", summary="Printer on fire, still")
    assert SyncEvent.objects.filter(status="done").count() > done  # the change really synced
    _assert_clean(_logged(caplog), world.secrets(), "the logs of a sync")


class _Echo:
    """A tracker that answers 401 and echoes the request's headers back (the worst case for logging)."""

    def __init__(self) -> None:
        self.authorization: list[str] = []

    def __call__(self, session, method, url, **kw):  # type: ignore[no-untyped-def]
        headers = {**session.headers, **(kw.get("headers") or {})}
        self.authorization.append(str(headers.get("Authorization", "")))
        response = requests.Response()
        response.status_code = 401
        response.url = url
        response._content = json.dumps({"message": "Bad credentials", "echo": dict(headers)}).encode()
        response.headers["Content-Type"] = "application/json"
        return response


def test_a_failed_tracker_call_logs_neither_credentials_nor_the_authorization_header(
    world, caplog, monkeypatch
):
    from instances.connectors import ConnectorError, get_connector

    gh = Instance.objects.create(
        name="Widgets on GitHub",
        tracker_type="github",
        url="https://api.github.com",
        settings={"repo": "octo/widgets"},
        credentials=json.dumps({"token": TOKEN, "webhook_secret": WEBHOOK_SECRET}),
    )
    echo = _Echo()
    monkeypatch.setattr(
        requests.Session, "request", lambda session, method, url, **kw: echo(session, method, url, **kw)
    )  # the one HTTP seam's transport
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectorError) as failure:
        get_connector(gh).test_credentials()
    assert echo.authorization and TOKEN in echo.authorization[0]  # the call really carried the token
    secrets = [TOKEN, WEBHOOK_SECRET, PASSWORD, echo.authorization[0]]
    _assert_clean(_logged(caplog), secrets, "the logs of a failed call")
    _assert_clean(str(failure.value), secrets, "the error shown to the admin")

    def refuse(session, method, url, **kw):  # type: ignore[no-untyped-def]
        raise requests.ConnectionError(f"cannot reach {url} with {session.headers.get('Authorization')}")

    monkeypatch.setattr(requests.Session, "request", refuse)
    caplog.clear()
    with pytest.raises(ConnectorError) as unreachable:
        get_connector(gh).test_credentials()
    _assert_clean(_logged(caplog) + str(unreachable.value), secrets, "an unreachable tracker's error")


def test_a_node_request_logs_no_key_or_signature(world, client, caplog):
    key = bytes(range(32))
    conn = world.pending
    conn.key, conn.status = key.hex(), Connection.Status.ACTIVE
    conn.save()
    caplog.set_level(logging.DEBUG)
    signatures = []
    for body in (b'{"messages": []}', b'{"messages": "bad"}', b"{}"):
        headers = signing.sign_request(
            key=key, connection_id=str(conn.uid), method="POST", path="/node/v1/messages/", body=body
        )
        signatures.append(headers["X-Exalate-Signature"].split("=", 1)[1])
        client.generic(
            "POST",
            "/node/v1/messages/",
            data=body,
            content_type="application/json",
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        )
    bad = signing.sign_request(
        key=b"k" * 32, connection_id=str(conn.uid), method="POST", path="/node/v1/messages/", body=b"{}"
    )
    client.generic(
        "POST",
        "/node/v1/messages/",
        data=b"{}",
        content_type="application/json",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in bad.items()},
    )
    assert caplog.records
    _assert_clean(_logged(caplog), world.secrets() + [key.hex()] + signatures, "the logs of node requests")
