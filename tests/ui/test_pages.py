"""Every UI page renders for staff; anonymous and non-staff users are sent to the login page."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db(transaction=True)


def _pages(synced):  # type: ignore[no-untyped-def]
    a, b, issue = synced
    return [
        reverse("ui:dashboard"),
        reverse("ui:connections"),
        reverse("ui:connection", args=[a.pk]),
        reverse("ui:delete", args=[a.pk]),
        reverse("ui:initiate"),
        reverse("ui:accept"),
        reverse("ui:rules", args=[a.pk]),
        reverse("ui:rules", args=[a.pk]) + "?diff=1",
        reverse("ui:status"),
        reverse("ui:status") + f"?instance={a.local_instance_id}&key={issue.key}",
        reverse("ui:status") + f"?key={issue.key}",
        reverse("ui:queue"),
        reverse("ui:queue") + f"?direction=in&connection={b.pk}&status=done&key=SUP-1",
        reverse("ui:errors"),
        reverse("ui:errors") + "?show=all",
        reverse("ui:tracker"),
        reverse("ui:tracker") + "?project=SUP&q=printer",
        reverse("ui:issue_create") + "?project=SUP",
        reverse("ui:issue", args=[issue.key]),
    ]


def test_every_page_renders_for_staff(staff, synced):
    for url in _pages(synced):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert b"exalate-node" in response.content, url


def test_anonymous_users_are_sent_to_the_login_page(client, synced):
    for url in _pages(synced):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_non_staff_users_are_sent_to_the_login_page(plain, synced):
    for url in _pages(synced):
        response = plain.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_the_home_page_redirects_to_the_dashboard(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == reverse("ui:dashboard")


def test_post_only_actions_refuse_get(staff, synced):
    from replicas.models import SyncError, Twin

    a, _b, _issue = synced
    twin = Twin.objects.filter(connection=a).first()
    error = SyncError.objects.create(impact="node", message="m")
    for url in (
        reverse("ui:activate", args=[a.pk]),
        reverse("ui:deactivate", args=[a.pk]),
        reverse("ui:exalate", args=[a.pk]),
        reverse("ui:invite", args=[a.pk]),
        reverse("ui:twin_sync", args=[twin.pk]),
        reverse("ui:twin_unexalate", args=[twin.pk]),
        reverse("ui:error_resolve", args=[error.pk]),
        reverse("ui:error_retry", args=[error.pk]),
        reverse("ui:comment", args=["SUP-1"]),
        reverse("ui:attach", args=["SUP-1"]),
    ):
        assert staff.get(url).status_code == 405, url


def test_a_real_form_post_without_the_csrf_token_is_refused(admin_user, synced):
    from django.test import Client

    from connections.models import Connection

    a, _b, _issue = synced
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    page = client.get(reverse("ui:connection", args=[a.pk]))
    assert b"csrfmiddlewaretoken" in page.content
    assert client.post(reverse("ui:deactivate", args=[a.pk])).status_code == 403
    a.refresh_from_db()
    assert a.status == Connection.Status.ACTIVE
    # With the token from the page's form it goes through.
    token = page.context["csrf_token"]
    response = client.post(reverse("ui:deactivate", args=[a.pk]), {"csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302
    a.refresh_from_db()
    assert a.status == Connection.Status.DEACTIVATED


def test_the_admin_is_branded_and_links_to_the_ui(staff):
    body = staff.get(reverse("admin:index")).content.decode()
    assert "exalate-node" in body and reverse("ui:dashboard") in body and reverse("ui:errors") in body
