"""The GitLab connector against an in-memory fake of the REST API v4.

Facts relied on (GitLab REST API documentation, v4): authentication by the ``PRIVATE-TOKEN`` header;
project routes accept the numeric id or the URL-encoded path (``acme%2Fsupport``); issues are addressed by
``iid``; ``PUT /projects/:id/issues/:iid`` takes ``title``, ``description``, ``state_event`` (``close`` /
``reopen``), ``labels`` (replaces), ``add_labels``/``remove_labels``, ``assignee_ids``, ``due_date``,
``issue_type`` (issue, incident, test_case, task) and returns the issue; scoped labels (``scope::value``)
replace the scope's other label; notes are ``/issues/:iid/notes`` with ``internal`` (15.0+, formerly
``confidential``) and ``system`` notes; a note touches its issue's ``updated_at``; ``POST
/projects/:id/uploads`` takes a multipart ``file`` and returns ``{url, markdown, full_path}``; uploads are
downloaded and deleted at ``/projects/:id/uploads/:secret/:filename`` (17.4 / 17.2); lists paginate with
``page``/``per_page`` (max 100) and ``X-Next-Page`` (empty on the last page); ``GET /projects/:id/issues``
filters with ``updated_after`` (inclusive) and sorts with ``order_by=updated_at&sort=asc``; errors are
``{"message": ...}`` or ``{"error": ...}`` with 400/401/404, 429 carries ``Retry-After`` and
``RateLimit-Reset``; webhooks carry ``X-Gitlab-Token`` (the secret, verbatim), ``X-Gitlab-Event-UUID`` and
(17.4+) ``Idempotency-Key``, with ``object_kind`` issue/note and the acting ``user``.
"""

from __future__ import annotations

import io
import json

import pytest

from instances.connectors.base import ConnectorError
from instances.connectors.gitlab import GitLabConnector, parse_key
from tests.connectors2.conftest import make_instance, wire
from tests.connectors2.fakes.gitlab import FakeGitLab
from tests.pipeline_support import retry_now


@pytest.fixture
def server(clock):  # type: ignore[no-untyped-def]
    fake = FakeGitLab(clock)
    with wire(fake):
        yield fake


def connector_for(server: FakeGitLab, **settings) -> GitLabConnector:  # type: ignore[no-untyped-def]
    instance = make_instance(
        "gitlab", server.host, {"token": server.token}, {"project": server.project_path, **settings}
    )
    return GitLabConnector(instance)


@pytest.fixture
def gitlab(server):  # type: ignore[no-untyped-def]
    return connector_for(server)


def test_create_and_read_in_the_hub_shape(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item(
        {
            "summary": "Printer on fire",
            "description": "Since Tuesday",
            "priority": {"name": "High"},
            "labels": ["hw"],
            "type": {"name": "incident"},
            "assignee": {"email": "ed@acme.example"},
            "dueDate": "2026-04-01",
            "status": {"name": "In Progress"},
        }
    )
    assert (ref.id, ref.key, ref.url) == ("1", "#1", "https://gitlab.example/acme/support/-/issues/1")
    assert server.calls[0].path == "/api/v4/projects/acme%2Fsupport/issues" or any(
        c.path == "/api/v4/projects/acme%2Fsupport/issues" for c in server.calls
    )
    item = gitlab.get_item(ref.id)
    assert item["summary"] == "Printer on fire" and item["description"] == "Since Tuesday"
    assert item["status"] == {"name": "In Progress"} and item["priority"] == {"name": "High"}
    assert item["labels"] == ["hw"] and item["type"] == {"name": "incident"}
    assert item["assignee"]["displayName"] == "Ed Engineer" and item["dueDate"] == "2026-04-01"
    assert item["reporter"]["displayName"] == "Exalate Node"
    assert item["project"]["key"] == "acme/support" and item["comments"] == [] and item["attachments"] == []
    assert server.issues[1]["labels"] == ["hw", "priority::High", "status::In Progress"]


def test_find_item(gitlab):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    assert gitlab.find_item("#1") == ref
    assert gitlab.find_item("acme/support#1").id == "1"
    assert gitlab.find_item("https://gitlab.example/acme/support/-/issues/1").id == "1"
    assert gitlab.find_item("#9") is None and gitlab.find_item("SUP-1") is None
    assert parse_key("12") == "12"


def test_a_one_field_update_costs_one_write(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    before = gitlab.http.writes_made
    gitlab.update_item(ref.id, {"summary": "y"})
    assert gitlab.http.writes_made - before == 1
    assert server.writes()[-1].json() == {"title": "y"}
    gitlab.update_item(ref.id, {"status": {"name": "Closed"}})
    assert gitlab.http.writes_made - before == 2
    assert server.writes()[-1].json() == {"state_event": "close"}
    assert gitlab.get_item(ref.id)["status"] == {"name": "Closed"}
    gitlab.update_item(ref.id, {"status": {"name": "In Progress"}})
    assert server.writes()[-1].json() == {"state_event": "reopen", "add_labels": "status::In Progress"}
    gitlab.update_item(ref.id, {"status": {"name": "Open"}})
    assert server.writes()[-1].json() == {"remove_labels": "status::In Progress"}
    assert gitlab.get_item(ref.id)["status"] == {"name": "Open"}
    gitlab.update_item(ref.id, {"reporter": {"email": "x@y"}})  # GitLab cannot change the author: no request
    assert gitlab.http.writes_made - before == 4


def test_labels_keep_the_scoped_status_and_priority(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x", "priority": {"name": "Low"}, "labels": ["a"]})
    gitlab.update_item(ref.id, {"labels": ["b", "c"], "priority": {"name": "High"}})
    assert server.issues[1]["labels"] == ["b", "c", "priority::High"]
    gitlab.update_item(ref.id, {"priority": None})
    assert server.issues[1]["labels"] == ["b", "c", "priority::High"]  # None means "not given"
    gitlab.update_item(ref.id, {"priority": {"name": None}})
    assert server.issues[1]["labels"] == ["b", "c"]


def test_refusals(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    with pytest.raises(ConnectorError, match="no issue type 'Epic'"):
        gitlab.update_item(ref.id, {"type": {"name": "Epic"}})
    with pytest.raises(ConnectorError, match="no user with the e-mail nobody@acme.example"):
        gitlab.update_item(ref.id, {"assignee": {"email": "nobody@acme.example"}})
    with pytest.raises(ConnectorError, match="due_date is invalid") as err:
        gitlab.update_item(ref.id, {"dueDate": "tomorrow"})
    assert err.value.status == 400 and not err.value.retryable
    with pytest.raises(ConnectorError) as err:
        gitlab.get_item("99")
    assert err.value.status == 404


def test_notes_public_and_internal(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    public = gitlab.add_comment(ref.id, body="Seen twice")
    internal = gitlab.add_comment(ref.id, body="Customer is VIP", internal=True)
    assert server.writes()[-1].json() == {"body": "Customer is VIP", "internal": True}
    server.notes[1].append({**server.notes[1][0], "id": 1, "system": True, "body": "changed the description"})
    gitlab.update_comment(ref.id, public, body="Seen three times")
    comments = gitlab.get_item(ref.id)["comments"]
    assert [(c["id"], c["body"], c["internal"]) for c in comments] == [
        (public, "Seen three times", False),
        (internal, "Customer is VIP", True),
    ]
    gitlab.delete_comment(ref.id, public)
    gitlab.delete_comment(ref.id, public)  # idempotent
    assert [c["id"] for c in gitlab.get_item(ref.id)["comments"]] == [internal]


def test_notes_are_paged_by_x_next_page(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    for n in range(230):
        server.human_note(int(ref.id), f"note {n}")
    comments = gitlab.get_item(ref.id)["comments"]
    assert len(comments) == 230 and comments[-1]["body"] == "note 229"
    pages = [c.query.get("page") for c in server.calls if c.path.endswith("/notes") and c.method == "GET"]
    assert pages[-3:] == ["1", "2", "3"]


def test_attachments_upload_link_stream_and_delete(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    before = gitlab.http.writes_made
    aid = gitlab.add_attachment(
        ref.id, filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace")
    )
    assert gitlab.http.writes_made - before == 2  # the upload and the note carrying its link
    upload = [c for c in server.calls if c.path.endswith("/uploads")][-1]
    assert upload.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert upload.headers["Content-Length"] == str(len(upload.body))
    item = gitlab.get_item(ref.id)
    (att,) = item["attachments"]
    assert (att["id"], att["filename"], att["mimeType"]) == (aid, "log.txt", "text/plain")
    # The note carrying the link is the attachment, not a comment.
    (note,) = server.notes[int(ref.id)]
    assert note["body"].startswith("📎 [log.txt](/uploads/") and item["comments"] == []
    assert b"".join(gitlab.open_attachment(ref.id, aid)) == b"trace"
    gitlab.delete_attachment(ref.id, aid)
    item = gitlab.get_item(ref.id)
    assert item["attachments"] == [] and item["comments"] == [] and server.uploads == {}
    gitlab.delete_attachment(ref.id, aid)  # already gone


def test_an_upload_is_retried_from_its_start_after_a_429(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    server.fail_next(429, headers={"Retry-After": "3"})
    aid = gitlab.add_attachment(ref.id, filename="a.bin", mime_type="", content=io.BytesIO(b"\x00" * 200_000))
    assert b"".join(gitlab.open_attachment(ref.id, aid)) == b"\x00" * 200_000
    assert 3.0 in server.clock.slept


def test_polling_with_cursor_overlap_and_dedup(gitlab, server):  # type: ignore[no-untyped-def]
    a = gitlab.create_item({"summary": "a"})
    b = gitlab.create_item({"summary": "b"})
    refs, cursor = gitlab.search_updated_since(None)
    assert [r.id for r in refs] == [a.id, b.id] and cursor == refs[-1].updated
    listing = [c for c in server.calls if c.path.endswith("/issues") and c.method == "GET"][-1]
    assert (listing.query["order_by"], listing.query["sort"]) == ("updated_at", "asc")
    assert gitlab.search_updated_since(cursor) == ([], cursor)
    listing = [c for c in server.calls if c.path.endswith("/issues") and c.method == "GET"][-1]
    assert listing.query["updated_after"] < cursor  # the overlap window
    server.clock.advance(2)
    server.human_edit(int(a.id), title="a2")
    refs, cursor2 = gitlab.search_updated_since(cursor)
    assert [r.id for r in refs] == [a.id] and cursor2 > cursor
    for n in range(150):  # more than a page
        server.human_note(int(b.id) if n % 2 else int(a.id), f"n{n}")
    refs, _ = gitlab.search_updated_since(cursor2, limit=1)
    assert len(refs) == 1


def test_metadata_and_credentials(gitlab, server):  # type: ignore[no-untyped-def]
    meta = gitlab.metadata()
    assert meta["statuses"] == ["Open", "In Progress", "Closed", "Done", "Resolved"]
    assert meta["priorities"] == ["High", "Low"] and meta["types"][0] == "issue"
    assert {u["displayName"] for u in meta["users"]} == {"Exalate Node", "Ed Engineer"}
    assert gitlab.test_credentials() == "Connected to GitLab as exalate-node, project acme/support."
    server.token = "rotated"
    with pytest.raises(ConnectorError, match="access token was rejected") as err:
        gitlab.test_credentials()
    assert err.value.status == 401 and "glpat" not in str(err.value)
    wrong = connector_for(FakeGitLab(), project="acme/other")
    server.token = FakeGitLab.token
    with pytest.raises(ConnectorError, match="404"):
        wrong.test_credentials()


def test_rate_limit_reset_is_honoured(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    server.fail_next(429, headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "12"})
    assert gitlab.get_item(ref.id)["summary"] == "x"
    assert 12.0 in server.clock.slept


def test_is_own_change(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    assert gitlab.is_own_change({"id": ref.id})
    gitlab.add_comment(ref.id, body="hi")
    assert gitlab.is_own_change({"id": ref.id})
    server.human_edit(int(ref.id), title="by Ed")
    assert not gitlab.is_own_change({"id": ref.id})
    assert not gitlab.is_own_change(server.hook("issue", int(ref.id), by=2))
    assert gitlab.is_own_change(server.hook("issue", int(ref.id), by=1))


def test_webhooks_token_and_idempotency(gitlab, server):  # type: ignore[no-untyped-def]
    ref = gitlab.create_item({"summary": "x"})
    body = json.dumps(server.hook("issue", int(ref.id))).encode()
    assert gitlab.verify_webhook({"X-Gitlab-Token": "hook-secret"}, body, "hook-secret")
    assert gitlab.verify_webhook({"x-gitlab-token": "hook-secret"}, body, "hook-secret")
    assert not gitlab.verify_webhook({"X-Gitlab-Token": "hook-secreT"}, body, "hook-secret")
    assert not gitlab.verify_webhook({}, body, "hook-secret")
    assert not gitlab.verify_webhook({"X-Gitlab-Token": ""}, body, "")
    headers = {"Idempotency-Key": "k-1", "X-Gitlab-Event-UUID": "u-1"}
    (parsed,) = gitlab.parse_webhook(headers, body)
    assert (parsed.id, parsed.key) == (ref.id, "#1") and parsed.updated.endswith("Z")
    assert gitlab.parse_webhook(headers, body) == []  # a redelivery (same Idempotency-Key)
    assert gitlab.parse_webhook({"X-Gitlab-Event-UUID": "u-2"}, body) != []
    assert gitlab.parse_webhook({"X-Gitlab-Event-UUID": "u-2"}, body) == []  # older GitLab: the event UUID
    note = json.dumps(server.hook("note", int(ref.id))).encode()
    assert [r.id for r in gitlab.parse_webhook({"X-Gitlab-Event-UUID": "u-3"}, note)] == [ref.id]
    mr_note = {"object_kind": "note", "object_attributes": {"noteable_type": "MergeRequest"}}
    assert gitlab.parse_webhook({}, json.dumps(mr_note).encode()) == []
    assert gitlab.parse_webhook({}, b"{oops") == []


@pytest.mark.django_db(transaction=True)
def test_sync_both_ways_through_the_pipeline(server):  # type: ignore[no-untyped-def]
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create("gitlab", server.host, {"token": server.token}, {"project": server.project_path})
    issue = pair.builtin_issue(comment="Seen twice today", attachment=("log.txt", b"trace"))
    pair.exalate(issue)
    (gl,) = server.issues.values()
    iid = gl["iid"]
    assert gl["title"] == "Printer on fire"
    bodies = [n["body"] for n in server.notes[iid]]
    assert bodies[0] == "[anna <anna@example.com>] Seen twice today" and bodies[1].startswith("📎 [log.txt]")
    assert [data for _, data in server.uploads.values()] == [b"trace"]
    pair.edit_builtin(issue, summary="Printer on fire, again", status="In Progress")
    assert gl["title"] == "Printer on fire, again" and "status::In Progress" in gl["labels"]
    pair.edit_builtin(issue, status="Resolved")
    assert gl["state"] == "closed"
    server.clock.catch_up()
    # A person in GitLab: reopens with a title change, comments, attaches; the webhook brings it over.
    server.human_edit(iid, title="Fixed printer", state_event="reopen", remove_labels="status::In Progress")
    server.human_note(iid, "Replaced the fuser")
    server.human_upload(iid, "fuser.jpg", b"\xff\xd8jpeg")
    pair.deliver(json.dumps(server.hook("issue", iid)).encode(), {"Idempotency-Key": "d-1"})
    issue.refresh_from_db()
    assert (issue.summary, issue.status) == ("Fixed printer", "Open")
    bodies = sorted(issue.comments.values_list("body", flat=True))
    assert "Replaced the fuser" in bodies and "Seen twice today" in bodies
    assert sorted(issue.attachments.values_list("filename", flat=True)) == ["fuser.jpg", "log.txt"]
    pair.assert_settled()
    # Polling finds nothing new that the node did not write itself.
    writes = len(server.writes())
    pair.deliver(json.dumps(server.hook("issue", iid)).encode(), {"Idempotency-Key": "d-1"})
    pair.poll()
    assert len(server.writes()) == writes
    pair.assert_settled()
    # A file attached on the built-in side later reaches GitLab as an upload and the node's note that
    # carries it; that note never comes back as a comment.
    from instances.tracker import services

    services.attachment_add(issue=issue, actor="anna@example.com", filename="later.txt", content=b"later")
    assert server.notes[iid][-1]["body"].startswith("📎 [later.txt]")
    server.clock.catch_up()
    server.human_edit(iid, title="Fixed printer, really")
    pair.deliver(json.dumps(server.hook("issue", iid)).encode(), {"Idempotency-Key": "d-2"})
    issue.refresh_from_db()
    assert issue.summary == "Fixed printer, really"
    assert [b for b in issue.comments.values_list("body", flat=True) if "📎" in b] == []
    assert sorted(issue.attachments.values_list("filename", flat=True)) == [
        "fuser.jpg",
        "later.txt",
        "log.txt",
    ]
    pair.assert_settled()


# --- a create or a note whose answer was lost -------------------------------------------------------------
# Facts relied on (Issues API): ``GET /projects/:id/issues`` filters by ``author_id`` (with ``scope=all``),
# ``created_after`` (on or after, ISO 8601) and ``search`` with ``in=title``, sorts by
# ``order_by=created_at&sort=desc``; ``GET /user`` is the token's user.


def test_find_created_returns_the_accounts_issues_since_then_with_that_title(gitlab, server):  # type: ignore[no-untyped-def]
    server.clock.advance(0.5)
    early = gitlab.create_item({"summary": "Printer on fire"})  # the same second as ``since``, but before it
    server.clock.advance(0.1)
    since = server.clock.now()
    server.clock.advance(1)
    first = gitlab.create_item({"summary": "Printer on fire"})
    gitlab.create_item({"summary": "Printer on fire, again"})  # other title (the search still finds it)
    server.human_issue("Printer on fire", by=2)  # another user's
    server.clock.advance(1)
    second = gitlab.create_item({"summary": "Printer on fire", "status": {"name": "Closed"}})
    gitlab.create_item({"summary": "Scanner on fire"})
    server.fail_next(500)  # a read: repeated by the client
    found = gitlab.find_created({"summary": "Printer on fire", "labels": ["hw"]}, since=since)
    assert [r.id for r in found] == [second.id, first.id] and early.id not in [r.id for r in found]
    listing = [c for c in server.calls if c.method == "GET" and c.path.endswith("/issues")][-1]
    assert listing.query["author_id"] == "1" and listing.query["in"] == "title"
    assert listing.query["created_after"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")  # cut to the second
    assert (listing.query["order_by"], listing.query["sort"], listing.query["state"]) == (
        "created_at",
        "desc",
        "all",
    )
    assert gitlab.find_created({"summary": "Printer on fire"}, since=server.clock.now()) == []
    assert [r.id for r in gitlab.find_created({"summary": None}, since=since)] == []
    untitled = gitlab.create_item({})
    assert [r.id for r in gitlab.find_created({}, since=since)] == [untitled.id]  # "(no summary)"


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_note_whose_answers_were_lost_are_adopted_not_repeated(server):  # type: ignore[no-untyped-def]
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create("gitlab", server.host, {"token": server.token}, {"project": server.project_path})
    server.clock.catch_up()  # the node looks for items created since the event (its own, real clock)
    issue = pair.builtin_issue()
    server.lose_next_answer("POST", r"/issues$")
    pair.exalate(issue)
    assert not server.lose, "the create was not sent"
    twin = pair.side_tracker.twins.get()
    event = twin.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error
    assert len(server.issues) == 1

    retry_now(twin.pk)
    twin.refresh_from_db()
    assert twin.state == "synchronized", list(twin.events.values_list("status", "error"))
    (gl,) = server.issues.values()  # adopted: still one issue
    assert twin.local_id == str(gl["iid"])
    pair.edit_builtin(issue, summary="Found again")
    assert [i["title"] for i in server.issues.values()] == ["Found again"]

    server.lose_next_answer("POST", r"/issues/\d+/notes$")
    pair.comment_builtin(issue, "Said once")
    assert not server.lose, "the note was not sent"
    assert twin.events.filter(status="pending").exists()
    retry_now(twin.pk)
    assert [n["body"] for n in server.notes[gl["iid"]]] == ["[anna <anna@example.com>] Said once"]
    pair.assert_settled()
