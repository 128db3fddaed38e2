"""The production path end to end (issue #20): a node with DEBUG=false started by `manage.py runnode` serves
its site with gunicorn, not Django's development server; the admin and the UI load in Chromium with their
stylesheets applied, served by WhiteNoise with far-future cache headers and compression; SIGTERM lets a
request in flight finish; and the node's schedules (created by `migrate`, no demo) run the reconciliation.

Before: runnode started `runserver` ("Do not use it in a production setting"), `/static/...` answered 404
with DEBUG=false, and only `bootstrap_demo` created the schedules.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import MANAGE, ROOT, Node, wait_for
from tests.e2e.test_runnode import alive, descendants

pytestmark = pytest.mark.e2e

PASSWORD = "a-production-password-4711"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

SETUP = f"""
import json
from django.contrib.auth import get_user_model
User = get_user_model()
user, _ = User.objects.get_or_create(username="admin", defaults=dict(is_staff=True, is_superuser=True))
user.set_password({PASSWORD!r})
user.save()
print(json.dumps(user.pk))
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A production node's environment and migrated database (no demo): each test starts runnode on it."""
    node = Node("prod", tmp_path_factory.mktemp("prod"), index=1)
    node.env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECRETS_KEYS=secrets.token_urlsafe(32),
        WEB_WORKERS="1",
        WEB_THREADS="4",
        LOG_LEVEL="INFO",
    )
    node.create_database()
    try:
        node.manage("migrate", "--noinput", timeout=300)
        node.shell(SETUP)
        yield node
    finally:
        node.drop_database()


class Running:
    def __init__(self, node: Node, proc: subprocess.Popen, log: Path) -> None:
        self.node, self.proc, self.log = node, proc, log

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def running(prepared: Node) -> Iterator[Running]:
    node = prepared
    log_path = node.var_dir / f"runnode-{secrets.token_hex(4)}.log"
    log = open(log_path, "wb")  # noqa: SIM115  (held by the child)
    proc = subprocess.Popen(
        [*MANAGE, "runnode", "--addr", f"127.0.0.1:{node.port}", "--grace", "8"],
        env=node.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        # The first start collects and compresses the static files (several seconds on a loaded machine).
        wait_for(
            "the production node to answer /healthz",
            lambda: proc.poll() is None and requests.get(f"{node.url}/healthz", timeout=2).ok,
            timeout=180,
        )
        yield Running(node, proc, log_path)
    finally:
        everything = descendants(proc.pid) | {proc.pid}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in everything:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def cmdlines(pid: int) -> list[bytes]:
    out = []
    for child in descendants(pid):
        try:
            out.append(Path(f"/proc/{child}/cmdline").read_bytes())
        except OSError:
            continue
    return out


def test_the_site_is_served_by_gunicorn_with_cached_compressed_static_files(running: Running) -> None:
    node = running.node
    health = requests.get(f"{node.url}/healthz", timeout=5)
    assert health.headers["Server"] == "gunicorn"
    assert any(b"gunicorn" in c for c in cmdlines(running.proc.pid))
    assert not any(b"runserver" in c for c in cmdlines(running.proc.pid))
    assert "development server" not in running.text()
    # Ready once the sweeper has asked the worker for a heartbeat and the worker has run it.
    ready = wait_for(
        "/readyz to answer 200",
        lambda: (r := requests.get(f"{node.url}/readyz", timeout=5)).status_code == 200 and r,
        timeout=60,
    )
    assert ready.json()["checks"] == {
        "database": {"ok": True},
        "broker": {"ok": True},
        "worker": {"ok": True},
    }

    login = requests.get(f"{node.url}/admin/login/", timeout=5)
    assert login.status_code == 200
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', login.text)
    # Hashed names (content digests), which is what lets them be cached for years.
    base = next(s for s in stylesheets if "/admin/css/base." in s)
    ours = next(s for s in stylesheets if "/ui/ui." in s)
    assert re.search(r"\.[0-9a-f]{12}\.css$", base), base
    for path in (base, ours):
        plain = requests.get(f"{node.url}{path}", headers={"Accept-Encoding": "identity"}, timeout=5)
        assert plain.status_code == 200 and plain.headers["Content-Type"].startswith("text/css")
        assert "Content-Encoding" not in plain.headers
        max_age = int(re.search(r"max-age=(\d+)", plain.headers["Cache-Control"]).group(1))
        assert max_age >= 365 * 24 * 3600, plain.headers["Cache-Control"]
        assert "immutable" in plain.headers["Cache-Control"]
        for encoding in ("br", "gzip"):
            packed = requests.get(
                f"{node.url}{path}", headers={"Accept-Encoding": encoding}, timeout=5, stream=True
            )
            assert packed.status_code == 200
            assert packed.headers["Content-Encoding"] == encoding
            assert int(packed.headers["Content-Length"]) < len(plain.content)
            packed.close()
    # Names that do not exist are a 404, not the app's error page or a stack trace.
    assert requests.get(f"{node.url}/static/admin/css/nope.css", timeout=5).status_code == 404


@pytest.fixture
def chromium():  # type: ignore[no-untyped-def]
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_the_admin_and_the_ui_are_styled_in_a_browser(running: Running, chromium) -> None:  # type: ignore[no-untyped-def]
    context = chromium.new_context(base_url=running.node.url, viewport={"width": 1366, "height": 768})
    context.set_default_timeout(20_000)
    page = context.new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if "/static/" in r.url and r.status != 200 else None)

    def style(selector: str, prop: str) -> str:
        return page.eval_on_selector(selector, f"e => getComputedStyle(e).getPropertyValue('{prop}')")

    page.goto("/admin/login/")
    # Only the admin's stylesheet gives the header its colour, and only ui.css sets the brand mark's weight.
    assert style("#header", "background-color") == "rgb(65, 118, 144)"
    assert style(".brand-mark", "font-weight") == "600"
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    assert style("#header", "display") == "flex"
    assert style("#content-main .module caption", "background-color") == "rgb(65, 118, 144)"

    page.goto("/ui/")
    page.wait_for_selector("nav.ui-nav")
    assert style("nav.ui-nav", "display") == "flex"  # a <nav> is a block without ui.css
    assert style("#header", "background-color") == "rgb(65, 118, 144)"
    context.close()
    assert failed == []


def test_sigterm_lets_a_request_in_flight_finish(running: Running) -> None:
    """A token request whose body is still arriving when runnode gets SIGTERM is answered in full; then
    runnode and everything it started exit."""
    node, proc = running.node, running.proc
    body = f'{{"username": "admin", "password": "{PASSWORD}", "name": "graceful"}}'.encode()
    head = (
        f"POST /api/v1/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    everything = descendants(proc.pid)
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(head + body[:10])
        # gunicorn has the request (a thread is reading its body) before the signal is sent.
        wait_for("the request to reach a worker thread", lambda: _established(node.port), timeout=10)
        proc.send_signal(signal.SIGTERM)
        wait_for("gunicorn to start its graceful shutdown", lambda: "Handling signal: term" in running.text())
        # The rest of the body arrives during the shutdown: the request in flight is still answered.
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 201") or status.startswith(b"HTTP/1.1 200"), answer[:500]
    assert b'"token"' in rest
    assert proc.wait(timeout=30) == 0
    assert "exalate-node stopped." in running.text()
    assert [p for p in everything if alive(p)] == []


def _established(port: int) -> bool:
    """A connection to ``port`` is established and gunicorn has accepted it: nothing waits in the listening
    socket's accept queue (for a socket in LISTEN, /proc/net/tcp's rx_queue is that queue's length)."""
    connected = backlog = False
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if not fields[1].endswith(f":{port:04X}"):
            continue
        if fields[3] == "01":
            connected = True
        elif fields[3] == "0A" and int(fields[4].split(":")[1], 16) > 0:
            backlog = True
    return connected and not backlog


ENSURE_TWICE = """
import json
from importlib import import_module
from django.apps import apps
from django_q.models import Schedule
from replicas.schedules import SCHEDULES, ensure_schedules
migration = import_module("replicas.migrations.0007_default_schedules")
before = sorted(Schedule.objects.values_list("name", flat=True))
migration.ensure(apps, None)  # what `migrate` ran, again
ensure_schedules()  # and what bootstrap_demo runs
after = sorted(Schedule.objects.values_list("name", flat=True))
print(json.dumps(dict(before=before, after=after, expected=sorted(e["name"] for e in SCHEDULES))))
"""

RECONCILE_NOW = """
import json
from django.utils import timezone
from django_q.models import Schedule
from instances.models import Instance
updated = Schedule.objects.filter(name="reconciliation").update(next_run=timezone.now())
print(json.dumps(dict(updated=updated, instances=Instance.objects.count())))
"""

RECONCILED = """
import json
from django_q.models import Schedule, Task
done = Task.objects.filter(func="replicas.tasks.reconcile_all")
schedule = Schedule.objects.get(name="reconciliation")
print(json.dumps(dict(ok=done.filter(success=True).count(), failed=list(done.filter(success=False)
    .values_list("result", flat=True)), next_run=schedule.next_run.isoformat())))
"""


def test_a_node_set_up_without_the_demo_runs_its_schedules(running: Running) -> None:
    """`migrate` created the schedules (no bootstrap_demo ran on this node); ensuring them again creates
    nothing twice; and the node's own worker runs the reconciliation when it is due."""
    node = running.node
    names = node.shell(ENSURE_TWICE)
    assert names["before"] == names["after"] == names["expected"]
    assert "reconciliation" in names["expected"]

    state = node.shell(RECONCILE_NOW)
    assert state == {"updated": 1, "instances": 0}  # the schedule exists; nothing of the demo does

    def finished() -> dict | None:
        r = node.shell(RECONCILED)
        return r if r["ok"] or r["failed"] else None

    # django-q2's scheduler looks for due schedules every 30 s.
    result = wait_for("the reconciliation task to run", finished, timeout=120, interval=2)
    assert result["ok"] >= 1 and result["failed"] == [], result
