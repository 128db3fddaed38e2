"""Links to a built-in tracker item go to the item's page in the UI, not to the Django admin change form."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import reverse

from instances.models import Issue
from replicas.models import Twin

pytestmark = pytest.mark.django_db(transaction=True)


def _copy(synced) -> Issue:  # type: ignore[no-untyped-def]
    _a, b, _issue = synced
    return Issue.objects.get(project__instance=b.local_instance)


def _item_page(pk: int) -> str:
    return settings.NODE_URL.rstrip("/") + reverse("ui:issue_by_id", args=[pk])


def test_the_remote_item_links_to_its_page_on_every_page(staff, synced):
    a, _b, issue = synced
    copy = _copy(synced)
    pages = [
        reverse("ui:status") + f"?instance={a.local_instance_id}&key={issue.key}",
        reverse("ui:connection", args=[a.pk]),
        reverse("ui:issue", args=[issue.key]),
    ]
    for url in pages:
        body = staff.get(url).content.decode()
        assert f'href="{_item_page(copy.pk)}"' in body, url
        assert "/admin/instances/issue/" not in body, url


def test_the_item_link_opens_the_item_page(staff, synced):
    copy = _copy(synced)
    response = staff.get(reverse("ui:issue_by_id", args=[copy.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("ui:issue", args=[copy.key])
    assert staff.get(reverse("ui:issue_by_id", args=[999999])).status_code == 404


def test_a_link_stored_before_points_at_the_item_page_too(staff, api, synced):
    a, _b, issue = synced
    copy = _copy(synced)
    old = f"{settings.NODE_URL.rstrip('/')}/admin/instances/issue/{copy.pk}/change/"
    Twin.objects.filter(connection=a).update(remote_url=old)

    page = staff.get(reverse("ui:status") + f"?instance={a.local_instance_id}&key={issue.key}")
    assert f'href="{_item_page(copy.pk)}"' in page.content.decode()

    status = api.get(f"/api/v1/entities/{a.local_instance_id}/{issue.key}/sync-status/").json()
    assert status["twins"][0]["remote"]["url"] == _item_page(copy.pk)
    twins = api.get(f"/api/v1/connections/{a.pk}/twins/").json()
    rows = twins["results"] if isinstance(twins, dict) else twins
    assert rows[0]["remote_url"] == _item_page(copy.pk)


def test_another_nodes_links_are_left_as_they_are(staff, synced):
    a, _b, issue = synced
    theirs = "https://node-b.example.com/admin/instances/issue/7/change/"
    Twin.objects.filter(connection=a).update(remote_url=theirs)
    body = staff.get(reverse("ui:connection", args=[a.pk])).content.decode()
    assert f'href="{theirs}"' in body
