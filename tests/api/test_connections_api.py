"""Connections, operations, rules, sync status, events and errors through the API (local connection)."""

from __future__ import annotations

import pytest

from instances.models import Instance
from instances.tracker import services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_instances(transactional_db):  # type: ignore[no-untyped-def]
    a = Instance.objects.create(name="Support", tracker_type="builtin")
    b = Instance.objects.create(name="Engineering", tracker_type="builtin")
    services.project_create(instance=a, key="SUP", name="Support")
    services.project_create(instance=b, key="ENG", name="Engineering")
    return a, b


@pytest.fixture
def connection_id(api, two_instances):  # type: ignore[no-untyped-def]
    a, b = two_instances
    r = api.post(
        "/api/v1/connections/local/", {"name": "S-E", "instance_a": a.pk, "instance_b": b.pk}, format="json"
    )
    assert r.status_code == 201, r.content
    return r.json()["id"]


def test_a_program_can_connect_sync_and_inspect_an_item(api, two_instances, connection_id):
    a, _ = two_instances
    api.post("/api/v1/tracker/issues/", {"project": "SUP", "summary": "Via API"}, format="json")
    r = api.post(f"/api/v1/connections/{connection_id}/exalate/", {"key": "SUP-1"}, format="json")
    assert r.status_code == 202, r.content
    assert api.get("/api/v1/tracker/issues/ENG-1/").json()["summary"] == "Via API"
    status = api.get(f"/api/v1/entities/{a.pk}/SUP-1/sync-status/").json()
    twin = status["twins"][0]
    assert twin["state"] == "synchronized" and twin["remote"]["key"] == "ENG-1"
    assert twin["local_replica"]["summary"] == "Via API"
    listed = api.get("/api/v1/connections/").json()["results"]
    side = next(c for c in listed if c["id"] == connection_id)
    assert (side["status"], side["items_under_sync"], side["failed_events"]) == ("active", 1, 0)
    events = api.get("/api/v1/events/", {"item_key": "SUP-1", "connection": connection_id}).json()["results"]
    assert [e["direction"] for e in events] == ["out"]


def test_rules_publish_validate_and_dry_run(api, connection_id):
    rules = api.get(f"/api/v1/connections/{connection_id}/rules/").json()
    assert rules["version"] == 1 and "replica.summary" in rules["outgoing"]
    bad = api.post(
        f"/api/v1/connections/{connection_id}/rules/validate/",
        {"outgoing": "replica.summary = (", "incoming": "issue.sumary = replica.summary"},
        format="json",
    ).json()
    assert {(p["direction"], p["severity"]) for p in bad} == {("outgoing", "error"), ("incoming", "warning")}
    r = api.put(
        f"/api/v1/connections/{connection_id}/rules/",
        {"outgoing": "replica.summary = (", "incoming": rules["incoming"]},
        format="json",
    )
    assert r.status_code == 400 and "line 1" in r.json()["detail"]
    new_out = rules["outgoing"] + "\nreplica.summary = issue.summary.upper()\n"
    r = api.put(
        f"/api/v1/connections/{connection_id}/rules/",
        {"outgoing": new_out, "incoming": rules["incoming"], "note": "shout"},
        format="json",
    )
    assert r.status_code == 201 and r.json()["version"] == 2
    api.post("/api/v1/tracker/issues/", {"project": "SUP", "summary": "quiet"}, format="json")
    r = api.post(
        f"/api/v1/connections/{connection_id}/rules/dry-run/",
        {"direction": "outgoing", "key": "SUP-1"},
        format="json",
    )
    assert r.status_code == 200, r.content
    assert r.json()["replica"]["summary"] == "QUIET"
    r = api.post(
        f"/api/v1/connections/{connection_id}/rules/dry-run/",
        {"direction": "incoming", "replica": {"hubIssue": {"id": "9", "summary": "From afar"}}},
        format="json",
    )
    assert r.json()["changes"]["summary"] == {"from": None, "to": "From afar"}
    from instances.models import Issue

    assert Issue.objects.count() == 1  # dry runs wrote nothing


def test_a_failing_rule_shows_up_as_an_error_that_can_be_retried(api, two_instances, connection_id):
    from connections.models import Connection

    peer = Connection.objects.get(pk=connection_id).peer_id
    rules = api.get(f"/api/v1/connections/{peer}/rules/").json()
    broken = "if replica.summary == 'boom':\n    issue.summary = 1 / 0\n" + rules["incoming"]
    api.put(
        f"/api/v1/connections/{peer}/rules/",
        {"outgoing": rules["outgoing"], "incoming": broken},
        format="json",
    )
    api.post("/api/v1/tracker/issues/", {"project": "SUP", "summary": "boom"}, format="json")
    api.post(f"/api/v1/connections/{connection_id}/exalate/", {"key": "SUP-1"}, format="json")
    errors = api.get("/api/v1/errors/", {"resolved_at__isnull": "true"}).json()["results"]
    assert len(errors) == 1 and errors[0]["script_line"] == 2 and errors[0]["impact"] == "entity"
    api.put(f"/api/v1/connections/{peer}/rules/", rules | {"note": "fixed"}, format="json")
    r = api.post(f"/api/v1/errors/{errors[0]['id']}/retry/")
    assert r.status_code == 200 and r.json()["resolved_at"]
    assert api.get("/api/v1/tracker/issues/ENG-1/").json()["summary"] == "boom"


def test_bad_operations_say_what_to_do(api, two_instances, connection_id):
    r = api.post(f"/api/v1/connections/{connection_id}/exalate/", {"key": "SUP-99"}, format="json")
    assert r.status_code == 400 and "no item 'SUP-99'" in r.json()["detail"]
    r = api.post(f"/api/v1/connections/{connection_id}/unexalate/", {"key": "SUP-99"}, format="json")
    assert r.status_code == 404
    same = two_instances[0].pk
    r = api.post(
        "/api/v1/connections/local/", {"name": "x", "instance_a": same, "instance_b": same}, format="json"
    )
    assert r.status_code == 400 and "two different instances" in r.json()["detail"]


def test_deactivate_and_activate(api, connection_id):
    r = api.post(f"/api/v1/connections/{connection_id}/deactivate/")
    assert r.json()["status"] == "deactivated"
    assert api.post(f"/api/v1/connections/{connection_id}/activate/").json()["status"] == "active"
    assert api.delete(f"/api/v1/connections/{connection_id}/").status_code == 204
    assert api.get("/api/v1/connections/").json()["count"] == 0


def test_the_api_docs_page_is_served_from_this_node(api, client, admin_user):
    client.force_login(admin_user)
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
    assert client.get("/api/schema/").status_code == 200
