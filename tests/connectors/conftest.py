"""Fixtures for the connector tests: a scripted loopback HTTP server, and a real Redmine.

``redmine`` uses ``REDMINE_URL``/``REDMINE_API_KEY`` when set (an admin key: the fixture creates projects
and users); otherwise it starts the Debian Redmine package through ``tests/e2e/redmine.sh`` on a free loopback
port for the session, and skips (a failure in CI) when Redmine is not installed.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

SCRIPT = Path(__file__).resolve().parents[1] / "e2e" / "redmine.sh"
DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef01234567"  # the script's fixed admin key (loopback only)


# --- a scripted loopback HTTP server ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # read the request, then close the connection without answering (a lost answer)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Loopback:
    """An HTTP server on 127.0.0.1 answering from a queue of ``Reply`` (or a function of the request)."""

    def __init__(self) -> None:
        self.replies: list[Reply | Callable[[Seen], Reply]] = []
        self.seen: list[Seen] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, dict(self.headers), body)
                outer.seen.append(seen)
                reply = outer.replies.pop(0) if outer.replies else Reply(500, b"no reply scripted")
                if callable(reply):
                    reply = reply(seen)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                payload = reply.body
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                    reply.headers.setdefault("Content-Type", "application/json")
                elif isinstance(payload, str):
                    payload = payload.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.close()


# --- a real Redmine ---------------------------------------------------------------------------------------


@dataclass
class RedmineServer:
    url: str
    api_key: str

    def call(self, method: str, path: str, *, switch_user: str = "", **kwargs: Any) -> requests.Response:
        """A direct admin REST call (test setup, not the connector); ``switch_user`` acts as that login."""
        headers = {"X-Redmine-API-Key": self.api_key, **kwargs.pop("headers", {})}
        if switch_user:
            headers["X-Redmine-Switch-User"] = switch_user
        response = requests.request(
            method, f"{self.url}/{path.lstrip('/')}", headers=headers, timeout=30, **kwargs
        )
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redmine_installed() -> bool:
    return Path("/usr/share/redmine/config/routes.rb").exists()


@pytest.fixture(scope="session")
def redmine() -> Iterator[RedmineServer]:
    """A running Redmine with the REST API on and an admin API key."""
    if os.environ.get("REDMINE_URL") and os.environ.get("REDMINE_API_KEY"):
        yield RedmineServer(os.environ["REDMINE_URL"].rstrip("/"), os.environ["REDMINE_API_KEY"])
        return
    if not redmine_installed():
        pytest.skip("Redmine is not installed: run `bash tests/e2e/redmine.sh install` (CI installs it)")
    port = _free_port()
    # A state folder of this run's own: its own copy of Redmine's database (another run, or a person's
    # Redmine, on the same machine never shares it) and its own attachments.
    state = tempfile.mkdtemp(prefix="redmine-test-")
    env = {
        **os.environ,
        "REDMINE_PORT": str(port),
        "REDMINE_API_KEY": DEFAULT_API_KEY,
        "REDMINE_STATE_DIR": state,
    }
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if started.returncode != 0:
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"Redmine did not start:\n{started.stdout}\n{started.stderr}")
    try:
        yield RedmineServer(f"http://127.0.0.1:{port}", DEFAULT_API_KEY)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def redmine_project(redmine: RedmineServer) -> Iterator[dict[str, Any]]:
    """A fresh Redmine project (unique identifier) with every tracker, for one test module."""
    trackers = [t["id"] for t in redmine.call("GET", "trackers.json").json()["trackers"]]
    identifier = f"t-{uuid.uuid4().hex[:10]}"
    project = redmine.call(
        "POST",
        "projects.json",
        json={"project": {"name": f"Test {identifier}", "identifier": identifier, "tracker_ids": trackers}},
    ).json()["project"]
    yield project
    requests.delete(
        f"{redmine.url}/projects/{identifier}.json",
        headers={"X-Redmine-API-Key": redmine.api_key},
        timeout=30,
    )


@pytest.fixture
def redmine_instance(redmine: RedmineServer, redmine_project: dict[str, Any]) -> Any:
    """An (unsaved) local Instance pointing at the test project: connectors need no database row."""
    from instances.models import Instance

    return Instance(
        name="Test Redmine",
        tracker_type="redmine",
        url=redmine.url,
        credentials=json.dumps({"api_key": redmine.api_key}),
        settings={"project": redmine_project["identifier"]},
    )
