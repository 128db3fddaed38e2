"""The API's lists honour ``?page_size`` up to a maximum, on every list endpoint."""

from __future__ import annotations

import pytest

from exalate_node.api import Pagination
from instances.models import Instance

pytestmark = pytest.mark.django_db

LISTS = [
    "/api/v1/instances/",
    "/api/v1/connections/",
    "/api/v1/events/",
    "/api/v1/errors/",
    "/api/v1/tracker/projects/",
    "/api/v1/tracker/issues/",
]


@pytest.fixture
def instances(db):  # type: ignore[no-untyped-def]
    for n in range(7):
        Instance.objects.create(name=f"Tracker {n}", tracker_type="builtin")


def test_page_size_sets_how_many_rows_a_page_has(api, instances):
    body = api.get("/api/v1/instances/?page_size=3").json()
    assert body["count"] == 7 and len(body["results"]) == 3
    assert "page_size=3" in body["next"]
    assert len(api.get("/api/v1/instances/?page_size=3&page=3").json()["results"]) == 1


@pytest.mark.parametrize("value", ["abc", "0", "-2", ""])
def test_a_page_size_that_is_not_a_positive_number_is_the_default(api, instances, value):
    response = api.get(f"/api/v1/instances/?page_size={value}")
    assert response.status_code == 200 and len(response.json()["results"]) == 7


def test_a_page_size_above_the_maximum_is_the_maximum(api, instances, monkeypatch):
    assert Pagination.max_page_size == 500
    monkeypatch.setattr(Pagination, "max_page_size", 4)
    response = api.get("/api/v1/instances/?page_size=100000000000000000000")
    assert response.status_code == 200 and len(response.json()["results"]) == 4


@pytest.mark.parametrize("url", LISTS)
def test_every_list_takes_a_page_size(api, url):
    from django.urls import resolve

    assert resolve(url).func.cls.pagination_class is Pagination
    assert api.get(url + "?page_size=1").status_code == 200


@pytest.mark.parametrize("url", ["/api/v1/connections/1/twins/", "/api/v1/connections/1/triggers/"])
def test_the_lists_of_a_connection_take_a_page_size_too(url):
    from django.urls import resolve

    assert resolve(url).func.view_class.pagination_class is Pagination
