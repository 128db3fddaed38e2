"""The Salesforce connector against an in-memory fake org.

Facts relied on (Salesforce REST API developer guide and OAuth documentation): ``POST
/services/oauth2/token`` (form-encoded) with ``grant_type=client_credentials`` (My Domain URL) or
``grant_type=password`` (password + security token) answers ``{access_token, instance_url, id, token_type}``,
where ``id`` ends with the user id, and errors ``{error, error_description}`` with 400; API calls send
``Authorization: Bearer``, an expired session answers 401 ``INVALID_SESSION_ID``; sObject routes are
``/services/data/v60.0/sobjects/{Object}[/{id}]`` (``GET`` with ``fields=``, ``POST`` → 201 ``{id, success,
errors}``, ``PATCH`` and ``DELETE`` → 204); errors are a list ``[{message, errorCode, fields}]``
(``INVALID_FIELD``, ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``, ``NOT_FOUND``, ``REQUEST_LIMIT_EXCEEDED``);
``GET /query?q=`` answers ``{totalSize, done, records, nextRecordsUrl}``; SOQL datetime literals are
unquoted ISO 8601; ``SystemModstamp`` changes with every change to the record (also when a CaseComment is
added); CaseComment has ``ParentId``, ``CommentBody``, ``IsPublished``; Files are ContentVersion (created
with ``FirstPublishLocationId``, multipart ``entity_content`` + ``VersionData``), ContentDocument and
ContentDocumentLink (queried with a filter on ``LinkedEntityId``), content at
``ContentVersion/{id}/VersionData``; ``/describe`` lists picklist values; ``/limits`` has
``DailyApiRequests``.
"""

from __future__ import annotations

import io
import json

import pytest

from instances.connectors import salesforce as sf
from instances.connectors.base import ConnectorError
from instances.connectors.salesforce import SalesforceConnector, soql_quote
from tests.connectors2.conftest import make_instance, wire
from tests.connectors2.fakes.salesforce import FakeSalesforce
from tests.pipeline_support import retry_now


@pytest.fixture
def server(clock):  # type: ignore[no-untyped-def]
    fake = FakeSalesforce(clock)
    with wire(fake):
        yield fake


def connector_for(server: FakeSalesforce, creds=None, **settings) -> SalesforceConnector:  # type: ignore[no-untyped-def]
    creds = creds or {"client_id": server.client_id, "client_secret": server.client_secret}
    return SalesforceConnector(make_instance("salesforce", server.host, creds, settings))


@pytest.fixture
def sfc(server):  # type: ignore[no-untyped-def]
    return connector_for(server)


def test_create_and_read_in_the_hub_shape(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item(
        {
            "summary": "Printer on fire",
            "description": "Since Tuesday",
            "status": {"name": "Working"},
            "priority": {"name": "High"},
            "type": {"name": "Problem"},
            "assignee": {"email": "ed@acme.example"},
            "customFields": {"Product__c": "LaserJet"},
            "labels": ["ignored"],
        }
    )
    assert ref.key == "00001001" and ref.id.startswith("500")
    assert ref.url == f"https://acme.my.salesforce.com/lightning/r/Case/{ref.id}/view"
    item = sfc.get_item(ref.id)
    assert item["summary"] == "Printer on fire" and item["description"] == "Since Tuesday"
    assert (item["status"], item["priority"], item["type"]) == (
        {"name": "Working"},
        {"name": "High"},
        {"name": "Problem"},
    )
    assert item["assignee"] == {"email": "ed@acme.example", "displayName": "Ed Agent"}
    assert item["labels"] == [] and item["customFields"] == {"Product__c": "LaserJet"}
    assert item["updated"].endswith("Z") and item["comments"] == [] and item["attachments"] == []
    assert server.token_requests[0]["grant_type"] == "client_credentials"


def test_find_item(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    assert sfc.find_item("00001001") == ref
    assert sfc.find_item(ref.id).key == "00001001"
    assert sfc.find_item("00009999") is None and sfc.find_item("not a key") is None
    assert soql_quote("O'Brien \\ x") == "'O\\'Brien \\\\ x'"


def test_a_one_field_update_costs_one_write(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    before = sfc.http.writes_made
    sfc.update_item(ref.id, {"status": {"name": "Escalated"}})
    assert sfc.http.writes_made - before == 1
    assert server.writes()[-1].json() == {"Status": "Escalated"}
    sfc.update_item(ref.id, {"labels": ["a"], "dueDate": "2026-01-01"})  # nothing Salesforce has
    assert sfc.http.writes_made - before == 1


def test_refusals_quote_salesforce(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    with pytest.raises(
        ConnectorError, match="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: Status: bad value"
    ) as err:
        sfc.update_item(ref.id, {"status": {"name": "Done"}})
    assert err.value.status == 400 and not err.value.retryable
    with pytest.raises(ConnectorError, match="No such column 'Nope__c'"):
        sfc.update_item(ref.id, {"customFields": {"Nope__c": 1}})
    with pytest.raises(ConnectorError, match="no active user with the e-mail ghost@acme.example"):
        sfc.update_item(ref.id, {"assignee": {"email": "ghost@acme.example"}})
    with pytest.raises(ConnectorError) as err:
        sfc.get_item("500000000000000AAA")
    assert err.value.status == 404
    server.fail_next(
        403, body=[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    )
    with pytest.raises(ConnectorError, match="API request limit is used up") as err:
        sfc.get_item(ref.id)
    assert err.value.retryable


def test_an_expired_token_is_refreshed_once(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    server.expire_tokens()
    assert sfc.get_item(ref.id)["summary"] == "x"
    assert len(server.token_requests) == 2
    # Another connector object of the same instance reuses the cached token: no new token request.
    assert SalesforceConnector(sfc.instance).get_item(ref.id)["summary"] == "x"
    assert len(server.token_requests) == 2
    server.client_secret = "rotated"
    server.expire_tokens()
    with pytest.raises(ConnectorError, match="refused the OAuth token request \\(invalid_client") as err:
        sfc.get_item(ref.id)
    assert err.value.status == 401 and "sf-secret" not in str(err.value)


def test_the_username_password_flow(server):  # type: ignore[no-untyped-def]
    creds = {
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "username": "node@acme.example",
        "password": "pw+securitytoken",
    }
    sfc = connector_for(server, creds)
    assert "Connected to Salesforce" in sfc.test_credentials()
    assert server.token_requests[-1]["grant_type"] == "password"
    bad = connector_for(server, {**creds, "password": "wrong"})
    with pytest.raises(ConnectorError, match="invalid_grant"):
        bad.test_credentials()


def test_case_comments(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    public = sfc.add_comment(ref.id, body="Hello")
    private = sfc.add_comment(ref.id, body="Internal", internal=True)
    assert server.writes()[-1].json() == {"ParentId": ref.id, "CommentBody": "Internal", "IsPublished": False}
    sfc.update_comment(ref.id, public, body="Hello again")
    comments = sfc.get_item(ref.id)["comments"]
    assert [(c["id"], c["body"], c["internal"]) for c in comments] == [
        (public, "Hello again", False),
        (private, "Internal", True),
    ]
    assert comments[0]["author"]["email"] == "node@acme.example"
    sfc.delete_comment(ref.id, private)
    sfc.delete_comment(ref.id, private)  # already gone
    assert [c["id"] for c in sfc.get_item(ref.id)["comments"]] == [public]


def test_files_are_streamed_multipart_listed_downloaded_and_deleted(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    aid = sfc.add_attachment(ref.id, filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace"))
    post = [c for c in server.calls if c.path.endswith("/sobjects/ContentVersion")][-1]
    assert (
        post.headers["Content-Type"].startswith("multipart/form-data")
        and b'name="entity_content"' in post.body
    )
    (att,) = sfc.get_item(ref.id)["attachments"]
    assert (att["id"], att["filename"], att["mimeType"], att["size"]) == (aid, "log.txt", "text/plain", 5)
    assert b"".join(sfc.open_attachment(ref.id, aid)) == b"trace"
    sfc.delete_attachment(ref.id, aid)
    sfc.delete_attachment(ref.id, aid)
    assert sfc.get_item(ref.id)["attachments"] == []


def test_polling_soql_pages_cursor_and_dedup(sfc, server):  # type: ignore[no-untyped-def]
    server.page_size = 2
    ids = [sfc.create_item({"summary": f"c{n}"}).id for n in range(5)]
    refs, cursor = sfc.search_updated_since(None)
    assert [r.id for r in refs] == ids
    assert any("/query/" in c.path for c in server.calls)  # nextRecordsUrl followed
    assert sfc.search_updated_since(cursor) == ([], cursor)
    soql = [c.query["q"] for c in server.calls if c.query.get("q", "").startswith("SELECT Id, CaseNumber")][
        -1
    ]
    assert "WHERE SystemModstamp >= " in soql and soql.endswith("ORDER BY SystemModstamp ASC, Id ASC")
    server.human_comment(ids[2], "new comment")
    refs, _ = sfc.search_updated_since(cursor)
    assert [r.id for r in refs] == [ids[2]]


def test_metadata(sfc, server):  # type: ignore[no-untyped-def]
    meta = sfc.metadata()
    assert meta["statuses"] == ["New", "Working", "Escalated", "Closed"] and meta["priorities"][0] == "High"
    assert {u["email"] for u in meta["users"]} == {"node@acme.example", "ed@acme.example"}


def test_rate_limit_retry_after(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    server.fail_next(503, headers={"Retry-After": "5"})
    assert sfc.get_item(ref.id)["summary"] == "x" and 5.0 in server.clock.slept


def test_is_own_change(sfc, server):  # type: ignore[no-untyped-def]
    ref = sfc.create_item({"summary": "x"})
    assert sfc.is_own_change({"id": ref.id})
    server.human_update(ref.id, Subject="by Ed")
    assert not sfc.is_own_change({"id": ref.id})
    sfc.add_comment(ref.id, body="node")
    assert sfc.is_own_change({"id": ref.id})


def test_webhooks_from_a_flow_callout(sfc, server):  # type: ignore[no-untyped-def]
    body = json.dumps({"Id": "5005g00000ABCDEAAA", "CaseNumber": "00001001"}).encode()
    assert sfc.verify_webhook({"X-Exalate-Token": "s"}, body, "s")
    assert not sfc.verify_webhook({"X-Exalate-Token": "x"}, body, "s") and not sfc.verify_webhook(
        {}, body, ""
    )
    assert [(r.id, r.key) for r in sfc.parse_webhook({}, body)] == [("5005g00000ABCDEAAA", "00001001")]
    assert sfc.parse_webhook({}, b"<soap/>") == [] and sfc.parse_webhook({}, b'{"Id": "x"}') == []


def _pair(server):  # type: ignore[no-untyped-def]
    """A built-in project and the fake Salesforce joined by a local connection."""
    from tests.connectors2.pipeline_helpers import Pair

    sf._tokens.clear()
    return Pair.create(
        "salesforce",
        server.host,
        {"client_id": server.client_id, "client_secret": server.client_secret},
        {},
        statuses=["New", "Working", "Escalated", "Closed"],
    )


@pytest.mark.django_db(transaction=True)
def test_sync_both_ways_through_the_pipeline(server):  # type: ignore[no-untyped-def]
    pair = _pair(server)
    issue = pair.builtin_issue(comment="Seen twice today", attachment=("log.txt", b"trace"))
    pair.edit_builtin(issue, status="New")
    pair.exalate(issue)
    (case,) = server.db["Case"].values()
    cid = case["Id"]
    assert case["Subject"] == "Printer on fire"
    assert [c["CommentBody"] for c in server.db["CaseComment"].values()] == [
        "[anna <anna@example.com>] Seen twice today"
    ]
    assert list(server.blobs.values()) == [b"trace"]
    pair.edit_builtin(issue, summary="Printer on fire, again", status="Working")
    assert (case["Subject"], case["Status"]) == ("Printer on fire, again", "Working")
    server.clock.catch_up()
    server.human_update(cid, Status="Escalated", Subject="Escalated: printer")
    server.human_comment(cid, "Engineering is on it")
    server.human_file(cid, "fuser", "jpg", b"\xff\xd8jpeg")
    pair.deliver(json.dumps({"Id": cid}).encode())
    issue.refresh_from_db()
    assert (issue.summary, issue.status) == ("Escalated: printer", "Escalated")
    assert sorted(issue.comments.values_list("body", flat=True)) == [
        "Engineering is on it",
        "Seen twice today",
    ]
    assert sorted(issue.attachments.values_list("filename", flat=True)) == ["fuser.jpg", "log.txt"]
    pair.assert_settled()
    writes = len(server.writes())
    pair.poll()  # everything newer was written by the node itself or already synced
    assert len([w for w in server.writes() if "oauth2" not in w.path]) == len(
        [w for w in server.writes()[:writes] if "oauth2" not in w.path]
    )


# --- a create or a comment whose answer was lost ----------------------------------------------------------
# Facts relied on (SOQL and SOSL Reference, REST API developer guide): every record has ``CreatedById`` and
# ``CreatedDate``; dateTime literals are unquoted ISO 8601 in UTC with whole seconds; ``=`` on strings
# ignores case; ``ORDER BY … DESC``; the token response's ``id`` URL ends with the user id. The token request
# changes nothing; each ``POST`` of a record or a CaseComment adds one.


def test_find_created_returns_the_token_users_cases_since_then_with_that_subject(sfc, server):  # type: ignore[no-untyped-def]
    early = sfc.create_item({"summary": "Printer on fire"})
    server.clock.advance(1.5)
    since = server.clock.now()
    first = sfc.create_item({"summary": "Printer on fire"})
    sfc.create_item({"summary": "Printer on fire, again"})
    server.human_case("Printer on fire")  # Ed's
    server.clock.advance(1)
    second = sfc.create_item({"summary": "Printer on fire", "status": {"name": "Working"}})
    sfc.create_item({"summary": "Scanner on fire"})
    found = sfc.find_created({"summary": "Printer on fire", "labels": ["x"]}, since=since)
    assert [r.id for r in found] == [second.id, first.id] and early.id not in [r.id for r in found]
    statement = [c for c in server.calls if c.path.endswith("/query")][-1].query["q"]
    assert statement == (
        "SELECT Id, CaseNumber, SystemModstamp, CreatedDate, CreatedById, Subject FROM Case WHERE "  # noqa: S608
        f"CreatedById = '{server.node}' AND CreatedDate >= {since.strftime('%Y-%m-%dT%H:%M:%SZ')} AND "
        "Subject = 'Printer on fire' ORDER BY CreatedDate DESC, Id DESC LIMIT 200"
    )
    server.clock.advance(1)  # ``since`` is cut to its second: a case of that second would still count
    assert sfc.find_created({"summary": "Printer on fire"}, since=server.clock.now()) == []
    quoted = sfc.create_item({"summary": "It's \\ broken"})
    assert [r.id for r in sfc.find_created({"summary": "It's \\ broken"}, since=since)] == [quoted.id]
    assert [r.id for r in sfc.find_created({"summary": "printer ON fire"}, since=since)] == []  # exact case
    untitled = sfc.create_item({})
    assert [r.id for r in sfc.find_created({}, since=since)] == [untitled.id]  # "(no summary)"


def test_the_token_request_is_repeated_after_a_500_but_a_create_is_not(sfc, server):  # type: ignore[no-untyped-def]
    server.fail_next(500)
    ref = sfc.create_item({"summary": "x"})  # the first request asks for a token
    assert server.statuses[:2] == [500, 200] and len(server.token_requests) == 1
    server.fail_next(500)
    with pytest.raises(ConnectorError, match="may have done it") as err:
        sfc.create_item({"summary": "y"})
    assert err.value.retryable
    server.lose_next_answer("POST", r"/sobjects/CaseComment$")
    with pytest.raises(ConnectorError, match="may have done it"):
        sfc.add_comment(ref.id, body="Once")
    assert len([c for c in server.calls if c.method == "POST" and "/sobjects/" in c.path]) == 3
    assert [c["CommentBody"] for c in server.db["CaseComment"].values()] == ["Once"]


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_comment_whose_answers_were_lost_are_adopted_not_repeated(server):  # type: ignore[no-untyped-def]
    pair = _pair(server)
    server.clock.catch_up()  # the node looks for cases created since the event (its own, real clock)
    issue = pair.builtin_issue()
    pair.edit_builtin(issue, status="New")
    server.lose_next_answer("POST", r"/sobjects/Case$")
    pair.exalate(issue)
    assert not server.lose, "the create was not sent"
    twin = pair.side_tracker.twins.get()
    event = twin.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error
    assert len(server.db["Case"]) == 1

    retry_now(twin.pk)
    twin.refresh_from_db()
    assert twin.state == "synchronized", list(twin.events.values_list("status", "error"))
    (case,) = server.db["Case"].values()  # adopted: still one case
    assert twin.local_id == case["Id"]
    pair.edit_builtin(issue, summary="Found again")
    assert [c["Subject"] for c in server.db["Case"].values()] == ["Found again"]

    server.lose_next_answer("POST", r"/sobjects/CaseComment$")
    pair.comment_builtin(issue, "Said once")
    assert not server.lose, "the comment was not sent"
    assert twin.events.filter(status="pending").exists()
    retry_now(twin.pk)
    assert [c["CommentBody"] for c in server.db["CaseComment"].values()] == [
        "[anna <anna@example.com>] Said once"
    ]
    pair.assert_settled()
