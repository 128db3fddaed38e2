"""Correctly signed webhook deliveries with hostile or broken bodies, for every tracker that takes webhooks.

A delivery that carries the right secret can still be anything: a tracker with a bug, a proxy that mangles
it, or whoever learnt the secret. Each is a 400 with ``{"detail", "code"}`` that says what is wrong, records
nothing, and never a 500. Before: every tracker answered 500 to JSON nested 100,000 deep, GitHub and Jira to
``null``, ``[1,2]`` and ``"x"``, GitHub and GitLab to a lone surrogate; shapes such as ``{"issue": "x"}``
were a 500 in most connectors. (Random bodies: ``test_fuzz_machine_doors.py``.)
"""

from __future__ import annotations

import json

import pytest

from instances.connectors import _common, github, jira
from tests.security.test_hostile_catalogue import _state
from tests.webhook_deliveries import GOOD_BODIES, WEBHOOK_TRACKERS, deliver, webhook_instance

pytestmark = pytest.mark.django_db

TRACKERS = list(WEBHOOK_TRACKERS)


@pytest.fixture(autouse=True)
def _fresh_delivery_memory():  # type: ignore[no-untyped-def]
    github.reset_memory()
    jira.reset_memory()
    yield


@pytest.fixture(params=TRACKERS)
def hooked(request):  # type: ignore[no-untyped-def]
    return webhook_instance(request.param)


def _refused(response, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 400, (response.status_code, response.content[:300])
    body = response.json()
    assert set(body) == {"detail", "code"} and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def test_a_good_delivery_is_accepted(client, hooked):
    """The deliveries below are signed the way each tracker signs (or they would be 401s, not 400s)."""
    response = deliver(client, hooked, json.dumps(GOOD_BODIES[hooked.tracker_type]).encode())
    assert (response.status_code, response.json()) == (202, {"accepted": 1})


def test_json_nested_100000_deep_is_a_400(client, hooked):
    before = _state()
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        answer = _refused(deliver(client, hooked, body), "too_deep")
        assert "nested deeper than 64 levels" in answer["detail"]
    assert _state() == before


@pytest.mark.parametrize("body", [b"null", b'"x"', b"1", b"true", b"1.5"])
def test_a_body_that_is_not_an_object_is_a_400(client, hooked, body):
    before = _state()
    answer = _refused(deliver(client, hooked, body), "unreadable")
    assert "not a JSON object" in answer["detail"]
    assert _state() == before


def test_a_list_is_a_400_where_the_tracker_never_sends_one(client, hooked):
    response = deliver(client, hooked, b"[1, 2]")
    if hooked.tracker_type in ("github", "jira"):
        _refused(response, "unreadable")
    else:  # read row by row (a Salesforce callout may batch records); no row names an item here
        assert (response.status_code, response.json()) == (202, {"accepted": 0})


@pytest.mark.parametrize(
    "body",
    [rb'{"issue": {"number": 1, "title": "\ud800"}}', rb'{"\udfff": 1}', rb'["\ud83d"]'],
    ids=["value", "key", "in-a-list"],
)
def test_text_that_is_not_valid_unicode_is_a_400(client, hooked, body):
    before = _state()
    answer = _refused(deliver(client, hooked, body), "unencodable_text")
    assert "not valid Unicode at $" in answer["detail"]
    assert _state() == before


@pytest.mark.parametrize("body", [b"{oops", b"\xff\xfe{}", b'{"a": NaN}', b"<xml/>"])
def test_a_body_that_is_not_json_is_a_400(client, hooked, body):
    _refused(deliver(client, hooked, body), "malformed_json")


# Shapes a connector reads field by field; each used to raise AttributeError or TypeError (a 500) somewhere.
ODD_SHAPES = [
    {"issue": "x", "object_attributes": "x", "resource": "x", "ticket": "x", "detail": "x"},
    {"issue": [1], "repository": "octo", "object_kind": "issue", "object_attributes": [1]},
    {"issue": {"number": {"a": 1}, "id": [1], "self": 5, "fields": "x", "iid": {"x": 1}}},
    {
        "webhookEvent": "jira:issue_updated",
        "issue": {"id": {"x": 1}, "self": ["a"], "fields": {"updated": 5}},
    },
    {"object_kind": "note", "object_attributes": {"noteable_type": "Issue"}, "issue": "x"},
    {"eventType": ["workitem.updated"], "id": {"a": 1}, "resource": {"workItemId": [1], "revision": "x"}},
    {"eventType": "workitem.updated", "resource": {"id": 5, "revision": {"fields": "x"}, "fields": [1]}},
    {"ticket_id": {"a": 1}, "ticket": {"id": [7]}, "type": 5},
    {"type": "zen:event-type:ticket.updated", "detail": [7]},
    {"sys_id": ["0" * 32], "table": {"a": 1}, "number": {"a": 1}},
    {"sys_id": "0" * 32, "sys_updated_on": {"a": 1}},
    {"Id": ["5003000000D8cuIAAR"], "id": {"a": 1}, "CaseNumber": ["1"]},
    {"issue": {"number": True, "pull_request": None}, "repository": {"full_name": ["a"]}},
    {"issue": {"number": 10**30}},
]


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=[f"shape-{i}" for i in range(len(ODD_SHAPES))])
def test_odd_shapes_are_read_as_naming_no_item_or_refused(client, hooked, shape):
    response = deliver(client, hooked, json.dumps(shape).encode())
    assert response.status_code in (202, 400), (response.status_code, response.content[:300])
    assert set(response.json()) in ({"accepted"}, {"detail", "code"})
    if response.status_code == 202:
        assert response.json()["accepted"] <= 1


def test_a_delivery_naming_too_many_items_is_a_400_and_records_nothing(client):
    instance = webhook_instance("salesforce")
    rows = [{"Id": f"5003000000D{i:04d}AAR"[:18]} for i in range(_common_max() + 1)]
    assert len({r["Id"] for r in rows}) == len(rows)
    before = _state()
    answer = _refused(deliver(client, instance, json.dumps(rows).encode()), "too_many_items")
    assert f"at most {_common_max()}" in answer["detail"]
    assert _state() == before


def _common_max() -> int:
    from instances.webhooks import MAX_ITEMS

    return MAX_ITEMS


def test_the_shared_readers_keep_only_objects_and_scalars():
    assert _common.obj({"a": 1}) == {"a": 1} and _common.obj([1]) == {} and _common.obj("x") == {}
    assert [_common.scalar(v) for v in ("a", 7, True, None, 1.5, [1], {"a": 1})] == [
        "a",
        "7",
        "",
        "",
        "",
        "",
        "",
    ]


def test_a_delivery_over_the_upload_limit_is_a_413_in_json(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    instance = webhook_instance("gitlab")
    before = _state()
    response = deliver(client, instance, json.dumps({"object_kind": "issue", "pad": "x" * 2000}).encode())
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert "1000 bytes" in response.json()["detail"]
    assert _state() == before
