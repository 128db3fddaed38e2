"""Two real nodes (web + worker + sweeper each, own database and secrets) connected through a real
invitation code, syncing over the node protocol: create, edits, comments and attachments both ways, then
one node goes down, changes queue on the other, and arrive in order when it is back."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e


def only(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return items[0] if len(items) == 1 else None


@pytest.fixture(scope="module")
def pair(node_factory):  # type: ignore[no-untyped-def]
    a = node_factory("a", instance="Support desk", key="SUP")
    b = node_factory("b", instance="Engineering", key="ENG")
    code = a.manage(
        "initiate_connection", "--instance", "Support desk", "--name", "Support ⇄ Engineering", "--code-only"
    ).strip()
    assert code.startswith("EXN1-")
    accepted = b.manage("accept_invitation", "--instance", "Engineering", "--code", code, "--json")
    assert '"status": "active"' in accepted
    return a, b


def test_two_nodes_sync_both_ways_and_catch_up_after_an_outage(pair):
    a, b = pair
    created = a.api("POST", "/tracker/issues/", json={"project": "SUP", "summary": "Printer on fire"})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    a.shell(
        "import json\nfrom connections.models import Connection\nfrom replicas.pipeline import exalate\n"
        f"exalate(connection=Connection.objects.get(), key={key!r})\nprint(json.dumps(True))"
    )
    copy = wait_for("the issue on B", lambda: only(b.issues()))
    assert copy["summary"] == "Printer on fire" and copy["key"].startswith("ENG-")
    eng = copy["key"]

    # A -> B: an edit, a comment, an attachment.
    assert a.api("PATCH", f"/tracker/issues/{key}/", json={"priority": "High"}).status_code == 200
    assert a.api("POST", f"/tracker/issues/{key}/comments/", json={"body": "Seen twice"}).status_code == 201
    content = b"stack trace\n" * 5000
    up = a.api("POST", f"/tracker/issues/{key}/attachments/", files={"file": ("log.txt", content)})
    assert up.status_code == 201, up.text

    def b_has_all() -> bool:
        issue = b.api("GET", f"/tracker/issues/{eng}/").json()
        return (
            issue["priority"] == "High"
            and [c["body"] for c in issue["comments"]] == ["Seen twice"]
            and [x["sha256"] for x in issue["attachments"]] == [hashlib.sha256(content).hexdigest()]
        )

    wait_for("A's edit, comment and attachment on B", b_has_all)

    # B -> A.
    assert b.api("PATCH", f"/tracker/issues/{eng}/", json={"status": "In Progress"}).status_code == 200
    assert b.api("POST", f"/tracker/issues/{eng}/comments/", json={"body": "On it"}).status_code == 201
    up = b.api("POST", f"/tracker/issues/{eng}/attachments/", files={"file": ("fix.patch", b"diff --git")})
    assert up.status_code == 201

    def a_has_all() -> bool:
        issue = a.api("GET", f"/tracker/issues/{key}/").json()
        return (
            issue["status"] == "In Progress"
            and sorted(c["body"] for c in issue["comments"]) == ["On it", "Seen twice"]
            and sorted(x["filename"] for x in issue["attachments"]) == ["fix.patch", "log.txt"]
        )

    wait_for("B's edit, comment and attachment on A", a_has_all)

    # B goes down; A keeps working and queues.
    b.stop()
    for n in range(1, 4):
        assert a.api("PATCH", f"/tracker/issues/{key}/", json={"summary": f"Printer on fire #{n}"}).ok
    assert a.api("POST", f"/tracker/issues/{key}/comments/", json={"body": "While B was down"}).ok

    def a_is_waiting() -> str:
        message = a.shell(
            "import json\nfrom connections.models import Connection\n"
            "print(json.dumps(Connection.objects.get().status_message))"
        )
        return message if message.startswith("Waiting for the other node") else ""

    waiting = wait_for("A to report that it waits for B", a_is_waiting)
    assert "queued" in waiting and b.url in waiting

    b.start()

    def b_caught_up() -> bool:
        issue = b.api("GET", f"/tracker/issues/{eng}/").json()
        return issue["summary"] == "Printer on fire #3" and [c["body"] for c in issue["comments"]] == [
            "Seen twice",
            "On it",
            "While B was down",
        ]

    wait_for("the changes made while B was down", b_caught_up)
    # Nothing is left queued or failed on either node, and A's waiting message is gone.
    check = (
        "import json\nfrom connections.models import Connection, OutboundMessage\n"
        "from replicas.models import SyncError, SyncEvent\n"
        "print(json.dumps([OutboundMessage.objects.filter(delivered_at=None).count(),"
        " SyncEvent.objects.filter(status__in=['pending','processing','failed']).count(),"
        " SyncError.objects.count(), Connection.objects.get().status_message]))"
    )
    for node in (a, b):
        wait_for(f"node {node.name} to settle", lambda node=node: node.shell(check) == [0, 0, 0, ""])
