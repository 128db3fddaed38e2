"""Who can reach which surface. The API's own per-endpoint check is ``tests/api/test_permissions.py``; the UI
pages' is ``tests/ui/test_pages.py``; this module covers the rest of the URL tree."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/admin/", "/admin/instances/instance/", "/admin/connections/connection/"])
def test_the_django_admin_is_staff_only(client, plain_user, path):
    assert client.get(path)["Location"].startswith("/admin/login/")
    client.force_login(plain_user)
    assert client.get(path)["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_the_api_schema_and_docs_are_staff_only(path, plain_user, admin_user):
    assert APIClient().get(path).status_code in (401, 403)
    user = APIClient()
    user.force_authenticate(plain_user)
    assert user.get(path).status_code == 403
    staff = APIClient()
    staff.force_authenticate(admin_user)
    assert staff.get(path).status_code == 200


def test_healthz_is_public_and_reveals_only_status_and_version(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert set(response.json()) == {"status", "version"}
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/node/v1/messages/"),
        ("get", "/node/v1/messages/"),
        ("post", "/node/v1/messages/ack/"),
        ("post", "/node/v1/status/"),
        ("get", "/node/v1/attachments/1/1/"),
    ],
)
def test_node_endpoints_need_a_signature(client, method, path):
    response = client.generic(method.upper(), path, data=b"{}", content_type="application/json")
    assert response.status_code == 401
    assert set(response.json()) == {"detail", "code"}


def test_the_handshake_needs_an_invitation_proof(client):
    response = client.post(
        "/node/v1/handshake/", data=b'{"invitation_id": "nope"}', content_type="application/json"
    )
    assert 400 <= response.status_code < 500


def test_a_session_login_does_not_open_the_node_protocol(client, admin_user):
    client.force_login(admin_user)
    response = client.post("/node/v1/messages/", data=b'{"messages": []}', content_type="application/json")
    assert response.status_code == 401


def test_an_api_token_does_not_open_the_node_protocol(admin_user):
    from exalate_node.tokens import token_create

    _, key = token_create(user=admin_user)
    response = APIClient().post(
        "/node/v1/messages/", {"messages": []}, format="json", HTTP_AUTHORIZATION=f"Token {key}"
    )
    assert response.status_code == 401


def test_password_guessing_at_the_token_endpoint_is_throttled(client, admin_user, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"token": "3/minute"})
    cache.clear()
    guesses = [
        client.post("/api/v1/auth/token/", {"username": admin_user.username, "password": f"guess-{i}"})
        for i in range(4)
    ]
    assert [r.status_code for r in guesses] == [400, 400, 400, 429]
    refused = guesses[-1]
    assert refused.json()["code"] == "throttled" and "Too many token requests" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0
    # The right password is refused too while throttled: guessing cannot go on at full speed.
    right = client.post("/api/v1/auth/token/", {"username": admin_user.username, "password": "pw-alice-123"})
    assert right.status_code == 429
    cache.clear()


def test_password_guessing_at_the_admin_login_is_limited(client, admin_user, settings):
    from django.core.cache import cache

    settings.LOGIN_FAILURE_LIMIT = 3
    cache.clear()
    guesses = [
        client.post("/admin/login/", {"username": admin_user.username, "password": f"guess-{i}"})
        for i in range(4)
    ]
    assert [r.status_code for r in guesses] == [200, 200, 200, 429]
    assert "Too many failed logins" in guesses[-1].content.decode() and guesses[-1]["Retry-After"] == "300"
    right = client.post("/admin/login/", {"username": admin_user.username, "password": "pw-alice-123"})
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    cache.clear()
    ok = client.post("/admin/login/?next=/ui/", {"username": admin_user.username, "password": "pw-alice-123"})
    assert ok.status_code == 302 and ok["Location"] == "/ui/"
    assert client.get("/admin/login/").status_code == 302  # logged in: the page sends you on
