"""Bulk benchmark (issue #10): a Bulk Exalate of N built-in items (a trigger query ``project = A``) on a local
connection, while one already-synced item is edited every ~0.5 s; real django-q2 worker processes.

Usage: python bench/bench_bulk.py [--db sqlite|postgres] [--items 10000] [--workers 2] [--interval 0.5]

Prints the job's progress (done/total, rate) every few seconds, then: the total time until every item is
on the other side, and the latency of the single edits made DURING the bulk (p50/p95/max; target: about a
second). Each bulk item has a 200-character description; ``--comment`` adds a comment to each.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import configure, pct, peak_rss_mb, wait  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between single edits")
    parser.add_argument("--comment", action="store_true", help="give every bulk item a comment")
    parser.add_argument("--report-every", type=float, default=5.0)
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="exalate-bench-bulk-")
    env = configure(args.db, var_dir)
    from django.db import close_old_connections

    from connections.services import connection_create_local
    from instances.models import Instance, Issue
    from instances.tracker import services
    from replicas import bulk, pipeline
    from replicas.models import BulkJob
    from replicas.triggers import trigger_create

    a = Instance.objects.create(name="A", tracker_type="builtin")
    b = Instance.objects.create(name="B", tracker_type="builtin")
    pa = services.project_create(instance=a, key="A", name="A")
    pb = services.project_create(instance=b, key="B", name="B")
    conn, _ = connection_create_local(name="bench", instance_a=a, instance_b=b)

    print(f"Creating {args.items} items ...", flush=True)
    started = time.perf_counter()
    for i in range(args.items):
        item = services.issue_create(project=pa, actor="bench@x", summary=f"bulk {i}", description="x" * 200)
        if args.comment:
            services.comment_add(issue=item, actor="bench@x", body=f"comment {i}")
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)

    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env={**os.environ, **env, "Q_WORKERS": str(args.workers)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[tuple[str, str]] = []
    try:
        time.sleep(2)
        # The item edited during the bulk: synced before it starts.
        edited = services.issue_create(project=pa, actor="bench@x", summary="edited")
        pipeline.exalate(connection=conn, key=edited.key)
        copy = wait(lambda: Issue.objects.filter(project=pb, summary="edited").first(), timeout=60)

        trigger = trigger_create(connection=conn, query="project = A")
        started = time.perf_counter()
        job = bulk.bulk_start(connection=conn, kind=BulkJob.Kind.EXALATE, trigger=trigger)
        total = job.total
        print(f"Bulk Exalate of {total} items started (job {job.pk})", flush=True)
        latencies: list[float] = []
        next_report = time.perf_counter() + args.report_every
        n = 0
        while True:
            status, done = BulkJob.objects.filter(pk=job.pk).values_list("status", "position").get()
            arrived = Issue.objects.filter(project=pb).count() - 1  # the edited item's copy is not bulk
            if time.perf_counter() >= next_report:
                elapsed = time.perf_counter() - started
                print(
                    f"  {elapsed:6.0f} s  job {status:<8} {done}/{total} ({done / elapsed:.0f}/s), "
                    f"on the other side {arrived}/{args.items}, edits so far: {len(latencies)} "
                    f"(last {latencies[-1] if latencies else 0:.0f} ms)",
                    flush=True,
                )
                next_report += args.report_every
            if arrived >= args.items and status == BulkJob.Status.DONE:
                break
            if time.perf_counter() - started > 600 + args.items:
                raise SystemExit("timed out")
            # One single edit, measured until the other side has committed it; then wait for the next tick.
            tick = time.perf_counter()
            n += 1
            services.issue_update(issue=edited, actor="bench@x", summary=f"edit {n}")
            wait(
                lambda n=n: Issue.objects.filter(pk=copy.pk, summary=f"edit {n}").exists(),
                timeout=120,
                interval=0.005,
            )
            latencies.append((time.perf_counter() - tick) * 1000)
            close_old_connections()
            time.sleep(max(0.0, args.interval - (time.perf_counter() - tick)))
        total_s = time.perf_counter() - started
        rows.append(
            (
                f"bulk exalate, {args.items} items{' + comment' if args.comment else ''}",
                f"{total_s:.1f} s, {args.items / total_s:.0f} items/s ({args.workers} workers)",
            )
        )
        rows.append(
            (
                f"single edits during the bulk ({len(latencies)}, one per {args.interval} s)",
                f"p50 {pct(latencies, 0.5):.0f} ms, p95 {pct(latencies, 0.95):.0f} ms, "
                f"max {max(latencies):.0f} ms",
            )
        )
        rows.append(("worker peak RSS (largest process)", f"{peak_rss_mb(worker.pid):.0f} MB"))
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        close_old_connections()

    width = max(len(r[0]) for r in rows)
    print(
        f"\nBulk benchmark — {args.db} ({'Redis' if args.db == 'postgres' else 'ORM'} broker), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
