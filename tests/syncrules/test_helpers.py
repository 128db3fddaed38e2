"""Script helpers: comments, attachments, node lookups, mapping, sync flags, changed()."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncrules.engine import run_incoming, run_outgoing
from syncrules.helpers import (
    AttachmentHelper,
    CommentHelper,
    MappingHelper,
    NodeHelper,
    RunState,
    SyncHelper,
    changed_fn,
)

ALICE = {"email": "alice@example.com", "displayName": "Alice"}


def rc(cid, body, author=ALICE):
    return {"id": cid, "body": body, "author": author, "created": "2024-01-01T00:00:00Z", "internal": False}


def merge(local, remote, previous=None, **kw):
    state = RunState("incoming", {}, replica={"comments": remote}, previous={"comments": previous or []})
    issue = {"comments": copy.deepcopy(local)}
    result = CommentHelper(state).merge_comments(issue, {"comments": remote}, **kw)
    assert issue["comments"] is result
    return result


# --- comments ---------------------------------------------------------------------------------------------


def test_merge_comments_adds_new_remote_comment():
    result = merge([], [rc("r1", "hello")])
    assert result == [
        {
            "id": None,
            "remoteId": "r1",
            "body": "hello",
            "author": ALICE,
            "internal": False,
            "created": "2024-01-01T00:00:00Z",
        }
    ]


def test_merge_comments_applies_remote_edit():
    local = [{"id": "l1", "remoteId": "r1", "body": "hello"}]
    result = merge(local, [rc("r1", "hello, edited")], previous=[rc("r1", "hello")])
    assert result == [{"id": "l1", "remoteId": "r1", "body": "hello, edited"}]


def test_merge_comments_removes_remotely_deleted_and_keeps_unsynced():
    local = [
        {"id": "l1", "remoteId": "r1", "body": "a"},
        {"id": "l2", "body": "local only"},
        {"id": "l3", "remoteId": "r3", "body": "c"},
    ]
    result = merge(local, [rc("r3", "c")], previous=[rc("r1", "a"), rc("r3", "c")])
    assert [c["id"] for c in result] == ["l2", "l3"]


def test_merge_comments_echo_changes_nothing():
    # the local twin was edited locally; the remote comment is unchanged since previous: keep local text
    local = [{"id": "l1", "remoteId": "r1", "body": "edited here"}]
    result = merge(local, [rc("r1", "original")], previous=[rc("r1", "original")])
    assert result == local


def test_merge_comments_without_previous_compares_with_local_body():
    local = [{"id": "l1", "remoteId": "r1", "body": "same"}]
    assert merge(local, [rc("r1", "same")]) == local
    assert merge(local, [rc("r1", "new")])[0]["body"] == "new"


def test_merge_comments_internal_flag():
    assert merge([], [rc("r1", "x")], internal=True)[0]["internal"] is True


def test_merge_comments_author_prefix_new_edit_and_echo():
    new = merge([], [rc("r1", "hi")], author_prefix=True)
    assert new[0]["body"] == "[Alice <alice@example.com>] hi"
    # echo without previous: body with prefix equals the local body -> unchanged
    assert merge(new, [rc("r1", "hi")], author_prefix=True) == new
    # echo with previous
    assert merge(new, [rc("r1", "hi")], previous=[rc("r1", "hi")], author_prefix=True) == new
    edited = merge(new, [rc("r1", "hi2")], previous=[rc("r1", "hi")], author_prefix=True)
    assert edited[0]["body"] == "[Alice <alice@example.com>] hi2"
    assert merge([], [rc("r2", "x", author=None)], author_prefix=True)[0]["body"] == "x"
    assert (
        merge([], [rc("r2", "x", author={"displayName": "Bob"})], author_prefix=True)[0]["body"] == "[Bob] x"
    )


def test_merge_comments_does_not_add_empty_key():
    state = RunState("incoming", {})
    issue = {}
    assert CommentHelper(state).merge_comments(issue, {}) == []
    assert issue == {}


def test_add_comment():
    issue = {}
    c = CommentHelper(RunState("incoming", {})).add_comment(issue, "note", internal=True)
    assert issue["comments"] == [c] and c == {"id": None, "body": "note", "internal": True}


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.text(max_size=5), max_size=5),
    prefix=st.booleans(),
)
def test_merge_comments_is_idempotent(bodies, prefix):
    remote = [rc(f"r{i}", b) for i, b in enumerate(bodies)]
    once = merge([], remote, author_prefix=prefix)
    assert merge(once, remote, previous=remote, author_prefix=prefix) == once
    assert merge(once, remote, author_prefix=prefix) == once


# --- attachments ------------------------------------------------------------------------------------------


def ra(aid, name="a.txt"):
    return {"id": aid, "filename": name, "mimeType": "text/plain", "size": 3, "sha256": "x", "created": "c"}


def test_merge_attachments_add_keep_remove():
    issue = {
        "attachments": [
            {"id": "l1", "remoteId": "r1", "filename": "old.txt"},
            {"id": "l2", "filename": "local.txt"},
            {"id": "l3", "remoteId": "gone"},
        ]
    }
    state = RunState("incoming", {}, previous={"attachments": [ra("r1"), ra("gone")]})
    result = AttachmentHelper(state).merge_attachments(issue, {"attachments": [ra("r1"), ra("r2")]})
    assert issue["attachments"] is result
    assert [a["id"] for a in result] == ["l1", "l2", None]
    assert result[0]["filename"] == "old.txt"
    assert result[2] == {
        "id": None,
        "remoteId": "r2",
        "filename": "a.txt",
        "mimeType": "text/plain",
        "size": 3,
        "sha256": "x",
        "created": "c",
    }


def test_merge_attachments_nothing_to_do_leaves_issue_alone():
    issue = {"summary": "x"}
    AttachmentHelper(RunState("incoming", {})).merge_attachments(issue, {"attachments": []})
    assert issue == {"summary": "x"}


# --- node helper -----------------------------------------------------------------------------------------

CTX = {
    "users": [{"email": "Alice@Example.com", "displayName": "Alice", "id": "7"}],
    "statuses": ["To Do", "Done"],
    "priorities": ["High", "Low"],
    "types": ["Bug", "Task"],
}


def test_get_user():
    nh = NodeHelper(RunState("incoming", CTX))
    assert nh.get_user("alice@example.COM") == {"email": "Alice@Example.com", "displayName": "Alice"}
    assert nh.get_user({"email": "alice@example.com", "displayName": "x"})["displayName"] == "Alice"
    assert nh.get_user("nobody@x") is None
    assert nh.get_user("nobody@x", default="d") == "d"
    assert nh.get_user(None) is None


def test_get_status_priority_type():
    nh = NodeHelper(RunState("incoming", CTX))
    assert nh.get_status("to do") == {"name": "To Do"}
    assert nh.get_status({"name": "DONE"}) == {"name": "Done"}
    assert nh.get_status("Nope") is None
    assert nh.get_status("Nope", "To Do") == {"name": "To Do"}
    assert nh.get_status("Nope", {"name": "Keep"}) == {"name": "Keep"}
    assert nh.get_status(None, "Done") == {"name": "Done"}
    assert nh.get_priority("high") == {"name": "High"}
    assert nh.get_issue_type("bug") == {"name": "Bug"}
    # no list known on this node: names pass through
    assert NodeHelper(RunState("incoming", {})).get_status("Whatever") == {"name": "Whatever"}


# --- mapping ------------------------------------------------------------------------------------------------


def test_mapping():
    m = MappingHelper(RunState("incoming", CTX))
    table = {"Open": "To Do", "Closed": "Done", 1: "one"}
    assert m.map("Open", table) == "To Do"
    assert m.map("open", table) == "To Do"
    assert m.map({"name": "CLOSED"}, table) == "Done"
    assert m.map(1, table) == "one"
    assert m.map("x", table) is None
    assert m.map("x", table, "dflt") == "dflt"
    assert m.map([1], table, "d") == "d"
    assert m.map_name({"name": "open"}, table) == {"name": "To Do"}
    assert m.map_name("x", table) is None
    assert m.map_user({"email": "a@remote"}, {"a@remote": "alice@example.com"})["displayName"] == "Alice"
    assert m.map_user("zz", {}, "d") == "d"
    with pytest.raises(TypeError):
        m.map("x", ["not a dict"])


def test_mapping_in_script():
    src = 'issue.status = mapping.map_name(replica.status, {"Open": "To Do"}, "Done")\n'
    src += 'issue.priority = {"name": mapping.map(replica.priority.name, {"P1": "High"}, "Low")}\n'
    r = run_incoming(
        src,
        replica={"status": {"name": "OPEN"}, "priority": {"name": "P9"}},
        issue={},
        previous=None,
        first_sync=True,
    )
    assert r.issue == {"status": {"name": "To Do"}, "priority": {"name": "Low"}}


# --- sync helper ------------------------------------------------------------------------------------------


class Services:
    def is_under_sync(self, key):
        return key == "A-1"

    def local_key_for_remote(self, remote_id):
        return {"10": "B-7"}.get(remote_id)

    def remote_url(self, key):
        return f"https://remote/{key}"


def test_sync_helper_services_and_flags():
    state = RunState("incoming", {"services": Services()})
    sh = SyncHelper(state)
    assert sh.is_under_sync("A-1") is True and sh.is_under_sync("A-2") is False
    assert sh.local_key(10) == "B-7" and sh.local_key("11") is None
    assert sh.remote_url("X-1") == "https://remote/X-1"
    nothing = SyncHelper(RunState("incoming", {}))
    assert nothing.is_under_sync("A-1") is False and nothing.local_key("1") is None
    assert nothing.remote_url("x") is None
    sh.unexalate()
    sh.sync_back()
    assert state.unexalate and state.sync_back


def test_sync_flags_in_run_result():
    r = run_outgoing("sync_helper.unexalate()\n", issue={})
    assert r.unexalate is True and r.sync_back is False
    r = run_incoming("sync_helper.sync_back()\n", replica={}, issue={}, previous=None, first_sync=False)
    assert r.sync_back is True and r.unexalate is False
    r = run_incoming(
        "issue.parentId = sync_helper.local_key(replica.parentId)\n",
        replica={"parentId": "10"},
        issue={},
        previous=None,
        first_sync=True,
        context={"services": Services()},
    )
    assert r.issue == {"parentId": "B-7"}


# --- changed() ---------------------------------------------------------------------------------------------


def test_changed():
    replica = {"summary": "b", "status": {"name": "x"}, "customFields": {"S": 1}}
    previous = {"summary": "a", "status": {"name": "x"}, "customFields": {"S": 2}}
    changed = changed_fn(RunState("incoming", {}, replica=replica, previous=previous))
    assert changed("summary") is True
    assert changed("status") is False
    assert changed("status.name") is False
    assert changed("customFields.S") is True
    assert changed("description") is False
    first = changed_fn(RunState("incoming", {}, replica=replica, previous=replica, first_sync=True))
    assert first("status") is True
    assert changed_fn(RunState("outgoing", {}))("summary") is True
    with pytest.raises(TypeError):
        changed(1)


def test_log_helper_in_script():
    src = 'log.info("a", 1)\nlog.warn("b")\nlog.error("c")\nlog.debug({"k": [1]})\nlog.warning("w")\n'
    r = run_outgoing(src, issue={})
    assert r.log == ["INFO: a 1", "WARNING: b", "ERROR: c", "DEBUG: {'k': [1]}", "WARNING: w"]


def test_log_is_capped():
    r = run_outgoing('for i in range(300):\n    log.info("x" * 5000)\n', issue={})
    assert len(r.log) == 201
    assert r.log[-1] == "WARNING: 100 more log lines were dropped"
    assert len(r.log[0]) < 1100


def test_a_linked_item_the_remote_side_has_not_seen_yet_is_kept():
    """A concurrent sync: our comment/attachment reached the other side after it built this replica.
    It is missing from the replica but was never in ``previous`` either, so it was not deleted there."""
    kept = merge([{"id": "l1", "remoteId": "copy-of-l1", "body": "mine"}], [rc("r2", "theirs")], previous=[])
    assert [c["body"] for c in kept] == ["mine", "theirs"]
    issue = {"attachments": [{"id": "l1", "remoteId": "copy-of-l1"}]}
    state = RunState("incoming", {}, previous={"attachments": []})
    assert [a["id"] for a in AttachmentHelper(state).merge_attachments(issue, {"attachments": []})] == ["l1"]
