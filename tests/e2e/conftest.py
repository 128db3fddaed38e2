"""Real node processes for end-to-end tests: each node has its own VAR_DIR (secrets, media), its own
database (SQLite file, or its own PostgreSQL database when DATABASE_URL points at PostgreSQL), its own
Redis DB number and cluster name when REDIS_URL is set, and runs web + worker + sweeper on a free loopback
port. Every process is started in its own process group and killed with it at teardown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
MANAGE = [sys.executable, str(ROOT / "manage.py")]


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Tests of a PostgreSQL + Redis deployment (``pg_topology``) belong to the suite run with a PostgreSQL
    DATABASE_URL (``.ci/run``'s second suite): elsewhere they are deselected (not skipped: nothing is
    missing, they are simply that suite's), so the SQLite suite does not run them a second time."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    chosen = [item for item in items if item.get_closest_marker("pg_topology") is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen


def wait_for(what: str, check: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; errors count as "not yet" (a node restarting
    refuses connections for a moment). Fails with the last value or error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_admin(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "localhost",
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=(parts.path.lstrip("/") or "postgres"),
        autocommit=True,
    )


class Node:
    """One node: its environment, its processes, and shortcuts to its manage.py and API."""

    def __init__(self, name: str, var_dir: Path, *, index: int) -> None:
        self.name = name
        self.var_dir = var_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.roles: dict[str, subprocess.Popen] = {}
        self.db_name = ""
        self.token = ""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SECRET_KEY", "SECRETS_KEYS", "DJANGO_", "MEDIA_ROOT", "NODE_"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="exalate_node.settings",
            DEBUG="true",
            TASKS_INLINE="false",
            Q_POLL="0.05",
            Q_WORKERS="2",
            VAR_DIR=str(var_dir),
            MEDIA_ROOT=str(var_dir / "media"),
            NODE_URL=self.url,
            NODE_NAME=f"node-{name}",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            Q_CLUSTER_NAME=f"exalate-e2e-{name}-{os.getpid()}",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
        )
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            self.db_name = f"exalate_e2e_{name}_{os.getpid()}"
            parts = urlsplit(database_url)
            # Create and drop the nodes' databases from the server's maintenance database, which always
            # exists (the one named in DATABASE_URL may not: pytest-django only creates test_<name>).
            self.admin_url = urlunsplit(parts._replace(path="/postgres"))
            env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{self.db_name}"))
        else:
            env.pop("DATABASE_URL", None)  # SQLite under the node's VAR_DIR
        redis_url = os.environ.get("REDIS_URL", "")
        if redis_url:
            parts = urlsplit(redis_url)
            env["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{10 + index}"))
        self.env = env

    # --- life-cycle -----------------------------------------------------------------------------------------

    def create_database(self) -> None:
        if self.db_name:
            with _pg_admin(self.admin_url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}"')
                conn.execute(f'CREATE DATABASE "{self.db_name}"')

    def drop_database(self) -> None:
        if self.db_name:
            with _pg_admin(self.admin_url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def manage(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        result = subprocess.run(
            [*MANAGE, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} on node {self.name} failed:\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def shell(self, code: str) -> Any:
        """Run Python in the node's Django; the snippet prints one JSON value as its last line."""
        out = self.manage("shell", "-c", code)
        return json.loads(out.strip().splitlines()[-1])

    ROLES = {
        "web": ["runserver", "{port}", "--noreload"],
        "worker": ["qcluster"],
        "sweeper": ["node_sweeper", "--interval", "0.5"],
    }

    def _spawn(self, role: str) -> subprocess.Popen:
        args = [a.replace("{port}", f"127.0.0.1:{self.port}") for a in self.ROLES[role]]
        log = open(self.var_dir / "processes.log", "ab")  # noqa: SIM115  (kept open for the children)
        # As runnode does: the web server (a thread per request) keeps no persistent database connection.
        env = {**self.env, "DB_CONN_MAX_AGE": "0"} if role == "web" else self.env
        proc = subprocess.Popen(
            [*MANAGE, *args], env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
        )
        log.close()  # the child holds its own copy
        self.roles[role] = proc
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        for role in self.ROLES:
            self._spawn(role)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"Node {self.name} exited early; see {self.var_dir / 'processes.log'}"
                    )
            time.sleep(0.1)
        raise AssertionError(f"Node {self.name} did not answer /healthz within {timeout:.0f} s")

    def kill_role(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process group of the node (``web``, ``worker`` or ``sweeper``) and reap it."""
        proc = self.roles.pop(role, None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        self.procs.remove(proc)

    def start_role(self, role: str) -> None:
        """(Re)start one process group of the node; for ``web``, wait until it answers."""
        if role in self.roles and self.roles[role].poll() is None:
            return
        self.roles.pop(role, None)
        self._spawn(role)
        if role == "web":
            self.wait_healthy()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # A short grace period: the pipeline must survive a hard kill anyway (the sweepers re-nudge).
        deadline = time.monotonic() + 3
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self.procs = []
        self.roles = {}

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the node's process log, for a failure message."""
        log = self.var_dir / "processes.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    # --- API ------------------------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=10, **kw)

    def issues(self) -> list[dict[str, Any]]:
        resp = self.api("GET", "/tracker/issues/")
        resp.raise_for_status()
        data = resp.json()
        return data["results"] if isinstance(data, dict) else data


SETUP = """
import json
from django.contrib.auth import get_user_model
from exalate_node.tokens import token_create
from instances.models import Instance
from instances.tracker import services
User = get_user_model()
user, _ = User.objects.get_or_create(username="admin", defaults=dict(is_staff=True, is_superuser=True))
_, key = token_create(user=user, name="e2e")
inst = Instance.objects.filter(name="NAME").first()
if inst is None:
    inst = Instance.objects.create(name="NAME", tracker_type="builtin")
    services.project_create(instance=inst, key="KEY", name="NAME")
print(json.dumps(dict(token=key, instance=inst.uid)))
"""


@pytest.fixture(scope="module")
def node_factory(tmp_path_factory):  # type: ignore[no-untyped-def]
    nodes: list[Node] = []

    def make(
        name: str,
        *,
        instance: str,
        key: str,
        env: dict[str, str] | None = None,
        pg_conn_max_age: int | None = None,
    ) -> Node:
        node = Node(name, tmp_path_factory.mktemp(f"node-{name}"), index=len(nodes))
        node.env.update(env or {})  # e.g. NODE_URL of a proxy in front of the node
        if node.db_name and pg_conn_max_age is not None:
            # runserver serves each request on a new thread, whose persistent connection lingers: a test
            # that polls the API hard can exhaust PostgreSQL's max_connections unless this is 0.
            node.env["DATABASE_URL"] += f"?conn_max_age={pg_conn_max_age}"
        nodes.append(node)
        node.create_database()
        node.manage("migrate", "--noinput", timeout=120)
        info = node.shell(SETUP.replace("NAME", instance).replace("KEY", key))
        node.token, node.instance_uid = info["token"], info["instance"]
        node.start()
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.stop()
        for node in nodes:
            try:
                node.drop_database()
            except Exception as exc:  # teardown must go on for the other node
                print(f"Could not drop {node.db_name}: {exc}")
