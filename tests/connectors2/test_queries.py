"""Trigger queries in the tracker's own language: Azure DevOps (WIQL), Zendesk (search), ServiceNow (encoded
queries), GitLab (issue list filters) and Salesforce (SOQL conditions).

Facts of the real APIs these tests rely on:

Azure DevOps (REST 7.2, the Swagger in ``specs/`` and the WIQL syntax reference):

* ``POST {org}/{project}/{team}/_apis/wit/wiql?$top=`` with ``{"query": "SELECT [System.Id] FROM WorkItems
  WHERE … ORDER BY …"}`` answers ``workItems: [{id, url}]`` in the query's order, at most ``$top``.
  ``@project`` is the project of the URL. ``[System.Tags] CONTAINS 'x'`` matches the tag x.
* An invalid query is a 400 whose ``message`` says why: ``TF51005: The query references a field that does
  not exist. The error is caused by «[System.Tagz]».``, ``TF51006: …`` for syntax errors.

Zendesk Support (``GET /api/v2/search.json``, "Search" and "Searching tickets"):

* ``query`` holds ``type:ticket`` and keywords (``status<solved``, ``tags:sync``, ``priority:high``,
  ``created>=<ISO 8601 time>``) and words; an unknown keyword is searched as text, without an error.
* ``sort_by=created_at``, ``sort_order=asc``, ``page``/``per_page`` (≤ 100; the first 1000 results);
  the answer has ``results`` (each with ``result_type``), ``next_page``, ``count``. The search index lags
  writes (the fake is immediately consistent).
* Errors are ``{"error", "description"}``. Zendesk does not document the wording for a search it cannot
  parse: the fake's answer to an unbalanced quote (400) is an assumption in that shape.

ServiceNow (Table API, "Encoded query strings"):

* ``GET /api/now/table/{table}?sysparm_query=`` takes an encoded query: ``^`` is AND, ``^OR`` ORs the next
  condition with the previous one, ``^NQ`` starts another query whose records are added, ``ORDERBY<field>``
  orders; operators are upper case (``=``, ``!=``, ``LIKE``, ``STARTSWITH``, ``IN``, ``ISEMPTY``…) and field
  names lower case. A record read without ``sysparm_fields`` carries every field of the table.
* With the default ``glide.invalid_query.returns_no_rows=false`` a condition on an unknown field is ignored
  (the query matches more records, no error). Numbers (``INC0010001``) only grow and compare as strings.

GitLab (REST v4, "Issues API"):

* ``GET /projects/:id/issues`` filters with ``labels`` (all of them; ``None``/``Any``), ``not[labels]``,
  ``state`` (``opened``/``closed``/``all``; all by default), ``iids[]``, ``author_username``,
  ``assignee_username``, ``search``, ``issue_type``, ``created_after`` (inclusive) …; a bad value is a 400
  ``{"error": "<param> does not have a valid value"}``; an unknown parameter is ignored. ``order_by`` does not
  offer the iid: ``created_at`` with ``sort=asc``; pages by ``X-Next-Page``.

Salesforce (REST ``/query`` and the SOQL reference):

* ``GET /services/data/vXX.X/query?q=SELECT … FROM Case WHERE … ORDER BY Id LIMIT n``; record ids of one
  object can be compared (``Id > '500…'``) and ordered. An unknown field is a 400
  ``[{"errorCode": "INVALID_FIELD", "message": "… No such column 'Priorty' on entity 'Case'. …"}]``, a syntax
  error ``MALFORMED_QUERY`` (``unexpected token: …``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.db import transaction

from instances.connectors.azure import AzureDevOpsConnector
from instances.connectors.base import ConnectorError
from instances.connectors.gitlab import GitLabConnector
from instances.connectors.salesforce import SalesforceConnector
from instances.connectors.servicenow import ServiceNowConnector
from instances.connectors.zendesk import ZendeskConnector
from tests.connectors2.conftest import make_instance, wire
from tests.connectors2.fakes.azure import FakeAzureDevOps
from tests.connectors2.fakes.gitlab import FakeGitLab
from tests.connectors2.fakes.salesforce import FakeSalesforce
from tests.connectors2.fakes.servicenow import FakeServiceNow
from tests.connectors2.fakes.zendesk import FakeZendesk


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


def changed(pair: Any, item_id: str, key: str) -> None:
    """What the webhook intake does for a change a person made in the tracker."""
    from replicas import pipeline

    with transaction.atomic():
        pipeline.on_item_changed(
            instance_id=pair.tracker.pk, item_id=item_id, item_key=key, actor="tracker-user"
        )


def refused_everywhere(connection: Any, query: str, message: str) -> None:
    """Neither replicas.triggers nor the API stores a trigger the tracker refuses."""
    from rest_framework.test import APIClient

    from replicas import triggers
    from replicas.models import Trigger

    with pytest.raises(ConnectorError, match=message):
        triggers.trigger_create(connection=connection, query=query)
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_user("ops", "ops@example.com", "pw-ops-123", is_staff=True)
    api = APIClient()
    api.force_authenticate(admin)
    r = api.post(f"/api/v1/connections/{connection.pk}/triggers/", {"query": query}, format="json")
    assert r.status_code == 400 and message in json.dumps(r.json())
    assert not Trigger.objects.exists()


def end_to_end(pair: Any, *, query: str, tagged: Any, plain: Any, old_matching: list[str]) -> None:
    """A trigger on the tracker side picks up a matching new item and ignores another; a bulk exalate over
    the query then syncs exactly the matching items (the old ones and the new one)."""
    from instances.models import Issue
    from replicas import bulk, triggers
    from replicas.models import BulkJob, Twin

    trigger = triggers.trigger_create(connection=pair.side_tracker, query=query)
    changed(pair, tagged.id, tagged.key)
    changed(pair, plain.id, plain.key)
    assert list(Issue.objects.filter(project=pair.project).values_list("summary", flat=True)) == [
        "Tagged new"
    ]
    assert list(Twin.objects.filter(connection=pair.side_tracker).values_list("local_id", flat=True)) == [
        tagged.id
    ]
    job = bulk.bulk_start(connection=pair.side_tracker, kind=BulkJob.Kind.EXALATE, trigger=trigger)
    job.refresh_from_db()
    assert (job.status, job.errors) == ("done", [])
    assert job.total == len(old_matching) + 1
    assert sorted(Issue.objects.filter(project=pair.project).values_list("summary", flat=True)) == sorted(
        [*old_matching, "Tagged new"]
    )
    pair.assert_settled()


# --- Azure DevOps: WIQL conditions --------------------------------------------------------------------------


@pytest.fixture
def ado(clock):  # type: ignore[no-untyped-def]
    fake = FakeAzureDevOps(clock)
    with wire(fake):
        yield fake


def azure_connector(server: FakeAzureDevOps) -> AzureDevOpsConnector:
    return AzureDevOpsConnector(
        make_instance("azure", server.base_url, {"pat": server.pat}, {"project": server.project})
    )


def azure_items(connector: AzureDevOpsConnector, specs: list[tuple[str, list[str]]]) -> list[str]:
    return [connector.create_item({"summary": title, "labels": tags}).id for title, tags in specs]


def wiql_of(server: FakeAzureDevOps) -> str:
    return [c for c in server.calls if c.path.endswith("/wiql")][-1].json()["query"]


def test_azure_valid_condition_is_accepted_and_scoped_to_the_project(ado: FakeAzureDevOps) -> None:
    azure = azure_connector(ado)
    azure.query_validate("[System.Tags] CONTAINS 'sync' AND [System.State] = 'New'")
    assert wiql_of(ado) == (
        "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project AND ([System.Tags] "
        "CONTAINS 'sync' AND [System.State] = 'New') ORDER BY [System.Id]"
    )
    # A full query is cut down to its condition; its ORDER BY is the node's.
    azure.query_validate(
        "SELECT [System.Title] FROM WorkItems WHERE [System.Tags] CONTAINS 'sync' ORDER BY [System.Title]"
    )
    assert "AND ([System.Tags] CONTAINS 'sync') ORDER BY [System.Id]" in wiql_of(ado)
    with pytest.raises(ConnectorError, match="use FROM WorkItems"):
        azure.query_validate("SELECT [System.Id] FROM WorkItemLinks WHERE [Source].[System.Id] = 1")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("[System.Tagz] CONTAINS 'sync'", "TF51005: The query references a field that does not exist."),
        ("[System.Tags] 'sync'", "TF51006: Expecting comparison operator. The error is caused by «'sync'»."),
    ],
)
def test_azure_invalid_condition_is_refused_with_azures_message(
    ado: FakeAzureDevOps, query: str, message: str
) -> None:
    with pytest.raises(ConnectorError) as refused:
        azure_connector(ado).query_validate(query)
    assert refused.value.status == 400
    assert message in refused.value.message and "save the trigger again" in refused.value.message


def test_azure_matches(ado: FakeAzureDevOps) -> None:
    azure = azure_connector(ado)
    tagged, plain = azure_items(azure, [("Tagged", ["sync", "hw"]), ("Plain", ["hw"])])
    query = "[System.Tags] CONTAINS 'sync'"
    assert azure.query_matches(query, azure.get_item(tagged)) is True
    assert azure.query_matches(query, azure.get_item(plain)) is False
    assert wiql_of(ado).endswith(f"AND [System.Id] = {plain} ORDER BY [System.Id]")


def test_azure_search_pages_by_id(ado: FakeAzureDevOps) -> None:
    azure = azure_connector(ado)
    ids = azure_items(azure, [(f"Item {n}", ["sync"] if n % 3 else []) for n in range(9)])
    matching = [i for n, i in enumerate(ids) if n % 3]
    first = azure.query_search("[System.Tags] CONTAINS 'sync'", limit=4)
    assert [r.id for r in first] == matching[:4] and first[0].key == f"#{matching[0]}"
    ado.human_edit(int(matching[0]), **{"System.Title": "Edited"})  # edits do not move anything
    rest = azure.query_search("[System.Tags] CONTAINS 'sync'", after=first[-1].id, limit=4)
    assert [r.id for r in rest] == matching[4:]
    assert page_through(azure, "[System.Tags] CONTAINS 'sync'", limit=2) == matching
    assert wiql_of(ado).endswith(f"AND [System.Id] > {matching[-1]} ORDER BY [System.Id]")
    last = [c for c in ado.calls if c.path.endswith("/wiql")][-1]
    assert last.query["$top"] == "2"


@pytest.mark.django_db(transaction=True)
def test_azure_trigger_and_bulk_exalate_end_to_end(ado: FakeAzureDevOps) -> None:
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create("azure", ado.base_url, {"pat": ado.pat}, {"project": "Demo"})
    refused_everywhere(pair.side_tracker, "[System.Tagz] CONTAINS 'sync'", "TF51005")
    azure = pair.connector()
    azure_items(azure, [("Old 0", []), ("Old 1", ["sync"]), ("Old 2", ["sync", "hw"]), ("Old 3", ["hw"])])
    [tagged, plain] = [
        azure.create_item({"summary": "Tagged new", "labels": ["sync"]}),
        azure.create_item({"summary": "Plain new", "labels": []}),
    ]
    end_to_end(
        pair,
        query="[System.Tags] CONTAINS 'sync'",
        tagged=tagged,
        plain=plain,
        old_matching=["Old 1", "Old 2"],
    )


# --- Zendesk: search ----------------------------------------------------------------------------------------


@pytest.fixture
def zd(clock):  # type: ignore[no-untyped-def]
    fake = FakeZendesk(clock)
    with wire(fake):
        yield fake


def zendesk_connector(server: FakeZendesk) -> ZendeskConnector:
    creds = {"email": server.email, "api_token": server.api_token}
    return ZendeskConnector(make_instance("zendesk", server.host, creds, {}))


def zendesk_tickets(connector: ZendeskConnector, specs: list[tuple[str, list[str]]]) -> list[str]:
    return [
        connector.create_item({"summary": title, "description": "Details", "labels": tags}).id
        for title, tags in specs
    ]


def searches(server: FakeZendesk) -> list[Any]:
    return [c for c in server.calls if c.path == "/api/v2/search.json"]


def test_zendesk_valid_query_is_accepted(zd: FakeZendesk) -> None:
    zendesk = zendesk_connector(zd)
    zendesk.query_validate("tags:sync status<solved")
    zendesk.query_validate('printer -tags:spam priority:high "paper jam" custom_field_77:emea')
    call = searches(zd)[0]
    assert call.query["query"] == "type:ticket tags:sync status<solved"
    assert (call.query["sort_by"], call.query["sort_order"]) == ("created_at", "asc")


@pytest.mark.parametrize(
    ("query", "message", "asked"),
    [
        ('tags:sync "paper jam', "Zendesk refused the trigger's search: The search has an unbalanced", True),
        ("tagz:sync", "Zendesk search has no ticket keyword 'tagz'", False),
        ("status:opened", "'opened' is not a Zendesk ticket status; use one of new, open", False),
        ("type:user", "Remove 'type:user' from the trigger", False),
    ],
)
def test_zendesk_invalid_query_is_refused(zd: FakeZendesk, query: str, message: str, asked: bool) -> None:
    with pytest.raises(ConnectorError, match=message) as refused:
        zendesk_connector(zd).query_validate(query)
    assert refused.value.status == 400 and bool(searches(zd)) == asked


def test_zendesk_matches(zd: FakeZendesk) -> None:
    zendesk = zendesk_connector(zd)
    tagged, plain, solved = zendesk_tickets(
        zendesk, [("Tagged", ["sync"]), ("Plain", []), ("Done", ["sync"])]
    )
    zd.human_update(int(solved), status="solved")
    query = "tags:sync status<solved"
    assert zendesk.query_matches(query, zendesk.get_item(tagged)) is True
    assert zendesk.query_matches(query, zendesk.get_item(plain)) is False
    assert zendesk.query_matches(query, zendesk.get_item(solved)) is False
    created = zd.tickets[int(solved)]["created_at"]
    assert searches(zd)[-1].query["query"] == f"type:ticket {query} created>={created}"


def test_zendesk_search_pages_by_creation_time_and_id(zd: FakeZendesk) -> None:
    zendesk = zendesk_connector(zd)
    ids = zendesk_tickets(zendesk, [(f"Ticket {n}", ["sync"] if n % 3 else []) for n in range(1, 10)])
    for tid in (4, 5, 7):  # created in the same second: Zendesk leaves their order open
        zd.tickets[tid]["created_at"] = zd.tickets[4]["created_at"]
    matching = [i for n, i in enumerate(ids, start=1) if n % 3]
    assert matching == ["1", "2", "4", "5", "7", "8"]
    first = zendesk.query_search("tags:sync", limit=3)
    assert [r.id for r in first] == ["1", "2", "4"] and first[0].key == "#1"
    rest = zendesk.query_search("tags:sync", after="4", limit=3)
    assert [r.id for r in rest] == ["5", "7", "8"]
    assert zendesk.query_search("tags:sync", after="8") == []
    assert page_through(zendesk, "tags:sync", limit=2) == matching
    # A fresh connector reads the creation time of `after` from the ticket.
    assert [r.id for r in zendesk_connector(zd).query_search("tags:sync", after="5")] == ["7", "8"]


@pytest.mark.django_db(transaction=True)
def test_zendesk_trigger_and_bulk_exalate_end_to_end(zd: FakeZendesk) -> None:
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create(
        "zendesk",
        zd.host,
        {"email": zd.email, "api_token": zd.api_token},
        {},
        statuses=["Open", "Pending", "Solved", "Closed"],
    )
    refused_everywhere(pair.side_tracker, 'tags:sync "jam', "unbalanced double quote")
    zendesk = pair.connector()
    zendesk_tickets(zendesk, [("Old 0", []), ("Old 1", ["sync"]), ("Old 2", ["sync"]), ("Old 3", ["hw"])])
    tagged = zendesk.create_item({"summary": "Tagged new", "description": "x", "labels": ["sync"]})
    plain = zendesk.create_item({"summary": "Plain new", "description": "x", "labels": []})
    end_to_end(pair, query="tags:sync", tagged=tagged, plain=plain, old_matching=["Old 1", "Old 2"])


# --- ServiceNow: encoded queries ----------------------------------------------------------------------------


@pytest.fixture
def snow(clock):  # type: ignore[no-untyped-def]
    fake = FakeServiceNow(clock)
    with wire(fake):
        yield fake


def servicenow_connector(server: FakeServiceNow) -> ServiceNowConnector:
    creds = {"username": server.username, "password": server.password}
    settings = {"close_code": "Solved (Permanently)", "close_notes": "Done"}
    return ServiceNowConnector(make_instance("servicenow", server.host, creds, settings))


def incidents(connector: ServiceNowConnector, specs: list[tuple[str, str]]) -> list[str]:
    return [connector.create_item({"summary": title, "priority": {"name": prio}}).id for title, prio in specs]


def table_queries(server: FakeServiceNow) -> list[str]:
    return [
        c.query["sysparm_query"]
        for c in server.calls
        if c.path == "/api/now/table/incident" and c.method == "GET" and "sysparm_query" in c.query
    ]


def test_servicenow_valid_query_is_accepted(snow: FakeServiceNow) -> None:
    sn = servicenow_connector(snow)
    incidents(sn, [("One", "1 - Critical")])
    sn.query_validate("active=true^priority=1^ORDERBYDESCsys_created_on")
    sn.query_validate(
        "short_descriptionLIKEprinter^ORcategory=network^NQcaller_id.email=abel@customer.example"
    )
    assert table_queries(snow)[-2:] == [
        "active=true^priority=1",
        "short_descriptionLIKEprinter^ORcategory=network^NQcaller_id.email=abel@customer.example",
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("active=true^prioritty=1", "The incident table has no field 'prioritty' (in 'prioritty=1')"),
        ("Priority=1", "'Priority=1' is not a ServiceNow encoded query condition"),
    ],
)
def test_servicenow_fields_servicenow_would_ignore_are_refused(
    snow: FakeServiceNow, query: str, message: str
) -> None:
    sn = servicenow_connector(snow)
    incidents(sn, [("One", "1 - Critical")])
    # What ServiceNow itself does with the unknown field: nothing — the condition is dropped.
    assert len(snow.select(list(snow.tables["incident"].values()), "active=true^prioritty=5")) == 1
    with pytest.raises(ConnectorError, match=re.escape(message)) as refused:
        sn.query_validate(query)
    assert refused.value.status == 400
    assert "ServiceNow" in refused.value.message


def test_servicenow_refusal_of_the_table_api_is_passed_on(snow: FakeServiceNow) -> None:
    sn = ServiceNowConnector(
        make_instance(
            "servicenow", snow.host, {"username": snow.username, "password": snow.password}, {"table": "nope"}
        )
    )
    with pytest.raises(ConnectorError, match="Invalid table") as refused:
        sn.query_validate("active=true")
    assert refused.value.status == 400


def test_servicenow_matches(snow: FakeServiceNow) -> None:
    sn = servicenow_connector(snow)
    urgent, low, closed = incidents(
        sn, [("Urgent", "1 - Critical"), ("Low", "4 - Low"), ("Old", "1 - Critical")]
    )
    snow.human_update(closed, state="7", close_code="Solved (Permanently)", close_notes="x")
    query = "active=true^priority=1"
    assert sn.query_matches(query, sn.get_item(urgent)) is True
    assert sn.query_matches(query, sn.get_item(low)) is False
    assert sn.query_matches(query, sn.get_item(closed)) is False
    assert table_queries(snow)[-1] == f"active=true^priority=1^sys_id={closed}"
    # ^NQ: the node's bound applies to every part of the query.
    assert sn.query_matches("priority=4^NQpriority=1", sn.get_item(urgent)) is True
    assert table_queries(snow)[-1] == f"priority=4^sys_id={urgent}^NQpriority=1^sys_id={urgent}"


def test_servicenow_search_pages_by_number(snow: FakeServiceNow) -> None:
    sn = servicenow_connector(snow)
    ids = incidents(sn, [(f"Incident {n}", "1 - Critical" if n % 3 else "4 - Low") for n in range(9)])
    matching = [i for n, i in enumerate(ids) if n % 3]
    first = sn.query_search("priority=1^ORDERBYDESCnumber", limit=4)
    assert [r.id for r in first] == matching[:4]
    assert [r.key for r in first] == ["INC0010002", "INC0010003", "INC0010005", "INC0010006"]
    snow.human_update(matching[0], short_description="Edited")  # edits do not move anything
    rest = sn.query_search("priority=1", after=first[-1].id, limit=4)
    assert [r.id for r in rest] == matching[4:]
    assert table_queries(snow)[-1] == "priority=1^number>INC0010006^ORDERBYnumber"
    assert page_through(sn, "priority=1", limit=3) == matching
    # A fresh connector reads the number of `after` from the record.
    assert [r.id for r in servicenow_connector(snow).query_search("priority=1", after=matching[4])] == [
        matching[5]
    ]


@pytest.mark.django_db(transaction=True)
def test_servicenow_trigger_and_bulk_exalate_end_to_end(snow: FakeServiceNow) -> None:
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create(
        "servicenow",
        snow.host,
        {"username": snow.username, "password": snow.password},
        {"close_code": "Solved (Permanently)", "close_notes": "Resolved in the support desk"},
        statuses=["New", "In Progress", "Resolved", "Closed"],
    )
    sn = pair.connector()
    incidents(sn, [("Old 0", "4 - Low"), ("Old 1", "1 - Critical"), ("Old 2", "1 - Critical")])
    refused_everywhere(pair.side_tracker, "active=true^prioritty=1", "no field 'prioritty'")
    tagged = sn.create_item({"summary": "Tagged new", "priority": {"name": "1 - Critical"}})
    plain = sn.create_item({"summary": "Plain new", "priority": {"name": "4 - Low"}})
    end_to_end(
        pair, query="active=true^priority=1", tagged=tagged, plain=plain, old_matching=["Old 1", "Old 2"]
    )


# --- GitLab: issue list filters -----------------------------------------------------------------------------


@pytest.fixture
def glab(clock):  # type: ignore[no-untyped-def]
    fake = FakeGitLab(clock)
    with wire(fake):
        yield fake


def gitlab_connector(server: FakeGitLab) -> GitLabConnector:
    return GitLabConnector(
        make_instance("gitlab", server.host, {"token": server.token}, {"project": server.project_path})
    )


def gitlab_issues(connector: GitLabConnector, specs: list[tuple[str, list[str]]]) -> list[str]:
    return [connector.create_item({"summary": title, "labels": labels}).id for title, labels in specs]


def issue_lists(server: FakeGitLab) -> list[dict[str, str]]:
    return [c.query for c in server.calls if c.method == "GET" and c.path.endswith("/issues")]


def test_gitlab_valid_filters_are_accepted(glab: FakeGitLab) -> None:
    gitlab = gitlab_connector(glab)
    gitlab.query_validate("labels=sync&state=opened")
    gitlab.query_validate("?not[labels]=wontfix&search=printer&assignee_username=ed")
    assert issue_lists(glab)[0] == {"state": "opened", "labels": "sync", "per_page": "1"}


@pytest.mark.parametrize(
    ("query", "message", "asked"),
    [
        (
            "labels=sync&state=open",
            "GitLab refused the trigger's filters: state does not have a valid value",
            True,
        ),
        ("lables=sync", "GitLab's issue list has no filter 'lables'", False),
        ("order_by=title", "GitLab's issue list has no filter 'order_by'", False),
        ("labels", "A GitLab trigger is a query string of issue list filters", False),
    ],
)
def test_gitlab_invalid_filters_are_refused(glab: FakeGitLab, query: str, message: str, asked: bool) -> None:
    with pytest.raises(ConnectorError, match=re.escape(message)) as refused:
        gitlab_connector(glab).query_validate(query)
    assert refused.value.status == 400 and bool(issue_lists(glab)) == asked


def test_gitlab_matches(glab: FakeGitLab) -> None:
    gitlab = gitlab_connector(glab)
    tagged, plain, closed = gitlab_issues(
        gitlab, [("Tagged", ["sync", "hw"]), ("Plain", ["hw"]), ("Old", ["sync"])]
    )
    glab.human_edit(int(closed), state_event="close")
    query = "labels=sync&state=opened"
    assert gitlab.query_matches(query, gitlab.get_item(tagged)) is True
    assert gitlab.query_matches(query, gitlab.get_item(plain)) is False
    assert gitlab.query_matches(query, gitlab.get_item(closed)) is False
    assert issue_lists(glab)[-1]["iids[]"] == closed


def test_gitlab_search_pages_by_creation_time_and_iid(glab: FakeGitLab) -> None:
    gitlab = gitlab_connector(glab)
    ids = gitlab_issues(gitlab, [(f"Issue {n}", ["sync"] if n % 3 else []) for n in range(1, 10)])
    for iid in (4, 5, 7):  # created at the same time: the order of equal times is GitLab's business
        glab.issues[iid]["created_at"] = glab.issues[4]["created_at"]
    matching = [i for n, i in enumerate(ids, start=1) if n % 3]
    assert matching == ["1", "2", "4", "5", "7", "8"]
    first = gitlab.query_search("labels=sync", limit=3)
    assert [r.id for r in first] == ["1", "2", "4"] and first[0].key == "#1"
    rest = gitlab.query_search("labels=sync", after="4", limit=3)
    assert [r.id for r in rest] == ["5", "7", "8"]
    assert issue_lists(glab)[-1]["created_after"] == glab.issues[4]["created_at"]
    assert gitlab.query_search("labels=sync", after="8") == []
    assert page_through(gitlab, "labels=sync", limit=2) == matching
    assert [r.id for r in gitlab_connector(glab).query_search("labels=sync", after="5")] == ["7", "8"]


@pytest.mark.django_db(transaction=True)
def test_gitlab_trigger_and_bulk_exalate_end_to_end(glab: FakeGitLab) -> None:
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create("gitlab", glab.host, {"token": glab.token}, {"project": glab.project_path})
    refused_everywhere(pair.side_tracker, "lables=sync", "no filter 'lables'")
    gitlab = pair.connector()
    gitlab_issues(gitlab, [("Old 0", []), ("Old 1", ["sync"]), ("Old 2", ["sync", "hw"]), ("Old 3", ["hw"])])
    tagged = gitlab.create_item({"summary": "Tagged new", "labels": ["sync"]})
    plain = gitlab.create_item({"summary": "Plain new", "labels": []})
    end_to_end(pair, query="labels=sync", tagged=tagged, plain=plain, old_matching=["Old 1", "Old 2"])


# --- Salesforce: SOQL conditions ----------------------------------------------------------------------------


@pytest.fixture
def sforce(clock):  # type: ignore[no-untyped-def]
    fake = FakeSalesforce(clock)
    with wire(fake):
        yield fake


def salesforce_connector(server: FakeSalesforce) -> SalesforceConnector:
    creds = {"client_id": server.client_id, "client_secret": server.client_secret}
    return SalesforceConnector(make_instance("salesforce", server.host, creds, {}))


def cases(connector: SalesforceConnector, specs: list[tuple[str, str]]) -> list[str]:
    return [connector.create_item({"summary": title, "priority": {"name": prio}}).id for title, prio in specs]


def soql_sent(server: FakeSalesforce) -> list[str]:
    return [c.query["q"] for c in server.calls if c.path.endswith("/query") and "FROM Case" in c.query["q"]]


def test_salesforce_valid_condition_is_accepted(sforce: FakeSalesforce) -> None:
    sf = salesforce_connector(sforce)
    sf.query_validate("Priority = 'High' AND Status != 'Closed'")
    assert (
        soql_sent(sforce)[-1]
        == "SELECT Id FROM Case WHERE (Priority = 'High' AND Status != 'Closed') LIMIT 1"
    )
    sf.query_validate("SELECT Id FROM Case WHERE Subject LIKE '%printer%' ORDER BY CreatedDate DESC LIMIT 5")
    assert soql_sent(sforce)[-1] == "SELECT Id FROM Case WHERE (Subject LIKE '%printer%') LIMIT 1"
    with pytest.raises(ConnectorError, match="selects Account records; this instance syncs Case"):
        sf.query_validate("SELECT Id FROM Account WHERE Name = 'x'")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("Priorty = 'High'", "INVALID_FIELD: No such column 'Priorty' on entity 'Case'."),
        ("Priority 'High'", "MALFORMED_QUERY: unexpected token: ''High''"),
    ],
)
def test_salesforce_invalid_condition_is_refused_with_salesforces_message(
    sforce: FakeSalesforce, query: str, message: str
) -> None:
    with pytest.raises(ConnectorError) as refused:
        salesforce_connector(sforce).query_validate(query)
    assert refused.value.status == 400
    assert message in refused.value.message and "save the trigger again" in refused.value.message


def test_salesforce_matches(sforce: FakeSalesforce) -> None:
    sf = salesforce_connector(sforce)
    high, low = cases(sf, [("Urgent", "High"), ("Later", "Low")])
    query = "Priority = 'High'"
    assert sf.query_matches(query, sf.get_item(high)) is True
    assert sf.query_matches(query, sf.get_item(low)) is False
    assert soql_sent(sforce)[-1] == f"SELECT Id FROM Case WHERE (Priority = 'High') AND Id = '{low}' LIMIT 1"  # noqa: S608


def test_salesforce_search_pages_by_id(sforce: FakeSalesforce) -> None:
    sf = salesforce_connector(sforce)
    ids = cases(sf, [(f"Case {n}", "High" if n % 3 else "Low") for n in range(9)])
    matching = [i for n, i in enumerate(ids) if n % 3]
    first = sf.query_search("Priority = 'High' ORDER BY CreatedDate DESC", limit=4)
    assert [r.id for r in first] == matching[:4] and first[0].key == sforce.db["Case"][matching[0]][
        "CaseNumber"
    ]
    sforce.human_update(matching[0], Subject="Edited")  # edits do not move anything
    rest = sf.query_search("Priority = 'High'", after=first[-1].id, limit=4)
    assert [r.id for r in rest] == matching[4:]
    expected = (
        "SELECT Id, CaseNumber, SystemModstamp FROM Case WHERE (Priority = 'High') AND Id > {} ORDER BY Id"
    )
    assert soql_sent(sforce)[-1] == expected.format(f"'{first[-1].id}'") + " ASC LIMIT 4"
    assert page_through(sf, "Priority = 'High'", limit=2) == matching


@pytest.mark.django_db(transaction=True)
def test_salesforce_trigger_and_bulk_exalate_end_to_end(sforce: FakeSalesforce) -> None:
    from tests.connectors2.pipeline_helpers import Pair

    pair = Pair.create(
        "salesforce",
        sforce.host,
        {"client_id": sforce.client_id, "client_secret": sforce.client_secret},
        {},
        statuses=["New", "Working", "Escalated", "Closed"],
    )
    refused_everywhere(pair.side_tracker, "Priorty = 'High'", "No such column 'Priorty'")
    sf = pair.connector()
    cases(sf, [("Old 0", "Low"), ("Old 1", "High"), ("Old 2", "High"), ("Old 3", "Medium")])
    tagged = sf.create_item({"summary": "Tagged new", "priority": {"name": "High"}})
    plain = sf.create_item({"summary": "Plain new", "priority": {"name": "Low"}})
    end_to_end(pair, query="Priority = 'High'", tagged=tagged, plain=plain, old_matching=["Old 1", "Old 2"])
