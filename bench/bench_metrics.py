"""What a Prometheus scrape of /metrics costs as the event log grows, against /healthz (one trivial query) in
the same run: the collector reads every figure from the database at scrape time (exalate_node/metrics.py).

Run from the repository root:  python bench/bench_metrics.py [--events 1000,10000,50000] [--db postgres]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", default="1000,10000,50000")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    var = tempfile.mkdtemp(prefix="bench-metrics-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="exalate_node.settings",
        DEBUG="true",
        VAR_DIR=var,
        METRICS_TOKEN="bench",
        LOG_LEVEL="ERROR",
        ALLOWED_HOSTS="testserver",
    )
    if args.db == "postgres":
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/bench_metrics_{os.getpid()}"
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE bench_metrics_{os.getpid()}")
    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from connections.services import connection_create_local
    from instances.models import Instance
    from replicas.models import SyncEvent, Twin

    a = Instance.objects.create(name="A", tracker_type="builtin")
    b = Instance.objects.create(name="B", tracker_type="builtin")
    side_a, _ = connection_create_local(name="A ⇄ B", instance_a=a, instance_b=b)
    twin = Twin.objects.create(connection=side_a, local_id="1", local_key="A-1")
    client = Client()
    headers = {"Authorization": "Bearer bench"}

    def timed(path: str) -> float:
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            runs.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content[:200]
        return statistics.median(runs) * 1000

    print(f"database: {args.db}; median of {args.repeat} requests each")
    print(f"{'events':>8} {'/healthz ms':>12} {'/metrics ms':>12} {'ratio':>7}")
    made = 0
    now = timezone.now()
    for target in (int(n) for n in args.events.split(",")):
        batch = []
        for i in range(made, target):
            created = now - timedelta(seconds=i % 3600)
            batch.append(
                SyncEvent(
                    connection=side_a,
                    twin=twin,
                    direction="out",
                    status="done",
                    seq=i + 1,
                    processed_at=created + timedelta(milliseconds=50 + i % 900),
                )
            )
        SyncEvent.objects.bulk_create(batch, batch_size=5000)
        made = target
        health, metrics = timed("/healthz"), timed("/metrics")
        print(f"{target:>8} {health:>12.1f} {metrics:>12.1f} {metrics / health:>6.1f}x")


if __name__ == "__main__":
    main()
