"""Connections in the UI: the list with counts, a local connection, activate/deactivate/delete."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import Connection

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_list_shows_status_badges_messages_and_counts(staff, synced, django_assert_max_num_queries):
    a, b, _issue = synced
    Connection.objects.filter(pk=b.pk).update(
        status="error", status_message="Incoming script broke on line 3"
    )
    with django_assert_max_num_queries(8):  # one query for all the counts, not one per connection
        body = staff.get(reverse("ui:connections")).content.decode()
    assert 'badge badge-active">Active' in body and 'badge badge-error">Error' in body
    assert "Incoming script broke on line 3" in body


def test_it_creates_a_local_connection_between_two_instances(staff, two_trackers):
    sup, eng = two_trackers
    response = staff.post(
        reverse("ui:connections"),
        {"name": "S ⇄ E", "instance_a": sup.instance_id, "instance_b": eng.instance_id, "type": "basic"},
    )
    side = Connection.objects.get(local_instance=sup.instance)
    assert response.status_code == 302 and response["Location"] == reverse("ui:connection", args=[side.pk])
    assert side.status == "active" and side.peer.local_instance == eng.instance


def test_it_refuses_the_same_instance_twice_and_says_why(staff, two_trackers):
    sup, _eng = two_trackers
    response = staff.post(
        reverse("ui:connections"),
        {"name": "x", "instance_a": sup.instance_id, "instance_b": sup.instance_id, "type": "basic"},
    )
    assert response.status_code == 400
    assert "Pick two different instances" in response.content.decode()
    assert not Connection.objects.exists()


def test_deactivate_and_activate(staff, synced):
    a, b, _issue = synced
    staff.post(reverse("ui:deactivate", args=[a.pk]))
    assert {c.status for c in Connection.objects.all()} == {"deactivated"}
    response = staff.post(reverse("ui:activate", args=[a.pk]), follow=True)
    assert {c.status for c in Connection.objects.all()} == {"active"}
    assert "queued changes are being sent in order" in response.content.decode()


def test_activating_a_pending_connection_explains_what_to_do(staff, two_trackers):
    sup, _eng = two_trackers
    pending = Connection.objects.create(name="p", local_instance=sup.instance)
    response = staff.post(reverse("ui:activate", args=[pending.pk]), follow=True)
    assert "accepts the invitation" in response.content.decode()


def test_delete_asks_first_then_deletes_both_sides(staff, synced):
    a, _b, _issue = synced
    confirm = staff.get(reverse("ui:delete", args=[a.pk]))
    assert "both of its sides are deleted" in confirm.content.decode()
    assert Connection.objects.count() == 2
    staff.post(reverse("ui:delete", args=[a.pk]))
    assert not Connection.objects.exists()


def test_exalate_from_the_connection_page_goes_to_the_status_page(staff, synced):
    from instances.tracker import services

    a, _b, issue = synced
    other = services.issue_create(project=issue.project, actor="x@example.com", summary="Second")
    response = staff.post(reverse("ui:exalate", args=[a.pk]), {"key": other.key})
    assert response.status_code == 302 and f"key={other.key}" in response["Location"]
    bad = staff.post(reverse("ui:exalate", args=[a.pk]), {"key": "SUP-999"}, follow=True)
    assert "There is no item &#x27;SUP-999&#x27;" in bad.content.decode()


def test_a_local_connection_is_one_row_and_counted_once(staff, synced):
    a, b, _issue = synced
    assert a.peer_id == b.pk  # two rows in the database, one per side

    dashboard = staff.get(reverse("ui:dashboard"))
    assert [c.pk for c in dashboard.context["connections"]] == [a.pk]
    assert dashboard.content.decode().count("Support desk ⇄ Engineering · local") == 1
    assert dashboard.context["connection_count"] == 1
    assert dashboard.context["twin_count"] == 1  # SUP-1 and its copy ENG-1: one item under sync

    listing = staff.get(reverse("ui:connections")).content.decode()
    assert listing.count("<strong>Support ⇄ Engineering</strong>") == 1
    # Both sides stay reachable from the one row.
    assert f'href="{reverse("ui:connection", args=[b.pk])}">Engineering</a>' in listing


def test_a_connection_with_another_node_is_still_listed(staff, synced):
    from instances.models import Instance

    remote = Instance.objects.create(name="Far away", tracker_type="builtin", kind=Instance.Kind.REMOTE)
    Connection.objects.create(
        name="To node B", status="active", local_instance=synced[0].local_instance, remote_instance=remote
    )
    response = staff.get(reverse("ui:dashboard"))
    assert response.context["connection_count"] == 2
    assert "To node B" in response.content.decode()
