"""The Redmine connector's mapping and bookkeeping, without a Redmine: canned API answers.

Facts of the Redmine 5.0 REST API these tests rely on (the canned JSON is copied from a real 5.0.4):

* an issue carries ``project {id, name}`` (no identifier), ``tracker``, ``status``, ``priority`` as
  ``{id, name}``, ``author``/``assigned_to`` as ``{id, name}``, ``parent {id}`` when it has one, times as
  ``YYYY-MM-DDTHH:MM:SSZ``, ``custom_fields [{id, name, value}]``;
* with ``include=journals,attachments``: journals ``{id, user, notes, created_on, private_notes, details}``
  (notes ``""`` for field-only changes) and attachments ``{id, filename, filesize, content_type,
  content_url, author, created_on}`` (no digest in 5.0);
* the upload token is ``<attachment id>.<sha256 hex>``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from instances.connectors import ConnectorError
from instances.connectors.redmine import (
    RedmineConnector,
    last_change_author,
    parse_key,
    sha256_of,
    to_hub,
)
from instances.models import Instance
from tests.connectors.conftest import Loopback, Reply

ISSUE: dict[str, Any] = {
    "id": 7,
    "project": {"id": 2, "name": "Support"},
    "tracker": {"id": 3, "name": "Support"},
    "status": {"id": 2, "name": "In Progress", "is_closed": False},
    "priority": {"id": 3, "name": "High"},
    "author": {"id": 1, "name": "Redmine Admin"},
    "assigned_to": {"id": 5, "name": "Ann Agent"},
    "parent": {"id": 3},
    "subject": "Printer on fire",
    "description": "",
    "start_date": "2026-11-28",
    "due_date": "2030-01-31",
    "custom_fields": [{"id": 1, "name": "Customer", "value": "ACME"}],
    "created_on": "2026-11-28T12:48:06Z",
    "updated_on": "2026-11-28T12:49:00Z",
    "attachments": [
        {
            "id": 4,
            "filename": "a.txt",
            "filesize": 3,
            "content_type": "text/plain",
            "content_url": "http://localhost:3000/attachments/download/4/a.txt",
            "author": {"id": 1, "name": "Redmine Admin"},
            "created_on": "2026-11-28T12:48:30Z",
        }
    ],
    "journals": [
        {"id": 12, "user": {"id": 5, "name": "Ann Agent"}, "notes": "Private",
         "created_on": "2026-11-28T12:49:00Z", "private_notes": True, "details": []},
        {"id": 11, "user": {"id": 1, "name": "Redmine Admin"}, "notes": "",
         "created_on": "2026-11-28T12:48:10Z", "private_notes": False,
         "details": [{"property": "attr", "name": "status_id"}]},
        {"id": 10, "user": {"id": 1, "name": "Redmine Admin"}, "notes": "Hello",
         "created_on": "2026-11-28T12:48:07Z", "private_notes": False, "details": []},
    ],
}  # fmt: skip


def fake_person(ref: Any) -> dict[str, Any] | None:
    return {"email": None, "displayName": ref["name"]} if ref else None


def test_to_hub_maps_every_field() -> None:
    hub = to_hub(
        ISSUE,
        base_url="https://rm.example/",
        person=fake_person,
        project={"id": 2, "identifier": "support", "name": "Support"},
    )
    assert hub == {
        "id": "7",
        "key": "#7",
        "url": "https://rm.example/issues/7",
        "summary": "Printer on fire",
        "description": None,
        "status": {"name": "In Progress"},
        "priority": {"name": "High"},
        "type": {"name": "Support"},
        "labels": [],
        "assignee": {"email": None, "displayName": "Ann Agent"},
        "reporter": {"email": None, "displayName": "Redmine Admin"},
        "dueDate": "2030-01-31",
        "parentId": "3",
        "created": "2026-11-28T12:48:06Z",
        "updated": "2026-11-28T12:49:00Z",
        "project": {"idStr": "2", "key": "support", "name": "Support"},
        "customFields": {"Customer": "ACME"},
        "comments": [
            {"id": "10", "body": "Hello", "author": {"email": None, "displayName": "Redmine Admin"},
             "created": "2026-11-28T12:48:07Z", "updated": "2026-11-28T12:48:07Z", "internal": False},
            {"id": "12", "body": "Private", "author": {"email": None, "displayName": "Ann Agent"},
             "created": "2026-11-28T12:49:00Z", "updated": "2026-11-28T12:49:00Z", "internal": True},
        ],
        "attachments": [
            {"id": "4", "filename": "a.txt", "mimeType": "text/plain", "size": 3, "sha256": None,
             "created": "2026-11-28T12:48:30Z"}
        ],
    }  # fmt: skip


def test_small_helpers() -> None:
    assert [parse_key(k) for k in ("#42", "42", " #7 ", "https://rm/issues/9", "DEMO-1", "#")] == [
        "42", "42", "7", "9", None, None,
    ]  # fmt: skip
    assert sha256_of("A" * 64) == "a" * 64 and sha256_of("d41d8cd98f00b204e9800998ecf8427e") is None
    assert sha256_of(None) is None
    assert last_change_author(ISSUE) == 5
    assert last_change_author({"author": {"id": 1}, "journals": []}) == 1


def connector(server: Loopback, **settings: Any) -> RedmineConnector:
    instance = Instance(
        name="RM",
        tracker_type="redmine",
        url=server.url,
        credentials=json.dumps({"api_key": "k" * 40}),
        settings={"rate_limit_per_s": 1000, **settings},
    )
    return RedmineConnector(instance)


STATUSES = {"issue_statuses": [{"id": 1, "name": "New"}, {"id": 2, "name": "In Progress"}]}


def test_unknown_names_are_refused_before_any_write(loopback: Loopback) -> None:
    loopback.replies += [Reply(200, STATUSES), Reply(200, STATUSES)]  # looked up again: maybe just added
    rm = connector(loopback)
    with pytest.raises(ConnectorError) as exc:
        rm.update_item("7", {"status": {"name": "Done"}})
    assert exc.value.message.startswith("Redmine has no status 'Done'. Valid statuses: New, In Progress.")
    assert [s.method for s in loopback.seen] == ["GET", "GET"]


def test_update_sends_only_the_changed_fields(loopback: Loopback) -> None:
    loopback.replies += [Reply(200, STATUSES), Reply(204)]
    rm = connector(loopback)
    rm.update_item(
        "7", {"status": {"name": "in progress"}, "dueDate": None, "labels": ["x"], "reporter": None}
    )
    put = loopback.seen[-1]
    assert (put.method, put.path) == ("PUT", "/issues/7.json")
    assert json.loads(put.body) == {"issue": {"status_id": 2, "due_date": None}}
    assert put.headers["X-Redmine-API-Key"] == "k" * 40


def test_missing_credentials_and_project_are_explained(loopback: Loopback) -> None:
    rm = connector(loopback)
    rm.instance.credentials = ""
    with pytest.raises(ConnectorError, match="no Redmine API key"):
        rm.get_item("1")
    with pytest.raises(ConnectorError, match='"project" setting'):
        connector(loopback).create_item({"summary": "x"})


def page(*issues: tuple[int, str], total: int | None = None, offset: int = 0) -> Reply:
    rows = [{"id": i, "updated_on": u} for i, u in issues]
    return Reply(
        200, {"issues": rows, "total_count": total if total is not None else len(rows), "offset": offset}
    )


def test_search_overlaps_the_cursor_and_skips_what_it_returned(loopback: Loopback) -> None:
    rm = connector(loopback, project="sup")
    loopback.replies += [page((1, "2026-01-01T10:00:00Z"), (2, "2026-01-01T10:00:03Z"))]
    refs, cursor = rm.search_updated_since("2026-01-01T09:59:00Z")
    assert [r.id for r in refs] == ["1", "2"] and cursor == "2026-01-01T10:00:03Z"
    assert refs[0].key == "#1" and refs[0].updated == "2026-01-01T10:00:00Z"
    query = loopback.seen[0].path
    assert "updated_on=%3E%3D2026-01-01T09%3A58%3A55Z" in query  # 5 s overlap
    assert (
        "status_id=%2A" in query and "project_id=sup" in query and "sort=updated_on%3Aasc%2Cid%3Aasc" in query
    )

    # Next poll: 1 and 2 show up again in the window, 2 changed again, 3 is new.
    loopback.replies += [
        page((1, "2026-01-01T10:00:00Z"), (3, "2026-01-01T10:00:03Z"), (2, "2026-01-01T10:00:09Z"))
    ]
    refs, cursor = rm.search_updated_since(cursor)
    assert [r.id for r in refs] == ["3", "2"] and cursor == "2026-01-01T10:00:09Z"


def test_search_pages_until_the_limit(loopback: Loopback) -> None:
    rm = connector(loopback)
    loopback.replies += [
        page((1, "2026-01-01T10:00:00Z"), (2, "2026-01-01T10:00:01Z"), total=5),
        page((3, "2026-01-01T10:00:02Z"), (4, "2026-01-01T10:00:03Z"), total=5, offset=2),
    ]
    refs, cursor = rm.search_updated_since(None, limit=3)
    assert [r.id for r in refs] == ["1", "2", "3"] and cursor == "2026-01-01T10:00:02Z"
    assert "offset=2" in loopback.seen[1].path and "updated_on=" not in loopback.seen[0].path


def test_own_changes_by_the_newest_journal(loopback: Loopback) -> None:
    loopback.replies += [Reply(200, {"user": {"id": 5, "login": "node", "admin": False}})]
    rm = connector(loopback)
    assert rm.is_own_change(ISSUE)  # journal 12 is by user 5, the node
    assert not rm.is_own_change({**ISSUE, "journals": ISSUE["journals"][1:]})
    loopback.replies += [Reply(200, {"issue": {**ISSUE, "journals": []}})]
    assert not rm.is_own_change({"id": "7"})  # a hubIssue: the journals are read; the author is user 1
    loopback.replies += [Reply(200, {"user": {"id": 5, "login": "node", "admin": False}})]
    assert rm.test_credentials() == "Connected to Redmine as node."  # asks again: the key may have changed


def test_add_attachment_remembers_the_digest_from_the_token(loopback: Loopback) -> None:
    digest = "ab" * 32
    loopback.replies += [
        Reply(201, {"upload": {"id": 4, "token": f"4.{digest}"}}),
        Reply(204),
        Reply(200, {"issue": {**ISSUE, "journals": []}}),
        Reply(200, {"project": {"id": 2, "identifier": "support", "name": "Support"}}),
        Reply(200, {"user": {"id": 1, "name": "Redmine Admin"}}),
        Reply(404, {}),  # assigned_to 5: not visible
    ]
    rm = connector(loopback)
    assert rm.add_attachment("7", filename="a.txt", mime_type="text/plain", content=io.BytesIO(b"abc")) == "4"
    upload, attach = loopback.seen[:2]
    assert upload.path == "/uploads.json?filename=a.txt" and upload.body == b"abc"
    assert upload.headers["Content-Type"] == "application/octet-stream"
    assert json.loads(attach.body) == {
        "issue": {"uploads": [{"token": f"4.{digest}", "filename": "a.txt", "content_type": "text/plain"}]}
    }
    item = rm.get_item("7")
    assert item["attachments"][0]["sha256"] == digest  # no download needed
    assert item["assignee"] == {"email": None, "displayName": "Ann Agent"}


def test_custom_fields_are_written_by_id(loopback: Loopback) -> None:
    loopback.replies += [Reply(200, {"issue": ISSUE}), Reply(204)]
    rm = connector(loopback)
    rm.update_item("7", {"customFields": {"Customer": "Initech"}})
    assert json.loads(loopback.seen[-1].body) == {"issue": {"custom_fields": [{"id": 1, "value": "Initech"}]}}
    loopback.replies += [Reply(200, {"issue": ISSUE})]
    with pytest.raises(ConnectorError, match="no custom field 'Region'.*Valid custom fields: Customer"):
        rm.update_item("7", {"customFields": {"Region": "EU"}})
