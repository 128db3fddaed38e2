"""/readyz (issue #20.4): 200 when the database, the task broker and a recent worker heartbeat are there;
503 naming the failing part and what to do, without addresses, passwords or exception text. /healthz stays
liveness only. The heartbeat comes from the sweeper's loop, through a task the worker runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from exalate_node.health import SweeperHeartbeat
from exalate_node.models import Heartbeat

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_beat(seconds_ago: float = 0) -> None:
    Heartbeat.objects.update_or_create(
        role="worker", defaults={"beat_at": timezone.now() - timedelta(seconds=seconds_ago)}
    )


def test_a_node_with_its_database_broker_and_a_recent_worker_is_ready(client):
    worker_beat(5)
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": {"ok": True}, "broker": {"ok": True}, "worker": {"ok": True}}
    assert response["Cache-Control"].startswith("max-age=0")


def test_no_worker_heartbeat_yet_is_not_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == {"ok": True} and body["checks"]["broker"] == {"ok": True}
    worker = body["checks"]["worker"]
    assert worker["ok"] is False and worker["problem"] == "No worker has run a task yet."
    assert "manage.py qcluster" in worker["fix"] and "node_sweeper" in worker["fix"]
    assert client.get("/healthz").status_code == 200  # alive all the same


def test_a_stale_worker_heartbeat_is_not_ready(client, settings):
    settings.READY_WORKER_MAX_AGE = 60
    worker_beat(300)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"]["problem"] == (
        "The last worker heartbeat is 300 s old (more than 60 s)."
    )


def test_an_unreachable_redis_broker_is_not_ready_and_its_address_is_not_shown(client, settings):
    port = closed_port()
    settings.REDIS_URL = f"redis://:hunter2@127.0.0.1:{port}/0"
    worker_beat()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["broker"] == {
        "ok": False,
        "problem": "The task broker (Redis) does not answer.",
        "fix": "Check that Redis is running and reachable at REDIS_URL; the node's log has the error.",
    }
    assert body["checks"]["database"] == {"ok": True} and body["checks"]["worker"] == {"ok": True}
    assert "hunter2" not in response.content.decode() and str(port) not in response.content.decode()


def test_an_unreachable_database_is_not_ready_and_its_password_is_not_shown(tmp_path):
    """In a process of its own, with DATABASE_URL at a port where no PostgreSQL listens."""
    code = (
        "import json; from django.test import Client; r = Client().get('/readyz'); "
        "print(json.dumps(dict(status=r.status_code, body=r.content.decode())))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(
        DEBUG="true",
        VAR_DIR=str(tmp_path),
        DATABASE_URL=f"postgres://exalate:hunter2@127.0.0.1:{closed_port()}/exalate",
        DJANGO_SETTINGS_MODULE="exalate_node.settings",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    assert "hunter2" not in answer["body"]
    checks = json.loads(answer["body"])["checks"]
    assert checks["database"]["problem"] == "The database does not answer."
    assert "DATABASE_URL" in checks["database"]["fix"]
    assert (
        checks["worker"]["problem"] == checks["broker"]["problem"] == "Unknown: the database does not answer."
    )


def test_the_sweeper_asks_the_worker_for_a_heartbeat_and_does_not_pile_them_up(
    django_capture_on_commit_callbacks,
):
    heartbeat = SweeperHeartbeat(interval=10)
    with django_capture_on_commit_callbacks() as asked:
        heartbeat.tick(now=0)
    assert Heartbeat.objects.filter(role="sweeper").exists()
    assert len(asked) == 1  # the worker's beat, enqueued (TASKS_INLINE runs it on commit)
    assert not Heartbeat.objects.filter(role="worker").exists()

    # No worker ran it: no new request for a minute, then one more.
    with django_capture_on_commit_callbacks() as asked:
        heartbeat.tick(now=10)
        heartbeat.tick(now=59)
    assert asked == []
    with django_capture_on_commit_callbacks(execute=True) as asked:
        heartbeat.tick(now=61)
    assert len(asked) == 1
    assert Heartbeat.objects.filter(role="worker").exists()  # the task ran: the worker's heartbeat

    # The worker answers: a new request every interval.
    with django_capture_on_commit_callbacks() as asked:
        heartbeat.tick(now=65)
        heartbeat.tick(now=71)
    assert len(asked) == 1
