"""List endpoints run a fixed number of queries, however many rows they list (no N+1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from connections.services import connection_create_local
from instances.models import Instance
from instances.tracker import services
from replicas.models import BulkJob, SyncError, SyncEvent, Trigger, Twin

pytestmark = pytest.mark.django_db

N = 3


@pytest.fixture
def side(db):  # type: ignore[no-untyped-def]
    a = Instance.objects.create(name="Support", tracker_type="builtin")
    b = Instance.objects.create(name="Engineering", tracker_type="builtin")
    services.project_create(instance=a, key="SUP", name="Support")
    services.project_create(instance=b, key="ENG", name="Engineering")
    side_a, _ = connection_create_local(name="S-E", instance_a=a, instance_b=b)
    return side_a


def _instances(side, i: int) -> None:  # type: ignore[no-untyped-def]
    Instance.objects.create(name=f"Tracker {i}", tracker_type="builtin", url=f"https://t{i}.example.com")


def _connections(side, i: int) -> None:  # type: ignore[no-untyped-def]
    a = Instance.objects.create(name=f"A{i}", tracker_type="builtin")
    b = Instance.objects.create(name=f"B{i}", tracker_type="builtin")
    pair, _ = connection_create_local(name=f"C{i}", instance_a=a, instance_b=b)
    twin = Twin.objects.create(connection=pair, local_id=f"{i}", local_key=f"A-{i}")
    SyncEvent.objects.create(connection=pair, twin=twin, direction="out", status="failed")


def _twin(side, i: int) -> Twin:  # type: ignore[no-untyped-def]
    return Twin.objects.create(
        connection=side, local_id=f"{i}", local_key=f"SUP-{i}", remote_id=f"{i}", remote_key=f"ENG-{i}"
    )


def _events(side, i: int) -> None:  # type: ignore[no-untyped-def]
    SyncEvent.objects.create(connection=side, twin=_twin(side, i), direction="out", item_key=f"SUP-{i}")


def _errors(side, i: int) -> None:  # type: ignore[no-untyped-def]
    twin = _twin(side, i)
    event = SyncEvent.objects.create(connection=side, twin=twin, direction="in", status="failed")
    SyncError.objects.create(impact="entity", connection=side, twin=twin, event=event, message=f"boom {i}")


def _projects(side, i: int) -> None:  # type: ignore[no-untyped-def]
    services.project_create(instance=side.local_instance, key=f"P{i}", name=f"Project {i}")


def _issues(side, i: int) -> None:  # type: ignore[no-untyped-def]
    project = side.local_instance.projects.get(key="SUP")
    parent = services.issue_create(project=project, actor="t", summary=f"Parent {i}")
    issue = services.issue_create(project=project, actor="t", summary=f"Issue {i}", parent=parent)
    services.comment_add(issue=issue, actor="t", body=f"Comment {i}")


def _triggers(side, i: int) -> None:  # type: ignore[no-untyped-def]
    Trigger.objects.create(connection=side, query=f"project = SUP AND key = SUP-{i}")


def _bulk(side, i: int) -> None:  # type: ignore[no-untyped-def]
    BulkJob.objects.create(connection=side, kind="exalate", items=[f"SUP-{i}"], total=1)


def _twins(side, i: int) -> None:  # type: ignore[no-untyped-def]
    _twin(side, i)


LISTS: dict[str, tuple[str, Callable]] = {
    "instances": ("/api/v1/instances/", _instances),
    "connections": ("/api/v1/connections/", _connections),
    "events": ("/api/v1/events/", _events),
    "errors": ("/api/v1/errors/", _errors),
    "tracker projects": ("/api/v1/tracker/projects/", _projects),
    "tracker issues": ("/api/v1/tracker/issues/", _issues),
    "triggers": ("/api/v1/connections/{pk}/triggers/", _triggers),
    "bulk": ("/api/v1/connections/{pk}/bulk/", _bulk),
    "twins": ("/api/v1/connections/{pk}/twins/", _twins),
}


def _count(api, url: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(db_connection) as ctx:
        response = api.get(url)
    assert response.status_code == 200, response.content
    body = response.json()
    rows = len(body["results"] if isinstance(body, dict) else body)
    return len(ctx.captured_queries), rows


@pytest.mark.parametrize("name", list(LISTS))
def test_a_list_runs_as_many_queries_for_2n_rows_as_for_n(api, side, name):
    url, make = LISTS[name]
    url = url.format(pk=side.pk)
    for i in range(N):
        make(side, i)
    queries_n, rows_n = _count(api, url)
    for i in range(N, 2 * N):
        make(side, i)
    queries_2n, rows_2n = _count(api, url)
    assert rows_2n > rows_n, (name, rows_n, rows_2n)
    assert queries_2n == queries_n, (name, queries_n, queries_2n)
