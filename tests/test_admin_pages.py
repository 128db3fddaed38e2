"""Every admin page renders for staff, and never shows a secret in plain text."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import Connection
from instances.models import Instance
from instances.tracker import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, admin_user):  # type: ignore[no-untyped-def]
    client.force_login(admin_user)
    return client


def test_every_changelist_and_add_page_renders(staff_client, builtin):
    from django.contrib import admin

    for model in admin.site._registry:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert staff_client.get(url).status_code == 200, url
        assert staff_client.get(url + "?q=x").status_code == 200, url


def test_credentials_and_keys_are_never_shown(staff_client):
    inst = Instance.objects.create(name="GH", tracker_type="github", credentials='{"token": "ghp_TOPSECRET"}')
    conn = Connection.objects.create(name="c", local_instance=inst, key="deadbeefKEY")
    for url in (
        reverse("admin:instances_instance_change", args=[inst.pk]),
        reverse("admin:connections_connection_change", args=[conn.pk]),
        reverse("admin:instances_instance_changelist"),
    ):
        body = staff_client.get(url).content.decode()
        assert "TOPSECRET" not in body and "deadbeefKEY" not in body


def test_saving_an_instance_without_credentials_keeps_them(staff_client):
    inst = Instance.objects.create(name="GH", tracker_type="github", credentials='{"token": "t"}')
    url = reverse("admin:instances_instance_change", args=[inst.pk])
    r = staff_client.post(
        url, {"name": "GH2", "kind": "local", "tracker_type": "github", "credentials": "", "settings": "{}"}
    )
    assert r.status_code == 302, r.content
    inst.refresh_from_db()
    assert (inst.name, inst.credentials) == ("GH2", '{"token": "t"}')


def test_editing_an_issue_in_the_admin_records_the_change(staff_client, builtin):
    issue = services.issue_create(project=builtin, actor="a@x", summary="Old")
    url = reverse("admin:instances_issue_change", args=[issue.pk])
    page = staff_client.get(url)
    assert page.status_code == 200
    data = {
        "project": builtin.pk,
        "summary": "New",
        "description": "",
        "status": "Open",
        "priority": "Medium",
        "issue_type": "Task",
        "labels": "[]",
        "assignee": "",
        "reporter": "",
        "custom_fields": "{}",
        "comments-TOTAL_FORMS": "1",
        "comments-INITIAL_FORMS": "0",
        "comments-0-body": "From the admin",
        "comments-0-author": "",
        "attachments-TOTAL_FORMS": "0",
        "attachments-INITIAL_FORMS": "0",
    }
    r = staff_client.post(url, data)
    assert r.status_code == 302, r.content.decode()[:3000]
    issue.refresh_from_db()
    assert issue.summary == "New"
    assert issue.updated_by == "alice@example.com"
    assert [c.body for c in issue.comments.all()] == ["From the admin"]


def test_non_staff_are_sent_to_login(client, plain_user):
    client.force_login(plain_user)
    r = client.get(reverse("admin:instances_issue_changelist"))
    assert r.status_code == 302 and "/login/" in r["Location"]
