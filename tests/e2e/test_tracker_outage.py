"""A tracker that is down for longer than the node's whole backoff, while people keep editing on both sides:
once it answers again everything arrives, in order, nothing twice, and no admin acts.

Found with a real Redmine stopped for 4.5 minutes (issue #18, F3): the node gave up after 8 attempts, the
events stayed failed, and nothing arrived after Redmine came back until an admin pressed retry. Here the
node reaches the real Redmine through a proxy that stops listening (connection refused, as for a stopped
Redmine), so that a person can go on editing in Redmine meanwhile. The node's backoff is scaled down
(OUTAGE_MAX_BACKOFF_SECONDS=4) to keep the test short; the outage lasts several times that.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.connectors.conftest import redmine, redmine_project  # noqa: F401, F811  (fixtures)
from tests.e2e.conftest import wait_for
from tests.e2e.faults import FaultProxy
from tests.e2e.test_tracker_faults import SETUP, _redmine_user

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 20
ITEMS = 3

COUNTS = """
import json
from replicas.models import SyncError, SyncEvent
print(json.dumps({
    "failed": SyncEvent.objects.filter(status="failed").count(),
    "waiting": SyncEvent.objects.filter(status__in=["pending", "processing", "sent"]).count(),
    "errors": SyncError.objects.count(),
    "retried": SyncEvent.objects.filter(attempts__gt=1).count(),
}))
"""

EVENTS = """
import json
from replicas.models import SyncEvent
rows = SyncEvent.objects.order_by("id").values_list(
    "id", "connection_id", "twin_id", "direction", "status", "attempts", "error", "replica"
)
print(json.dumps([
    [i, c, t, d, s, a, e[:80], sorted(((r or {}).get("baseline") or {}).keys()),
     ((r or {}).get("hubIssue") or {}).get("description")]
    for i, c, t, d, s, a, e, r in rows
]))
"""


def test_a_tracker_outage_heals_by_itself(node_factory, redmine, redmine_project):  # noqa: F811
    proxy = FaultProxy("redmine", random.Random(0), fault_prefix="/")
    proxy.upstream = redmine.url
    node = node_factory(
        "outage",
        instance="Support",
        key="SUP",
        env={"OUTAGE_AFTER_FAILURES": "2", "OUTAGE_MAX_BACKOFF_SECONDS": "4"},
    )
    human = _redmine_user(redmine, redmine_project)
    try:
        setup = SETUP.replace("PROXY", repr(proxy.url)).replace("KEY", repr(redmine.api_key))
        connection = node.shell(setup.replace("PROJECT", repr(redmine_project["identifier"])))
        keys = []
        for i in range(ITEMS):
            created = node.api("POST", "/tracker/issues/", json={"project": "SUP", "summary": f"item {i}"})
            keys.append(created.json()["key"])
            node.api("POST", f"/connections/{connection}/exalate/", json={"key": keys[-1]})

        def redmine_issues() -> dict[str, dict[str, Any]]:
            params = {"project_id": redmine_project["identifier"], "status_id": "*", "limit": 100}
            found = redmine.call("GET", "issues.json", params=params).json()["issues"]
            return {issue["subject"]: issue for issue in found}

        twins = wait_for(
            "the items in Redmine", lambda: len(redmine_issues()) == ITEMS and redmine_issues(), 90
        )
        rm_id = {key: twins[f"item {i}"]["id"] for i, key in enumerate(keys)}
        redmine_instance = next(
            i for i in node.api("GET", "/instances/").json()["results"] if i["name"] == "Redmine"
        )

        proxy.go_down()
        down_at = time.monotonic()
        for round_ in range(2):  # edits on both sides while the node cannot reach Redmine
            for key in keys:
                changed = node.api(
                    "PATCH", f"/tracker/issues/{key}/", json={"summary": f"{key} round {round_}"}
                )
                assert changed.status_code == 200, changed.text
                redmine.call(
                    "PUT",
                    f"issues/{rm_id[key]}.json",
                    switch_user=human,
                    json={
                        "issue": {
                            "description": f"{key} typed in Redmine, round {round_}",
                            "notes": f"note {round_}",
                        }
                    },
                )
            time.sleep(2)

        # The node says what is going on, and fails nothing.
        def unreachable() -> dict[str, Any] | None:
            data = node.api("GET", f"/instances/{redmine_instance['id']}/").json()
            return data["outage"]

        outage = wait_for("the instance marked unreachable", unreachable, 30)
        assert "has been unreachable since" in outage["message"] and outage["next_try_at"]
        page = node.api("GET", "/connections/").status_code
        assert page == 200
        remaining = OUTAGE_SECONDS - (time.monotonic() - down_at)
        if remaining > 0:
            time.sleep(remaining)  # several times the whole backoff (4 s)
        counts = node.shell(COUNTS)
        assert counts["failed"] == 0 and counts["errors"] == 0, counts

        proxy.come_back()

        behind: list[Any] = []

        def converged() -> bool:
            issues = {i["key"]: i for i in node.issues()}
            behind.clear()
            for key in keys:
                remote = redmine.call("GET", f"issues/{rm_id[key]}.json").json()["issue"]
                if remote["subject"] != f"{key} round 1" or issues[key]["summary"] != f"{key} round 1":
                    behind.append((key, remote["subject"], issues[key]["summary"]))
                if issues[key]["description"] != f"{key} typed in Redmine, round 1":
                    behind.append((key, issues[key]["description"]))
            counts = node.shell(COUNTS)
            if counts["waiting"]:
                behind.append(counts)
            return not behind

        try:
            wait_for("both sides to catch up by themselves", converged, 90)
        except AssertionError:
            raise AssertionError(f"Still behind: {behind}; events: {node.shell(EVENTS)}") from None
        # Nothing twice: one Redmine issue per item, and each Redmine note once on the built-in side.
        assert len(redmine_issues()) == ITEMS
        for key in keys:
            comments = node.api("GET", f"/tracker/issues/{key}/").json()["comments"]
            assert sorted(c["body"] for c in comments) == ["note 0", "note 1"], comments
        counts = node.shell(COUNTS)
        assert counts["failed"] == 0 and counts["errors"] == 0, counts
        assert counts["retried"] >= 1, "no event was ever retried: the outage did not happen"
        assert node.api("GET", f"/instances/{redmine_instance['id']}/").json()["reachable"] is True
    finally:
        proxy.close()
