"""Default (Basic mode) rules: complete replica out, field-level merge in, echoes change nothing."""

from __future__ import annotations

import copy

import pytest

from syncrules.defaults import DEFAULT_INCOMING, DEFAULT_OUTGOING, TRACKER_TYPES, default_rules
from syncrules.engine import run_incoming, run_outgoing, validate

ALICE = {"email": "alice@example.com", "displayName": "Alice"}
SAMPLE = {
    "id": "101",
    "key": "SUP-1",
    "url": "https://a.example/SUP-1",
    "summary": "Printer on fire",
    "description": "It is really on fire",
    "status": {"name": "Open"},
    "priority": {"name": "High"},
    "type": {"name": "Bug"},
    "labels": ["hardware", "urgent"],
    "assignee": ALICE,
    "reporter": {"email": "bob@example.com", "displayName": "Bob"},
    "dueDate": "2024-05-01",
    "created": "2024-04-01T10:00:00Z",
    "updated": "2024-04-02T10:00:00Z",
    "comments": [
        {
            "id": "c1",
            "body": "Extinguisher?",
            "author": ALICE,
            "created": "2024-04-01T11:00:00Z",
            "updated": "2024-04-01T11:00:00Z",
            "internal": False,
        }
    ],
    "attachments": [
        {
            "id": "a1",
            "filename": "fire.png",
            "mimeType": "image/png",
            "size": 10,
            "sha256": "ab",
            "created": "2024-04-01T11:00:00Z",
        }
    ],
    "project": {"idStr": "1", "key": "SUP", "name": "Support", "versions": [], "components": []},
}
CONTEXT = {
    "statuses": ["To Do", "Open", "Done"],
    "priorities": ["Low", "High"],
    "types": ["Bug", "Task"],
    "users": [{"email": "ALICE@example.com", "displayName": "Alice L.", "id": "9"}],
}


def outgoing(issue=SAMPLE):
    return run_outgoing(DEFAULT_OUTGOING, issue=issue).replica


def incoming(replica, issue, previous, first_sync, context=CONTEXT):
    return run_incoming(
        DEFAULT_INCOMING,
        replica=replica,
        issue=issue,
        previous=previous,
        first_sync=first_sync,
        context=context,
    ).issue


def test_default_rules_for_every_tracker_type():
    from syncrules.defaults import COMMENT_AUTHORS_IN_TEXT

    assert default_rules("builtin") == (DEFAULT_OUTGOING, DEFAULT_INCOMING)
    for tracker in TRACKER_TYPES:
        outgoing, incoming = default_rules(tracker)
        assert outgoing == DEFAULT_OUTGOING
        assert incoming.replace(COMMENT_AUTHORS_IN_TEXT[1], COMMENT_AUTHORS_IN_TEXT[0]) == DEFAULT_INCOMING
    with pytest.raises(ValueError):
        default_rules("notion")


def test_defaults_validate_clean():
    assert validate(DEFAULT_OUTGOING, DEFAULT_INCOMING) == []


def test_outgoing_default_builds_complete_replica():
    replica = outgoing()
    for field in (
        "key",
        "summary",
        "description",
        "status",
        "priority",
        "type",
        "labels",
        "assignee",
        "reporter",
        "dueDate",
        "comments",
        "attachments",
        "project",
        "created",
        "updated",
    ):
        assert replica[field] == SAMPLE[field], field
    assert replica["customFields"] == {} and replica["watchers"] == []


def test_incoming_default_first_sync_creates_all_fields():
    replica = outgoing()
    issue = incoming(replica, {}, None, True)
    assert issue["summary"] == SAMPLE["summary"]
    assert issue["description"] == SAMPLE["description"]
    assert issue["status"] == {"name": "Open"}
    assert issue["priority"] == {"name": "High"}
    assert issue["type"] == {"name": "Bug"}
    assert issue["labels"] == SAMPLE["labels"]
    assert issue["assignee"] == {"email": "ALICE@example.com", "displayName": "Alice L."}
    assert issue["dueDate"] == "2024-05-01"
    assert issue["comments"] == [
        {
            "id": None,
            "remoteId": "c1",
            "body": "Extinguisher?",
            "author": ALICE,
            "internal": False,
            "created": "2024-04-01T11:00:00Z",
        }
    ]
    assert [a["remoteId"] for a in issue["attachments"]] == ["a1"]


def test_incoming_unknown_status_keeps_local_default_and_unknown_user_unassigns():
    replica = dict(outgoing(), status={"name": "Weird"}, assignee={"email": "x@y", "displayName": "X"})
    issue = incoming(replica, {"status": {"name": "To Do"}, "assignee": ALICE}, None, True)
    assert issue["status"] == {"name": "To Do"}
    assert issue["assignee"] is None


def synced_pair():
    replica = outgoing()
    issue = incoming(replica, {}, None, True)
    # the pipeline fills local ids and the remoteId links after creating them
    issue["id"] = "900"
    issue["comments"][0]["id"] = "lc1"
    issue["attachments"][0]["id"] = "la1"
    return replica, issue


def test_incoming_update_applies_only_changed_fields():
    previous, issue = synced_pair()
    issue["description"] = "edited locally"
    replica = copy.deepcopy(previous)
    replica["summary"] = "Printer on fire (again)"
    after = incoming(replica, issue, previous, False)
    assert after["summary"] == "Printer on fire (again)"
    assert after["description"] == "edited locally"
    assert {k: v for k, v in after.items() if k != "summary"} == {
        k: v for k, v in issue.items() if k != "summary"
    }


def test_incoming_echo_changes_nothing():
    previous, issue = synced_pair()
    issue["description"] = "edited locally"
    issue["comments"][0]["body"] = "edited locally too"
    before = copy.deepcopy(issue)
    assert incoming(copy.deepcopy(previous), issue, previous, False) == before
    assert issue == before


def test_incoming_update_comments_and_attachments():
    previous, issue = synced_pair()
    replica = copy.deepcopy(previous)
    replica["comments"][0]["body"] = "Extinguisher!"
    replica["comments"].append(
        {"id": "c2", "body": "done", "author": None, "created": "t", "internal": False}
    )
    replica["attachments"] = []
    after = incoming(replica, issue, previous, False)
    assert [(c["id"], c["remoteId"], c["body"]) for c in after["comments"]] == [
        ("lc1", "c1", "Extinguisher!"),
        (None, "c2", "done"),
    ]
    assert after["attachments"] == []


def test_incoming_status_change_with_case_mapping():
    previous, issue = synced_pair()
    replica = dict(copy.deepcopy(previous), status={"name": "DONE"})
    assert incoming(replica, issue, previous, False)["status"] == {"name": "Done"}


def test_defaults_run_without_context():
    replica = outgoing()
    issue = incoming(replica, {}, None, True, context=None)
    assert issue["status"] == {"name": "Open"} and issue["assignee"] is None


def test_trackers_that_cannot_store_a_comments_author_get_it_in_the_text() -> None:
    from syncrules.defaults import TRACKER_TYPES, default_rules

    assert "author_prefix=True" not in default_rules("builtin")[1]  # it stores the author
    for tracker in set(TRACKER_TYPES) - {"builtin"}:
        assert (
            "comment_helper.merge_comments(issue, replica, author_prefix=True)" in default_rules(tracker)[1]
        )
