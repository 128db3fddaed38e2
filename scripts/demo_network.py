"""Two exalate-nodes on one machine, connected through a real invitation code (``make demo-network``).

Node A (http://127.0.0.1:8001) gets the usual demo (Support desk SUP and Engineering ENG, locally
connected); node B (http://127.0.0.1:8002) gets a "Field service" tracker with project OPS. Each node has its
own VAR_DIR under var/demo-network/ (SQLite database, secrets, media, admin password) and runs web + worker
+ sweeper. A connects Support desk to B's Field service over the node protocol and exalates SUP-1.
Ctrl-C stops both nodes; running it again reuses their data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(ROOT / "manage.py")]

SETUP_B = """
import json
from instances.models import Instance
from instances.tracker import services
inst = Instance.objects.filter(name="Field service").first()
if inst is None:
    inst = Instance.objects.create(name="Field service", tracker_type="builtin", url="URL")
    services.project_create(instance=inst, key="OPS", name="Field operations")
print(json.dumps(inst.uid))
"""

ARRIVED = """
import json
from instances.models import Issue
print(json.dumps(list(Issue.objects.filter(project__key="OPS").values_list("key", "summary"))))
"""

CONNECTED = """
import json
from connections.models import Connection
print(json.dumps(Connection.objects.filter(peer__isnull=True).exclude(status="pending").exists()))
"""

EXALATE = """
import json
from connections.models import Connection
from replicas.pipeline import exalate
conn = Connection.objects.filter(peer__isnull=True).exclude(status="pending").first()
exalate(connection=conn, key="SUP-1")
print(json.dumps(conn.name))
"""


class DemoNode:
    def __init__(self, name: str, port: int, base: Path) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.var_dir = base / name
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT")}
        env.update(
            DEBUG="true",
            TASKS_INLINE="false",
            VAR_DIR=str(self.var_dir),
            NODE_URL=self.url,
            NODE_NAME=f"demo-node-{name}",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            CSRF_TRUSTED_ORIGINS=self.url,
            Q_CLUSTER_NAME=f"exalate-demo-{name}",
            DJANGO_SETTINGS_MODULE="exalate_node.settings",
        )
        self.env = env

    def manage(self, *args: str) -> str:
        result = subprocess.run([*MANAGE, *args], env=self.env, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"Node {self.name}: manage.py {args[0]} failed:\n{result.stderr[-2000:]}")
        return result.stdout

    def shell(self, code: str) -> object:
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])

    def start(self) -> None:
        log = open(self.var_dir / "node.log", "ab")  # noqa: SIM115  (held by the children)
        for args in (["runnode", "--addr", f"127.0.0.1:{self.port}"], ["node_sweeper"]):
            self.procs.append(
                subprocess.Popen(
                    [*MANAGE, *args], env=self.env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
                )
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        sys.exit(
            f"Node {self.name} did not start; see {self.var_dir / 'node.log'} (is port {self.port} free?)"
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs = []

    @property
    def password(self) -> str:
        return (self.var_dir / "admin-password").read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-a", type=int, default=8001)
    parser.add_argument("--port-b", type=int, default=8002)
    parser.add_argument("--dir", default=str(ROOT / "var" / "demo-network"))
    parser.add_argument("--no-wait", action="store_true", help="Set up, print, stop (for scripts and CI).")
    args = parser.parse_args()
    base = Path(args.dir)
    a, b = DemoNode("a", args.port_a, base), DemoNode("b", args.port_b, base)

    for node in (a, b):
        print(f"Preparing node {node.name} in {node.var_dir} ...")
        node.manage("migrate", "--noinput")
    a.manage("bootstrap_demo")
    b.manage("bootstrap_demo", "--no-demo")
    b.shell(SETUP_B.replace("URL", b.url))
    try:
        for node in (a, b):
            node.start()
        if not a.shell(CONNECTED):
            code = a.manage(
                "initiate_connection",
                "--instance",
                "Support desk",
                "--name",
                "Support ⇄ Field service",
                "--user",
                "admin",
                "--code-only",
            ).strip()
            print(f"Invitation code from node A:\n  {code}\n")
            print(b.manage("accept_invitation", "--instance", "Field service", "--code", code).strip())
            print(f"SUP-1 exalated on '{a.shell(EXALATE)}'.")
        deadline = time.monotonic() + 30
        while not (arrived := b.shell(ARRIVED)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if arrived:
            print(f"Node B has {', '.join(f'{k} ({s})' for k, s in arrived)}.")
        else:
            print(
                f"SUP-1 has not arrived on node B yet; see {a.var_dir / 'node.log'} "
                "and the connection status."
            )
        print(
            f"""
  Two nodes are running, connected node to node:

    Node A  {a.url}/admin/   user admin, password {a.password}
            Support desk (SUP) and Engineering (ENG), plus the connection to node B.
    Node B  {b.url}/admin/   user admin, password {b.password}
            Field service (OPS): SUP-1 from node A arrives here as OPS-1.

  Edit SUP-1 on A or OPS-1 on B (built-in tracker admin or /api/v1/tracker/issues/) and watch it sync.
  Stop one node's processes to see changes queue ("Waiting for the other node...") and catch up.
  Logs: {a.var_dir / "node.log"}, {b.var_dir / "node.log"}.   Ctrl-C stops both nodes.
"""
        )
        if args.no_wait:
            return
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping:
            for node in (a, b):
                if any(p.poll() is not None for p in node.procs):
                    print(f"A process of node {node.name} exited; see {node.var_dir / 'node.log'}. Stopping.")
                    stopping = True
            time.sleep(0.5)
    finally:
        for node in (a, b):
            node.stop()
        print("Both nodes stopped.")


if __name__ == "__main__":
    main()
