"""Programs get the API's JSON error body for every 4xx under /api/, /node/ and /hooks/, even for URLs no
route matches (Django's HTML page would break a client that parses the body), and no 5xx for ids out of the
database's range."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/no-such-endpoint/",
        "/api/v1/connections/abc/",
        "/api/v1/connections/1.5/",
        "/node/v1/nothing-here/",
        "/hooks/nothing-here/",
    ],
)
def test_an_unknown_url_under_a_machine_prefix_is_a_json_404(api, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "not_found"
    assert path in body["detail"]


def test_an_unknown_page_of_the_ui_keeps_the_html_404(admin_client) -> None:
    response = admin_client.get("/ui/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("item", ["99999999999999999999", "9223372036854775808", "2147483648"])
@pytest.mark.parametrize("endpoint", ["connections", "instances", "events", "errors", "triggers"])
def test_an_id_beyond_the_integer_range_is_a_404_not_a_500(api, endpoint: str, item: str) -> None:
    response = api.get(f"/api/v1/{endpoint}/{item}/")
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"
    assert item in response.json()["detail"]
