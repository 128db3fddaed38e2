"""The built-in tracker through /api/v1/tracker/."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = pytest.mark.django_db

ISSUES = "/api/v1/tracker/issues/"


def test_an_issue_created_through_the_api_can_be_read_back(api, builtin):
    r = api.post(ISSUES, {"project": "SUP", "summary": "Printer on fire", "labels": ["hw"]}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["key"] == "SUP-1"
    listed = api.get(ISSUES).json()["results"]
    assert [i["summary"] for i in listed] == ["Printer on fire"]
    assert api.get(f"{ISSUES}SUP-1/").json()["labels"] == ["hw"]


def test_updates_report_what_is_wrong(api, builtin):
    api.post(ISSUES, {"project": "SUP", "summary": "A"}, format="json")
    r = api.patch(f"{ISSUES}SUP-1/", {"status": "Frozen"}, format="json")
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid"
    assert "status: 'Frozen' is not a status of project SUP" in body["detail"]


def test_comments_and_attachments(api, builtin):
    api.post(ISSUES, {"project": "SUP", "summary": "A"}, format="json")
    r = api.post(f"{ISSUES}SUP-1/comments/", {"body": "First"}, format="json")
    assert r.status_code == 201
    cid = r.json()["id"]
    assert (
        api.patch(f"{ISSUES}SUP-1/comments/{cid}/", {"body": "Edited"}, format="json").json()["body"]
        == "Edited"
    )
    upload = SimpleUploadedFile("../../evil.txt", b"data", content_type="text/plain")
    r = api.post(f"{ISSUES}SUP-1/attachments/", {"file": upload}, format="multipart")
    assert r.status_code == 201, r.content
    assert r.json()["filename"] == "evil.txt"
    aid = r.json()["id"]
    content = api.get(f"{ISSUES}SUP-1/attachments/{aid}/content/")
    assert b"".join(content.streaming_content) == b"data"
    issue = api.get(f"{ISSUES}SUP-1/").json()
    assert [c["body"] for c in issue["comments"]] == ["Edited"]
    assert api.delete(f"{ISSUES}SUP-1/comments/{cid}/").status_code == 204
    assert api.get(f"{ISSUES}SUP-1/").json()["comments"] == []


def test_anonymous_and_non_staff_users_get_nothing(anon_api, user_api, builtin):
    for client in (anon_api, user_api):
        assert client.get(ISSUES).status_code in (401, 403)
        assert client.post(ISSUES, {"project": "SUP", "summary": "x"}, format="json").status_code in (
            401,
            403,
        )
    from instances.models import Issue

    assert not Issue.objects.exists()


def test_instance_credentials_are_write_only(api):
    r = api.post(
        "/api/v1/instances/",
        {
            "name": "GH",
            "tracker_type": "github",
            "url": "https://api.github.com",
            "credentials": {"token": "s3cr3t"},
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    assert "s3cr3t" not in r.content.decode()
    assert r.json()["has_credentials"] is True
    assert "s3cr3t" not in api.get("/api/v1/instances/").content.decode()
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT credentials FROM instances_instance")
        stored = cur.fetchone()[0]
    assert stored.startswith("enc1:") and "s3cr3t" not in stored


def test_token_endpoint_only_serves_staff(anon_api, admin_user, plain_user):
    r = anon_api.post("/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-123"}, format="json")
    assert r.status_code == 200 and r.json()["token"]
    r = anon_api.post("/api/v1/auth/token/", {"username": "bob", "password": "pw-bob-123"}, format="json")
    assert r.status_code == 403
    assert "staff" in r.json()["detail"]
