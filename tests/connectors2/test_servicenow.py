"""The ServiceNow connector against an in-memory fake of the Table and Attachment APIs.

Facts relied on (ServiceNow REST API reference: Table API, Attachment API): records live at
``/api/now/table/{table}[/{sys_id}]`` wrapped as ``{"result": ...}``; ``sysparm_query`` is an encoded query
(``field=value^field>=value^fieldINa,b^ORDERBYfield^ORDERBYDESCfield``; an unknown field is ignored, not
refused), paged by ``sysparm_limit``/``sysparm_offset`` with ``X-Total-Count``; ``sysparm_display_value=all``
returns every field as ``{value, display_value}``; ``sysparm_fields`` limits the fields; times are
``YYYY-MM-DD HH:MM:SS`` (UTC in ``value``); ``PATCH`` updates and silently ignores unknown fields; incident
``state`` is a choice (1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled) whose labels are in
``sys_choice``; the incident ``priority`` is computed from ``impact`` × ``urgency`` by the priority lookup;
resolving or closing an incident without ``close_code`` and ``close_notes`` fails with 403 "Data Policy
Exception"; ``comments`` and ``work_notes`` are journal fields written on the record and stored as
``sys_journal_field`` rows (``element``, ``element_id``, ``value``, ``sys_created_by``); every update
increments ``sys_mod_count`` and sets ``sys_updated_by``; ``POST /api/now/attachment/file?table_name=
&table_sys_id=&file_name=`` takes the raw file, attachments are listed at ``/api/now/attachment`` and
downloaded at ``/api/now/attachment/{sys_id}/file``, ``hash`` is the SHA-256; errors are ``{"error":
{message, detail}, "status": "failure"}``; basic auth or ``Authorization: Bearer <OAuth token>``; a rate
limit rule answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from instances.connectors.base import ConnectorError
from instances.connectors.servicenow import ServiceNowConnector
from tests.connectors2.conftest import make_instance, wire
from tests.connectors2.fakes.servicenow import FakeServiceNow
from tests.pipeline_support import retry_now


@pytest.fixture
def server(clock):  # type: ignore[no-untyped-def]
    fake = FakeServiceNow(clock)
    with wire(fake):
        yield fake


def connector_for(server: FakeServiceNow, creds=None, **settings) -> ServiceNowConnector:  # type: ignore[no-untyped-def]
    creds = creds or {"username": server.username, "password": server.password}
    return ServiceNowConnector(make_instance("servicenow", server.host, creds, settings))


@pytest.fixture
def sn(server):  # type: ignore[no-untyped-def]
    return connector_for(server)


def test_create_and_read_in_the_hub_shape(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item(
        {
            "summary": "Printer on fire",
            "description": "Since Tuesday",
            "priority": {"name": "2 - High"},
            "type": {"name": "Hardware"},
            "assignee": {"email": "ed@acme.example"},
            "dueDate": "2026-04-01",
            "customFields": {"u_customer": "ACME"},
            "status": {"name": "In Progress"},
        }
    )
    assert ref.key == "INC0010001" and len(ref.id) == 32
    item = sn.get_item(ref.id)
    assert item["summary"] == "Printer on fire" and item["description"] == "Since Tuesday"
    assert item["status"] == {"name": "In Progress"} and item["priority"] == {"name": "2 - High"}
    assert item["type"] == {"name": "Hardware"} and item["labels"] == [] and item["dueDate"] == "2026-04-01"
    assert item["assignee"] == {"email": "ed@acme.example", "displayName": "Ed Agent"}
    assert item["reporter"]["email"] == "node@acme.example"
    assert item["customFields"] == {"u_customer": "ACME"} and item["updated"].endswith("Z")
    row = server.tables["incident"][ref.id]
    assert (row["impact"], row["urgency"], row["priority"]) == ("1", "2", "2")  # through the lookup


def test_find_item(sn):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    assert sn.find_item("INC0010001") == ref
    assert sn.find_item("inc0010001").id == ref.id
    assert sn.find_item(ref.id).key == "INC0010001"
    assert sn.find_item("INC9999999") is None and sn.find_item("not a key!") is None


def test_a_one_field_update_costs_one_write(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    before = sn.http.writes_made
    sn.update_item(ref.id, {"summary": "y"})
    assert sn.http.writes_made - before == 1
    assert server.writes()[-1].json() == {"short_description": "y"}
    sn.update_item(ref.id, {"status": {"name": "On Hold"}})
    assert sn.http.writes_made - before == 2 and server.writes()[-1].json() == {"state": "3"}
    sn.update_item(
        ref.id, {"labels": ["x"], "reporter": {"email": "a@b"}}
    )  # nothing ServiceNow has: no write
    assert sn.http.writes_made - before == 2


def test_resolving_needs_close_code_and_notes(server):  # type: ignore[no-untyped-def]
    sn = connector_for(server)
    ref = sn.create_item({"summary": "x"})
    with pytest.raises(
        ConnectorError, match="needs close_code and close_notes to set incident to 'Resolved'"
    ):
        sn.update_item(ref.id, {"status": {"name": "Resolved"}})
    with pytest.raises(ConnectorError, match="needs close_notes"):
        sn.update_item(
            ref.id, {"status": {"name": "Resolved"}, "customFields": {"close_code": "Solved (Permanently)"}}
        )
    assert not [w for w in server.writes() if w.method == "PATCH"]  # refused before sending anything
    sn.update_item(
        ref.id,
        {
            "status": {"name": "Resolved"},
            "customFields": {"close_code": "Solved (Permanently)", "close_notes": "Fixed"},
        },
    )
    assert sn.get_item(ref.id)["status"] == {"name": "Resolved"}
    # Defaults from the instance's settings work too; the data policy in the fake agrees.
    defaults = connector_for(server, close_code="Solved (Work Around)", close_notes="Synced from Jira")
    other = defaults.create_item({"summary": "y"})
    defaults.update_item(other.id, {"status": {"name": "Closed"}})
    assert server.tables["incident"][other.id]["close_code"] == "Solved (Work Around)"


def test_refusals(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    with pytest.raises(ConnectorError, match="no choice 'Done'"):
        sn.update_item(ref.id, {"status": {"name": "Done"}})
    with pytest.raises(ConnectorError, match="no user with the e-mail ghost@acme.example"):
        sn.update_item(ref.id, {"assignee": {"email": "ghost@acme.example"}})
    with pytest.raises(ConnectorError) as err:
        sn.get_item("0" * 32)
    assert err.value.status == 404 and "No Record found" in str(err.value)


def test_comments_and_work_notes(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    public = sn.add_comment(ref.id, body="Hello caller")
    internal = sn.add_comment(ref.id, body="Check the fuser", internal=True)
    assert server.writes()[-1].json() == {"work_notes": "Check the fuser"}
    comments = sn.get_item(ref.id)["comments"]
    assert [(c["id"], c["body"], c["internal"]) for c in comments] == [
        (public, "Hello caller", False),
        (internal, "Check the fuser", True),
    ]
    assert comments[0]["author"]["email"] == "node@acme.example"
    sn.update_comment(ref.id, public, body="Hello again")
    sn.delete_comment(ref.id, internal)
    sn.delete_comment(ref.id, internal)  # idempotent
    assert [c["body"] for c in sn.get_item(ref.id)["comments"]] == ["Hello again"]
    server.admin = False
    with pytest.raises(ConnectorError, match="403"):
        sn.update_comment(ref.id, public, body="no rights")


def test_attachments(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    before = sn.http.writes_made
    aid = sn.add_attachment(ref.id, filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace"))
    assert sn.http.writes_made - before == 1
    upload = [c for c in server.calls if c.path == "/api/now/attachment/file"][-1]
    assert upload.query == {"table_name": "incident", "table_sys_id": ref.id, "file_name": "log.txt"}
    (att,) = sn.get_item(ref.id)["attachments"]
    assert (att["id"], att["filename"], att["size"]) == (aid, "log.txt", 5)
    assert att["sha256"] == hashlib.sha256(b"trace").hexdigest()
    assert b"".join(sn.open_attachment(ref.id, aid)) == b"trace"
    sn.delete_attachment(ref.id, aid)
    sn.delete_attachment(ref.id, aid)
    assert sn.get_item(ref.id)["attachments"] == []


def test_polling_with_offset_pages_cursor_and_dedup(sn, server):  # type: ignore[no-untyped-def]
    ids = [sn.create_item({"summary": f"t{n}"}).id for n in range(5)]
    server.clock.advance(5)  # polled after their second ended: a same-second edit cannot follow unseen
    refs, cursor = sn.search_updated_since(None, limit=2)
    assert [r.id for r in refs] == ids[:2]
    refs, cursor = sn.search_updated_since(cursor, limit=100)
    assert [r.id for r in refs] == ids[2:]
    queries = [c.query for c in server.calls if c.path == "/api/now/table/incident" and c.method == "GET"]
    assert (
        queries[-1]["sysparm_query"].startswith("sys_updated_on>=")
        and "^ORDERBYsys_updated_on" in queries[-1]["sysparm_query"]
    )
    assert sn.search_updated_since(cursor) == ([], cursor)
    server.human_update(ids[0], short_description="changed")
    refs, _ = sn.search_updated_since(cursor)
    assert [r.id for r in refs] == [ids[0]]


def test_metadata_credentials_and_oauth(sn, server):  # type: ignore[no-untyped-def]
    meta = sn.metadata()
    assert meta["statuses"][:2] == ["New", "In Progress"] and "Resolved" in meta["statuses"]
    assert meta["priorities"][0] == "1 - Critical" and "Hardware" in meta["types"]
    assert {u["email"] for u in meta["users"]} >= {"ed@acme.example"}
    assert "exalate.node" in sn.test_credentials()
    bearer = connector_for(server, {"token": server.token}, node_user="exalate.node")
    assert "table incident" in bearer.test_credentials()
    assert server.calls[-1].headers["Authorization"] == f"Bearer {server.token}"
    server.password = "rotated"
    with pytest.raises(ConnectorError, match="credentials were rejected") as err:
        sn.test_credentials()
    assert err.value.status == 401 and "sn-pass" not in str(err.value)
    with pytest.raises(ConnectorError, match="username and password or a token"):
        connector_for(server, {"username": "x"}).test_credentials()


def test_rate_limit(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    server.fail_next(429, headers={"Retry-After": "4"})
    assert sn.get_item(ref.id)["summary"] == "x" and 4.0 in server.clock.slept


def test_is_own_change(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    assert sn.is_own_change({"id": ref.id})
    server.human_update(ref.id, short_description="by Ed")
    assert not sn.is_own_change({"id": ref.id})
    server.human_update(ref.id, by="exalate.node", short_description="by the node elsewhere")
    assert sn.is_own_change({"id": ref.id})  # sys_updated_by is the integration user


def test_webhook_from_a_business_rule(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    body = json.dumps(
        {
            "sys_id": ref.id,
            "table": "incident",
            "number": "INC0010001",
            "sys_updated_on": "2026-03-01 09:00:05",
        }
    ).encode()
    assert sn.verify_webhook({"X-Exalate-Token": "s"}, body, "s")
    assert not sn.verify_webhook({"X-Exalate-Token": "t"}, body, "s") and not sn.verify_webhook({}, body, "s")
    (parsed,) = sn.parse_webhook({}, body)
    assert (parsed.id, parsed.key, parsed.updated) == (ref.id, "INC0010001", "2026-03-01T09:00:05Z")
    assert sn.parse_webhook({}, json.dumps({"sys_id": ref.id, "table": "problem"}).encode()) == []
    assert sn.parse_webhook({}, b"[]") == []


def _pair(server):  # type: ignore[no-untyped-def]
    """A built-in project and the fake ServiceNow joined by a local connection."""
    from tests.connectors2.pipeline_helpers import Pair

    return Pair.create(
        "servicenow",
        server.host,
        {"username": server.username, "password": server.password},
        {"close_code": "Solved (Permanently)", "close_notes": "Resolved in the support desk"},
        statuses=["New", "In Progress", "Resolved", "Closed"],
    )


@pytest.mark.django_db(transaction=True)
def test_sync_both_ways_through_the_pipeline(server):  # type: ignore[no-untyped-def]
    pair = _pair(server)
    issue = pair.builtin_issue(comment="Seen twice today", attachment=("log.txt", b"trace"))
    pair.exalate(issue)
    (row,) = server.tables["incident"].values()
    rid = row["sys_id"]
    assert row["short_description"] == "Printer on fire"
    assert [j["value"] for j in server.tables["sys_journal_field"].values()] == [
        "[anna <anna@example.com>] Seen twice today"
    ]
    assert [m["file_name"] for m, _ in server.attachments.values()] == ["log.txt"]
    pair.edit_builtin(issue, summary="Printer on fire, again", status="Resolved")
    assert (row["short_description"], row["state"], row["close_code"]) == (
        "Printer on fire, again",
        "6",
        "Solved (Permanently)",
    )
    server.clock.catch_up()
    server.human_update(
        rid, state="2", short_description="Reopened: fire again", comments="It is burning again"
    )
    server.human_attach(rid, "fuser.jpg", b"\xff\xd8jpeg")
    pair.poll()
    issue.refresh_from_db()
    assert (issue.summary, issue.status) == ("Reopened: fire again", "In Progress")
    assert sorted(issue.comments.values_list("body", flat=True)) == [
        "It is burning again",
        "Seen twice today",
    ]
    assert sorted(issue.attachments.values_list("filename", flat=True)) == ["fuser.jpg", "log.txt"]
    pair.assert_settled()
    writes = len(server.writes())
    pair.poll()
    assert len(server.writes()) == writes


# --- a create or a comment whose answer was lost ----------------------------------------------------------
# Facts relied on (Table API): ``sys_created_by`` is the creator's ``user_name`` and ``sys_created_on`` the
# creation time (whole seconds, UTC as stored; a date-time written as text in ``sysparm_query`` is read as
# UTC); ``ORDERBYDESC<field>`` sorts newest first; ``^`` separates conditions. Setting ``comments`` or
# ``work_notes`` on a record adds a journal entry each time it is sent.


def test_find_created_returns_the_node_users_records_since_then_with_that_description(sn, server):  # type: ignore[no-untyped-def]
    early = sn.create_item({"summary": "Printer on fire"})
    server.clock.advance(0.5)
    since = server.clock.now()
    first = sn.create_item({"summary": "Printer on fire"})  # stored in the second ``since`` falls in
    sn.create_item({"summary": "Printer on fire, again"})
    server.human_create("Printer on fire")  # Ed's
    second = sn.create_item({"summary": "Printer on fire", "status": {"name": "In Progress"}})
    sn.create_item({"summary": "Scanner on fire"})
    server.fail_next(500)  # a read: repeated by the client
    found = sn.find_created({"summary": "Printer on fire", "labels": ["x"]}, since=since)
    assert [r.id for r in found] == [second.id, first.id] and early.id not in [r.id for r in found]
    query = [c for c in server.calls if c.method == "GET" and c.path == "/api/now/table/incident"][-1].query
    assert query["sysparm_query"] == (
        "sys_created_by=exalate.node^sys_created_on>=2026-03-01 09:00:01^short_description=Printer on fire"
        "^ORDERBYDESCsys_created_on"
    )
    assert sn.find_created({"summary": "Printer on fire"}, since=server.clock.now()) == []
    caret = sn.create_item({"summary": "a^b"})  # would break the encoded query: checked here only
    assert [r.id for r in sn.find_created({"summary": "a^b"}, since=since)] == [caret.id]
    untitled = sn.create_item({})
    assert [r.id for r in sn.find_created({}, since=since)] == [untitled.id]  # "(no summary)"
    bearer = connector_for(server, {"token": server.token})
    calls = len(server.calls)
    assert bearer.find_created({"summary": "Printer on fire"}, since=since) == []  # no user name to tell
    assert len(server.calls) == calls
    named = connector_for(server, {"token": server.token}, node_user="exalate.node")
    assert [r.id for r in named.find_created({"summary": "Printer on fire"}, since=since)] == [
        second.id,
        first.id,
    ]


def test_a_comment_is_not_repeated_after_a_lost_answer_but_a_field_update_is(sn, server):  # type: ignore[no-untyped-def]
    ref = sn.create_item({"summary": "x"})
    server.fail_next(500)
    sn.update_item(ref.id, {"summary": "y"})  # a value: repeated by the client
    assert server.tables["incident"][ref.id]["short_description"] == "y"
    server.lose_next_answer("PATCH", r"/api/now/table/incident/")
    with pytest.raises(ConnectorError, match="may have done it") as err:
        sn.add_comment(ref.id, body="Once")
    assert err.value.retryable
    server.fail_next(502)
    with pytest.raises(ConnectorError, match="may have done it"):
        sn.add_comment(ref.id, body="Twice?", internal=True)
    assert [j["value"] for j in server.tables["sys_journal_field"].values()] == ["Once"]
    assert len([c for c in server.calls if c.method == "PATCH"]) == 4  # the update twice, one each


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_comment_whose_answers_were_lost_are_adopted_not_repeated(server):  # type: ignore[no-untyped-def]
    pair = _pair(server)
    server.clock.catch_up()  # the node looks for records created since the event (its own, real clock)
    issue = pair.builtin_issue()
    server.lose_next_answer("POST", r"/api/now/table/incident$")
    pair.exalate(issue)
    assert not server.lose, "the create was not sent"
    twin = pair.side_tracker.twins.get()
    event = twin.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error
    assert len(server.tables["incident"]) == 1

    retry_now(twin.pk)
    twin.refresh_from_db()
    assert twin.state == "synchronized", list(twin.events.values_list("status", "error"))
    (row,) = server.tables["incident"].values()  # adopted: still one record
    assert twin.local_id == row["sys_id"]
    pair.edit_builtin(issue, summary="Found again")
    assert [r["short_description"] for r in server.tables["incident"].values()] == ["Found again"]

    server.lose_next_answer("PATCH", r"/api/now/table/incident/[0-9a-f]{32}$")
    pair.comment_builtin(issue, "Said once")
    assert not server.lose, "the comment was not sent"
    assert twin.events.filter(status="pending").exists()
    retry_now(twin.pk)
    assert [j["value"] for j in server.tables["sys_journal_field"].values()] == [
        "[anna <anna@example.com>] Said once"
    ]
    pair.assert_settled()
