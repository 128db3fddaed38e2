"""The Azure DevOps connector against a fake organization validated by the published 7.2 description.

Facts relied on (Azure DevOps REST 7.2 reference and the Swagger in ``specs/``): work item routes
``{org}/{project}/_apis/wit/workitems/{id}`` (GET with ``$expand=relations``, PATCH with a JSON Patch
document, ``application/json-patch+json``), creation ``workitems/${type}``, the batch read
``workitems?ids=`` (at most 200), WIQL ``{org}/{project}/{team}/_apis/wit/wiql`` (``timePrecision``),
comments ``workItems/{id}/comments`` (``format=markdown`` variants, api-version 7.2-preview.4), attachments
``_apis/wit/attachments?fileName=`` then an ``AttachedFile`` relation, PAT as basic auth with an empty user,
412 when a ``test /rev`` fails, 429 with ``Retry-After``. Service hooks post ``{id, eventType, resource}``.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta

import pytest

from instances.connectors.azure import AzureDevOpsConnector, parse_key
from instances.connectors.base import ConnectorError
from tests.connectors2.conftest import make_instance, wire
from tests.connectors2.fakes.azure import FakeAzureDevOps, contract
from tests.connectors2.swagger import ContractError
from tests.pipeline_support import retry_now

V3 = "7.2-preview.3"


@pytest.fixture
def server(clock):  # type: ignore[no-untyped-def]
    fake = FakeAzureDevOps(clock)
    with wire(fake):
        yield fake


def connector_for(server: FakeAzureDevOps, **settings) -> AzureDevOpsConnector:  # type: ignore[no-untyped-def]
    instance = make_instance(
        "azure", server.base_url, {"pat": server.pat}, {"project": server.project, **settings}
    )
    return AzureDevOpsConnector(instance)


@pytest.fixture
def azure(server):  # type: ignore[no-untyped-def]
    return connector_for(server)


# --- the validator is honest -------------------------------------------------------------------------------


class TestContract:
    def test_accepts_a_good_request(self):  # type: ignore[no-untyped-def]
        op = contract().check_request(
            "PATCH",
            "/acme/Demo/_apis/wit/workitems/5",
            {"api-version": V3},
            {"Content-Type": "application/json-patch+json"},
            json.dumps([{"op": "test", "path": "/rev", "value": 3}]).encode(),
        )
        assert op.template == "/{organization}/{project}/_apis/wit/workitems/{id}"

    def test_rejects_an_unknown_path(self):  # type: ignore[no-untyped-def]
        with pytest.raises(ContractError, match="unknown path"):
            contract().check_request("GET", "/acme/Demo/_apis/wit/nope/5", {"api-version": V3}, {}, b"")

    def test_rejects_a_wrong_method(self):  # type: ignore[no-untyped-def]
        with pytest.raises(ContractError, match="wrong method"):
            contract().check_request("PUT", "/acme/Demo/_apis/wit/workitems/5", {"api-version": V3}, {}, b"")

    def test_rejects_a_missing_required_parameter(self):  # type: ignore[no-untyped-def]
        with pytest.raises(ContractError, match="api-version is missing"):
            contract().check_request("GET", "/acme/Demo/_apis/wit/workitems/5", {}, {}, b"")
        with pytest.raises(ContractError, match="ids is missing"):
            contract().check_request("GET", "/acme/Demo/_apis/wit/workitems", {"api-version": V3}, {}, b"")

    def test_rejects_a_wrong_api_version_and_unknown_query(self):  # type: ignore[no-untyped-def]
        with pytest.raises(ContractError, match="api-version"):
            contract().check_request(
                "GET", "/acme/Demo/_apis/wit/workitems/5", {"api-version": "5.0"}, {}, b""
            )
        with pytest.raises(ContractError, match="expandd"):
            contract().check_request(
                "GET", "/acme/Demo/_apis/wit/workitems/5", {"api-version": V3, "expandd": "all"}, {}, b""
            )

    def test_rejects_a_path_parameter_of_the_wrong_type(self):  # type: ignore[no-untyped-def]
        with pytest.raises(ContractError, match="not a valid integer"):
            contract().check_request(
                "GET", "/acme/Demo/_apis/wit/workitems/abc", {"api-version": V3}, {}, b""
            )

    def test_rejects_bodies_that_violate_the_schema(self):  # type: ignore[no-untyped-def]
        headers = {"Content-Type": "application/json-patch+json"}
        path, query = "/acme/Demo/_apis/wit/workitems/5", {"api-version": V3}
        with pytest.raises(ContractError, match="is not one of"):
            contract().check_request("PATCH", path, query, headers, b'[{"op": "frobnicate", "path": "/x"}]')
        with pytest.raises(ContractError, match="is not of type 'array'"):
            contract().check_request("PATCH", path, query, headers, b'{"op": "add"}')
        with pytest.raises(ContractError, match="Content-Type"):
            contract().check_request("PATCH", path, query, {"Content-Type": "application/json"}, b"[]")
        with pytest.raises(ContractError, match="is not of type 'string'"):
            contract().check_request(
                "POST",
                "/acme/Demo/Demo Team/_apis/wit/wiql",
                {"api-version": "7.2-preview.2"},
                {"Content-Type": "application/json"},
                b'{"query": 42}',
            )

    def test_picks_the_x_ms_paths_variant_by_query(self):  # type: ignore[no-untyped-def]
        v4 = "7.2-preview.4"
        path = "/acme/Demo/_apis/wit/workItems/5/comments"
        listing = contract().check_request("GET", path, {"api-version": v4}, {}, b"")
        assert listing.template.endswith("comments?")
        json_ct = {"Content-Type": "application/json"}
        add = contract().check_request(
            "POST", path, {"api-version": v4, "format": "markdown"}, json_ct, b'{"text": "hi"}'
        )
        assert add.template.endswith("?format={format}")
        with pytest.raises(ContractError, match="is not of type 'string'"):
            contract().check_request(
                "POST", path, {"api-version": v4, "format": "markdown"}, json_ct, b'{"text": 1}'
            )

    def test_rejects_a_bad_response(self):  # type: ignore[no-untyped-def]
        op = contract().check_request("GET", "/acme/Demo/_apis/wit/workitems/5", {"api-version": V3}, {}, b"")
        contract().check_response(op, 200, {"id": 5, "rev": 1, "fields": {"System.Title": "x"}})
        with pytest.raises(ContractError, match="is not of type 'integer'"):
            contract().check_response(op, 200, {"id": "five", "rev": 1})
        with pytest.raises(ContractError, match="no such response"):
            contract().check_response(op, 201, {"id": 5})


# --- reads and writes --------------------------------------------------------------------------------------


def test_create_and_read_in_the_hub_shape(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item(
        {
            "summary": "Printer on fire",
            "description": "<p>Since Tuesday</p>",
            "priority": {"name": "2"},
            "labels": ["hw", "urgent"],
            "assignee": {"email": "ed@acme.example"},
            "dueDate": "2026-04-01",
            "customFields": {"Severity": "3 - Medium"},
        }
    )
    assert (ref.id, ref.key, ref.url) == ("1", "#1", "https://dev.azure.com/acme/Demo/_workitems/edit/1")
    item = azure.get_item(ref.id)
    assert item["summary"] == "Printer on fire" and item["description"] == "<p>Since Tuesday</p>"
    assert item["status"] == {"name": "New"} and item["type"] == {"name": "Task"}
    assert item["priority"] == {"name": "2"} and item["labels"] == ["hw", "urgent"]
    assert item["assignee"] == {"email": "ed@acme.example", "displayName": "Ed"}
    assert item["reporter"]["email"] == "node@acme.example"
    assert item["dueDate"] == "2026-04-01" and item["customFields"] == {"Severity": "3 - Medium"}
    assert item["project"]["key"] == "Demo" and item["comments"] == [] and item["attachments"] == []
    assert set(item) >= {"id", "key", "url", "created", "updated", "parentId", "reporter"}


def test_find_item(azure):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    assert azure.find_item("#1") == ref
    assert azure.find_item("https://dev.azure.com/acme/Demo/_workitems/edit/1").id == "1"
    assert azure.find_item("#99") is None
    assert azure.find_item("DEMO-1") is None
    assert parse_key("42") == "42"


def test_a_one_field_update_costs_one_write_with_a_rev_test(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    before = azure.http.writes_made
    azure.update_item(ref.id, {"status": {"name": "Active"}})
    assert azure.http.writes_made - before == 1
    body = server.writes()[-1].json()
    assert body == [
        {"op": "test", "path": "/rev", "value": 1},
        {"op": "add", "path": "/fields/System.State", "value": "Active"},
    ]
    assert server.writes()[-1].headers["Content-Type"] == "application/json-patch+json"
    assert azure.get_item(ref.id)["status"] == {"name": "Active"}
    azure.update_item(ref.id, {"reporter": {"email": "x@y"}})  # nothing Azure can write: no request
    assert azure.http.writes_made - before == 1


def test_a_stale_revision_is_read_again_and_retried_once(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    server.interfere = 1
    azure.update_item(ref.id, {"summary": "y"})
    assert azure.get_item(ref.id)["summary"] == "y"
    statuses = [c for c in server.calls if c.method == "PATCH"]
    assert len(statuses) == 2 and statuses[1].json()[0]["value"] == 2  # re-read rev after the person's edit
    server.interfere = 2
    with pytest.raises(ConnectorError, match="changed twice") as err:
        azure.update_item(ref.id, {"summary": "z"})
    assert err.value.retryable and err.value.status == 412


def test_refusals_say_what_azure_said(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    with pytest.raises(ConnectorError, match="'Done' is not allowed") as err:
        azure.update_item(ref.id, {"status": {"name": "Done"}})
    assert err.value.status == 400 and not err.value.retryable
    with pytest.raises(ConnectorError, match="Cannot find field Custom.Nope"):
        azure.update_item(ref.id, {"customFields": {"Nope": 1}})
    with pytest.raises(ConnectorError, match="no priority 'High'"):
        azure.update_item(ref.id, {"priority": {"name": "High"}})
    with pytest.raises(ConnectorError) as err:
        azure.get_item("99")
    assert err.value.status == 404


def test_comments(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    cid = azure.add_comment(ref.id, body="**Seen** twice")
    assert server.writes()[-1].query["format"] == "markdown"
    azure.update_comment(ref.id, cid, body="Seen three times")
    comments = azure.get_item(ref.id)["comments"]
    assert [(c["id"], c["body"], c["internal"]) for c in comments] == [(cid, "Seen three times", False)]
    assert comments[0]["author"]["email"] == "node@acme.example"
    azure.delete_comment(ref.id, cid)
    azure.delete_comment(ref.id, cid)  # idempotent
    assert azure.get_item(ref.id)["comments"] == []


def test_internal_comments_are_refused_unless_allowed(server):  # type: ignore[no-untyped-def]
    azure = connector_for(server)
    ref = azure.create_item({"summary": "x"})
    with pytest.raises(ConnectorError, match="no private comments"):
        azure.add_comment(ref.id, body="secret", internal=True)
    public = connector_for(server, internal_comments="public")
    assert public.add_comment(ref.id, body="not secret", internal=True)


def test_attachments_are_uploaded_linked_streamed_and_unlinked(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    before = azure.http.writes_made
    aid = azure.add_attachment(
        ref.id, filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace")
    )
    assert azure.http.writes_made - before == 2  # the upload and one patch adding the relation
    upload = [c for c in server.calls if c.path.endswith("/attachments")][-1]
    assert upload.query["fileName"] == "log.txt" and upload.body == b"trace"
    (att,) = azure.get_item(ref.id)["attachments"]
    assert (att["id"], att["filename"], att["mimeType"], att["size"]) == (aid, "log.txt", "text/plain", 5)
    assert b"".join(azure.open_attachment(ref.id, aid)) == b"trace"
    azure.delete_attachment(ref.id, aid)
    assert azure.get_item(ref.id)["attachments"] == []
    azure.delete_attachment(ref.id, aid)  # already gone: no error


def test_polling_with_cursor_overlap_and_dedup(azure, server):  # type: ignore[no-untyped-def]
    a = azure.create_item({"summary": "a"})
    b = azure.create_item({"summary": "b"})
    refs, cursor = azure.search_updated_since(None)
    assert [r.id for r in refs] == [a.id, b.id] and cursor == refs[-1].updated
    wiql = [c for c in server.calls if c.path.endswith("/wiql")][-1]
    assert wiql.query["timePrecision"] == "true" and "System.ChangedDate" in wiql.json()["query"]
    # Nothing changed: the overlap window re-reads both, de-duplication drops them.
    assert azure.search_updated_since(cursor) == ([], cursor)
    server.clock.advance(2)
    server.human_edit(int(a.id), **{"System.Title": "a2"})
    refs, cursor2 = azure.search_updated_since(cursor)
    assert [r.id for r in refs] == [a.id] and cursor2 > cursor
    # A limit returns the oldest first; the rest come next time.
    server.human_edit(int(b.id), **{"System.Title": "b2"})
    server.human_edit(int(a.id), **{"System.Title": "a3"})
    refs, cursor3 = azure.search_updated_since(cursor2, limit=1)
    assert [r.id for r in refs] == [b.id]
    refs, _ = azure.search_updated_since(cursor3)
    assert [r.id for r in refs] == [a.id]


def test_metadata_and_credentials(azure, server):  # type: ignore[no-untyped-def]
    meta = azure.metadata()
    assert meta["types"] == ["Task", "Bug"] and "Resolved" in meta["statuses"]
    assert meta["priorities"] == ["1", "2", "3", "4"] and meta["users"] == []
    assert "Demo" in azure.test_credentials()
    server.pat = "rotated"
    with pytest.raises(ConnectorError, match="personal access token was rejected") as err:
        azure.test_credentials()
    assert err.value.status == 401
    assert "pat-secret-123" not in str(err.value)
    bad = AzureDevOpsConnector(make_instance("azure", server.base_url, {}, {"project": "Demo"}))
    with pytest.raises(ConnectorError, match="lack pat"):
        bad.test_credentials()


def test_rate_limits_are_waited_out_through_the_seam(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    server.fail_next(429, headers={"Retry-After": "7"})
    slept = list(server.clock.slept)
    assert azure.get_item(ref.id)["summary"] == "x"
    assert server.clock.slept[len(slept) :] == [7.0]
    server.fail_next(503, times=10)
    with pytest.raises(ConnectorError) as err:
        azure.get_item(ref.id)
    assert err.value.retryable


def test_is_own_change(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    assert azure.is_own_change({"id": ref.id})
    azure.add_comment(ref.id, body="from the node")
    assert azure.is_own_change({"id": ref.id})
    server.human_edit(int(ref.id), **{"System.Title": "by a person"})
    assert not azure.is_own_change({"id": ref.id})
    # The PAT owner's name recognises node writes made by another process too.
    other = connector_for(server, node_user="node@acme.example")
    server.actor = server.node_identity
    server.human_edit(int(ref.id), by="node@acme.example", **{"System.Title": "by the node elsewhere"})
    assert other.is_own_change({"id": ref.id}) and not connector_for(server).is_own_change({"id": ref.id})


def test_service_hooks_verification_and_replays(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    server.human_edit(int(ref.id), **{"System.Title": "y"})
    body = json.dumps(server.service_hook("workitem.updated", int(ref.id), event_id="ev-1")).encode()
    assert azure.verify_webhook({"X-Exalate-Token": "s3cret"}, body, "s3cret")
    assert not azure.verify_webhook({"X-Exalate-Token": "wrong"}, body, "s3cret")
    assert not azure.verify_webhook({}, body, "s3cret")
    assert not azure.verify_webhook({"X-Exalate-Token": ""}, body, "")
    basic = "Basic " + base64.b64encode(b"hook:pw").decode()
    assert azure.verify_webhook({"authorization": basic}, body, "hook:pw")
    assert not azure.verify_webhook({"authorization": basic}, body, "hook:other")
    (parsed,) = azure.parse_webhook({}, body)
    assert (parsed.id, parsed.key) == (ref.id, ref.key)
    assert parsed.updated == azure.get_item(ref.id)["updated"]
    assert azure.parse_webhook({}, body) == []  # the same delivery again
    created = json.dumps(server.service_hook("workitem.created", int(ref.id))).encode()
    assert [r.id for r in azure.parse_webhook({}, created)] == [ref.id]
    assert azure.parse_webhook({}, b'{"eventType": "git.push", "id": "x"}') == []
    assert azure.parse_webhook({}, b"not json") == []


# --- through the real pipeline -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_both_ways_through_the_pipeline(server):  # type: ignore[no-untyped-def]
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create("azure", server.base_url, {"pat": server.pat}, {"project": "Demo"})
    issue = pair.builtin_issue(comment="Seen twice today", attachment=("log.txt", b"trace"))
    pair.exalate(issue)
    (item,) = server.items.values()
    wid = item["id"]
    assert item["fields"]["System.Title"] == "Printer on fire"
    assert [c["text"] for c in server.comments[wid]] == ["[anna <anna@example.com>] Seen twice today"]
    (rel,) = item["relations"]
    assert server.blobs[rel["url"].split("/attachments/")[1].split("?")[0]][1] == b"trace"
    # Edit and status on the built-in side reach Azure DevOps.
    pair.edit_builtin(issue, summary="Printer on fire, again", status="Resolved")
    assert (item["fields"]["System.Title"], item["fields"]["System.State"]) == (
        "Printer on fire, again",
        "Resolved",
    )
    server.clock.catch_up()
    # A person changes the work item in Azure DevOps; the service hook brings it to the node.
    server.human_edit(wid, **{"System.State": "Closed", "System.Title": "Fixed printer"})
    server.human_comment(wid, "Replaced the fuser")
    server.human_attach(wid, "fuser.jpg", b"\xff\xd8jpeg")
    hook = json.dumps(server.service_hook("workitem.updated", wid)).encode()
    pair.deliver(hook)
    issue.refresh_from_db()
    assert (issue.summary, issue.status) == ("Fixed printer", "Closed")
    assert sorted(issue.comments.values_list("body", flat=True)) == ["Replaced the fuser", "Seen twice today"]
    assert sorted(issue.attachments.values_list("filename", flat=True)) == ["fuser.jpg", "log.txt"]
    # No echo: the node's own writes are recognised, and nothing is left pending or failed.
    assert pair.connector().is_own_change({"id": str(wid)}) is False  # the person's change was last
    pair.assert_settled()
    writes = len(server.writes())
    pair.deliver(hook)  # a redelivered hook changes nothing
    assert len(server.writes()) == writes


# --- requests whose answer was lost ------------------------------------------------------------------------
# Facts relied on (WIQL syntax reference, the 7.2 description): WIQL is a POST that only reads; ``@Me`` is the
# PAT's user and ``[System.CreatedBy]`` the creator; without ``timePrecision=true`` dates compare as dates and
# a literal with a time is refused ("You cannot supply a time with the date when running a query using date
# precision"); ``ORDER BY … DESC``; the batch read ``workitems?ids=&fields=`` returns the fields asked for.


def test_find_created_returns_the_accounts_items_since_then_with_that_title(azure, server):  # type: ignore[no-untyped-def]
    server.clock.advance(3600)
    early = azure.create_item({"summary": "Printer on fire"})  # the same day as ``since``, but before it
    server.clock.advance(1)
    since = server.clock.now()
    server.clock.advance(1)
    first = azure.create_item({"summary": "Printer on fire"})
    azure.create_item({"summary": "Printer on fire, again"})
    azure.create_item({"summary": "printer on fire"})  # WIQL's = ignores case; the node does not
    server.human_create("Printer on fire")  # a person's
    server.clock.advance(1)
    second = azure.create_item({"summary": "Printer on fire", "type": {"name": "Bug"}})
    azure.create_item({"summary": "Scanner on fire"})
    server.fail_next(500)  # the query is a read: repeated by the client
    found = azure.find_created({"summary": "Printer on fire", "labels": ["hw"]}, since=since)
    assert [r.id for r in found] == [second.id, first.id] and early.id not in [r.id for r in found]
    assert found[0] == azure.find_item(second.id)
    query = [c for c in server.calls if c.path.endswith("/wiql")][-1]
    assert "timePrecision" not in query.query
    assert "[System.CreatedBy] = @Me" in query.json()["query"]
    assert (
        f"[System.CreatedDate] >= '{(since - timedelta(days=1)).date().isoformat()}'" in query.json()["query"]
    )
    assert azure.find_created({"summary": "Printer on fire"}, since=server.clock.now()) == []
    quoted = azure.create_item({"summary": "Ed's printer"})
    assert [r.id for r in azure.find_created({"summary": "Ed's printer"}, since=since)] == [quoted.id]


def test_a_wiql_date_with_a_time_needs_time_precision(azure, server):  # type: ignore[no-untyped-def]
    azure.create_item({"summary": "x"})
    with pytest.raises(ConnectorError, match="cannot supply a time with the date"):
        azure.query_validate("[System.CreatedDate] >= '2026-03-01T08:00:00Z'")
    assert azure.query_search("[System.CreatedDate] >= '2026-03-01'") != []


def test_read_only_queries_are_repeated_after_a_server_error(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x", "labels": ["sync"]})
    server.fail_next(500)
    refs, _ = azure.search_updated_since(None)
    assert [r.id for r in refs] == [ref.id]
    server.fail_next(502)
    assert [r.id for r in azure.query_search("[System.Tags] CONTAINS 'sync'")] == [ref.id]
    server.fail_next(500)
    assert azure.query_matches("[System.Tags] CONTAINS 'sync'", {"id": ref.id})
    server.fail_next(500)  # a create is not a read: not repeated, the pipeline checks first
    with pytest.raises(ConnectorError, match="may have done it anyway") as err:
        azure.create_item({"summary": "y"})
    assert err.value.retryable


def test_an_attachment_link_whose_answer_was_lost_is_not_added_twice(azure, server):  # type: ignore[no-untyped-def]
    ref = azure.create_item({"summary": "x"})
    server.lose_next_answer("PATCH", r"/workitems/\d+$")
    aid = azure.add_attachment(
        ref.id, filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace")
    )
    assert not server.lose
    assert [a["id"] for a in azure.get_item(ref.id)["attachments"]] == [aid]
    assert [c.method for c in server.calls if c.path.endswith(f"/workitems/{ref.id}")][-4:] == [
        "PATCH",  # carried out, answer lost
        "PATCH",  # repeated: refused, the revision moved on (412)
        "GET",  # read again: the relation is there
        "GET",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_comment_whose_answers_were_lost_are_adopted_not_repeated(server):  # type: ignore[no-untyped-def]
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create("azure", server.base_url, {"pat": server.pat}, {"project": "Demo"})
    server.clock.catch_up()  # the node looks for items created since the event (its own, real clock)
    issue = pair.builtin_issue()
    server.lose_next_answer("POST", r"/workitems/\$Task$")
    pair.exalate(issue)
    assert not server.lose, "the create was not sent"
    twin = pair.side_tracker.twins.get()
    event = twin.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error
    assert len(server.items) == 1

    retry_now(twin.pk)
    twin.refresh_from_db()
    assert twin.state == "synchronized", list(twin.events.values_list("status", "error"))
    (item,) = server.items.values()  # adopted: still one work item
    assert twin.local_id == str(item["id"])
    pair.edit_builtin(issue, summary="Found again")
    assert [i["fields"]["System.Title"] for i in server.items.values()] == ["Found again"]

    server.lose_next_answer("POST", r"/workItems/\d+/comments$")
    pair.comment_builtin(issue, "Said once")
    assert not server.lose, "the comment was not sent"
    assert twin.events.filter(status="pending").exists()
    retry_now(twin.pk)
    assert [c["text"] for c in server.comments[item["id"]]] == ["[anna <anna@example.com>] Said once"]
    pair.assert_settled()
