"""One node spread over four network hosts: two web servers and two workers, each in its own network
namespace (``ip netns``, veth pairs on a bridge), sharing PostgreSQL and django-q2's Redis broker, which they
reach by address. A Bulk Exalate of 120 items runs while people edit through both web servers; in the middle
of it one worker host drops off the network (its processes keep running, unreachable). The other worker
takes over its leases and the bulk job: every item arrives exactly once and every edit arrives, before the
lost host comes back; when it does, nothing is duplicated.

Part of the PostgreSQL + Redis suite (deselected elsewhere: tests/e2e/conftest.py); needs root.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.e2e import netns
from tests.e2e.conftest import ROOT, _pg_admin, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.pg_topology]

ITEMS = 120
SETUP = """
import json
from django.contrib.auth import get_user_model
from connections.services import connection_create_local
from exalate_node.tokens import token_create
from instances.models import Instance
from instances.tracker import services
user = get_user_model().objects.create_user("admin", is_staff=True, is_superuser=True)
_, token = token_create(user=user, name="scale-out")
sup = Instance.objects.create(name="Support", tracker_type="builtin")
eng = Instance.objects.create(name="Engineering", tracker_type="builtin")
project = services.project_create(instance=sup, key="SUP", name="Support")
services.project_create(instance=eng, key="ENG", name="Engineering")
a, b = connection_create_local(name="Support ⇄ Engineering", instance_a=sup, instance_b=eng)
keys = [services.issue_create(project=project, actor="anna@example.com", summary=f"item {n}").key
        for n in range(ITEMS)]
print(json.dumps({"token": token, "connection": a.pk, "keys": keys}))
"""
STATE = """
import json
from collections import Counter
from instances.models import Issue
from replicas.models import BulkJob, SyncEvent, Twin
eng = list(Issue.objects.filter(project__key="ENG").values_list("summary", flat=True))
print(json.dumps({
    "eng": eng,
    "twins_per_item": list(Counter(Twin.objects.filter(connection__local_instance__name="Support")
                                   .values_list("local_id", flat=True)).values()),
    "bulk": list(BulkJob.objects.values_list("status", flat=True)),
    "open": SyncEvent.objects.exclude(status__in=["done", "skipped"]).count(),
    "failed": SyncEvent.objects.filter(status="failed").count(),
    "retried": SyncEvent.objects.filter(attempts__gt=1).count(),
}))
"""


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def network():  # type: ignore[no-untyped-def]
    why = netns.available()
    if why:
        pytest.skip(why)
    for service, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        if not _reachable("127.0.0.1", port):
            pytest.skip(f"{service} is not answering on 127.0.0.1:{port}")
    net = netns.Network()
    try:
        yield net
    finally:
        net.close()


def test_two_web_and_two_worker_hosts_lose_nothing_when_a_worker_host_drops_off(network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pg = os.environ.get("DATABASE_URL", "")
    base = (
        pg
        if pg.startswith(("postgres://", "postgresql://"))
        else "postgres://postgres@127.0.0.1:5432/postgres"
    )
    db_name = f"exalate_scale_{os.getpid()}"
    parts = urlsplit(base)
    admin_url = urlunsplit(parts._replace(path="/postgres", query=""))
    with _pg_admin(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        conn.execute(f'CREATE DATABASE "{db_name}"')
    network.forward(5432, (parts.hostname or "127.0.0.1", parts.port or 5432))
    network.forward(6379, ("127.0.0.1", 6379))
    web1, web2, worker1, worker2 = (network.host(n) for n in ("web1", "web2", "wrk1", "wrk2"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))},
        "DJANGO_SETTINGS_MODULE": "exalate_node.settings",
        "DEBUG": "true",
        "SECRET_KEY": "s" * 50,  # the same on every host, like every other setting
        "SECRETS_KEYS": "one-at-rest-key-for-every-host-of-this-node",
        "VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media"),  # shared storage (NFS, a volume) in a real deployment
        "NODE_URL": f"http://{web1.address}:8000",
        "ALLOWED_HOSTS": ",".join(h.address for h in (web1, web2)),
        "DATABASE_URL": urlunsplit(
            parts._replace(
                netloc=f"{parts.username or 'postgres'}@{network.gateway}:5432", path=f"/{db_name}", query=""
            )
        ),
        "REDIS_URL": f"redis://{network.gateway}:6379/14",
        "Q_CLUSTER_NAME": f"scale-out-{os.getpid()}",  # one queue for both worker hosts
        "Q_WORKERS": "2",
        "TASKS_INLINE": "false",
        "DB_CONN_MAX_AGE": "0",
        "PIPELINE_LEASE_SECONDS": "4",
        "DB_IDLE_IN_TRANSACTION_TIMEOUT_S": "10",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    local = {**env, "DATABASE_URL": urlunsplit(parts._replace(path=f"/{db_name}", query=""))}
    redis_flush = subprocess.run(["redis-cli", "-n", "14", "FLUSHDB"], capture_output=True)
    assert redis_flush.returncode == 0 or not redis_flush.stderr
    manage = [sys.executable, str(ROOT / "manage.py")]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*manage, *args], env=local, cwd=ROOT, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        run("migrate", "--noinput")
        setup = json.loads(run("shell", "-c", SETUP.replace("ITEMS", str(ITEMS))).strip().splitlines()[-1])
        for host in (web1, web2):
            host.spawn(
                [*manage, "runserver", "--noreload", "0.0.0.0:8000"],
                env=env,
                log=logs / f"{host.name}.log",
                cwd=ROOT,
            )
        web1.spawn([*manage, "node_sweeper"], env=env, log=logs / "sweeper.log", cwd=ROOT)
        for host in (worker1, worker2):
            host.spawn([*manage, "qcluster"], env=env, log=logs / f"{host.name}.log", cwd=ROOT)

        headers = {"Authorization": f"Token {setup['token']}"}

        def api(host: netns.Host, method: str, path: str, **kw: Any) -> requests.Response:
            return requests.request(
                method, f"http://{host.address}:8000/api/v1{path}", headers=headers, timeout=10, **kw
            )

        for host in (web1, web2):
            wait_for(f"{host.name} to answer", lambda h=host: _reachable(h.address, 8000), timeout=60)

        def state() -> dict[str, Any]:
            return json.loads(run("shell", "-c", STATE).strip().splitlines()[-1])

        started = api(
            web1,
            "POST",
            f"/connections/{setup['connection']}/bulk/",
            json={"kind": "exalate", "keys": setup["keys"]},
        )
        assert started.status_code == 202, started.text
        wait_for(
            "a third of the items on the other side",
            lambda: len(state()["eng"]) >= ITEMS // 3,
            timeout=120,
            interval=0.5,
        )

        worker1.cut()  # mid-bulk: its processes keep running, cut off from the database and the broker
        cut_at = time.monotonic()
        edits = {}
        for n, host in zip(range(0, 10, 2), (web1, web2, web1, web2, web2), strict=True):
            key = setup["keys"][n]
            edits[key] = f"item {n}, edited through {host.name}"
            answer = api(host, "PATCH", f"/tracker/issues/{key}/", json={"summary": edits[key]})
            assert answer.status_code == 200, answer.text

        expected = Counter(
            [f"item {n}" for n in range(ITEMS) if setup["keys"][n] not in edits] + list(edits.values())
        )

        def finished() -> bool:
            now = state()
            return Counter(now["eng"]) == expected and now["bulk"] == ["done"] and now["open"] == 0

        try:
            wait_for("every item and edit, with one worker host gone", finished, timeout=240, interval=1.0)
        except AssertionError:
            now = state()
            raise AssertionError(
                f"Not finished: {len(now['eng'])} items, bulk {now['bulk']}, {now['open']} open events, "
                f"missing {list((expected - Counter(now['eng'])).elements())[:10]}, "
                f"extra {list((Counter(now['eng']) - expected).elements())[:10]}\n"
                + "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs.iterdir())
            ) from None
        took = time.monotonic() - cut_at

        # The lost host comes back: whatever it was doing when it was cut must not be done twice.
        worker1.reconnect()
        time.sleep(8)
        now = state()
        assert Counter(now["eng"]) == expected, "the returning worker duplicated or changed items"
        assert set(now["twins_per_item"]) == {1} and len(now["twins_per_item"]) == ITEMS
        assert now["failed"] == 0
        print(
            f"\nscale-out: {ITEMS} items, 5 edits, finished {took:.0f} s after a worker host dropped off; "
            f"{now['retried']} events taken over after an interrupted attempt"
        )
    finally:
        for host in (web1, web2, worker1, worker2):
            host.kill()
        with _pg_admin(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
