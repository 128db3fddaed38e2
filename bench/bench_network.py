"""Two-node benchmark: two real node processes (web + worker + sweeper each, own database) on loopback HTTP,
connected through a real invitation code, as in ``tests/e2e`` (whose ``Node`` this reuses).

Usage: python bench/bench_network.py [--db sqlite|postgres] [--changes 200] [--items 500] [--workers 2]

Prints: change → committed on the other node, over the node protocol (p50/p95/p99 over N edits made through
node A's REST API, observed in node B's database); N new items with a comment each exalated at once on A
until the last comment is committed on B; the peak RSS of each node's web, worker and sweeper processes.
PostgreSQL (127.0.0.1:5432, trust auth) gives each node its own database and Redis (6379/12, /13) broker.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import pct, peak_rss_mb  # noqa: E402

from tests.e2e.conftest import SETUP, Node  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432/postgres"

CREATE_AND_EXALATE = """
import json, time
from connections.models import Connection
from instances.models import Project
from instances.tracker import services
from replicas import pipeline
project = Project.objects.get(key="A")
keys = []
for i in range(__ITEMS__):
    item = services.issue_create(project=project, actor="bench@x", summary=f"item {i}", description="x" * 200)
    services.comment_add(issue=item, actor="bench@x", body=f"comment {i}")
    keys.append(item.key)
conn = Connection.objects.exclude(status="pending").get()
started = time.time()
for key in keys:
    pipeline.exalate(connection=conn, key=key)
print(json.dumps({"started": started, "exalated": time.time()}))
"""

EXALATE = """
import json
from connections.models import Connection
from replicas.pipeline import exalate
exalate(connection=Connection.objects.exclude(status="pending").get(), key="KEY")
print(json.dumps(True))
"""


class Reader:
    """Reads node B's database directly (the bench must not load B's web server while measuring it)."""

    def __init__(self, node: Node) -> None:
        if node.db_name:
            import psycopg

            self.conn: Any = psycopg.connect(
                f"postgresql://postgres@127.0.0.1:5432/{node.db_name}", autocommit=True
            )
            self.mark = "%s"
        else:
            path = node.var_dir / "node.sqlite3"
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self.mark = "?"

    def one(self, sql: str, *params: Any) -> Any:
        cursor = self.conn.cursor()
        cursor.execute(sql.replace("?", self.mark), params)
        row = cursor.fetchone()
        return row[0] if row else None

    def summary_of_first(self) -> str | None:
        return self.one(
            "SELECT i.summary FROM instances_issue i JOIN instances_project p ON p.id = i.project_id "
            "WHERE p.key = ? ORDER BY i.id LIMIT 1",
            "B",
        )

    def comments(self) -> int:
        return self.one(
            "SELECT COUNT(*) FROM instances_comment c JOIN instances_issue i ON i.id = c.issue_id "
            "JOIN instances_project p ON p.id = i.project_id WHERE p.key = ?",
            "B",
        )


def wait(check: Callable[[], Any], timeout: float, interval: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s")


def make_node(name: str, base: Path, index: int, args: argparse.Namespace) -> Node:
    node = Node(name, base / name, index=index)
    (base / name).mkdir(parents=True, exist_ok=True)
    node.env.update(
        DEBUG="false",  # DEBUG keeps every query in memory: not what production runs
        SECRET_KEY="bench-" + "x" * 50,
        SECRETS_KEYS="bench-passphrase-0123456789",
        Q_WORKERS=str(args.workers),
        Q_POLL="0.02",
    )
    if args.db == "postgres":
        node.env["REDIS_URL"] = f"redis://127.0.0.1:6379/{12 + index}"
    node.create_database()
    node.manage("migrate", "--noinput", timeout=300)
    info = node.shell(SETUP.replace("NAME", name.upper()).replace("KEY", name.upper()))
    node.token = info["token"]
    node.start()
    return node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL")}
    os.environ.pop("REDIS_URL", None)
    if args.db == "postgres":
        os.environ["DATABASE_URL"] = PG
    else:
        os.environ.pop("DATABASE_URL", None)
    base = Path(tempfile.mkdtemp(prefix="exalate-bench-net-"))
    nodes: list[Node] = []
    rows: list[tuple[str, str]] = []
    try:
        a = make_node("a", base, 0, args)
        nodes.append(a)
        b = make_node("b", base, 1, args)
        nodes.append(b)
        code = a.manage("initiate_connection", "--instance", "A", "--name", "bench", "--code-only").strip()
        accepted = b.manage("accept_invitation", "--instance", "B", "--code", code, "--json")
        if '"status": "active"' not in accepted:
            raise SystemExit(f"The invitation was not accepted: {accepted}")
        reader = Reader(b)

        # 1. Latency: an edit through A's API, until B has committed it.
        created = a.api("POST", "/tracker/issues/", json={"project": "A", "summary": "latency"})
        created.raise_for_status()
        key = created.json()["key"]
        a.shell(EXALATE.replace("KEY", key))
        wait(reader.summary_of_first, timeout=60, interval=0.05)
        latencies = []
        for i in range(args.changes):
            started = time.perf_counter()
            a.api("PATCH", f"/tracker/issues/{key}/", json={"summary": f"edit {i}"}).raise_for_status()
            wait(lambda i=i: reader.summary_of_first() == f"edit {i}", timeout=60, interval=0.005)
            latencies.append((time.perf_counter() - started) * 1000)
        if latencies:
            rows.append(
                (
                    f"latency, two nodes over HTTP ({args.changes} edits)",
                    f"p50 {pct(latencies, 0.5):.0f} ms, p95 {pct(latencies, 0.95):.0f} ms, "
                    f"p99 {pct(latencies, 0.99):.0f} ms, mean {statistics.mean(latencies):.0f} ms",
                )
            )

        # 2. Throughput: N new items with a comment each on A, exalated at once (from the first exalate).
        if args.items:
            before = reader.comments()
            script = CREATE_AND_EXALATE.replace("__ITEMS__", str(args.items))
            out = a.manage("shell", "-c", script, timeout=600 + args.items)
            times = json.loads(out.strip().splitlines()[-1])
            wait(lambda: reader.comments() >= before + args.items, timeout=120 + 2 * args.items, interval=0.1)
            seconds = time.time() - times["started"]
            rows.append(
                (
                    f"throughput, two nodes, {args.items} new items + comment",
                    f"{seconds:.1f} s, {args.items / seconds:.1f} items/s ({args.workers} workers per node; "
                    f"exalating took {times['exalated'] - times['started']:.1f} s)",
                )
            )

        # 3. Memory: each node's web server, worker cluster and sweeper (largest process of each group).
        for node in nodes:
            web, worker, sweeper = (peak_rss_mb(p.pid) for p in node.procs)
            rows.append(
                (
                    f"node {node.name} peak RSS",
                    f"web {web:.0f} MB, worker {worker:.0f} MB, sweeper {sweeper:.0f} MB",
                )
            )
    finally:
        for node in nodes:
            node.stop()
        for node in nodes:
            try:
                node.drop_database()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                print(f"Could not drop {node.db_name}: {exc}")
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v

    width = max((len(r[0]) for r in rows), default=0)
    print(
        f"\nTwo-node benchmark — {args.db} ({'Redis' if args.db == 'postgres' else 'ORM'} broker), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
