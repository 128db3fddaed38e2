"""Trigger queries in the tracker's own language: Jira Cloud (JQL) and GitHub (issue search).

Facts of the real APIs these tests rely on:

Jira Cloud platform REST API v3 (Atlassian's description, ``tests/contracts/specs``, and its documentation):

* ``POST /rest/api/3/jql/parse?validation=strict`` with ``{"queries": [...]}`` answers 200 with, per query,
  ``errors`` (empty when valid): e.g. ``Field 'lables' does not exist or you do not have permission to view
  it.``, ``The value 'Nope' does not exist for the field 'status'.``, or ``Error in the JQL Query: ...``.
* ``POST /rest/api/3/jql/match`` with ``{"issueIds": [...], "jqls": [...]}`` answers, per JQL, the
  ``matchedIssues`` among the given ids and its ``errors``.
* ``POST /rest/api/3/search/jql`` takes ``jql``, ``fields``, ``maxResults``, ``nextPageToken`` and answers
  ``issues``, ``isLast``, ``nextPageToken``; an invalid JQL is a 400 with ``errorMessages``. Issue ids only
  grow, so ``id > N ORDER BY id ASC`` pages in a stable order. A JQL clause cannot follow ``ORDER BY``.

GitHub REST API 2022-11-28 (``GET /search/issues``, documented in "Search" and "Searching issues and pull
requests"; not part of the repository's copy of the description, so the fake checks it by hand):

* Parameters ``q`` (required), ``sort`` (``created``, ``updated``, ``comments``, reactions…), ``order``
  (``asc``/``desc``), ``per_page`` (≤ 100), ``page``; only the first 1000 results of a query are served.
* The answer is ``{total_count, incomplete_results, items}``; items are issues (and pull requests) with a
  ``score``. Results are ordered by the sort field only; the order of equal values is not defined.
* ``repo:owner/name``, ``is:issue``, ``is:open``, ``state:``, ``label:``, ``-label:``, ``no:``,
  ``assignee:``, ``author:``, ``milestone:``, ``created:>=<ISO 8601 time>`` are qualifiers; a word that is
  not a known qualifier (``lable:sync``) is searched as text, without an error.
* An invalid query is a 422 ``{"message": "Validation Failed", "errors": [{"message", "resource": "Search",
  "field": "q", "code": "invalid"}]}``: unknown users (``The listed users cannot be searched …``), queries
  longer than 256 characters.
* The search index lags writes by seconds (the fakes are immediately consistent).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction

from instances.connectors import ConnectorError
from instances.connectors.github import GitHubConnector
from instances.connectors.github import reset_memory as reset_github
from instances.connectors.jira import JiraConnector, jql_condition
from instances.connectors.jira import reset_memory as reset_jira
from instances.models import Instance
from tests.connectors.fakes.github import API as GITHUB_API
from tests.connectors.fakes.github import TOKEN as GITHUB_TOKEN
from tests.connectors.fakes.github import FakeGitHub
from tests.connectors.fakes.jira import API_TOKEN, EMAIL, SITE, FakeJira
from tests.connectors.fakes.support import FakeClock, wired


def jira_instance() -> Instance:
    return Instance(
        name="Support Jira",
        tracker_type="jira",
        url=SITE,
        credentials=json.dumps({"email": EMAIL, "api_token": API_TOKEN}),
        settings={"project": "SUP", "issue_type": "Task"},
    )


def github_instance() -> Instance:
    return Instance(
        name="Widgets on GitHub",
        tracker_type="github",
        url=GITHUB_API,
        credentials=json.dumps({"token": GITHUB_TOKEN}),
        settings={"repo": "octo/widgets"},
    )


@pytest.fixture
def jira_fake():  # type: ignore[no-untyped-def]
    reset_jira()
    fake = FakeJira()
    with wired(fake, FakeClock()):
        yield fake


@pytest.fixture
def jira(jira_fake: FakeJira) -> JiraConnector:
    return JiraConnector(jira_instance())


@pytest.fixture
def gh_fake():  # type: ignore[no-untyped-def]
    reset_github()
    fake = FakeGitHub()
    with wired(fake, FakeClock()):
        yield fake


@pytest.fixture
def gh(gh_fake: FakeGitHub) -> GitHubConnector:
    return GitHubConnector(github_instance())


def page_through(connector: Any, query: str, *, limit: int) -> list[str]:
    """What bulk exalate does: ask for the page after the last id until a page is empty."""
    ids: list[str] = []
    after = None
    while True:
        page = connector.query_search(query, after=after, limit=limit)
        if not page:
            return ids
        assert len(page) <= limit
        ids += [ref.id for ref in page]
        after = page[-1].id


# --- Jira: JQL --------------------------------------------------------------------------------------------


def test_jql_condition_drops_a_trailing_order_by_outside_quotes() -> None:
    assert jql_condition(" labels = sync ORDER BY created DESC ") == "labels = sync"
    assert jql_condition('summary ~ "order by" AND labels = x') == 'summary ~ "order by" AND labels = x'
    assert jql_condition("ORDER BY key") == ""


def test_jira_valid_jql_is_accepted_by_jiras_strict_parser(jira_fake: FakeJira, jira: JiraConnector) -> None:
    jira.query_validate("labels = sync AND priority in (High, Highest) ORDER BY created DESC")
    [call] = jira_fake.requests_to("POST", "/jql/parse$")
    assert call.arg("validation") == "strict"
    assert call.json == {"queries": ["labels = sync AND priority in (High, Highest)"]}
    jira.query_validate("")  # every issue of the project: nothing to ask


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lables = sync", "Field 'lables' does not exist or you do not have permission to view it."),
        ("status = Nope", "The value 'Nope' does not exist for the field 'status'."),
        ("labels sync", "Error in the JQL Query: Expecting operator but got 'sync'."),
    ],
)
def test_jira_invalid_jql_is_refused_with_jiras_message(
    jira: JiraConnector, query: str, message: str
) -> None:
    with pytest.raises(ConnectorError) as refused:
        jira.query_validate(query)
    assert refused.value.status == 400
    assert message in refused.value.message and "Fix the query" in refused.value.message


def test_jira_matches_asks_jira_about_the_one_issue(jira_fake: FakeJira, jira: JiraConnector) -> None:
    tagged = jira_fake.add_issue("Tagged")
    jira_fake.edit(tagged["key"], labels=["sync"], priority="2")
    plain = jira_fake.add_issue("Plain")
    query = "labels = sync AND priority = High"
    assert jira.query_matches(query, jira.get_item(tagged["id"])) is True
    assert jira.query_matches(query, jira.get_item(plain["id"])) is False
    call = jira_fake.requests_to("POST", "/jql/match$")[-1]
    assert call.json == {"issueIds": [int(plain["id"])], "jqls": [f'project = "SUP" AND ({query})']}
    with pytest.raises(ConnectorError, match="Field 'lables' does not exist"):
        jira.query_matches("lables = sync", jira.get_item(plain["id"]))


def test_jira_search_pages_by_id_in_a_stable_order(jira_fake: FakeJira, jira: JiraConnector) -> None:
    issues = [jira_fake.add_issue(f"Issue {n}") for n in range(9)]
    for n, issue in enumerate(issues):
        if n % 3:
            jira_fake.edit(issue["key"], labels=["sync"])
    matching = [i["id"] for n, i in enumerate(issues) if n % 3]
    first = jira.query_search("labels = sync ORDER BY updated DESC", limit=4)
    assert [r.id for r in first] == matching[:4]
    assert [r.key for r in first] == ["SUP-2", "SUP-3", "SUP-5", "SUP-6"]
    # An edit between pages does not move anything (the order is by id), a new issue comes last.
    jira_fake.edit(issues[1]["key"], summary="Edited")
    late = jira_fake.add_issue("Late")
    jira_fake.edit(late["key"], labels=["sync"])
    rest = jira.query_search("labels = sync ORDER BY updated DESC", after=first[-1].id, limit=4)
    assert [r.id for r in rest] == [*matching[4:], late["id"]]
    assert jira.query_search("labels = sync", after=late["id"]) == []
    assert page_through(jira, "labels = sync", limit=2) == [*matching, late["id"]]
    call = jira_fake.requests_to("POST", "/search/jql$")[-1]
    assert call.json["jql"] == f'project = "SUP" AND (labels = sync) AND id > {late["id"]} ORDER BY id ASC'


def test_jira_search_follows_next_page_tokens(jira_fake: FakeJira, jira: JiraConnector) -> None:
    for n in range(150):
        jira_fake.add_issue(f"Issue {n}")
    refs = jira.query_search("", limit=130)
    assert len(refs) == 130 and [int(r.id) for r in refs] == sorted(int(r.id) for r in refs)
    bodies = [c.json for c in jira_fake.requests_to("POST", "/search/jql$")]
    assert [b["maxResults"] for b in bodies] == [100, 30] and "nextPageToken" in bodies[1]


# --- GitHub: issue search ---------------------------------------------------------------------------------


def test_github_valid_query_is_accepted(gh_fake: FakeGitHub, gh: GitHubConnector) -> None:
    gh.query_validate("label:sync state:open")
    gh.query_validate("printer -label:wontfix no:assignee")
    gh.query_validate('"error: disk full" label:sync')  # a colon inside a phrase is text, not a qualifier
    call = gh_fake.requests_to("GET", "/search/issues$")[0]
    assert call.arg("q") == "repo:octo/widgets is:issue label:sync state:open"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("author:nobody-here", "The listed users cannot be searched"),
        ("printer " * 40, "The search is longer than 256 characters."),
    ],
)
def test_github_invalid_query_is_refused_with_githubs_message(
    gh: GitHubConnector, query: str, message: str
) -> None:
    with pytest.raises(ConnectorError) as refused:
        gh.query_validate(query)
    assert refused.value.status == 400
    assert message in refused.value.message and "save the trigger again" in refused.value.message


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lable:sync", "GitHub issue search has no qualifier 'lable:'"),
        ("repo:octo/other label:sync", "the node limits it to octo/widgets"),
        ("is:pr", "pull requests are not synced"),
    ],
)
def test_github_queries_github_would_misread_are_refused_before_asking(
    gh_fake: FakeGitHub, gh: GitHubConnector, query: str, message: str
) -> None:
    with pytest.raises(ConnectorError, match=message) as refused:
        gh.query_validate(query)
    assert refused.value.status == 400 and gh_fake.calls == []


def test_github_matches(gh_fake: FakeGitHub, gh: GitHubConnector) -> None:
    gh_fake.add_issue("Tagged", labels=["sync"])
    gh_fake.add_issue("Plain", labels=["other"])
    gh_fake.add_issue("Closed", labels=["sync"])
    gh_fake.edit_issue(3, state="closed")
    query = "label:sync state:open"
    assert gh.query_matches(query, gh.get_item("1")) is True
    assert gh.query_matches(query, gh.get_item("2")) is False
    assert gh.query_matches(query, gh.get_item("3")) is False
    call = gh_fake.requests_to("GET", "/search/issues$")[-1]
    created = gh_fake.issues[3]["created_at"]
    assert call.arg("q") == f"repo:octo/widgets is:issue {query} created:>={created}"


def test_github_search_pages_by_creation_time_and_number(gh_fake: FakeGitHub, gh: GitHubConnector) -> None:
    for n in range(1, 10):
        gh_fake.add_issue(f"Issue {n}", labels=["sync"] if n % 3 else [])
    gh_fake.add_issue("A pull request", labels=["sync"], pull_request=True)
    for number in (4, 5, 7):  # created in the same second: GitHub leaves their order open
        gh_fake.issues[number]["created_at"] = gh_fake.issues[4]["created_at"]
    first = gh.query_search("label:sync", limit=3)
    assert [r.id for r in first] == ["1", "2", "4"]
    assert first[0].key == "octo/widgets#1"
    gh_fake.edit_issue(1, title="Edited")  # edits do not move anything
    rest = gh.query_search("label:sync", after="4", limit=3)
    assert [r.id for r in rest] == ["5", "7", "8"]
    assert gh.query_search("label:sync", after="8", limit=3) == []
    assert page_through(gh, "label:sync", limit=2) == ["1", "2", "4", "5", "7", "8"]
    calls = gh_fake.requests_to("GET", "/search/issues$")
    assert {(c.arg("sort"), c.arg("order")) for c in calls} == {("created", "asc")}
    # A fresh connector (bulk builds one per job) reads the creation time of `after` from the issue.
    assert [r.id for r in GitHubConnector(github_instance()).query_search("label:sync", after="5")] == [
        "7",
        "8",
    ]


# --- end to end: built-in ⇄ tracker, a trigger and a bulk exalate ------------------------------------------


def _pair(tracker: Instance) -> tuple[Any, Any, Any]:
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline

    desk = Instance.objects.create(name="Support desk", tracker_type="builtin")
    project = services.project_create(instance=desk, key="DESK", name="Desk")
    tracker.save()
    _, from_tracker = connection_create_local(name="Desk ⇄ tracker", instance_a=desk, instance_b=tracker)
    pipeline.META_CACHE.clear()
    return project, from_tracker, tracker


def _changed(tracker: Instance, item_id: str, key: str) -> None:
    """What the webhook intake does for a change made in the tracker."""
    from replicas.outbox import record_item_change

    with transaction.atomic():
        record_item_change(instance_id=tracker.pk, item_id=item_id, item_key=key, actor="tracker:anna")


def _refused_everywhere(api: Any, connection: Any, query: str, message: str) -> None:
    from replicas import triggers
    from replicas.models import Trigger

    with pytest.raises(ConnectorError, match=message):
        triggers.trigger_create(connection=connection, query=query)
    r = api.post(f"/api/v1/connections/{connection.pk}/triggers/", {"query": query}, format="json")
    assert r.status_code == 400 and message in json.dumps(r.json())
    assert not Trigger.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_jira_trigger_and_bulk_exalate_end_to_end(jira_fake: FakeJira, api: Any) -> None:
    from instances.models import Issue
    from replicas import bulk, triggers
    from replicas.models import BulkJob, Twin

    project, from_jira, instance = _pair(jira_instance())
    _refused_everywhere(api, from_jira, "lables = sync", "Field 'lables' does not exist")
    old = [jira_fake.add_issue(f"Old {n}") for n in range(5)]
    for issue in old[1:4]:
        jira_fake.edit(issue["key"], labels=["sync"])
    trigger = triggers.trigger_create(connection=from_jira, query="labels = sync")

    tagged = jira_fake.add_issue("Printer on fire")
    jira_fake.edit(tagged["key"], labels=["sync"])
    plain = jira_fake.add_issue("Keyboard missing")
    _changed(instance, tagged["id"], tagged["key"])
    _changed(instance, plain["id"], plain["key"])
    assert list(Issue.objects.filter(project=project).values_list("summary", flat=True)) == [
        "Printer on fire"
    ]
    assert list(Twin.objects.filter(connection=trigger.connection).values_list("local_key", flat=True)) == [
        tagged["key"]
    ]

    job = bulk.bulk_start(connection=from_jira, kind=BulkJob.Kind.EXALATE, trigger=trigger)
    job.refresh_from_db()
    assert (job.status, job.total, job.errors) == ("done", 4, [])
    assert sorted(Issue.objects.filter(project=project).values_list("summary", flat=True)) == [
        "Old 1",
        "Old 2",
        "Old 3",
        "Printer on fire",
    ]


@pytest.mark.django_db(transaction=True)
def test_github_trigger_and_bulk_exalate_end_to_end(gh_fake: FakeGitHub, api: Any) -> None:
    from instances.models import Issue
    from replicas import bulk, triggers
    from replicas.models import BulkJob, Twin

    project, from_gh, instance = _pair(github_instance())
    _refused_everywhere(api, from_gh, "author:nobody-here", "The listed users cannot be searched")
    for n in range(5):
        gh_fake.add_issue(f"Old {n}", labels=["sync"] if n in (1, 2, 3) else [])
    gh_fake.edit_issue(4, state="closed")  # "Old 3"
    trigger = triggers.trigger_create(connection=from_gh, query="label:sync state:open")

    tagged = gh_fake.add_issue("Printer on fire", labels=["sync"])
    plain = gh_fake.add_issue("Keyboard missing")
    _changed(instance, str(tagged["number"]), f"octo/widgets#{tagged['number']}")
    _changed(instance, str(plain["number"]), f"octo/widgets#{plain['number']}")
    assert list(Issue.objects.filter(project=project).values_list("summary", flat=True)) == [
        "Printer on fire"
    ]
    assert list(Twin.objects.filter(connection=trigger.connection).values_list("local_key", flat=True)) == [
        "octo/widgets#6"
    ]

    job = bulk.bulk_start(connection=from_gh, kind=BulkJob.Kind.EXALATE, trigger=trigger)
    job.refresh_from_db()
    assert (job.status, job.total, job.errors) == ("done", 3, [])
    assert sorted(Issue.objects.filter(project=project).values_list("summary", flat=True)) == [
        "Old 1",
        "Old 2",
        "Printer on fire",
    ]
