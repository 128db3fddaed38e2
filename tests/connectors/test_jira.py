"""The Jira Cloud connector against an in-memory Jira that keeps to Atlassian's published REST v3 description.

Facts of the real Jira Cloud platform REST API v3 these tests rely on:

* Requests authenticate with HTTP basic auth: the Atlassian account's e-mail and an API token.
* Descriptions and comment bodies are Atlassian Document Format (``{"type": "doc", "version": 1, ...}``);
  a plain string is refused by v3.
* ``GET /rest/api/3/issue/{id}`` embeds at most a page of comments in ``fields.comment`` (with ``total``);
  the rest come from ``GET …/comment?startAt=&maxResults=``.
* The status cannot be set by editing the issue: ``GET …/transitions`` lists the transitions available from
  the current status (each with its target status ``to``), ``POST …/transitions {"transition": {"id"}}``
  performs one and answers 204.
* ``PUT /rest/api/3/issue/{id}`` answers 204 without a body; ``POST /rest/api/3/issue`` answers 201 with
  ``{id, key, self}`` only. Labels cannot contain spaces (400).
* ``POST …/attachments`` takes ``multipart/form-data`` with the file in a part named ``file`` and needs
  ``X-Atlassian-Token: no-check`` (else Jira's XSRF check answers 403); it answers 200 with a list of the
  created attachments. ``GET /rest/api/3/attachment/content/{id}`` redirects (303) to Atlassian's media host
  unless ``redirect=false``, in which case Jira sends the content itself.
* ``POST /rest/api/3/search/jql`` takes ``jql``, ``fields``, ``maxResults`` and ``nextPageToken``, and answers
  ``isLast`` and a ``nextPageToken`` for the next page. JQL dates (``"yyyy-MM-dd HH:mm"``) have minute
  precision and are read in the searching user's time zone (``timeZone`` of ``/rest/api/3/myself``).
  ``creator`` (in JQL and in ``fields``) is the user who created the issue, whatever the ``reporter`` was set
  to; ``currentUser()`` is the caller; ``created >= "yyyy-MM-dd HH:mm"`` takes the same date format.
* Searches and the JQL checks (``jql/parse``, ``jql/match``) are POSTs that change nothing.
* Timestamps look like ``2026-03-01T10:00:07.000+0100`` (offset without a colon).
* ``/rest/api/3/user/search?query=`` matches e-mail addresses even when the user hides them; the response
  shows ``emailAddress`` only for users whose profile allows it.
* When rate limiting, Jira answers 429 with ``Retry-After`` (seconds).
* Webhook deliveries (not in the OpenAPI description; from Atlassian's webhook documentation) are JSON with
  ``webhookEvent`` (``jira:issue_created``, ``jira:issue_updated``, ``comment_created`` …), ``issue``
  (``id``, ``key``, ``self``, ``fields``), ``user`` (who acted; for comment events the ``comment`` with its
  ``author``/``updateAuthor``), and the header ``X-Atlassian-Webhook-Identifier`` that stays the same on
  retries. A webhook registered with a secret is signed: ``X-Hub-Signature: sha256=<HMAC-SHA256 hex of the
  raw body>``.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction

from instances.connectors import ConnectorError, get_connector
from instances.connectors.adf import adf_to_text, text_to_adf
from instances.connectors.jira import (
    JiraConnector,
    MultipartStream,
    parse_webhook,
    reset_memory,
    verify_webhook,
)
from instances.models import Instance
from tests.connectors.fakes.base import Reply
from tests.connectors.fakes.jira import API_TOKEN, EMAIL, SITE, FakeJira
from tests.connectors.fakes.support import FakeClock, wired
from tests.pipeline_support import retry_now

SECRET = "jira-webhook-secret"


def make_instance(**overrides: Any) -> Instance:
    fields = {
        "name": "Support Jira",
        "tracker_type": "jira",
        "url": SITE,
        "credentials": json.dumps({"email": EMAIL, "api_token": API_TOKEN}),
        "settings": {"project": "SUP", "issue_type": "Task"},
        **overrides,
    }
    return Instance(**fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock):  # type: ignore[no-untyped-def]
    reset_memory()
    fake = FakeJira()
    with wired(fake, clock):
        yield fake


@pytest.fixture
def jira(fake: FakeJira) -> JiraConnector:
    return JiraConnector(make_instance())


# --- reads ------------------------------------------------------------------------------------------------


def test_get_item_maps_adf_comments_people_and_attachments(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue(
        "Printer on fire", description=text_to_adf("Since **Tuesday**\n\n- tray 1\n- tray 2")
    )
    fake.edit(issue["key"], assignee=fake.ed["accountId"], labels=["hw"], duedate="2026-04-01", priority="2")
    for n in range(7):  # more than the page Jira embeds in the issue
        fake.comment_as(issue["key"], text_to_adf(f"Comment {n}"))
    item = jira.get_item(issue["id"])
    assert (item["id"], item["key"], item["url"]) == (issue["id"], "SUP-1", f"{SITE}/browse/SUP-1")
    assert item["description"] == "Since **Tuesday**\n\n- tray 1\n- tray 2"
    assert (item["status"], item["priority"], item["type"]) == (
        {"name": "To Do"},
        {"name": "High"},
        {"name": "Task"},
    )
    assert item["labels"] == ["hw"] and item["dueDate"] == "2026-04-01"
    assert item["assignee"] == {"email": None, "displayName": "Ed Hidden", "accountId": fake.ed["accountId"]}
    assert item["reporter"]["email"] == "anna@example.com"
    assert [c["body"] for c in item["comments"]] == [f"Comment {n}" for n in range(7)]
    assert item["updated"].endswith("Z") and item["created"] < item["updated"]  # normalised to UTC
    assert item["project"] == {"idStr": "10100", "key": "SUP", "name": "Support"}
    assert len(fake.requests_to("GET", r"/comment$")) == 1  # the comments past the embedded page


def test_find_item(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    for key in ("SUP-1", issue["id"], f"{SITE}/browse/SUP-1"):
        ref = jira.find_item(key)
        assert ref is not None and (ref.id, ref.key) == (issue["id"], "SUP-1"), key
    assert jira.find_item("SUP-99") is None


def test_search_pages_with_next_page_token_in_the_users_time_zone(
    fake: FakeJira, jira: JiraConnector
) -> None:
    for n in range(130):
        fake.add_issue(f"Issue {n}")
    refs, cursor = jira.search_updated_since(None, limit=500)
    assert len(refs) == 130 and [r.key for r in refs[:2]] == ["SUP-1", "SUP-2"]
    searches = fake.requests_to("POST", r"/search/jql$")
    assert len(searches) == 2 and "nextPageToken" in searches[1].json
    assert searches[0].json["jql"] == 'project = "SUP" ORDER BY updated ASC'
    assert cursor == refs[-1].updated == "2026-03-01T09:02:10.000Z"
    again, same = jira.search_updated_since(cursor)
    assert (again, same) == ([], cursor)  # the overlap re-reads, nothing is returned twice
    # cursor 09:02:10Z minus the 2-minute overlap, in Europe/Berlin (UTC+1), at minute precision
    assert fake.requests_to("POST", r"/search/jql$")[-1].json["jql"] == (
        'project = "SUP" AND updated >= "2026-03-01 10:00" ORDER BY updated ASC'
    )
    fake.edit("SUP-3", summary="changed")
    fake.comment_as("SUP-8", text_to_adf("a comment updates the issue"))
    refs, newer = jira.search_updated_since(cursor)
    assert [r.key for r in refs] == ["SUP-3", "SUP-8"] and newer > cursor


def test_search_respects_the_limit_and_resumes(fake: FakeJira, jira: JiraConnector) -> None:
    for n in range(5):
        fake.add_issue(f"Issue {n}")
    refs, cursor = jira.search_updated_since(None, limit=2)
    assert [r.key for r in refs] == ["SUP-1", "SUP-2"]
    rest, _ = jira.search_updated_since(cursor, limit=10)
    assert [r.key for r in rest] == ["SUP-3", "SUP-4", "SUP-5"]


def test_metadata(fake: FakeJira, jira: JiraConnector) -> None:
    meta = jira.metadata()
    assert meta["statuses"] == ["To Do", "In Progress", "Done"]
    assert meta["priorities"] == ["Highest", "High", "Medium", "Low", "Lowest"]
    assert meta["types"] == ["Task", "Bug", "Story"]
    by_name = {u["displayName"]: u for u in meta["users"]}
    assert by_name["Anna Smith"]["email"] == "anna@example.com" and by_name["Ed Hidden"]["email"] is None


# --- writes -----------------------------------------------------------------------------------------------


def test_create_item_with_everything(fake: FakeJira, jira: JiraConnector) -> None:
    ref = jira.create_item(
        {
            "summary": "Printer on fire",
            "description": "Since Tuesday\n\n```\nE42\n```",
            "status": {"name": "In Progress"},
            "priority": {"name": "high"},
            "type": {"name": "Bug"},
            "labels": ["hw", "needs triage"],
            "assignee": {"email": "ed@example.com"},  # hidden e-mail: found by the user search
            "dueDate": "2026-04-01",
            "project": {"key": "SUP"},
        }
    )
    issue = fake.issues[ref.id]
    assert (ref.key, issue["summary"], issue["status"], issue["priority"], issue["issuetype"]) == (
        "SUP-1",
        "Printer on fire",
        "3",
        "2",
        "10002",
    )
    assert issue["description"]["content"][1] == {
        "type": "codeBlock",
        "content": [{"type": "text", "text": "E42"}],
    }
    assert issue["labels"] == ["hw", "needs_triage"]  # Jira labels cannot hold spaces
    assert issue["assignee"] == fake.ed["accountId"] and issue["duedate"] == "2026-04-01"
    assert [c.method for c in fake.writes] == ["POST", "POST"]  # create, then the transition
    assert ref.updated.endswith("Z")


def test_a_one_field_update_costs_exactly_one_write(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    before = jira.http.writes_made
    jira.update_item(issue["id"], {"summary": "y"})
    assert jira.http.writes_made - before == 1
    assert fake.writes[-1].json == {"fields": {"summary": "y"}}  # only the changed field
    jira.update_item(issue["id"], {"status": {"name": "done"}})  # by target status name, any case
    assert jira.http.writes_made - before == 2 and fake.issues[issue["id"]]["status"] == "10000"
    assert fake.writes[-1].json == {"transition": {"id": "31"}}
    jira.update_item(issue["id"], {"status": {"name": "Done"}})  # already there: nothing to do
    assert jira.http.writes_made - before == 2


def test_status_without_a_transition_lists_the_available_ones(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    jira.update_item(issue["id"], {"status": {"name": "Done"}})
    with pytest.raises(ConnectorError) as err:
        jira.update_item(issue["id"], {"status": {"name": "In Progress"}})
    assert "no transition leads to 'In Progress'" in err.value.message
    assert "'Reopen' → To Do" in err.value.message
    with pytest.raises(ConnectorError, match="valid statuses: To Do, In Progress, Done"):
        jira.update_item(issue["id"], {"status": {"name": "Shipped"}})


def test_unknown_priority_and_type_list_the_valid_names(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    with pytest.raises(
        ConnectorError, match="no priority 'Urgent'. Valid priority names: Highest, High, Medium"
    ):
        jira.update_item(issue["id"], {"priority": {"name": "Urgent"}})
    with pytest.raises(
        ConnectorError, match="no issue type 'Incident'. Valid issue type names: Task, Bug, Story"
    ):
        jira.create_item({"summary": "x", "type": {"name": "Incident"}})
    with pytest.raises(ConnectorError, match="no \\(visible\\) user with the e-mail nobody@example.com"):
        jira.update_item(issue["id"], {"assignee": {"email": "nobody@example.com"}})
    assert fake.writes == []


def test_assignee_by_account_id_and_unassign(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    jira.update_item(issue["id"], {"assignee": {"accountId": fake.anna["accountId"], "email": None}})
    assert fake.issues[issue["id"]]["assignee"] == fake.anna["accountId"]
    jira.update_item(issue["id"], {"assignee": None})
    assert fake.issues[issue["id"]]["assignee"] is None


def test_comments_add_edit_delete_and_internal(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    cid = jira.add_comment(issue["id"], body="From **support**\nsecond line", internal=True)
    assert fake.comments[cid]["body"]["content"][0]["content"][2] == {"type": "hardBreak"}
    jira.update_comment(issue["id"], cid, body="edited")
    [comment] = jira.get_item(issue["id"])["comments"]
    assert (comment["body"], comment["internal"], comment["author"]["accountId"]) == (
        "edited",
        True,
        fake.me["accountId"],
    )
    jira.delete_comment(issue["id"], cid)
    jira.delete_comment(issue["id"], cid)  # already gone: no error
    assert jira.get_item(issue["id"])["comments"] == []


def test_attachments_are_streamed_up_and_down(fake: FakeJira, jira: JiraConnector, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    issue = fake.add_issue("x")
    content = io.BytesIO(b"x" * 300_000)
    reads: list[int] = []
    original = MultipartStream.read

    def spy(self, size=-1):  # type: ignore[no-untyped-def]
        chunk = original(self, size)
        reads.append(len(chunk))
        return chunk

    monkeypatch.setattr(MultipartStream, "read", spy)
    aid = jira.add_attachment(issue["id"], filename='big "log".txt', mime_type="text/plain", content=content)
    assert max(reads) < 300_000  # handed to the socket in pieces, never read whole
    stored = fake.attachments[aid]
    assert (stored["filename"], stored["content"]) == ("big %22log%22.txt", b"x" * 300_000)
    assert fake.requests_to("POST", "/attachments$")[0].headers["X-Atlassian-Token"] == "no-check"
    [att] = jira.get_item(issue["id"])["attachments"]
    assert att["sha256"] == hashlib.sha256(b"x" * 300_000).hexdigest() and att["size"] == 300_000
    chunks = list(jira.open_attachment(issue["id"], aid))
    assert b"".join(chunks) == b"x" * 300_000 and len(chunks) > 1
    assert fake.requests_to("GET", "/attachment/content/")[0].query["redirect"] == ["false"]
    jira.delete_attachment(issue["id"], aid)
    jira.delete_attachment(issue["id"], aid)  # already gone
    assert jira.get_item(issue["id"])["attachments"] == []


def test_an_upload_is_rewound_and_sent_again_after_a_503(
    fake: FakeJira, jira: JiraConnector, clock: FakeClock
) -> None:
    issue = fake.add_issue("x")
    fake.fail_next(Reply(503, "Service Unavailable"))
    aid = jira.add_attachment(
        issue["id"], filename="a.txt", mime_type="text/plain", content=io.BytesIO(b"abc")
    )
    assert fake.attachments[aid]["content"] == b"abc" and len(fake.attachments) == 1
    assert len(fake.requests_to("POST", "/attachments$")) == 2 and clock.sleeps


# --- credentials and errors ------------------------------------------------------------------------------


def test_credentials(fake: FakeJira) -> None:
    assert "Exalate Node" in JiraConnector(make_instance()).test_credentials()
    bad = JiraConnector(make_instance(credentials=json.dumps({"email": EMAIL, "api_token": "nope"})))
    with pytest.raises(ConnectorError) as err:
        bad.test_credentials()
    assert err.value.status == 401 and "API token" in err.value.message
    with pytest.raises(ConnectorError, match="lack api_token"):
        JiraConnector(make_instance(credentials=json.dumps({"email": EMAIL}))).get_item("1")
    with pytest.raises(ConnectorError, match='"project" setting'):
        JiraConnector(make_instance(settings={})).metadata()


def test_registered_and_built_by_get_connector() -> None:
    assert isinstance(get_connector(make_instance()), JiraConnector)


def test_429_with_retry_after_is_retried(fake: FakeJira, jira: JiraConnector, clock: FakeClock) -> None:
    issue = fake.add_issue("x")
    fake.fail_next(Reply(429, {"errorMessages": ["Rate limit exceeded."]}, {"Retry-After": "12"}))
    assert jira.get_item(issue["id"])["summary"] == "x"
    assert 12 in clock.sleeps


def test_a_refusal_says_what_jira_said(fake: FakeJira, jira: JiraConnector) -> None:
    issue = fake.add_issue("x")
    with pytest.raises(ConnectorError) as err:
        jira.update_item(issue["id"], {"customFields": {"customfield_10099": "x"}})
    assert err.value.status == 400 and not err.value.retryable


# --- webhooks ---------------------------------------------------------------------------------------------


def test_webhook_signature_query_secret_and_refusals(fake: FakeJira) -> None:
    fake.add_issue("x")
    headers, body = fake.webhook("jira:issue_updated", "SUP-1", secret=SECRET)
    assert verify_webhook(headers, body, SECRET)
    assert not verify_webhook(headers, body + b" ", SECRET)
    assert not verify_webhook(headers, body, "other")
    unsigned, body = fake.webhook("jira:issue_updated", "SUP-1")
    assert verify_webhook(unsigned, body, SECRET, query={"secret": [SECRET]})
    assert not verify_webhook(unsigned, body, SECRET, query={"secret": "guess"})
    assert not verify_webhook(unsigned, body, SECRET)
    assert not verify_webhook(headers, body, "")


def test_parse_webhook_once_per_delivery(fake: FakeJira) -> None:
    issue = fake.add_issue("x")
    comment = fake.comment_as("SUP-1", text_to_adf("hi"))
    headers, body = fake.webhook("comment_created", "SUP-1", comment_id=comment["id"], delivery="w-1")
    [ref] = parse_webhook(headers, body)
    assert (ref.id, ref.key, ref.url) == (issue["id"], "SUP-1", f"{SITE}/browse/SUP-1")
    assert ref.updated == jira_time_to_iso(issue["updated"])
    assert parse_webhook(headers, body) == []  # Jira's retry of the same delivery
    store: set[str] = set()
    headers, body = fake.webhook("jira:issue_updated", "SUP-1")
    assert len(parse_webhook(headers, body, seen=lambda d: d in store or bool(store.add(d)))) == 1
    assert parse_webhook(headers, body, seen=lambda d: d in store or bool(store.add(d))) == []
    assert parse_webhook({}, json.dumps({"webhookEvent": "project_created"}).encode()) == []


def jira_time_to_iso(value: str) -> str:
    from instances.connectors.jira import ts

    return ts(value) or ""


def test_is_own_change(fake: FakeJira, jira: JiraConnector) -> None:
    ref = jira.create_item({"summary": "by the node"})
    assert jira.is_own_change(ref)
    _h, body = fake.webhook("jira:issue_updated", ref.key, by=fake.me["accountId"])
    assert jira.is_own_change(json.loads(body))
    fake.edit(ref.key, summary="by Anna")
    assert not jira.is_own_change(ref)
    _h, body = fake.webhook("jira:issue_updated", ref.key)
    assert not jira.is_own_change(json.loads(body))
    jira.add_comment(ref.id, body="the node again")
    assert jira.is_own_change({"id": ref.id})
    comment = fake.comment_as(ref.key, text_to_adf("Anna comments"))
    assert not jira.is_own_change({"id": ref.id})
    _h, body = fake.webhook("comment_created", ref.key, by=fake.me["accountId"], comment_id=comment["id"])
    assert not jira.is_own_change(json.loads(body))  # the comment's author decides, not the webhook's user


# --- through the real pipeline -----------------------------------------------------------------------------


def _desk_and_jira():  # type: ignore[no-untyped-def]
    """A built-in project and a Jira instance joined by a local connection: (project, to Jira, from Jira)."""
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline

    desk = Instance.objects.create(name="Support desk", tracker_type="builtin")
    project = services.project_create(instance=desk, key="DESK", name="Desk")
    jira_instance = make_instance()
    jira_instance.save()
    to_jira, from_jira = connection_create_local(
        name="Desk ⇄ Jira", instance_a=desk, instance_b=jira_instance
    )
    pipeline.META_CACHE.clear()
    return project, to_jira, from_jira


@pytest.mark.django_db(transaction=True)
def test_sync_with_the_builtin_tracker_both_ways(fake: FakeJira) -> None:
    from instances.models import Issue
    from instances.tracker import services
    from replicas import pipeline
    from replicas.outbox import record_item_change

    project, to_jira, from_jira = _desk_and_jira()

    # Built-in → Jira: create with a comment and an attachment, then an edit.
    issue = services.issue_create(
        project=project,
        actor="anna@example.com",
        summary="Printer on fire",
        description="Since **Tuesday**\n\n- tray 1\n- tray 2",
        priority="High",
        issue_type="Bug",
        labels=["hw"],
    )
    services.comment_add(issue=issue, actor="anna@example.com", body="Seen twice today")
    services.attachment_add(issue=issue, actor="anna@example.com", filename="log.txt", content=b"trace")
    pipeline.exalate(connection=to_jira, key=issue.key)
    [copy] = fake.issues.values()
    assert (copy["summary"], copy["priority"], copy["issuetype"], copy["labels"]) == (
        "Printer on fire",
        "2",
        "10002",
        ["hw"],
    )
    assert jira_connector().get_item(copy["id"])["description"] == "Since **Tuesday**\n\n- tray 1\n- tray 2"
    assert [c["body"]["content"][0]["content"][0]["text"] for c in fake.comments.values()] == [
        "[anna <anna@example.com>] Seen twice today"
    ]
    assert [(a["filename"], a["content"]) for a in fake.attachments.values()] == [("log.txt", b"trace")]
    services.issue_update(issue=issue, actor="anna@example.com", summary="Printer on fire, again")
    assert copy["summary"] == "Printer on fire, again"

    # Jira → built-in: exalate an issue made in Jira; an edit, a comment and an attachment arrive by webhook.
    theirs = fake.add_issue("Keyboard missing", description=text_to_adf("Desk *4*"))
    pipeline.exalate(connection=from_jira, key=theirs["key"])
    mirrored = Issue.objects.exclude(pk=issue.pk).get(project=project)
    assert (mirrored.summary, mirrored.description) == ("Keyboard missing", "Desk *4*")

    fake.edit(theirs["key"], summary="Keyboard missing (desk 4)", priority="1")
    fake.comment_as(theirs["key"], text_to_adf("Found it under the desk"))
    fake.attachments["99001"] = {
        "id": "99001",
        "issue": theirs["id"],
        "filename": "photo.jpg",
        "mimeType": "image/jpeg",
        "content": b"\xff\xd8jpeg",
        "author": fake.anna["accountId"],
        "created": fake.tick(),
    }
    headers, body = fake.webhook("jira:issue_updated", theirs["key"], secret=SECRET)
    assert verify_webhook(headers, body, SECRET)
    for ref in parse_webhook(headers, body):  # what the webhook intake view does
        with transaction.atomic():
            record_item_change(
                instance_id=from_jira.local_instance_id, item_id=ref.id, item_key=ref.key, actor="jira:anna"
            )
    mirrored.refresh_from_db()
    assert (mirrored.summary, mirrored.priority) == ("Keyboard missing (desk 4)", "Highest")
    assert [c.body for c in mirrored.comments.all()] == ["Found it under the desk"]
    att = mirrored.attachments.get()
    assert (att.filename, att.sha256) == ("photo.jpg", hashlib.sha256(b"\xff\xd8jpeg").hexdigest())
    # No echo: nothing the node wrote to Jira came back as another comment or attachment there.
    assert len(fake.comments) == 2 and len(fake.attachments) == 2


def jira_connector() -> JiraConnector:
    return JiraConnector(make_instance())


def test_create_refuses_an_unknown_status_before_creating_and_survives_a_failed_transition(
    fake: FakeJira, jira: JiraConnector
) -> None:
    with pytest.raises(ConnectorError, match="no status 'Shipped'. Valid statuses: To Do, In Progress, Done"):
        jira.create_item({"summary": "x", "status": {"name": "Shipped"}})
    assert fake.issues == {}
    original = fake.do_transition
    fake.routes = [
        (m, r, (lambda call: Reply(409, {"errorMessages": ["conflict"]})) if h == original else h)
        for m, r, h in fake.routes
    ]
    ref = jira.create_item({"summary": "x", "status": {"name": "Done"}})
    assert ref.key == "SUP-1" and len(fake.issues) == 1  # the id is not lost: no duplicate on retry


# --- answers lost: find_created, read-only POSTs -----------------------------------------------------------


def test_find_created_returns_the_nodes_issues_since_t_with_that_summary_newest_first(
    fake: FakeJira, jira: JiraConnector
) -> None:
    fake.add_issue("Printer on fire", by=fake.me["accountId"])  # by the node, but before T (same minute)
    since = fake.clock + timedelta(milliseconds=500)
    first = jira.create_item({"summary": "Printer on fire"})
    fake.add_issue("Printer on fire", by=fake.anna["accountId"])  # created by another user
    jira.create_item({"summary": "Printer on fire, again"})  # another summary
    # Created by the node, reported as Anna: the creator counts, not the reporter.
    for_anna = jira.create_item(
        {"summary": "Printer on fire", "reporter": {"accountId": fake.anna["accountId"]}}
    )
    second = jira.create_item({"summary": "Printer\non fire"})  # create_item writes it on one line
    found = jira.find_created({"summary": "Printer\non fire", "project": {"key": "SUP"}}, since=since)
    assert [r.key for r in found] == [second.key, for_anna.key, first.key]
    assert found[0].url == f"{SITE}/browse/{second.key}" and found[0].updated.endswith("Z")
    [search] = fake.requests_to("POST", r"/search/jql$")
    # A day before T (09:00:00.5Z) in the user's zone (Europe/Berlin, UTC+1), then cut exactly here.
    assert search.json["jql"] == (
        'project = "SUP" AND creator = currentUser() AND created >= "2026-02-28 10:00" ORDER BY created DESC'
    )
    assert jira.find_created({"summary": "Nobody wrote this"}, since=since) == []


def test_read_only_posts_are_retried_after_a_500_but_a_create_is_not(
    fake: FakeJira, jira: JiraConnector, clock: FakeClock
) -> None:
    issue = fake.add_issue("x", by=fake.me["accountId"])
    since = fake.clock - timedelta(minutes=1)
    jira.me()  # read once, so that each failure below hits the POST
    for read in (
        lambda: jira.search_updated_since(None),
        lambda: jira.query_validate("labels = sync"),
        lambda: jira.query_matches("labels = sync", {"id": issue["id"]}),
        lambda: jira.query_search("summary ~ x"),
        lambda: jira.find_created({"summary": "x"}, since=since),
    ):
        before = len(fake.calls)
        fake.fail_next(Reply(500, {"errorMessages": ["Internal server error"]}))
        read()
        assert [c.method for c in fake.calls[before:]].count("POST") == 2  # the 500, then the answer
    assert [r.id for r in jira.find_created({"summary": "x"}, since=since)] == [issue["id"]]
    jira.create_item({"summary": "y"})  # reads the project's issue types once
    fake.fail_next(Reply(500, {"errorMessages": ["Internal server error"]}))
    with pytest.raises(ConnectorError, match="may have done it") as err:
        jira.create_item({"summary": "z"})  # not repeated: Jira may have created it
    assert err.value.retryable and len(fake.requests_to("POST", r"/issue$")) == 2


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_comment_whose_answers_were_lost_are_adopted_not_repeated(fake: FakeJira) -> None:
    from instances.tracker import services
    from replicas import pipeline

    project, to_jira, from_jira = _desk_and_jira()
    fake.clock = datetime.now(UTC)  # the pipeline looks for issues created since its event, by its own clock

    issue = services.issue_create(project=project, actor="anna@example.com", summary="Lost in transit")
    fake.lose_next_answer("POST", r"/rest/api/3/issue$")
    pipeline.exalate(connection=to_jira, key=issue.key)
    [copy] = fake.issues.values()  # Jira created it; the node never heard
    jira_side = from_jira.twins.get()
    event = jira_side.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error

    retry_now(jira_side.pk)
    jira_side.refresh_from_db()
    assert jira_side.state == "synchronized", list(jira_side.events.values_list("status", "error"))
    assert list(fake.issues) == [copy["id"]] and jira_side.local_id == copy["id"]  # adopted, not repeated
    services.issue_update(issue=issue, actor="anna@example.com", summary="Found again")
    assert copy["summary"] == "Found again"  # ...and it is the twin for good

    fake.lose_next_answer("POST", r"/comment$")
    services.comment_add(issue=issue, actor="anna@example.com", body="Said once")
    assert len(fake.comments) == 1
    assert "may have done it" in jira_side.events.get(status="pending").error
    retry_now(jira_side.pk)
    jira_side.refresh_from_db()
    assert jira_side.state == "synchronized", list(jira_side.events.values_list("status", "error"))
    assert [adf_to_text(c["body"]) for c in fake.comments.values()] == ["[anna <anna@example.com>] Said once"]
    assert [c.body for c in issue.comments.all()] == ["Said once"]  # and nothing came back
