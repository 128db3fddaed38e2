"""Pipeline benchmark: latency and throughput of a local connection with a real django-q2 worker.

Usage: python bench/bench_pipeline.py [--db sqlite|postgres] [--changes 500] [--items 1000] [--workers 2]
                                      [--scaling 1,2,4] [--scaling-items 500]

Prints a table: change-to-applied latency (p50/p95/p99), time to sync N new items (with a comment each),
the same copy done directly with no pipeline (the floor) and the ratio, the worker's peak RSS, and with
``--scaling`` the throughput of the same workload with 1, 2, 4 ... worker processes (``Q_WORKERS``).
SQLite runs with django-q2's ORM broker; PostgreSQL (127.0.0.1:5432, trust auth) with Redis (6379/9).
``--items 10000`` works (allow a few minutes on SQLite); ``--changes 0`` or ``--items 0`` skip a part.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def configure(db: str, var_dir: str) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "exalate_node.settings",
        "DEBUG": "false",  # DEBUG keeps every query in memory: not what production runs
        "SECRET_KEY": "bench-" + "x" * 50,
        "SECRETS_KEYS": "bench-passphrase-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "NODE_URL": "http://127.0.0.1:8000",  # required in production; no peer connects to this bench
        "VAR_DIR": var_dir,
        "MEDIA_ROOT": os.path.join(var_dir, "media"),
        "TASKS_INLINE": "false",
        "Q_POLL": "0.02",
        "LOG_LEVEL": "WARNING",
        "Q_CLUSTER_NAME": f"bench-{os.getpid()}",
    }
    if db == "postgres":
        name = f"exalate_bench_{os.getpid()}"
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:  # the benchmark's database goes when the benchmark ends
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        atexit.register(drop)
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
        env["REDIS_URL"] = "redis://127.0.0.1:6379/9"
    else:
        env["DATABASE_URL"] = f"sqlite:///{var_dir}/bench.sqlite3"
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def peak_rss_mb(pid: int) -> float:
    """Highest peak RSS (VmHWM) among a process and its children, in MB."""
    pids = [pid]
    try:
        children = subprocess.run(
            ["pgrep", "-g", str(os.getpgid(pid))], capture_output=True, text=True
        ).stdout
        pids = [int(p) for p in children.split()]
    except Exception:  # noqa: BLE001, S110 - best effort
        pass
    peak = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def own_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scaling", default="", help="worker counts to compare, e.g. 1,2,4 (default: none)")
    parser.add_argument("--scaling-items", type=int, default=500)
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="exalate-bench-")
    env = configure(args.db, var_dir)
    from django.db import close_old_connections

    from connections.services import connection_create_local
    from instances.models import Comment, Instance, Issue
    from instances.tracker import services
    from replicas import pipeline

    a = Instance.objects.create(name="A", tracker_type="builtin")
    b = Instance.objects.create(name="B", tracker_type="builtin")
    pa = services.project_create(instance=a, key="A", name="A")
    pb = services.project_create(instance=b, key="B", name="B")
    conn, _ = connection_create_local(name="bench", instance_a=a, instance_b=b)

    def start_worker(workers: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env={**os.environ, **env, "Q_WORKERS": str(workers)},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
        return proc

    def stop_worker(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def new_items(n: int) -> list[str]:
        keys = []
        for i in range(n):
            item = services.issue_create(
                project=pa, actor="bench@x", summary=f"item {i}", description="x" * 200
            )
            services.comment_add(issue=item, actor="bench@x", body=f"comment {i}")
            keys.append(item.key)
        close_old_connections()
        return keys

    def throughput(keys: list[str]) -> float:
        """Exalate the items at once; seconds until the last comment is committed on the other side."""
        before = Comment.objects.filter(issue__project=pb).count()
        started = time.perf_counter()
        for key in keys:
            pipeline.exalate(connection=conn, key=key)
        wait(
            lambda: Comment.objects.filter(issue__project=pb).count() >= before + len(keys),
            timeout=120 + len(keys),
            interval=0.1,
        )
        return time.perf_counter() - started

    worker = start_worker(args.workers)
    rows: list[tuple[str, str]] = []
    try:
        # 1. Latency: one edit at a time, measured until the other side has committed it.
        issue = services.issue_create(project=pa, actor="bench@x", summary="latency")
        pipeline.exalate(connection=conn, key=issue.key)
        copy = wait(lambda: Issue.objects.filter(project=pb).first())
        latencies = []
        for i in range(args.changes):
            started = time.perf_counter()
            services.issue_update(issue=issue, actor="bench@x", summary=f"edit {i}")
            wait(lambda i=i: Issue.objects.filter(pk=copy.pk, summary=f"edit {i}").exists(), interval=0.002)
            latencies.append((time.perf_counter() - started) * 1000)
        if latencies:
            rows.append(
                (
                    f"latency, local connection ({args.changes} edits)",
                    f"p50 {pct(latencies, 0.5):.0f} ms, p95 {pct(latencies, 0.95):.0f} ms, "
                    f"p99 {pct(latencies, 0.99):.0f} ms, mean {statistics.mean(latencies):.0f} ms",
                )
            )

        # 2. Throughput: N new items with a comment each, exalated at once.
        keys = new_items(args.items)
        pipeline_s = throughput(keys) if keys else 0.0
        if keys:
            rows.append(
                (
                    f"throughput, {args.items} new items + comment",
                    f"{pipeline_s:.1f} s, {args.items / pipeline_s:.0f} items/s ({args.workers} workers)",
                )
            )
        # 3. The floor: the same copy straight from tracker to tracker, no events, replicas or rules.
        pc = services.project_create(instance=b, key="C", name="C")
        started = time.perf_counter()
        for item in Issue.objects.filter(project=pa, key__in=keys).prefetch_related("comments"):
            new = services.issue_create(
                project=pc, actor="copy@x", summary=item.summary, description=item.description
            )
            for c in item.comments.all():
                services.comment_add(issue=new, actor="copy@x", body=c.body)
        floor_s = time.perf_counter() - started
        if keys:
            rows.append(("baseline: direct copy, no pipeline", f"{floor_s:.1f} s"))
            rows.append(("pipeline / baseline", f"{pipeline_s / floor_s:.2f}x"))
        rows.append(("worker peak RSS (largest process)", f"{peak_rss_mb(worker.pid):.0f} MB"))
        rows.append(("this process (the writes and exalates) peak RSS", f"{own_peak_rss_mb():.0f} MB"))

        # 4. Scaling: the same workload with 1, 2, 4 ... worker processes.
        for count in [int(c) for c in args.scaling.split(",") if c.strip()]:
            stop_worker(worker)
            worker = start_worker(count)
            batch = new_items(args.scaling_items)
            seconds = throughput(batch)
            rows.append(
                (
                    f"scaling: {count} worker(s), {len(batch)} new items + comment",
                    f"{seconds:.1f} s, {len(batch) / seconds:.0f} items/s, "
                    f"worker peak RSS {peak_rss_mb(worker.pid):.0f} MB",
                )
            )
    finally:
        stop_worker(worker)
        close_old_connections()

    width = max(len(r[0]) for r in rows)
    print(
        f"\nPipeline benchmark — {args.db} ({'Redis' if args.db == 'postgres' else 'ORM'} broker), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def wait(check, timeout: float = 60.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s")


if __name__ == "__main__":
    main()
