"""The Zendesk connector against an in-memory fake of the Support REST API v2.

Facts relied on (Zendesk developer documentation, Support API): API-token basic auth is
``<email>/token:<api_token>``; ``GET/PUT /api/v2/tickets/{id}.json`` and ``POST /api/v2/tickets.json``
wrap the ticket as ``{"ticket": ...}``; an update may carry fields and one ``comment: {body, public,
uploads}`` and answers with the ticket and an ``audit`` whose ``events`` include the new ``Comment`` (with
its id); the ticket's ``description`` is its first comment; status is new/open/pending/hold/solved/closed,
priority low/normal/high/urgent, type problem/incident/question/task; a closed ticket cannot be updated
(422 ``RecordInvalid`` with ``details``); ``assignee_email`` is accepted on writes; comments are listed at
``/tickets/{id}/comments.json`` with cursor pagination (``page[size]``, ``meta.has_more``, ``links.next``)
and cannot be edited; ``PUT /tickets/{id}/comments/{cid}/redact.json {"text"}`` redacts text permanently
(▇) and ``.../attachments/{aid}/redact.json`` replaces a file by an empty ``redacted.txt``; ``POST
/api/v2/uploads.json?filename=`` takes the raw file and returns ``{"upload": {"token", "attachment"}}``;
``GET /api/v2/attachments/{id}.json`` gives its ``content_url``; the cursor-based incremental export
``/api/v2/incremental/tickets/cursor.json`` takes ``start_time`` (refused with 422 when less than a minute
old) then ``cursor``, answers ``tickets``, ``after_cursor`` and ``end_of_stream``, and may repeat tickets;
at most 30 updates per ticket per 10 minutes (429 with ``Retry-After`` beyond); webhooks are signed with
``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(secret, timestamp + body)) and
``X-Zendesk-Webhook-Signature-Timestamp``.
"""

from __future__ import annotations

import io

import pytest

from instances.connectors.base import ConnectorError
from instances.connectors.zendesk import ZendeskConnector, parse_key
from tests.connectors2.conftest import make_instance, wire
from tests.connectors2.fakes.zendesk import FakeZendesk
from tests.pipeline_support import retry_now


@pytest.fixture
def server(clock):  # type: ignore[no-untyped-def]
    fake = FakeZendesk(clock)
    with wire(fake):
        yield fake


def connector_for(server: FakeZendesk, **settings) -> ZendeskConnector:  # type: ignore[no-untyped-def]
    creds = {"email": server.email, "api_token": server.api_token}
    return ZendeskConnector(
        make_instance("zendesk", server.host, creds, {"custom_fields": {"Region": 77}, **settings})
    )


@pytest.fixture
def zendesk(server):  # type: ignore[no-untyped-def]
    return connector_for(server)


def puts(server: FakeZendesk) -> list:  # type: ignore[type-arg]
    return [
        c
        for c in server.calls
        if c.method == "PUT" and c.path.startswith("/api/v2/tickets/") and c.path.count("/") == 4
    ]


def test_create_and_read_in_the_hub_shape(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item(
        {
            "summary": "Printer on fire",
            "description": "Since Tuesday",
            "priority": {"name": "High"},
            "type": {"name": "Task"},
            "labels": ["hw"],
            "assignee": {"email": "ed@acme.example"},
            "reporter": {"email": "carla@customer.example"},
            "dueDate": "2026-04-01",
            "customFields": {"Region": "EMEA"},
        }
    )
    assert (ref.id, ref.key, ref.url) == ("1", "#1", "https://acme.zendesk.com/agent/tickets/1")
    item = zendesk.get_item(ref.id)
    assert item["summary"] == "Printer on fire" and item["description"] == "Since Tuesday"
    assert item["status"] == {"name": "Open"} and item["priority"] == {"name": "High"}
    assert item["type"] == {"name": "Task"} and item["labels"] == ["hw"] and item["dueDate"] == "2026-04-01"
    assert item["assignee"] == {"email": "ed@acme.example", "displayName": "Ed Agent"}
    assert item["reporter"]["email"] == "carla@customer.example"
    assert item["customFields"] == {"Region": "EMEA"}
    assert item["comments"] == [] and item["attachments"] == []  # the first comment is the description


def test_find_item(zendesk):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    assert zendesk.find_item("#1") == ref
    assert zendesk.find_item("https://acme.zendesk.com/agent/tickets/1").id == "1"
    assert zendesk.find_item("#7") is None and zendesk.find_item("ABC-1") is None
    assert parse_key("12") == "12"


def test_a_one_field_update_costs_one_write_and_changes_wait_for_the_flush(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    before = zendesk.http.writes_made
    zendesk.update_item(ref.id, {"status": {"name": "Pending"}})
    assert zendesk.http.writes_made == before  # buffered
    assert zendesk.get_item(ref.id)["status"] == {"name": "Pending"}  # a read flushes first
    assert zendesk.http.writes_made - before == 1
    assert puts(server)[-1].json() == {"ticket": {"status": "pending"}}
    zendesk.update_item(ref.id, {"description": "new text"})  # the description is read-only: nothing to send
    zendesk.flush()
    assert zendesk.http.writes_made - before == 1


def test_fields_and_a_comment_go_out_as_one_update(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    before = zendesk.http.writes_made
    zendesk.update_item(ref.id, {"summary": "y"})
    zendesk.update_item(ref.id, {"priority": {"name": "Urgent"}, "labels": ["a"]})
    cid = zendesk.add_comment(ref.id, body="Working on it")
    assert zendesk.http.writes_made - before == 1
    assert puts(server)[-1].json() == {
        "ticket": {
            "subject": "y",
            "priority": "urgent",
            "tags": ["a"],
            "comment": {"body": "Working on it", "public": True},
        }
    }
    item = zendesk.get_item(ref.id)
    assert (item["summary"], item["priority"]["name"], item["comments"][0]["id"]) == ("y", "Urgent", cid)
    assert zendesk.http.writes_made - before == 1


def test_a_burst_of_40_changes_never_exceeds_30_updates_in_10_minutes(server):  # type: ignore[no-untyped-def]
    zendesk = connector_for(server, max_limit_wait_s=900)
    ref = zendesk.create_item({"summary": "x"})
    for n in range(40):
        zendesk.update_item(ref.id, {"summary": f"v{n}"})
        zendesk.add_comment(ref.id, body=f"change {n}")
    times = [c for c in server.calls if c.method == "PUT"]
    stamps = sorted(t for t in server.update_times[1])
    assert len(times) == 40 and not [c for c in server.calls if c is None]
    # Every 10-minute window holds at most 30 updates (creation counts as one); Zendesk never said 429.
    assert all(sum(1 for s in stamps if a <= s < a + 600) <= 30 for a in stamps)
    assert 429 not in server.statuses and 1 <= len([s for s in server.clock.slept if s > 100]) <= 2
    item = zendesk.get_item(ref.id)
    assert item["summary"] == "v39" and len(item["comments"]) == 40


def test_an_exhausted_ticket_budget_is_handed_back_for_a_later_retry(server):  # type: ignore[no-untyped-def]
    zendesk = connector_for(server)  # waits at most 30 s
    ref = zendesk.create_item({"summary": "x"})
    for n in range(29):
        zendesk.add_comment(ref.id, body=f"c{n}")
    zendesk.update_item(ref.id, {"summary": "kept"})
    with pytest.raises(ConnectorError, match="30 updates to a ticket per 10 minutes") as err:
        zendesk.add_comment(ref.id, body="one too many")
    assert err.value.retryable and err.value.status == 429
    assert not any(
        c for c in server.calls if c.method == "PUT" and c.json()["ticket"].get("subject") == "kept"
    )
    server.clock.advance(600)
    zendesk.add_comment(ref.id, body="later")  # the buffered field change goes out with it
    assert server.tickets[1]["subject"] == "kept"


def test_comments_public_private_no_edit_and_redaction(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    public = zendesk.add_comment(ref.id, body="Hello customer")
    private = zendesk.add_comment(ref.id, body="Internal note", internal=True)
    assert puts(server)[-1].json()["ticket"]["comment"] == {"body": "Internal note", "public": False}
    comments = zendesk.get_item(ref.id)["comments"]
    assert [(c["id"], c["internal"]) for c in comments] == [(public, False), (private, True)]
    with pytest.raises(ConnectorError, match="cannot be edited"):
        zendesk.update_comment(ref.id, public, body="changed")
    zendesk.delete_comment(ref.id, public)
    assert server.comments[1][1]["body"] == "▇" * len("Hello customer")
    assert [c["id"] for c in zendesk.get_item(ref.id)["comments"]] == [private]
    zendesk.delete_comment(ref.id, public)  # already redacted: nothing more
    assert len([c for c in server.calls if "redact" in c.path]) == 1


def test_attachments_upload_token_stream_and_redact(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    before = zendesk.http.writes_made
    aid = zendesk.add_attachment(
        ref.id, filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace")
    )
    assert zendesk.http.writes_made - before == 2  # the upload and one ticket update
    upload = [c for c in server.calls if c.path == "/api/v2/uploads.json"][-1]
    assert (upload.query["filename"], upload.body, upload.headers["Content-Type"]) == (
        "log.txt",
        b"trace",
        "text/plain",
    )
    item = zendesk.get_item(ref.id)
    assert [(a["id"], a["filename"], a["size"]) for a in item["attachments"]] == [(aid, "log.txt", 5)]
    assert item["comments"] == []  # the node's carrier comment is not a comment of the item
    assert b"".join(zendesk.open_attachment(ref.id, aid)) == b"trace"
    zendesk.delete_attachment(ref.id, aid)
    assert zendesk.get_item(ref.id)["attachments"] == []


def test_polling_export_cursor_and_dedup(zendesk, server):  # type: ignore[no-untyped-def]
    server.page_size = 2
    ids = [zendesk.create_item({"summary": f"t{n}"}).id for n in range(3)]
    server.clock.advance(5)  # polled after their second ended: a same-second edit cannot follow unseen
    refs, cursor = zendesk.search_updated_since(None)
    assert [r.id for r in refs] == ids and "|" in cursor
    first = [c for c in server.calls if "incremental" in c.path]
    assert "start_time" in first[0].query and "cursor" in first[1].query  # then the export's cursor
    assert zendesk.search_updated_since(cursor)[0] == []
    server.human_update(int(ids[1]), subject="changed")
    refs, cursor2 = zendesk.search_updated_since(cursor)
    assert [r.id for r in refs] == [ids[1]]
    # A time cursor (a fresh node, or after a limit) re-reads an overlap window, de-duplicated.
    refs, _ = zendesk.search_updated_since(cursor2.split("|")[0])
    assert refs == []
    assert all(
        int(c.query["start_time"]) <= server.clock.time() - 60
        for c in server.calls
        if "start_time" in c.query
    )


def test_metadata_credentials_and_refusals(zendesk, server):  # type: ignore[no-untyped-def]
    meta = zendesk.metadata()
    assert meta["statuses"][:2] == ["New", "Open"] and meta["priorities"][-1] == "Urgent"
    assert {u["email"] for u in meta["users"]} == {"node@acme.example", "ed@acme.example"}
    assert "node@acme.example" in zendesk.test_credentials()
    ref = zendesk.create_item({"summary": "x"})
    with pytest.raises(ConnectorError, match="no ticket priority 'Blocker'"):
        zendesk.update_item(ref.id, {"priority": {"name": "Blocker"}})
    with pytest.raises(ConnectorError, match="no ticket field id for custom field 'Nope'"):
        zendesk.update_item(ref.id, {"customFields": {"Nope": 1}})
    zendesk.update_item(ref.id, {"status": {"name": "Closed"}})
    zendesk.flush()
    zendesk.update_item(ref.id, {"summary": "after close"})
    with pytest.raises(ConnectorError, match="closed prevents ticket update") as err:
        zendesk.flush()
    assert err.value.status == 422
    assert zendesk.get_item(ref.id)["status"] == {"name": "Closed"}  # the refused change was dropped
    server.api_token = "rotated"
    with pytest.raises(ConnectorError, match="credentials were rejected") as err:
        zendesk.test_credentials()
    assert err.value.status == 401 and "zd-token" not in str(err.value)


def test_rate_limit_retry_after(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    server.fail_next(429, headers={"Retry-After": "9"})
    assert zendesk.get_item(ref.id)["summary"] == "x"
    assert 9.0 in server.clock.slept


def test_is_own_change(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    assert zendesk.is_own_change({"id": ref.id})
    zendesk.add_comment(ref.id, body="hi")
    assert zendesk.is_own_change({"id": ref.id})
    server.human_update(int(ref.id), subject="by Ed")
    assert not zendesk.is_own_change({"id": ref.id})


def test_webhook_signatures_and_replays(zendesk, server):  # type: ignore[no-untyped-def]
    headers, body = server.signed({"ticket_id": "1"}, "whsec")
    assert zendesk.verify_webhook(headers, body, "whsec")
    assert not zendesk.verify_webhook(headers, body, "other")
    assert not zendesk.verify_webhook(headers, body + b" ", "whsec")
    assert not zendesk.verify_webhook({}, body, "whsec")
    old_headers, old_body = server.signed({"ticket_id": "1"}, "whsec", age=3600)
    assert not zendesk.verify_webhook(old_headers, old_body, "whsec")  # a replay of an old request
    assert [r.id for r in zendesk.parse_webhook(headers, body)] == ["1"]
    assert zendesk.parse_webhook(headers, body) == []  # the same signed request again
    event = {"type": "zen:event-type:ticket.status_changed", "detail": {"id": "5"}}
    h2, b2 = server.signed(event, "whsec")
    assert [r.id for r in zendesk.parse_webhook(h2, b2)] == ["5"]
    assert zendesk.parse_webhook({}, b'{"hello": 1}') == []


def _pair(server):  # type: ignore[no-untyped-def]
    """A built-in project and the fake Zendesk joined by a local connection."""
    from tests.connectors2.pipeline_helpers import Pair

    return Pair.create(
        "zendesk",
        server.host,
        {"email": server.email, "api_token": server.api_token},
        {},
        statuses=["Open", "Pending", "Solved", "Closed"],
    )


@pytest.mark.django_db(transaction=True)
def test_sync_both_ways_through_the_pipeline(server):  # type: ignore[no-untyped-def]
    pair = _pair(server)
    issue = pair.builtin_issue(comment="Seen twice today", attachment=("log.txt", b"trace"))
    pair.exalate(issue)
    (ticket,) = server.tickets.values()
    tid = ticket["id"]
    assert ticket["subject"] == "Printer on fire"
    assert [c["body"] for c in server.comments[tid]][1] == "[anna <anna@example.com>] Seen twice today"
    assert [a["file_name"] for c in server.comments[tid] for a in c["attachments"]] == ["log.txt"]
    pair.edit_builtin(issue, summary="Printer on fire, again", status="Solved")
    assert (ticket["subject"], ticket["status"]) == ("Printer on fire, again", "solved")
    server.clock.catch_up()
    server.human_update(tid, status="pending", subject="Need the model number")
    server.human_update(tid, comment={"body": "Which printer model?", "public": True})
    server.human_attach(tid, "fuser.jpg", b"\xff\xd8jpeg")
    headers, body = server.signed({"ticket_id": str(tid)}, "whsec")
    pair.deliver(body, headers)
    issue.refresh_from_db()
    assert (issue.summary, issue.status) == ("Need the model number", "Pending")
    assert sorted(issue.comments.values_list("body", flat=True)) == [
        "Photo attached",
        "Seen twice today",
        "Which printer model?",
    ]
    assert sorted(issue.attachments.values_list("filename", flat=True)) == ["fuser.jpg", "log.txt"]
    pair.assert_settled()
    writes = len(server.writes())
    pair.poll()
    assert len(server.writes()) == writes


# --- a create or a comment whose answer was lost ----------------------------------------------------------
# Facts relied on (Support API reference, Tickets): ``GET /api/v2/tickets.json`` (List Tickets) takes
# ``sort_by=created_at``, ``sort_order=desc``, ``page`` and ``per_page`` (at most 100) and answers ``tickets``
# and ``next_page``; unlike the Search API it does not lag writes. The submitter is "the user who created a
# ticket"; ``via.channel`` says how it was created (``api``, ``web``, ``email``); ``created_at`` has whole
# seconds; ``GET /api/v2/users/me.json`` is the API user. A ticket update carrying a ``comment`` adds one
# each time it is sent.


def test_find_created_returns_the_accounts_tickets_since_then_with_that_subject(zendesk, server):  # type: ignore[no-untyped-def]
    early = zendesk.create_item({"summary": "Printer on fire"})
    server.clock.advance(1.5)
    since = server.clock.now()
    first = zendesk.create_item({"summary": "Printer on fire"})
    zendesk.create_item({"summary": "Printer on fire, again"})  # another subject
    server.human_ticket("Printer on fire", by=2)  # another agent, in the web interface
    server.human_ticket("Printer on fire", by=3, channel="email")  # a customer's e-mail
    second = zendesk.create_item(
        {"summary": "Printer on fire", "reporter": {"email": "carla@customer.example"}, "labels": ["hw"]}
    )
    zendesk.create_item({"summary": "Scanner on fire"})
    found = zendesk.find_created({"summary": "Printer on fire"}, since=since)
    assert [r.id for r in found] == [second.id, first.id] and early.id not in [r.id for r in found]
    listing = [c for c in server.calls if c.method == "GET" and c.path == "/api/v2/tickets.json"]
    assert len(listing) == 1 and not [c for c in server.calls if "search" in c.path]  # no index lag
    assert (listing[0].query["sort_by"], listing[0].query["sort_order"], listing[0].query["per_page"]) == (
        "created_at",
        "desc",
        "100",
    )
    assert zendesk.find_created({"summary": "Printer on fire"}, since=server.clock.now()) == []
    untitled = zendesk.create_item({})
    assert [r.id for r in zendesk.find_created({"summary": None}, since=since)] == [untitled.id]


def test_find_created_reads_a_second_page_and_stops_there(zendesk, server):  # type: ignore[no-untyped-def]
    since = server.clock.now()
    wanted = zendesk.create_item({"summary": "Printer on fire"})
    for n in range(250):
        server.human_ticket(f"noise {n}")
    assert zendesk.find_created({"summary": "Printer on fire"}, since=since) == []  # beyond two pages
    listing = [
        c.query["page"] for c in server.calls if c.method == "GET" and c.path == "/api/v2/tickets.json"
    ]
    assert listing == ["1", "2"]
    server.tickets = {k: t for k, t in server.tickets.items() if k == int(wanted.id) or k > 150}
    assert [r.id for r in zendesk.find_created({"summary": "Printer on fire"}, since=since)] == [wanted.id]


def test_find_created_when_the_requester_became_the_submitter(zendesk, server):  # type: ignore[no-untyped-def]
    server.submitter_is_requester = True  # Zendesk's older description of an API create with a requester
    since = server.clock.now()
    mine = zendesk.create_item(
        {"summary": "Printer on fire", "reporter": {"email": "carla@customer.example"}}
    )
    server.human_ticket("Printer on fire", by=3, channel="email")  # Carla's own e-mail: not the node's
    fields = {"summary": "Printer on fire", "reporter": {"email": "carla@customer.example"}}
    assert [r.id for r in zendesk.find_created(fields, since=since)] == [mine.id]
    assert zendesk.find_created({"summary": "Printer on fire"}, since=since) == []  # no requester: not mine


def test_an_update_with_a_comment_is_not_repeated_after_a_lost_answer_but_a_field_update_is(zendesk, server):  # type: ignore[no-untyped-def]
    ref = zendesk.create_item({"summary": "x"})
    server.fail_next(500)
    zendesk.update_item(ref.id, {"summary": "y"})
    zendesk.flush()  # fields only: repeated by the client
    assert server.tickets[1]["subject"] == "y"
    server.lose_next_answer("PUT", r"/tickets/\d+\.json$")
    zendesk.update_item(ref.id, {"priority": {"name": "High"}})
    with pytest.raises(ConnectorError, match="may have done it") as err:
        zendesk.add_comment(ref.id, body="Once")
    assert err.value.retryable
    assert [c["body"] for c in server.comments[1]].count("Once") == 1  # sent once, not repeated
    server.fail_next(500)
    with pytest.raises(ConnectorError, match="may have done it"):
        zendesk.add_comment(ref.id, body="Twice?")
    assert (
        len([c for c in server.calls if c.method == "PUT"]) == 4
    )  # 500s: the field PUT twice, then one each
    zendesk.flush()  # the fields of the unsure update are kept and sent again (harmless)
    assert server.tickets[1]["priority"] == "high"


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_comment_whose_answers_were_lost_are_adopted_not_repeated(server):  # type: ignore[no-untyped-def]
    pair = _pair(server)
    server.clock.catch_up()  # the node looks for tickets created since the event (its own, real clock)
    issue = pair.builtin_issue()
    server.lose_next_answer("POST", r"/api/v2/tickets\.json$")
    pair.exalate(issue)
    assert not server.lose, "the create was not sent"
    twin = pair.side_tracker.twins.get()
    event = twin.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error
    assert len(server.tickets) == 1

    retry_now(twin.pk)
    twin.refresh_from_db()
    assert twin.state == "synchronized", list(twin.events.values_list("status", "error"))
    (ticket,) = server.tickets.values()  # adopted: still one ticket
    assert twin.local_id == str(ticket["id"])
    pair.edit_builtin(issue, summary="Found again")
    assert [t["subject"] for t in server.tickets.values()] == ["Found again"]

    server.lose_next_answer("PUT", r"/api/v2/tickets/\d+\.json$")
    pair.comment_builtin(issue, "Said once")
    assert not server.lose, "the comment was not sent"
    assert twin.events.filter(status="pending").exists()
    retry_now(twin.pk)
    assert [c["body"] for c in server.comments[ticket["id"]]].count(
        "[anna <anna@example.com>] Said once"
    ) == 1
    assert len(server.comments[ticket["id"]]) == 2  # the description and the comment
    pair.assert_settled()
