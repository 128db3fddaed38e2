"""`manage.py runnode` keeps a node running (issue #18): a worker, sweeper or web server that dies is
restarted and the others keep running; SIGTERM stops everything. Real processes: runnode on a free port,
its children found through /proc.

Before, runnode stopped the whole node, web server included, when one child died ("The worker process
exited with code -9; stopping").
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from exalate_node.supervisor import group_members
from tests.e2e.conftest import MANAGE, ROOT, Node, wait_for

pytestmark = pytest.mark.e2e

SETUP = """
import json
from django.contrib.auth import get_user_model
from exalate_node.tokens import token_create
from connections.services import connection_create_local
from instances.models import Instance
from instances.tracker import services
User = get_user_model()
user, _ = User.objects.get_or_create(username="admin", defaults=dict(is_staff=True, is_superuser=True))
_, key = token_create(user=user, name="e2e")
a = Instance.objects.create(name="Support", tracker_type="builtin")
b = Instance.objects.create(name="Engineering", tracker_type="builtin")
services.project_create(instance=a, key="SUP", name="Support")
services.project_create(instance=b, key="ENG", name="Engineering")
side, _ = connection_create_local(name="S-E", instance_a=a, instance_b=b)
print(json.dumps(dict(token=key, connection=side.pk)))
"""


def children(pid: int) -> dict[str, int]:
    """runnode's children by role (from their command lines)."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for role, word in (("web", b"runserver"), ("worker", b"qcluster"), ("sweeper", b"node_sweeper")):
                if word in cmdline:
                    found[role] = int(child)
    return found


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.update(kids)
            stack.extend(kids)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Watch:
    """Asks /healthz every 50 ms in a thread; remembers every failure."""

    def __init__(self, url: str) -> None:
        self.url, self.failures, self.answers, self.stopped = url, [], 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped:
            try:
                status = requests.get(f"{self.url}/healthz", timeout=2).status_code
                if status == 200:
                    self.answers += 1
                else:
                    self.failures.append(status)
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopped = True
        self.thread.join(timeout=5)


@pytest.fixture
def runnode(tmp_path: Path):  # type: ignore[no-untyped-def]
    node = Node("rn", tmp_path, index=2)
    node.create_database()
    node.manage("migrate", "--noinput", timeout=120)
    info = node.shell(SETUP)
    node.token = info["token"]
    log = open(tmp_path / "runnode.log", "wb")  # noqa: SIM115  (held by the child)
    proc = subprocess.Popen(
        [*MANAGE, "runnode", "--addr", f"127.0.0.1:{node.port}", "--grace", "5"],
        env=node.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    node.procs.append(proc)
    node.wait_healthy(timeout=60)
    wait_for("runnode's three children", lambda: len(children(proc.pid)) == 3)
    try:
        yield node, proc, info["connection"], tmp_path / "runnode.log"
    finally:
        everything = descendants(proc.pid) | {proc.pid}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in everything:  # nothing left behind, whatever the test did
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        node.drop_database()


def edit_syncs(node: Node, connection: int, summary: str) -> None:
    created = node.api("POST", "/tracker/issues/", json={"project": "SUP", "summary": summary})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert node.api("POST", f"/connections/{connection}/exalate/", json={"key": key}).status_code == 202
    wait_for(
        f"{summary!r} on the other side",
        lambda: summary in [i["summary"] for i in node.issues() if i["key"].startswith("ENG-")],
    )
    edited = f"{summary}, edited"
    assert node.api("PATCH", f"/tracker/issues/{key}/", json={"summary": edited}).status_code == 200
    wait_for(
        f"{edited!r} on the other side",
        lambda: edited in [i["summary"] for i in node.issues() if i["key"].startswith("ENG-")],
    )


def test_a_killed_worker_is_restarted_while_the_web_server_keeps_answering(runnode) -> None:  # type: ignore[no-untyped-def]
    node, proc, connection, log = runnode
    edit_syncs(node, connection, "Before the kill")
    before = children(proc.pid)
    cluster = descendants(before["worker"])  # django-q2's sentinel, workers, monitor, pusher
    assert cluster, "qcluster has started no processes; the test would prove nothing"
    watch = Watch(node.url)
    try:
        os.kill(before["worker"], signal.SIGKILL)
        now = wait_for(
            "a new worker",
            lambda: (c := children(proc.pid)).get("worker") not in (None, before["worker"]) and c,
        )
        assert now["web"] == before["web"] and now["sweeper"] == before["sweeper"]  # untouched
        # What the killed qcluster had started is gone too: no orphaned worker takes tasks beside the new one.
        wait_for("the old cluster's processes to end", lambda: not any(alive(p) for p in cluster), timeout=10)
        edit_syncs(node, connection, "After the kill")
    finally:
        watch.stop()
    assert watch.failures == [] and watch.answers > 20
    assert proc.poll() is None  # runnode itself is still running
    text = log.read_text()
    assert (
        "The worker process (pid" in text
        and "was killed by SIGKILL" in text
        and "restarting it in 1 s" in text
    )
    assert "Restarted the worker process" in text


def test_a_killed_web_server_and_sweeper_are_restarted_and_sigterm_stops_everything(runnode) -> None:  # type: ignore[no-untyped-def]
    node, proc, connection, log = runnode
    before = children(proc.pid)
    os.kill(before["sweeper"], signal.SIGKILL)
    os.kill(before["web"], signal.SIGKILL)
    wait_for(
        "a new web server and sweeper",
        lambda: (
            (c := children(proc.pid)).get("web") not in (None, before["web"])
            and c.get("sweeper") not in (None, before["sweeper"])
        ),
    )
    node.wait_healthy(timeout=30)
    assert children(proc.pid)["worker"] == before["worker"]  # the worker was left alone
    edit_syncs(node, connection, "After the web server came back")

    everything = descendants(proc.pid)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 15  # within the grace period (5 s) and the SIGKILL after it
    assert [p for p in everything if alive(p)] == []
    for pid in everything:
        assert not group_members(pid)
    assert "exalate-node stopped." in log.read_text()
