"""Polling benchmark: what polling costs each polled tracker per hour, and how long a Redmine edit takes to
reach the built-in tracker through a real node.

Usage: python bench/bench_polling.py [--only redmine,jira,...] [--start-redmine] [--json]
       python bench/bench_polling.py --latency [--edits N] [--root TREE] [--start-redmine]

Requests per hour (the default). For each polled tracker an hour is simulated: every 2 s (``node_sweeper``'s
tick) the node's own decision ``instances.polling.poll_plan`` is asked whether the instance is due, and if so
the real poll runs (``poll_instance``: the connector's ``search_updated_since``, the outbox, the cursor)
against the tracker's test double (``tests/instances/test_poll_cost.py``'s set-ups, on fake clocks kept in
step), which counts the requests. Redmine has no double: the same hour runs against a real Redmine
(``REDMINE_URL``/``REDMINE_API_KEY``, or one ``tests/e2e/redmine.sh`` starts with ``--start-redmine``), in
real time per poll but simulated time between polls. Two hours per tracker:

* ``idle``: nobody changes anything (an item changed just before the hour, so the overlap window behind the
  cursor is not empty: the case that cost Azure DevOps two requests per poll);
* ``busy``: a person edits an item every 30 s all hour (polling stays at the busy cadence).

Only polling's own requests count; reading a changed item and writing to it are the pipeline's, per change,
measured by ``bench_connectors.py``. A tracker with a webhook set up is polled every 60 s as a backstop
instead (60 polls an hour, busy or not).

Latency (``--latency``): a real Redmine and a real node (``manage.py runnode`` from ``--root``, default this
tree, SQLite, this interpreter) joined by a local connection set up through the API; a Redmine issue is
exalated, then edited in Redmine ``--edits`` times, ``--gap`` seconds apart (random in that range; ``1,15``,
the default: a conversation; ``65,125``: isolated edits, each past the busy minute and at a random point of
the poll cycle); each edit's latency is the time from Redmine's answer to the PUT until the built-in
tracker's API shows the new subject. ``--root`` runs another tree (e.g. ``git archive main``) for
before/after figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TICK = 2.0  # node_sweeper's default interval
HOUR = 3600.0
EDIT_EVERY = 30.0
SETTLE = 5.0  # seconds until a real Redmine's change is settled for SeenWindow (thin sends no Date header)
TRACKER_ORDER = ["redmine", "github", "jira", "gitlab", "azure", "salesforce", "servicenow", "zendesk"]


# --- requests per hour ------------------------------------------------------------------------------------


@contextmanager
def real_redmine(stack: ExitStack, start: bool) -> Iterator[Any]:
    """A Tracker (as in test_poll_cost) on a real Redmine: a project of its own, requests counted at the
    node's HTTP seam."""
    import bench_connectors as bc
    import requests

    from instances.connectors import http
    from tests.instances.test_poll_cost import Tracker, _instance

    where = bc.find_redmine(stack, start)
    if isinstance(where, str):
        raise LookupError(where)
    url, key = where
    headers = {"X-Redmine-API-Key": key}
    ident = f"poll-{uuid.uuid4().hex[:10]}"
    requests.post(
        f"{url}/projects.json",
        json={"project": {"name": ident, "identifier": ident, "tracker_ids": [1, 2, 3]}},
        headers=headers,
        timeout=30,
    ).raise_for_status()
    stack.callback(requests.delete, f"{url}/projects/{ident}.json", headers=headers, timeout=30)

    def edit(ref: Any) -> None:
        requests.put(
            f"{url}/issues/{ref.id}.json",
            json={"issue": {"subject": f"edited {time.monotonic()}"}},
            headers=headers,
            timeout=30,
        ).raise_for_status()

    yield Tracker(
        _instance("redmine", url, {"api_key": key}, {"project": ident}),
        lambda: sum(http.process_requests.values()),
        edit,
        lambda seconds: None,
    )


def simulate(name: str, busy: bool, start_redmine: bool) -> dict[str, Any]:
    """One simulated hour of one tracker: polls and requests."""
    from django.conf import settings
    from django.utils import timezone

    from instances.connectors import get_connector
    from instances.models import Instance
    from instances.polling import poll_instance, poll_plan
    from tests.instances.test_poll_cost import TRACKERS

    with ExitStack() as stack:
        tracker = stack.enter_context(
            real_redmine(stack, start_redmine) if name == "redmine" else TRACKERS[name]()
        )
        ref = get_connector(tracker.instance).create_item({"summary": "polled item"})
        tracker.later(70)  # Zendesk's export serves only times more than a minute old
        sim = timezone.now()
        window = settings.POLL_BUSY_WINDOW_S
        poll_instance(tracker.instance.pk, now=sim)  # the item is news once
        sim += timedelta(seconds=window)
        tracker.later(window)
        if name == "redmine":
            time.sleep(SETTLE)  # whole-second times settle on real clocks (SeenWindow), not simulated ones
        # One poll before the hour: per-process caches fill (Jira: the API user's time zone, kept 5 minutes).
        poll_instance(tracker.instance.pk, now=sim)
        # The hour starts once these finds no longer speed polling up.
        sim += timedelta(seconds=window)
        tracker.later(window)
        polls = requests = found = 0
        modes: dict[str, int] = {}
        end, next_edit = sim + timedelta(seconds=HOUR), sim + timedelta(seconds=EDIT_EVERY)
        while sim < end:
            sim += timedelta(seconds=TICK)
            tracker.later(TICK)
            if busy and sim >= next_edit:
                tracker.person_edit(ref)
                next_edit += timedelta(seconds=EDIT_EVERY)
            plan = poll_plan(Instance.objects.get(pk=tracker.instance.pk), sim)
            if plan.due:
                modes[plan.mode] = modes.get(plan.mode, 0) + 1
                before = tracker.requests()
                found += poll_instance(tracker.instance.pk, now=sim)
                requests += tracker.requests() - before
                polls += 1
        return {"polls": polls, "requests": requests, "found": found, "modes": modes}


def requests_per_hour(names: list[str], start_redmine: bool, as_json: bool) -> int:
    import bench_connectors as bc

    bc.configure(verbose=False)
    from django.conf import settings

    print(
        f"Polling cadence: idle every {settings.POLL_INTERVAL_S:g} s, busy every "
        f"{settings.POLL_BUSY_INTERVAL_S:g} s for {settings.POLL_BUSY_WINDOW_S:g} s after activity; sweeps "
        f"every {TICK:g} s; busy = an edit every {EDIT_EVERY:g} s.\n",
        file=sys.stderr,
    )
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            rows[name] = {
                "idle": simulate(name, busy=False, start_redmine=start_redmine),
                "busy": simulate(name, busy=True, start_redmine=start_redmine),
            }
        except LookupError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| tracker | idle: polls / requests an hour | busy: polls / requests an hour |")
    print("|---|---|---|")
    for name, row in rows.items():
        idle, busy = row["idle"], row["busy"]
        print(f"| {name} | {idle['polls']} / {idle['requests']} | {busy['polls']} / {busy['requests']} |")
    bad = [n for n, r in rows.items() if r["idle"]["requests"] != r["idle"]["polls"]]
    if bad:
        print(f"\nAn idle poll cost more than one request: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


# --- latency through a real node ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeProcess:
    """A node from ``root`` on SQLite in a temporary folder, run with ``manage.py runnode``."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self.root = root
        self.var = Path(tempfile.mkdtemp(prefix="exalate-bench-polling-"))
        stack.callback(shutil.rmtree, self.var, ignore_errors=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("DATABASE_URL", "REDIS_URL", "SECRET", "DJANGO_", "NODE_", "VAR_DIR", "MEDIA")
            )
        }
        self.env.update(
            DEBUG="true",
            VAR_DIR=str(self.var),
            NODE_URL=self.url,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
            Q_CLUSTER_NAME=f"bench-polling-{os.getpid()}",
        )
        self.proc: subprocess.Popen | None = None
        stack.callback(self.stop)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(self.root / "manage.py"), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> str:
        self.manage("migrate", "--noinput")
        self.manage("bootstrap_demo", "--no-demo")
        token = self.manage("create_api_token", "admin").strip().splitlines()[-1]
        log = open(self.var / "node.log", "ab")  # noqa: SIM115  (held by the child)
        self.proc = subprocess.Popen(
            [sys.executable, str(self.root / "manage.py"), "runnode", "--addr", f"127.0.0.1:{self.port}"],
            env=self.env,
            cwd=self.root,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return token
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"the node did not start; see {self.var / 'node.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 2)  # SIGINT, as Ctrl-C
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


def latency(root: Path, edits: int, gap: tuple[float, float], start_redmine: bool, seed: int) -> int:
    import bench_connectors as bc
    import requests

    with ExitStack() as stack:
        where = bc.find_redmine(stack, start_redmine)
        if isinstance(where, str):
            print(f"No Redmine: {where}", file=sys.stderr)
            return 2
        rurl, rkey = where
        rh = {"X-Redmine-API-Key": rkey}
        ident = f"lat-{uuid.uuid4().hex[:10]}"
        requests.post(
            f"{rurl}/projects.json",
            json={"project": {"name": ident, "identifier": ident, "tracker_ids": [1, 2, 3]}},
            headers=rh,
            timeout=30,
        ).raise_for_status()
        stack.callback(requests.delete, f"{rurl}/projects/{ident}.json", headers=rh, timeout=30)

        node = NodeProcess(root, stack)
        token = node.start()
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"

        def call(method: str, path: str, **kw: Any) -> Any:
            response = api.request(method, f"{node.url}/api/v1{path}", timeout=30, **kw)
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
            return response.json() if response.content else None

        builtin = call("POST", "/instances/", json={"name": "Built-in", "tracker_type": "builtin"})
        call("POST", "/tracker/projects/", json={"instance": builtin["id"], "key": "LAT", "name": "Latency"})
        redmine = call(
            "POST",
            "/instances/",
            json={
                "name": "Redmine",
                "tracker_type": "redmine",
                "url": rurl,
                "credentials": {"api_key": rkey},
                "settings": {"project": ident},
            },
        )
        side = call(
            "POST",
            "/connections/local/",
            json={"name": "Redmine ⇄ Built-in", "instance_a": redmine["id"], "instance_b": builtin["id"]},
        )
        issue = requests.post(
            f"{rurl}/issues.json",
            json={"issue": {"project_id": ident, "tracker_id": 1, "subject": "latency 0"}},
            headers=rh,
            timeout=30,
        ).json()["issue"]
        call("POST", f"/connections/{side['id']}/exalate/", json={"key": f"#{issue['id']}"})

        def arrived(subject: str, timeout: float = 180) -> float:
            started = time.monotonic()
            while time.monotonic() - started < timeout:
                rows = call("GET", "/tracker/issues/", params={"search": subject})
                rows = rows["results"] if isinstance(rows, dict) else rows
                if any(r["summary"] == subject for r in rows):
                    return time.monotonic() - started
                time.sleep(0.1)
            raise RuntimeError(f"{subject!r} did not arrive within {timeout:.0f} s")

        arrived("latency 0")
        rng = random.Random(seed)
        times = []
        for n in range(1, edits + 1):
            time.sleep(rng.uniform(*gap))
            subject = f"latency {n}"
            requests.put(
                f"{rurl}/issues/{issue['id']}.json",
                json={"issue": {"subject": subject}},
                headers=rh,
                timeout=30,
            ).raise_for_status()
            times.append(arrived(subject))
            print(f"edit {n}: {times[-1]:.1f} s", file=sys.stderr)
        times.sort()
        p50 = statistics.median(times)
        print(
            f"Redmine -> built-in, {edits} edits {gap[0]:g}-{gap[1]:g} s apart ({root}): p50 {p50:.1f} s, "
            f"min {times[0]:.1f} s, max {times[-1]:.1f} s, mean {statistics.mean(times):.1f} s"
        )
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated trackers (default: all)")
    parser.add_argument(
        "--start-redmine", action="store_true", help="start Redmine with tests/e2e/redmine.sh"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--latency", action="store_true", help="measure Redmine -> built-in latency")
    parser.add_argument("--edits", type=int, default=12)
    parser.add_argument(
        "--gap",
        default="1,15",
        help="seconds between edits, MIN,MAX (1,15: a conversation; 65,125: isolated edits, past the busy "
        "minute and at any point of a poll cycle)",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose node runs (latency)")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    if args.latency:
        low, high = (float(x) for x in args.gap.split(","))
        return latency(args.root.resolve(), args.edits, (low, high), args.start_redmine, args.seed)
    names = [n for n in TRACKER_ORDER if not args.only or n in args.only.split(",")]
    return requests_per_hour(names, args.start_redmine, args.json)


if __name__ == "__main__":
    sys.exit(main())
