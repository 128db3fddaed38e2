"""Tracker faults through the connector HTTP seam: a real node (web + worker + sweeper) syncs a built-in
tracker project with a real Redmine 5.0 project, but every request of the node to Redmine crosses a
``FaultProxy`` that answers a share of them with 429 + ``Retry-After``, 500, a slow answer or a dropped
connection, while the worker is SIGKILLed now and then. Edits are made on both sides (the built-in side
writes summaries and comments, a Redmine user writes descriptions and notes). At the end both sides must
hold every last value and every comment exactly once.

Faults also hit after Redmine did the work ("drop after forwarding": the node never hears the answer to a
create, a note or an attachment it made). Such a write is not repeated blindly: the HTTP seam does not
repeat a request that is not idempotent once it may have been carried out, and the retried event adopts
what the earlier attempt wrote (``find_created``, unlinked notes with the same text).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from tests.connectors.conftest import redmine, redmine_project  # noqa: F401, F811  (fixtures)
from tests.e2e.conftest import wait_for
from tests.e2e.faults import FaultProxy

pytestmark = pytest.mark.e2e

SETUP = """
import json
from connections.services import connection_create_local
from instances.models import Instance
rm = Instance.objects.create(
    name="Redmine", tracker_type="redmine", url=PROXY, credentials=json.dumps({"api_key": KEY}),
    settings={"project": PROJECT, "poll_interval_s": 1},
)
sup = Instance.objects.get(name="Support")
a, b = connection_create_local(name="Support ⇄ Redmine", instance_a=sup, instance_b=rm)
print(json.dumps(a.pk))
"""


RETRIED = """
import json
from django.db.models import Sum
from replicas.models import SyncEvent
retried = SyncEvent.objects.filter(attempts__gt=1)
extra = (retried.aggregate(n=Sum("attempts"))["n"] or 0) - retried.count()
print(json.dumps({"events_retried": retried.count(), "extra_attempts": extra}))
"""


HISTORY = """
import json
from replicas.models import SyncEvent, Twin
out = []
for twin in Twin.objects.filter(local_key__in=KEYS).union(Twin.objects.filter(remote_key__in=KEYS)):
    out.append(f"twin {twin.pk} {twin.local_key}<->{twin.remote_key} state={twin.state} sent={twin.sent_seq} "
               f"applied={twin.applied_seq} acked={twin.acked_seq} local_replica.summary="
               f"{(twin.local_replica or {}).get('summary')!r}")
    for e in SyncEvent.objects.filter(twin=twin).order_by("id"):
        hub = (e.replica or {}).get("hubIssue") or {}
        base = (e.replica or {}).get("baseline") or {}
        out.append(f"  {e.id} {e.direction} {e.kind} {e.status} seq={e.seq} seen={e.peer_seen_seq} "
                   f"attempts={e.attempts} summary={hub.get('summary')!r} base={base.get('summary', '-')!r} "
                   f"edited={hub.get('edited')} {e.created_at:%H:%M:%S.%f} {e.error[:120]!r}")
print(json.dumps(out))
"""


def _redmine_user(server: Any, project: dict[str, Any]) -> str:
    login = f"human{uuid.uuid4().hex[:6]}"
    user = server.call(
        "POST",
        "users.json",
        json={
            "user": {
                "login": login,
                "firstname": "Hu",
                "lastname": "Man",
                "mail": f"{login}@example.com",
                "password": "a-long-password-1",
            }
        },
    ).json()["user"]
    server.call(
        "POST",
        f"projects/{project['identifier']}/memberships.json",
        json={"membership": {"user_id": user["id"], "role_ids": [3]}},
    )
    return login


def _subjects(server: Any, project: dict[str, Any]) -> list[str]:
    params = {"project_id": project["identifier"], "status_id": "*", "limit": 100}
    return [issue["subject"] for issue in server.call("GET", "issues.json", params=params).json()["issues"]]


def test_tracker_faults_lose_and_duplicate_nothing(node_factory, redmine, redmine_project, capsys):  # noqa: F811
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(1_000_000))
    rng = random.Random(seed)
    print(f"tracker fault seed: {seed} (FAULT_SEED={seed} to reproduce)")
    proxy = FaultProxy("redmine", rng, fault_prefix="/")
    proxy.upstream = redmine.url
    proxy.kinds = FaultProxy.KINDS  # "drop_after" too: Redmine did the work and the node never heard
    node = node_factory("tf", instance="Support", key="SUP")
    human = _redmine_user(redmine, redmine_project)
    started = time.monotonic()
    try:
        setup = SETUP.replace("PROXY", repr(proxy.url)).replace("KEY", repr(redmine.api_key))
        connection = node.shell(setup.replace("PROJECT", repr(redmine_project["identifier"])))

        # Four items exalated from the built-in side; find their Redmine twins.
        keys = []
        for i in range(4):
            created = node.api("POST", "/tracker/issues/", json={"project": "SUP", "summary": f"item {i}"})
            assert created.status_code == 201, created.text
            keys.append(created.json()["key"])
            exalated = node.api("POST", f"/connections/{connection}/exalate/", json={"key": keys[-1]})
            assert exalated.status_code in (200, 201, 202), exalated.text

        def redmine_issues() -> dict[str, dict[str, Any]]:
            found = redmine.call(
                "GET",
                "issues.json",
                params={"project_id": redmine_project["identifier"], "status_id": "*", "limit": 100},
            ).json()["issues"]
            return {issue["subject"]: issue for issue in found}

        twins = wait_for("the items in Redmine", lambda: len(redmine_issues()) == 4 and redmine_issues(), 90)
        rm_id = {key: twins[f"item {i}"]["id"] for i, key in enumerate(keys)}

        summary: dict[str, str] = {}
        description: dict[str, str] = {}
        comments: dict[str, list[str]] = {key: [] for key in keys}
        files: dict[str, list[tuple[str, int]]] = {key: [] for key in keys}
        created_later: list[str] = []  # summaries of items exalated while faults were on
        edits: Counter[str] = Counter()
        kills = 0
        for step in range(40):
            if step % 8 == 0:
                proxy.rate = 0.5 if proxy.rate == 0 else 0.0
            if step in (13, 29):
                node.kill_role("worker", signal.SIGKILL)
                kills += 1
                time.sleep(rng.uniform(0.5, 2))
                node.start_role("worker")
            key = rng.choice(keys)
            what = rng.choice(["summary", "description", "local comment", "redmine note", "local file"])
            if step in (5, 18, 34):  # inside fault windows: a create in Redmine that may lose its answer
                what = "new item"
            text = f"{what} {step} {uuid.uuid4().hex[:4]}"
            if what == "new item":
                answer = node.api("POST", "/tracker/issues/", json={"project": "SUP", "summary": text})
                assert answer.status_code == 201, answer.text
                answer = node.api(
                    "POST", f"/connections/{connection}/exalate/", json={"key": answer.json()["key"]}
                )
                assert answer.status_code in (200, 201, 202), answer.text
                created_later.append(text)
            elif what == "local file":
                content = os.urandom(rng.randrange(1, 40_000))
                name = f"file-{step}.bin"
                answer = node.api(
                    "POST", f"/tracker/issues/{key}/attachments/", files={"file": (name, content)}
                )
                assert answer.status_code == 201, answer.text
                files[key].append((name, len(content)))
            elif what == "summary":
                answer = node.api("PATCH", f"/tracker/issues/{key}/", json={"summary": text})
                assert answer.status_code == 200, answer.text
                summary[key] = text
            elif what == "local comment":
                answer = node.api("POST", f"/tracker/issues/{key}/comments/", json={"body": text})
                assert answer.status_code == 201, answer.text
                comments[key].append(text)
            elif what == "description":
                change = {"issue": {"description": text}}
                redmine.call("PUT", f"issues/{rm_id[key]}.json", switch_user=human, json=change)
                description[key] = text
            else:
                redmine.call(
                    "PUT", f"issues/{rm_id[key]}.json", switch_user=human, json={"issue": {"notes": text}}
                )
                comments[key].append(text)
            edits[what] += 1
            time.sleep(rng.uniform(0.1, 0.6))
        proxy.rate = 0.0

        def local(key: str) -> dict[str, Any]:
            issue = node.api("GET", f"/tracker/issues/{key}/").json()
            notes = node.api("GET", f"/tracker/issues/{key}/comments/").json()
            notes = notes.get("results", []) if isinstance(notes, dict) else notes
            issue["comment_bodies"] = [c["body"] for c in notes]
            issue["files"] = sorted((a["filename"], a["size"]) for a in issue.get("attachments") or [])
            return issue

        def remote(key: str) -> dict[str, Any]:
            params = {"include": "journals,attachments"}
            issue = redmine.call("GET", f"issues/{rm_id[key]}.json", params=params).json()["issue"]
            issue["comment_bodies"] = [j["notes"] for j in issue.get("journals", []) if j.get("notes")]
            issue["files"] = sorted((a["filename"], a["filesize"]) for a in issue.get("attachments") or [])
            return issue

        def later_items() -> tuple[Counter[str], Counter[str]]:
            """Items exalated during faults, by summary: in the built-in project and in Redmine."""
            ours = Counter(i["summary"] for i in node.issues() if i["summary"] in created_later)
            theirs = Counter(s for s in _subjects(redmine, redmine_project) if s in created_later)
            return ours, theirs

        def converged() -> bool:
            for key in keys:
                mine, theirs = local(key), remote(key)
                if key in summary and not (mine["summary"] == theirs["subject"] == summary[key]):
                    return False
                if key in description and not (
                    (mine.get("description") or "") == (theirs.get("description") or "") == description[key]
                ):
                    return False
                for side in (mine, theirs):
                    if sorted(side["comment_bodies"]) != sorted(comments[key]):
                        return False
                    if side["files"] != sorted(files[key]):
                        return False
            return later_items() == (Counter(created_later), Counter(created_later))

        def differences() -> list[str]:
            found = []
            for key in keys:
                mine, theirs = local(key), remote(key)
                seen = {
                    "summary": (mine["summary"], theirs["subject"]),
                    "description": (mine.get("description") or "", theirs.get("description") or ""),
                }
                for field, wanted in (("summary", summary), ("description", description)):
                    if key in wanted and seen[field] != (wanted[key], wanted[key]):
                        found.append(
                            f"{key} {field}: built-in/Redmine {seen[field]}, expected {wanted[key]!r}"
                        )
                for side, item in (("built-in", mine), ("Redmine", theirs)):
                    have, want = Counter(item["comment_bodies"]), Counter(comments[key])
                    if have != want:
                        found.append(
                            f"{key} comments on {side}: extra {list((have - want).elements())}, "
                            f"missing {list((want - have).elements())}"
                        )
            return found

        try:
            wait_for("both sides to hold every edit", converged, timeout=180, interval=1.0)
        except AssertionError:
            lines = "\n".join(differences())
            stuck = sorted({line.split()[0] for line in differences()})
            history = "\n".join(node.shell(HISTORY.replace("KEYS", repr(stuck))))
            with capsys.disabled():
                print(f"\nsync history of {stuck}:\n{history}\nnode log:\n{node.log_tail(20000)}", flush=True)
            raise AssertionError(f"Not converged (seed {seed}):\n{lines}") from None
        # Exactly once: the convergence check compares sorted lists, so a duplicate would have failed it.
    finally:
        proxy.close()
    retried = node.shell(RETRIED)
    log = (node.var_dir / "processes.log").read_text(errors="replace")
    report = {
        "seed": seed,
        **retried,
        "writes_adopted": log.count("Adopted "),
        "edits": dict(edits),
        "items_created_during_faults": len(created_later),
        "tracker_faults": dict(proxy.counts),
        "requests_forwarded": proxy.forwarded,
        "worker_kills": kills,
        "seconds": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print(f"\ntracker fault summary: {json.dumps(report)}", flush=True)
    assert sum(proxy.counts.values()) > 0, "no fault was injected: the test proved nothing"
