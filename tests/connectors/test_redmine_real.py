"""The Redmine connector against a real Redmine 5.0 (Debian package, sqlite) from tests/e2e/redmine.sh.

Facts of the Redmine REST API these tests rely on (checked against Redmine 5.0.4):

* ``X-Redmine-API-Key`` authenticates; ``GET /users/current.json`` names the key's user (``admin`` flag);
  an admin key may act as another user with ``X-Redmine-Switch-User: <login>``;
* ``POST /issues.json`` answers 201 with the issue; it ignores ``status_id`` for a new issue (the tracker's
  default status wins); ``PUT /issues/ID.json`` answers 204 with no body, even for an unknown ``status_id``;
* ``PUT /issues/ID.json`` with ``notes`` adds a journal but does not return its id; journals carry ``user``,
  ``notes``, ``private_notes``, ``created_on`` and ``details``;
* ``PUT /journals/ID.json`` with ``journal[notes]`` edits notes (204); blank notes on a journal without
  details delete the journal; the REST API has no journal DELETE;
* ``POST /uploads.json?filename=F`` (``application/octet-stream``) gives ``{"upload": {"id", "token"}}``; the
  upload becomes the attachment with that id once an issue update lists it in ``uploads``; attachment
  ``digest`` is SHA-256 in Redmine 4+; ``GET /attachments/download/ID`` serves the bytes;
  ``DELETE /attachments/ID.json`` removes one;
* ``GET /issues.json?status_id=*&sort=updated_on:asc,id:asc&updated_on=>=<ISO time>`` lists issues changed
  since a time (second resolution), paged with ``offset``/``limit`` and ``total_count``;
* statuses: ``/issue_statuses.json`` (New, In Progress, Resolved, Feedback, Closed, Rejected), priorities:
  ``/enumerations/issue_priorities.json`` (Low, Normal, High, Urgent, Immediate), trackers: ``/trackers.json``
  (Bug, Feature, Support).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from typing import Any

import pytest

from instances.connectors import ConnectorError, _common, get_connector
from instances.connectors.redmine import RedmineConnector

pytestmark = pytest.mark.services

HUB_KEYS = {
    "id", "key", "url", "summary", "description", "status", "priority", "type", "labels", "assignee",
    "reporter", "dueDate", "parentId", "created", "updated", "comments", "attachments", "project",
    "customFields",
}  # fmt: skip


@pytest.fixture
def rm(redmine_instance: Any) -> RedmineConnector:
    connector = get_connector(redmine_instance)
    assert isinstance(connector, RedmineConnector)
    return connector


def test_credentials(rm: RedmineConnector) -> None:
    assert rm.test_credentials() == "Connected to Redmine as admin (administrator)."


def test_wrong_key_is_a_clear_refusal(rm: RedmineConnector) -> None:
    rm.instance.credentials = '{"api_key": "0000000000000000000000000000000000000000"}'
    with pytest.raises(ConnectorError) as exc:
        RedmineConnector(rm.instance).test_credentials()
    assert not exc.value.retryable and exc.value.status == 401
    assert "API key was rejected" in exc.value.message and "0000000000" not in exc.value.message


def test_create_and_read_back_in_hub_shape(rm: RedmineConnector, redmine_project: dict[str, Any]) -> None:
    ref = rm.create_item(
        {
            "summary": "Printer on fire",
            "description": "Smoke from tray 2",
            "priority": {"name": "High"},
            "type": {"name": "Support"},
            "status": {"name": "In Progress"},
            "dueDate": "2030-01-31",
            "labels": ["ignored"],
        }
    )
    assert ref.key == f"#{ref.id}" and ref.url == f"{rm.base_url}/issues/{ref.id}" and ref.updated
    item = rm.get_item(ref.id)
    assert set(item) == HUB_KEYS
    assert item["summary"] == "Printer on fire" and item["description"] == "Smoke from tray 2"
    assert item["status"] == {"name": "In Progress"}  # set by a second write: Redmine ignores it on create
    assert item["priority"] == {"name": "High"} and item["type"] == {"name": "Support"}
    assert item["dueDate"] == "2030-01-31" and item["labels"] == [] and item["parentId"] is None
    assert item["reporter"] == {"email": "admin@example.net", "displayName": "Redmine Admin"}
    assert item["assignee"] is None
    assert item["project"] == {
        "idStr": str(redmine_project["id"]),
        "key": redmine_project["identifier"],
        "name": redmine_project["name"],
    }
    assert item["created"].endswith("Z") and item["updated"] >= item["created"]
    assert item["comments"] == [] and item["attachments"] == [] and item["customFields"] == {}
    assert rm.find_item(f"#{ref.id}") == rm.find_item(ref.id) == ref.__class__(**{**ref.__dict__})
    assert rm.find_item("#99999999") is None and rm.find_item("DEMO-1") is None


def test_one_field_update_is_one_write(rm: RedmineConnector) -> None:
    ref = rm.create_item({"summary": "Before", "priority": {"name": "Low"}})
    rm.metadata()  # warm the name caches so only the update's own requests are counted
    before = dict(rm.http.requests_by_method)
    rm.update_item(ref.id, {"summary": "After"})
    spent = {m: n - before.get(m, 0) for m, n in rm.http.requests_by_method.items() if n != before.get(m, 0)}
    assert spent == {"PUT": 1}
    writes = rm.http.writes_made
    rm.update_item(ref.id, {"priority": {"name": "Urgent"}})
    assert rm.http.writes_made == writes + 1
    rm.update_item(ref.id, {"labels": ["x"], "comments": []})  # nothing Redmine can store: no request
    assert rm.http.writes_made == writes + 1
    item = rm.get_item(ref.id)
    assert item["summary"] == "After" and item["priority"] == {"name": "Urgent"}


def test_status_change_by_name(rm: RedmineConnector) -> None:
    ref = rm.create_item({"summary": "Status walk"})
    assert rm.get_item(ref.id)["status"] == {"name": "New"}
    for name in ("In Progress", "resolved", "Closed"):
        rm.update_item(ref.id, {"status": {"name": name}})
        assert rm.get_item(ref.id)["status"]["name"].casefold() == name.casefold()


def test_unknown_status_lists_the_valid_ones(rm: RedmineConnector) -> None:
    ref = rm.create_item({"summary": "Bad status"})
    writes = rm.http.writes_made
    with pytest.raises(ConnectorError) as exc:
        rm.update_item(ref.id, {"status": {"name": "Done"}})
    assert not exc.value.retryable
    assert "Redmine has no status 'Done'" in exc.value.message
    assert "Valid statuses: New, In Progress, Resolved, Feedback, Closed, Rejected" in exc.value.message
    assert rm.http.writes_made == writes
    with pytest.raises(ConnectorError, match="Valid trackers: Bug, Feature, Support"):
        rm.create_item({"summary": "x", "type": {"name": "Epic"}})


def test_comments_add_edit_delete(rm: RedmineConnector, redmine: Any) -> None:
    ref = rm.create_item({"summary": "Comment me"})
    rm.update_item(ref.id, {"status": {"name": "Feedback"}})  # a journal without notes: not a comment
    first = rm.add_comment(ref.id, body="First reply\nwith two lines")
    private = rm.add_comment(ref.id, body="Agents only", internal=True)
    comments = rm.get_item(ref.id)["comments"]
    assert [(c["id"], c["body"], c["internal"]) for c in comments] == [
        (first, "First reply\nwith two lines", False),
        (private, "Agents only", True),
    ]
    assert comments[0]["author"] == {"email": "admin@example.net", "displayName": "Redmine Admin"}
    assert comments[0]["created"].endswith("Z")

    rm.update_comment(ref.id, first, body="First reply, edited")
    assert [c["body"] for c in rm.get_item(ref.id)["comments"]] == ["First reply, edited", "Agents only"]

    rm.delete_comment(ref.id, private)
    assert [c["id"] for c in rm.get_item(ref.id)["comments"]] == [first]
    rm.delete_comment(ref.id, private)  # idempotent
    journals = redmine.call("GET", f"issues/{ref.id}.json?include=journals").json()["issue"]["journals"]
    assert int(private) not in [j["id"] for j in journals]  # blank notes, no details: Redmine dropped it


def test_attachment_round_trip(rm: RedmineConnector) -> None:
    ref = rm.create_item({"summary": "With a file"})
    data = os.urandom(700_000) + b"\x00end"
    att_id = rm.add_attachment(
        ref.id, filename="dump.bin", mime_type="application/x-dump", content=io.BytesIO(data)
    )
    [att] = rm.get_item(ref.id)["attachments"]
    assert att["id"] == att_id and att["filename"] == "dump.bin" and att["size"] == len(data)
    assert att["mimeType"] == "application/x-dump"
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    chunks = list(rm.open_attachment(ref.id, att_id))
    assert len(chunks) > 1 and b"".join(chunks) == data

    rm.delete_attachment(ref.id, att_id)
    assert rm.get_item(ref.id)["attachments"] == []
    rm.delete_attachment(ref.id, att_id)  # idempotent
    with pytest.raises(ConnectorError) as exc:
        list(rm.open_attachment(ref.id, att_id))
    assert exc.value.status == 404 and not exc.value.retryable


def test_sha256_of_an_attachment_added_in_redmine(rm: RedmineConnector, redmine: Any) -> None:
    ref = rm.create_item({"summary": "Human upload"})
    data = b"added by a person in Redmine\n" * 1000
    token = redmine.call(
        "POST",
        "uploads.json?filename=notes.txt",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    ).json()["upload"]["token"]
    redmine.call(
        "PUT",
        f"issues/{ref.id}.json",
        json={
            "issue": {"uploads": [{"token": token, "filename": "notes.txt", "content_type": "text/plain"}]}
        },
    )
    [att] = rm.get_item(ref.id)["attachments"]  # 5.0's API hides the digest: read once and hashed
    assert att["sha256"] == hashlib.sha256(data).hexdigest() and att["mimeType"] == "text/plain"
    gets = rm.http.requests_by_method["GET"]
    rm.get_item(ref.id)
    assert rm.http.requests_by_method["GET"] == gets + 1  # remembered: no second download


SETTLE = 1 + _common.SETTLE_MARGIN + _common.CLOCK_SKEW + 0.1  # seconds until a poll settles what it returns


def test_search_updated_since_in_order_with_advancing_cursor(redmine_instance: Any, redmine: Any) -> None:
    # Its own project: other tests' issues would otherwise join the results.
    identifier = f"s-{uuid.uuid4().hex[:10]}"
    redmine.call(
        "POST",
        "projects.json",
        json={"project": {"name": identifier, "identifier": identifier, "tracker_ids": [1]}},
    )
    redmine_instance.settings = {"project": identifier, "tracker_id": 1}
    rm = get_connector(redmine_instance)
    refs, cursor = rm.search_updated_since(None)
    assert refs == [] and cursor is None

    a = rm.create_item({"summary": "a"})
    time.sleep(1.1)  # updated_on has second resolution
    b = rm.create_item({"summary": "b"})
    # Poll once b's second is surely over (thin sends no Date: the node's clock less 3 s counts), else the
    # next polls return b again (a same-second edit could follow a poll; SeenWindow).
    time.sleep(SETTLE)
    refs, cursor = rm.search_updated_since(None)
    assert [r.id for r in refs] == [a.id, b.id] and cursor == b.updated

    again, same = rm.search_updated_since(cursor)  # the overlap window sees a and b again: de-duplicated
    assert again == [] and same == cursor

    time.sleep(1.1)
    rm.update_item(a.id, {"summary": "a, changed"})
    time.sleep(SETTLE)
    refs, newer = rm.search_updated_since(cursor)
    assert [r.id for r in refs] == [a.id] and newer is not None and newer > cursor
    assert refs[0].updated == newer

    for i in range(3):  # paging: limit smaller than what changed
        rm.add_comment(b.id, body=f"c{i}")
    c = rm.create_item({"summary": "c"})
    time.sleep(SETTLE)
    refs, last = rm.search_updated_since(newer, limit=1)
    assert len(refs) == 1
    rest, last = rm.search_updated_since(last, limit=10)
    assert [r.id for r in refs + rest] == [b.id, c.id] and last == rm.find_item(c.id).updated
    redmine.call("DELETE", f"projects/{identifier}.json")


def test_a_poll_that_finds_nothing_costs_one_request(redmine_instance: Any, redmine: Any) -> None:
    """Polling runs every few seconds: an idle poll is one request, the overlap window notwithstanding
    (issue #18; the other trackers: tests/instances/test_poll_cost.py)."""
    from instances.connectors import http

    identifier = f"i-{uuid.uuid4().hex[:10]}"
    redmine.call(
        "POST",
        "projects.json",
        json={"project": {"name": identifier, "identifier": identifier, "tracker_ids": [1]}},
    )
    redmine_instance.settings = {"project": identifier}
    rm = get_connector(redmine_instance)
    rm.create_item({"summary": "polled"})
    time.sleep(SETTLE)
    refs, cursor = rm.search_updated_since(None)
    assert len(refs) == 1

    def cost() -> tuple[int, int]:
        before = sum(http.process_requests.values())
        found, _ = rm.search_updated_since(cursor)
        return len(found), sum(http.process_requests.values()) - before

    for _ in range(3):
        assert cost() == (0, 1)
        time.sleep(0.5)
    redmine.call("DELETE", f"projects/{identifier}.json")


def test_metadata(rm: RedmineConnector) -> None:
    meta = rm.metadata()
    assert meta["statuses"] == ["New", "In Progress", "Resolved", "Feedback", "Closed", "Rejected"]
    assert meta["priorities"] == ["Low", "Normal", "High", "Urgent", "Immediate"]
    assert meta["types"] == ["Bug", "Feature", "Support"]
    assert {"email": "admin@example.net", "displayName": "Redmine Admin", "id": "1"} in meta["users"]


def test_own_changes_are_recognised(
    rm: RedmineConnector, redmine: Any, redmine_project: dict[str, Any]
) -> None:
    login = f"agent{uuid.uuid4().hex[:6]}"
    user = redmine.call(
        "POST",
        "users.json",
        json={
            "user": {
                "login": login,
                "firstname": "Ann",
                "lastname": "Agent",
                "mail": f"{login}@example.com",
                "password": "a-long-password-1",
            }
        },
    ).json()["user"]
    redmine.call(
        "POST",
        f"projects/{redmine_project['identifier']}/memberships.json",
        json={"membership": {"user_id": user["id"], "role_ids": [3]}},  # 3: Manager in the default data
    )
    ref = rm.create_item({"summary": "Whose change?"})
    assert rm.is_own_change(rm.get_item(ref.id))  # created by the node

    redmine.call("PUT", f"issues/{ref.id}.json", switch_user=login, json={"issue": {"notes": "From a human"}})
    item = rm.get_item(ref.id)
    assert not rm.is_own_change(item)
    assert item["comments"][-1]["author"] == {"email": f"{login}@example.com", "displayName": "Ann Agent"}

    rm.add_comment(ref.id, body="From the node")
    assert rm.is_own_change({"id": ref.id})

    # Assign by e-mail (an admin key can look users up).
    rm.update_item(ref.id, {"assignee": {"email": f"{login}@example.com"}})
    assert rm.get_item(ref.id)["assignee"] == {"email": f"{login}@example.com", "displayName": "Ann Agent"}
    with pytest.raises(ConnectorError, match="no user with the e-mail"):
        rm.update_item(ref.id, {"assignee": {"email": "nobody@example.com"}})
    rm.update_item(ref.id, {"assignee": None})
    assert rm.get_item(ref.id)["assignee"] is None


def test_missing_issue_is_a_404(rm: RedmineConnector) -> None:
    with pytest.raises(ConnectorError) as exc:
        rm.get_item("99999999")
    assert exc.value.status == 404 and not exc.value.retryable
    assert exc.value.message.startswith("Redmine refused the request to read issue #99999999 (404 Not Found)")
