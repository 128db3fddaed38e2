"""The GitHub connector against an in-memory GitHub that keeps to GitHub's published API descriptions.

Facts of the real GitHub REST API (2022-11-28) these tests rely on:

* Requests authenticate with ``Authorization: Bearer <token>``; ``X-GitHub-Api-Version: 2022-11-28`` selects
  the API version; a bad token gives 401 ``{"message": "Bad credentials"}`` on any endpoint.
* ``GET /repos/{owner}/{repo}/issues`` lists pull requests too (they carry a ``pull_request`` key); it takes
  ``state=all``, ``since`` (issues updated at or after that ISO 8601 time), ``sort=updated``,
  ``direction=asc``, ``per_page`` (at most 100) and ``page``, and links further pages with
  ``Link: <…>; rel="next"``. It also takes ``creator`` (the login that opened the issue, the issue's ``user``)
  and ``sort=created&direction=desc`` (newest first); times are whole seconds (``YYYY-MM-DDTHH:MM:SSZ``).
* Every GET answers with an ``ETag``; the same GET with ``If-None-Match: <etag>`` gets ``304 Not Modified``
  with no body when nothing changed, and a 304 does not count against the rate limit.
* When the rate limit is spent GitHub answers 403 (or 429) with ``X-RateLimit-Remaining: 0`` and
  ``X-RateLimit-Reset`` (epoch seconds); 429 may carry ``Retry-After``.
* Issues are closed with ``PATCH {"state": "closed", "state_reason": "completed|not_planned|duplicate"}``;
  ``state_reason`` is null on issues never closed. Labels that do not exist are created when set on an
  issue; assignees must be users with access to the repository (else 422).
* Issue comments are edited and deleted by their id under ``/repos/{owner}/{repo}/issues/comments/{id}``;
  a comment changes the issue's ``updated_at``.
* There is no REST API for files in issues (attachments are uploaded through the web UI only).
* Webhook deliveries carry ``X-GitHub-Event``, a unique ``X-GitHub-Delivery`` (kept on redelivery) and
  ``X-Hub-Signature-256: sha256=<HMAC-SHA256 hex of the raw body with the webhook's secret>``; the payload's
  ``sender`` is the user who caused the event.
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
from instances.connectors.github import GitHubConnector, parse_webhook, reset_memory, verify_webhook
from instances.models import Instance
from tests.connectors.fakes.base import ContractViolation, Reply
from tests.connectors.fakes.github import API, TOKEN, FakeGitHub
from tests.connectors.fakes.support import FakeClock, wired
from tests.pipeline_support import retry_now

SECRET = "webhook-secret"


def make_instance(**overrides: Any) -> Instance:
    fields = {
        "name": "Widgets on GitHub",
        "tracker_type": "github",
        "url": API,
        "credentials": json.dumps({"token": TOKEN}),
        "settings": {"repo": "octo/widgets"},
        **overrides,
    }
    return Instance(**fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock):  # type: ignore[no-untyped-def]
    reset_memory()
    fake = FakeGitHub()
    with wired(fake, clock):
        yield fake


@pytest.fixture
def gh(fake: FakeGitHub) -> GitHubConnector:
    return GitHubConnector(make_instance())


# --- reads ------------------------------------------------------------------------------------------------


def test_get_item_maps_the_issue_its_comments_and_people(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("Printer on fire", body="Since *Tuesday*", labels=["bug", "hw"], assignees=["octocat"])
    fake.add_comment_as(1, "Seen twice", by="hubot")
    fake.edit_issue(1, state="closed", state_reason="not_planned")
    item = gh.get_item("1")
    assert item["key"] == "octo/widgets#1" and item["url"] == "https://github.com/octo/widgets/issues/1"
    assert (item["summary"], item["description"]) == ("Printer on fire", "Since *Tuesday*")
    assert item["status"] == {"name": "Closed"} and item["resolution"] == {"name": "not_planned"}
    assert item["labels"] == ["bug", "hw"]
    assert item["assignee"] == {
        "email": "octocat@example.com",
        "displayName": "The Octocat",
        "accountId": "octocat",
    }
    assert item["reporter"]["accountId"] == "octocat"
    assert [(c["body"], c["author"]["accountId"], c["internal"]) for c in item["comments"]] == [
        ("Seen twice", "hubot", False)
    ]
    assert item["comments"][0]["author"]["email"] is None  # hubot's e-mail is not public
    assert item["project"] == {"idStr": "octo/widgets", "key": "octo/widgets", "name": "widgets"}
    assert item["attachments"] == [] and item["priority"] is None


def test_get_item_of_a_missing_issue_or_a_pull_request_is_a_clear_404(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    fake.add_issue("A PR", pull_request=True)
    with pytest.raises(ConnectorError) as missing:
        gh.get_item("7")
    assert missing.value.status == 404 and "repo" in missing.value.message
    with pytest.raises(ConnectorError, match="pull request"):
        gh.get_item("1")


def test_find_item_takes_every_key_form_and_skips_pull_requests(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    fake.add_issue("Issue")
    fake.add_issue("PR", pull_request=True)
    for key in ("octo/widgets#1", "#1", "1", "https://github.com/octo/widgets/issues/1"):
        ref = gh.find_item(key)
        assert ref is not None and (ref.id, ref.key) == ("1", "octo/widgets#1"), key
    assert gh.find_item("#2") is None  # a pull request
    assert gh.find_item("#99") is None
    assert gh.find_item("not a key") is None


def test_unchanged_reads_cost_304s(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("Printer on fire")
    fake.add_comment_as(1, "hello")
    first = gh.get_item("1")
    fake.calls.clear()
    assert gh.get_item("1") == first
    assert [(c.method, bool(c.headers.get("If-None-Match"))) for c in fake.calls] == [
        ("GET", True),
        ("GET", True),
    ]
    fake.edit_issue(1, title="Printer on fire, again")
    assert gh.get_item("1")["summary"] == "Printer on fire, again"


def test_search_pages_in_update_order_skips_pull_requests_and_advances(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    for n in range(130):
        fake.add_issue(f"Issue {n}", pull_request=(n == 5))
    refs, cursor = gh.search_updated_since(None, limit=500)
    assert len(refs) == 129 and [r.id for r in refs][:6] == ["1", "2", "3", "4", "5", "7"]
    assert "6" not in [r.id for r in refs]  # issue number 6 is the pull request (n == 5)
    assert cursor == refs[-1].updated == fake.issues[130]["updated_at"]
    lists = fake.requests_to("GET", r"/issues$")
    assert (
        len(lists) == 2 and lists[0].query["sort"] == ["updated"] and lists[0].query["direction"] == ["asc"]
    )
    assert lists[0].query["per_page"] == ["100"] and lists[1].query["page"] == [
        "2"
    ]  # followed the Link header
    # Nothing changed: the overlap window re-reads the newest issues, and they are not returned again.
    again, same = gh.search_updated_since(cursor)
    assert (again, same) == ([], cursor)
    assert fake.requests_to("GET", r"/issues$")[-1].query["since"] == [
        "2026-03-01T09:01:10Z"
    ]  # cursor - 60 s
    fake.edit_issue(3, title="changed")
    fake.add_comment_as(7, "a comment updates the issue")
    refs, newer = gh.search_updated_since(cursor)
    assert [r.id for r in refs] == ["3", "7"] and newer > cursor


def test_search_respects_the_limit_and_resumes(fake: FakeGitHub, gh: GitHubConnector) -> None:
    for n in range(5):
        fake.add_issue(f"Issue {n}")
    refs, cursor = gh.search_updated_since(None, limit=2)
    assert [r.id for r in refs] == ["1", "2"]
    rest, last = gh.search_updated_since(cursor, limit=10)
    assert [r.id for r in rest] == ["3", "4", "5"] and last == fake.issues[5]["updated_at"]


def test_an_unchanged_poll_costs_one_304(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("Issue")
    _refs, cursor = gh.search_updated_since(None)
    _refs, cursor = gh.search_updated_since(cursor)  # remembers this URL's ETag
    fake.calls.clear()
    refs, same = gh.search_updated_since(cursor)
    assert (refs, same) == ([], cursor)
    assert len(fake.calls) == 1 and fake.calls[0].headers.get("If-None-Match")
    # The 304 itself: the fake answered it without a body (checked against the description's exemption).
    fake.edit_issue(1, title="changed")
    refs, _ = gh.search_updated_since(cursor)
    assert [r.id for r in refs] == ["1"]


def test_metadata(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("x", labels=["bug"])
    meta = gh.metadata()
    assert meta["statuses"] == ["Open", "Closed"] and meta["priorities"] == [] and meta["types"] == []
    assert {u["accountId"] for u in meta["users"]} == {"exalate-bot", "octocat", "hubot"}
    assert next(u for u in meta["users"] if u["accountId"] == "octocat")["email"] == "octocat@example.com"
    assert meta["labels"] == ["bug"]


# --- writes -----------------------------------------------------------------------------------------------


def test_create_item_with_labels_assignee_milestone_and_closed_status(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    fake.add_milestone("v1.0")
    ref = gh.create_item(
        {
            "summary": "Printer on fire",
            "description": "Since Tuesday",
            "labels": ["hw", "needs triage"],
            "assignee": {"email": "octocat@example.com", "displayName": "Octo"},
            "status": {"name": "Closed"},
            "resolution": {"name": "not_planned"},
            "priority": {"name": "High"},  # GitHub has none: ignored
            "customFields": {"milestone": "v1.0"},
            "project": {"key": "ignored"},
        }
    )
    issue = fake.issues[int(ref.id)]
    assert (ref.key, issue["title"], issue["body"]) == ("octo/widgets#1", "Printer on fire", "Since Tuesday")
    assert issue["_labels"] == ["hw", "needs triage"] and "needs triage" in fake.labels  # created by GitHub
    assert issue["_assignees"] == ["octocat"] and issue["_milestone"] == 1
    assert (issue["state"], issue["state_reason"]) == ("closed", "not_planned")
    assert [c.method for c in fake.writes] == ["POST", "PATCH"]  # GitHub creates open issues: close after
    assert gh.is_own_change(gh.get_item(ref.id))


def test_a_one_field_update_costs_exactly_one_write(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("Printer on fire", labels=["bug"])
    gh.get_item("1")
    before = gh.http.writes_made
    gh.update_item("1", {"summary": "Printer on fire, again"})
    assert gh.http.writes_made - before == 1
    assert fake.writes[-1].json == {"title": "Printer on fire, again"}  # only the changed field
    gh.update_item("1", {"status": {"name": "Closed"}, "resolution": {"name": "completed"}})
    assert gh.http.writes_made - before == 2
    assert fake.writes[-1].json == {"state": "closed", "state_reason": "completed"}
    gh.update_item("1", {"status": {"name": "open"}})
    assert fake.issues[1]["state"] == "open" and fake.issues[1]["state_reason"] == "reopened"
    gh.update_item("1", {"priority": {"name": "High"}, "dueDate": "2026-05-01"})  # nothing GitHub has
    assert gh.http.writes_made - before == 3


def test_unknown_status_reason_and_milestone_are_refused_with_the_valid_names(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    fake.add_issue("x")
    fake.add_milestone("v1.0")
    with pytest.raises(ConnectorError, match=r"no status 'In Progress'\. Valid statuses: Open, Closed"):
        gh.update_item("1", {"status": {"name": "In Progress"}})
    with pytest.raises(ConnectorError, match="Valid reasons: completed, not_planned, reopened, duplicate"):
        gh.update_item("1", {"resolution": {"name": "wontfix"}})
    with pytest.raises(ConnectorError, match="no milestone 'v9'. Valid milestones: v1.0"):
        gh.update_item("1", {"customFields": {"milestone": "v9"}})
    assert fake.writes == []


def test_assignee_by_login_email_or_left_alone_when_unknown(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("x")
    gh.update_item("1", {"assignee": {"accountId": "hubot"}})
    assert fake.issues[1]["_assignees"] == ["hubot"]
    gh.update_item("1", {"assignee": {"email": "nobody@example.com", "displayName": "Nobody"}})
    assert fake.issues[1]["_assignees"] == ["hubot"]  # no such user on GitHub: left as it is
    gh.update_item("1", {"assignee": None})
    assert fake.issues[1]["_assignees"] == []


def test_comments_add_edit_delete(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("x")
    cid = gh.add_comment("1", body="From support", internal=True, author="anna@example.com")
    gh.update_comment("1", cid, body="From support (edited)")
    assert [(c["body"], c["author"]["accountId"]) for c in gh.get_item("1")["comments"]] == [
        ("From support (edited)", "exalate-bot")
    ]
    gh.delete_comment("1", cid)
    gh.delete_comment("1", cid)  # already gone: no error
    assert gh.get_item("1")["comments"] == []


def test_attachments_become_marker_comments_and_cannot_be_opened(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    fake.add_issue("x")
    aid = gh.add_attachment("1", filename="log.txt", mime_type="text/plain", content=io.BytesIO(b"trace"))
    item = gh.get_item("1")
    assert item["comments"] == []  # the marker is not a comment
    [att] = item["attachments"]
    assert att["id"] == aid and (att["filename"], att["size"], att["mimeType"]) == (
        "log.txt",
        5,
        "text/plain",
    )
    assert att["sha256"] == hashlib.sha256(b"trace").hexdigest()
    assert "GitHub issues have no attachment API" in fake.comments[int(aid[1:])]["body"]
    with pytest.raises(ConnectorError, match="GitHub has no attachments"):
        gh.open_attachment("1", aid)
    gh.delete_attachment("1", aid)
    assert gh.get_item("1")["attachments"] == []


# --- credentials and errors ------------------------------------------------------------------------------


def test_credentials(fake: FakeGitHub) -> None:
    assert "exalate-bot" in GitHubConnector(make_instance()).test_credentials()
    bad = GitHubConnector(make_instance(credentials=json.dumps({"token": "wrong"})))
    with pytest.raises(ConnectorError) as err:
        bad.test_credentials()
    assert err.value.status == 401 and "token" in err.value.message and "Bad credentials" in err.value.message
    with pytest.raises(ConnectorError, match="lack token"):
        GitHubConnector(make_instance(credentials="{}")).get_item("1")
    with pytest.raises(ConnectorError, match="'repo' setting"):
        GitHubConnector(make_instance(settings={})).get_item("1")


def test_registered_and_built_by_get_connector() -> None:
    assert isinstance(get_connector(make_instance()), GitHubConnector)


def test_rate_limit_403_waits_for_the_reset_then_retries(
    fake: FakeGitHub, gh: GitHubConnector, clock: FakeClock
) -> None:
    fake.add_issue("x")
    reset = int(clock.time()) + 42
    fake.fail_next(
        Reply(
            403,
            {"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest"},
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        )
    )
    assert gh.get_item("1")["summary"] == "x"
    assert 42 in [round(s) for s in clock.sleeps]


def test_429_with_retry_after_and_a_502_are_retried(
    fake: FakeGitHub, gh: GitHubConnector, clock: FakeClock
) -> None:
    fake.add_issue("x")
    fake.fail_next(Reply(429, {"message": "slow down"}, {"Retry-After": "7"}), Reply(502, "Bad gateway"))
    assert gh.find_item("#1") is not None
    assert 7 in clock.sleeps and len(fake.requests_to("GET", r"/issues/1$")) == 3


def test_the_fake_rejects_what_github_would_reject(fake: FakeGitHub, gh: GitHubConnector) -> None:
    fake.add_issue("x")
    with pytest.raises(ContractViolation, match="state"):
        gh.http.request("PATCH", "repos/octo/widgets/issues/1", json={"state": "done"})
    with pytest.raises(ContractViolation):
        gh.http.request("POST", "repos/octo/widgets/issues", json={"body": "no title"})
    fake.violations.clear()  # these breaches were the point of this test


# --- webhooks ---------------------------------------------------------------------------------------------


def test_webhook_signature_good_bad_and_missing(fake: FakeGitHub) -> None:
    fake.add_issue("x")
    headers, body = fake.webhook("issues", "opened", 1, secret=SECRET)
    assert verify_webhook(headers, body, SECRET)
    assert GitHubConnector.verify_webhook({k.lower(): v for k, v in headers.items()}, body, SECRET)
    assert not verify_webhook(headers, body + b" ", SECRET)  # body changed
    assert not verify_webhook(headers, body, "another secret")
    assert not verify_webhook({k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}, body, SECRET)
    assert not verify_webhook(headers, body, "")  # no secret configured: refuse


def test_parse_webhook_issue_and_comment_events_once_per_delivery(fake: FakeGitHub) -> None:
    fake.add_issue("x")
    comment = fake.add_comment_as(1, "hello")
    headers, body = fake.webhook("issue_comment", "created", 1, secret=SECRET, comment_id=comment["id"])
    [ref] = parse_webhook(headers, body)
    assert (ref.id, ref.key, ref.updated) == ("1", "octo/widgets#1", fake.issues[1]["updated_at"])
    assert parse_webhook(headers, body) == []  # a redelivery (same X-GitHub-Delivery) has no second effect
    fake.edit_issue(1, title="y")
    headers, body = fake.webhook("issues", "edited", 1, secret=SECRET)
    assert [r.id for r in parse_webhook(headers, body)] == ["1"]


def test_parse_webhook_with_a_shared_seen_store_and_ignored_events(fake: FakeGitHub) -> None:
    fake.add_issue("x")
    fake.add_issue("a PR", pull_request=True)
    store: set[str] = set()

    def seen(delivery: str) -> bool:
        if delivery in store:
            return True
        store.add(delivery)
        return False

    headers, body = fake.webhook("issues", "closed", 1, secret=SECRET, delivery="d-1")
    assert len(parse_webhook(headers, body, seen=seen)) == 1
    assert parse_webhook(headers, body, seen=seen) == [] and store == {"d-1"}
    pr_comment = fake.add_comment_as(2, "on the PR")
    headers, body = fake.webhook("issue_comment", "created", 2, secret=SECRET, comment_id=pr_comment["id"])
    assert parse_webhook(headers, body) == []  # pull requests are not synced
    assert parse_webhook({"X-GitHub-Event": "ping", "X-GitHub-Delivery": "p"}, b"{}") == []


def test_is_own_change_by_webhook_sender_and_by_own_write_versions(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    ref = gh.create_item({"summary": "made by the node"})
    _h, body = fake.webhook("issues", "opened", int(ref.id), secret=SECRET, sender="exalate-bot")
    assert gh.is_own_change(json.loads(body))
    _h, body = fake.webhook("issues", "edited", int(ref.id), secret=SECRET, sender="octocat")
    assert not gh.is_own_change(json.loads(body))
    assert gh.is_own_change(gh.get_item(ref.id))
    assert gh.is_own_change(gh.find_item(ref.key))  # an ItemRef
    fake.edit_issue(int(ref.id), title="edited by a person")
    assert not gh.is_own_change(gh.get_item(ref.id))


# --- through the real pipeline -----------------------------------------------------------------------------


def _desk_and_github():  # type: ignore[no-untyped-def]
    """A built-in project and a GitHub instance joined by a local connection: (project, to, from GitHub)."""
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline

    desk = Instance.objects.create(name="Support desk", tracker_type="builtin")
    project = services.project_create(instance=desk, key="SUP", name="Support")
    github = make_instance()
    github.save()
    to_gh, from_gh = connection_create_local(name="Desk ⇄ GitHub", instance_a=desk, instance_b=github)
    pipeline.META_CACHE.clear()
    return project, to_gh, from_gh


@pytest.mark.django_db(transaction=True)
def test_sync_with_the_builtin_tracker_both_ways(fake: FakeGitHub) -> None:
    from instances.models import Issue
    from instances.tracker import services
    from replicas import pipeline
    from replicas.outbox import record_item_change

    project, to_gh, from_gh = _desk_and_github()

    # Built-in → GitHub: create, comment, edit, attachment.
    issue = services.issue_create(
        project=project,
        actor="anna@example.com",
        summary="Printer on fire",
        description="Since Tuesday",
        labels=["hw"],
    )
    services.comment_add(issue=issue, actor="anna@example.com", body="Seen twice today")
    pipeline.exalate(connection=to_gh, key=issue.key)
    [copy] = fake.issues.values()
    assert (copy["title"], copy["body"], copy["_labels"]) == ("Printer on fire", "Since Tuesday", ["hw"])
    assert [c["body"] for c in fake.comments.values()] == ["[anna <anna@example.com>] Seen twice today"]
    services.issue_update(
        issue=issue, actor="anna@example.com", summary="Printer on fire, again", status="Closed"
    )
    assert (copy["title"], copy["state"]) == ("Printer on fire, again", "closed")
    services.attachment_add(issue=issue, actor="anna@example.com", filename="log.txt", content=b"trace")
    markers = [c for c in fake.comments.values() if "log.txt" in c["body"]]
    assert len(markers) == 1 and "attachment" in markers[0]["body"]

    # GitHub → built-in: exalate an issue made on GitHub, then edits and a comment arrive by webhook.
    theirs = fake.add_issue("Keyboard missing", body="Desk 4", by="octocat")
    pipeline.exalate(connection=from_gh, key=f"octo/widgets#{theirs['number']}")
    mirrored = Issue.objects.exclude(pk=issue.pk).get(project=project)
    assert (mirrored.summary, mirrored.description, mirrored.status) == ("Keyboard missing", "Desk 4", "Open")

    fake.edit_issue(
        theirs["number"], title="Keyboard missing (desk 4)", state="closed", state_reason="completed"
    )
    fake.add_comment_as(theirs["number"], "Found it under the desk")
    headers, body = fake.webhook("issues", "closed", theirs["number"], secret=SECRET)
    assert verify_webhook(headers, body, SECRET)
    for ref in parse_webhook(headers, body):  # what the webhook intake view does
        with transaction.atomic():
            record_item_change(
                instance_id=from_gh.local_instance_id,
                item_id=ref.id,
                item_key=ref.key,
                actor="github:octocat",
            )
    mirrored.refresh_from_db()
    assert (mirrored.summary, mirrored.status) == ("Keyboard missing (desk 4)", "Closed")
    assert [c.body for c in mirrored.comments.all()] == ["Found it under the desk"]
    # No echo: the node's own writes to GitHub did not come back as new comments.
    assert len(fake.comments) == 3


def test_create_survives_a_failed_close(fake: FakeGitHub, gh: GitHubConnector) -> None:
    original = fake.update_issue
    fake.routes = [
        (m, r, (lambda call: Reply(503, {"message": "down"})) if h == original else h)
        for m, r, h in fake.routes
    ]
    ref = gh.create_item({"summary": "x", "status": {"name": "Closed"}})
    assert ref.id == "1" and len(fake.issues) == 1 and fake.issues[1]["state"] == "open"


# --- answers lost: find_created -----------------------------------------------------------------------------


def test_find_created_returns_the_nodes_issues_since_t_with_that_title_newest_first(
    fake: FakeGitHub, gh: GitHubConnector
) -> None:
    old = fake.add_issue("Printer on fire", by="exalate-bot")  # by the node, but before T
    since = fake.clock + timedelta(seconds=1)  # GitHub's times are whole seconds
    first = gh.create_item({"summary": "Printer on fire"})  # created at T exactly
    fake.edit_issue(old["number"], body="touched after T")  # updated since T, created before: not it
    fake.add_issue("Printer on fire", by="octocat")  # another user
    fake.add_issue("Printer on fire", by="exalate-bot", pull_request=True)  # a pull request
    gh.create_item({"summary": "Printer on fire, again"})  # another title
    second = gh.create_item({"summary": "Printer on fire"})
    closed = gh.create_item({"summary": "Printer on fire", "status": {"name": "Closed"}})  # state=all
    found = gh.find_created({"summary": "Printer on fire", "project": {"key": "octo/widgets"}}, since=since)
    assert [r.id for r in found] == [closed.id, second.id, first.id]
    assert found[0].key == f"octo/widgets#{closed.id}" and found[0].url.endswith(f"/issues/{closed.id}")
    [listed] = fake.requests_to("GET", r"/issues$")
    assert {k: v[0] for k, v in listed.query.items()} == {
        "creator": "exalate-bot",
        "state": "all",
        "sort": "created",
        "direction": "desc",
        "since": "2026-03-01T09:00:01Z",  # T minus a second: `since` filters by update time, a bound only
        "per_page": "100",
    }
    assert gh.find_created({"summary": "Nobody wrote this"}, since=since) == []
    assert gh.find_created({"summary": "Printer on fire"}, since=fake.clock + timedelta(seconds=1)) == []


@pytest.mark.django_db(transaction=True)
def test_a_create_and_a_comment_whose_answers_were_lost_are_adopted_not_repeated(fake: FakeGitHub) -> None:
    from instances.tracker import services
    from replicas import pipeline

    project, to_gh, from_gh = _desk_and_github()
    fake.clock = datetime.now(UTC)  # the pipeline looks for issues created since its event, by its own clock

    issue = services.issue_create(project=project, actor="anna@example.com", summary="Lost in transit")
    fake.lose_next_answer("POST", r"/repos/octo/widgets/issues$")
    pipeline.exalate(connection=to_gh, key=issue.key)
    [copy] = fake.issues.values()  # GitHub created it; the node never heard
    github_side = from_gh.twins.get()
    event = github_side.events.get(direction="in")
    assert event.status == "pending" and "may have done it" in event.error

    retry_now(github_side.pk)
    github_side.refresh_from_db()
    assert github_side.state == "synchronized", list(github_side.events.values_list("status", "error"))
    assert list(fake.issues) == [copy["number"]] and github_side.local_id == str(copy["number"])
    services.issue_update(issue=issue, actor="anna@example.com", summary="Found again")
    assert copy["title"] == "Found again"  # ...and it is the twin for good

    fake.lose_next_answer("POST", r"/issues/\d+/comments$")
    services.comment_add(issue=issue, actor="anna@example.com", body="Said once")
    assert len(fake.comments) == 1
    assert "may have done it" in github_side.events.get(status="pending").error
    retry_now(github_side.pk)
    github_side.refresh_from_db()
    assert github_side.state == "synchronized", list(github_side.events.values_list("status", "error"))
    assert [c["body"] for c in fake.comments.values()] == ["[anna <anna@example.com>] Said once"]
    assert [c.body for c in issue.comments.all()] == ["Said once"]  # and nothing came back
