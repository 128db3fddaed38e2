"""Security headers on UI and API answers; CSRF on UI forms and on session-authenticated API writes, none
for token-authenticated API writes; request size limits of the API."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from exalate_node.models import ApiToken
from exalate_node.tokens import token_create
from instances.models import Instance, Issue


@pytest.fixture
def staff_browser(world, admin_user):  # type: ignore[no-untyped-def]
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    return client


PAGES = ["/ui/", "/ui/connections/", "/ui/tracker/", "/admin/", "/api/v1/instances/", "/api/v1/connections/"]


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_on_ui_and_api_answers(staff_browser, path):
    response = staff_browser.get(path)
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/ui/", "/api/v1/instances/", "/admin/login/"])
def test_security_headers_on_anonymous_answers_too(client, db, path):
    response = client.get(path)
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"


def test_a_ui_form_without_a_csrf_token_is_refused(staff_browser, world):
    before = world.issue.comments.count()
    response = staff_browser.post(f"/ui/tracker/{world.issue.key}/comment/", {"body": "forged"})
    assert response.status_code == 403
    assert world.issue.comments.count() == before


def test_a_ui_form_with_its_csrf_token_works(staff_browser, world):
    page = staff_browser.get(f"/ui/tracker/{world.issue.key}/")
    token = (
        page.cookies["csrftoken"].value
        if "csrftoken" in page.cookies
        else staff_browser.cookies["csrftoken"].value
    )
    response = staff_browser.post(
        f"/ui/tracker/{world.issue.key}/comment/", {"body": "genuine", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert world.issue.comments.filter(body="genuine").exists()


@pytest.fixture
def session_api(world, admin_user):  # type: ignore[no-untyped-def]
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin_user)  # a real session, as a browser has after logging in
    return client


def test_a_session_authenticated_api_write_needs_csrf(session_api, world):
    before = Instance.objects.count()
    response = session_api.post("/api/v1/instances/", {"name": "Forged"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"] and response.json()["code"] == "permission_denied"
    assert Instance.objects.count() == before


def test_a_session_authenticated_api_write_with_the_csrf_token_works(session_api, world):
    session_api.get("/admin/")  # sets the csrftoken cookie
    token = session_api.cookies["csrftoken"].value
    response = session_api.post(
        "/api/v1/instances/", {"name": "Genuine"}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 201


def test_a_session_api_read_needs_no_csrf(session_api, world):
    assert session_api.get("/api/v1/instances/").status_code == 200


def test_a_token_authenticated_api_write_needs_no_csrf(world, admin_user):
    _, key = token_create(user=admin_user)
    client = APIClient(enforce_csrf_checks=True)
    response = client.post(
        "/api/v1/instances/", {"name": "By token"}, format="json", HTTP_AUTHORIZATION=f"Token {key}"
    )
    assert response.status_code == 201


def test_the_token_endpoint_refuses_non_staff(db, plain_user):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "bob", "password": "pw-bob-123"}, format="json"
    )
    assert response.status_code == 403 and not ApiToken.objects.exists()


def test_an_api_body_over_the_upload_limit_is_refused(staff_browser, world, settings, admin_user):
    """DATA_UPLOAD_MAX_MEMORY_SIZE (5 MB) bounds API bodies: a bigger one is a 4xx and changes nothing."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    client = APIClient()
    client.force_authenticate(admin_user)
    body = json.dumps({"project": "SUP", "summary": "s", "description": "d" * 4096})
    before = Issue.objects.count()
    response = client.post("/api/v1/tracker/issues/", data=body, content_type="application/json")
    assert 400 <= response.status_code < 500, response.status_code
    assert Issue.objects.count() == before


def test_api_json_nested_to_the_limit_is_fine_and_one_deeper_is_400(world, admin_user):
    from exalate_node.parsers import MAX_JSON_DEPTH

    client = APIClient()
    client.force_authenticate(admin_user)

    def nested(n: int) -> str:  # the whole body is n levels deep (the outer object is one)
        return '{"name": "n", "settings": ' + '{"a": ' * (n - 1) + "1" + "}" * (n - 1) + "}"

    ok = client.post("/api/v1/instances/", data=nested(MAX_JSON_DEPTH), content_type="application/json")
    assert ok.status_code == 201, ok.content[:300]
    too_deep = client.post(
        "/api/v1/instances/", data=nested(MAX_JSON_DEPTH + 1), content_type="application/json"
    )
    assert too_deep.status_code == 400 and too_deep.json()["code"] == "parse_error"


def test_uploaded_attachments_download_as_files_never_inline(staff_browser, world):
    from instances.tracker.services import attachment_add

    att = attachment_add(
        issue=world.issue, actor="t", filename="x.html", content=b"<script>alert(1)</script>"
    )
    response = staff_browser.get(f"/ui/tracker/attachments/{att.pk}/")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
