"""tests/e2e/redmine.sh gives every state folder its own Redmine database, so two Redmines on one machine (two
test runs, or a test run and a person) never lock each other or see each other's data (issue #18).

Before, every Redmine it started ran on Debian's one system-wide sqlite file whatever folder it was given:
concurrent writes failed with "SQLite3::BusyException" and each saw the other's projects.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.connectors.conftest import DEFAULT_API_KEY, SCRIPT, _free_port, redmine_installed

pytestmark = [pytest.mark.services, pytest.mark.e2e]

SYSTEM_DB = "/var/lib/dbconfig-common/sqlite3/redmine/instances/default/redmine_default"


class Redmine:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDMINE_PORT": str(self.port),
            "REDMINE_API_KEY": DEFAULT_API_KEY,
            "REDMINE_STATE_DIR": str(state),
        }

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=300
        )

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Redmine-API-Key": DEFAULT_API_KEY, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/{path}", headers=headers, timeout=30, **kwargs)

    def open_files(self) -> set[str]:
        """The files the Redmine server process holds open."""
        pid = int((self.state / f"redmine-{self.port}.pid").read_text())
        found = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                found.add(os.readlink(fd))
            except OSError:
                pass
        return found

    def projects(self) -> list[str]:
        return [p["identifier"] for p in self.call("GET", "projects.json").json()["projects"]]


@pytest.fixture
def two_redmines(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not redmine_installed():
        pytest.skip("Redmine is not installed: run `bash tests/e2e/redmine.sh install` (CI installs it)")
    pair = [Redmine(tmp_path / "a"), Redmine(tmp_path / "b")]
    results: list[subprocess.CompletedProcess[str]] = []
    starters = [threading.Thread(target=lambda r=r: results.append(r.script("start"))) for r in pair]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    try:
        for result in results:
            assert result.returncode == 0, result.stdout + result.stderr
        yield pair
    finally:
        for r in pair:
            r.script("stop")


def test_two_redmines_started_together_each_write_their_own_database_without_locking(two_redmines) -> None:  # type: ignore[no-untyped-def]
    a, b = two_redmines
    for r in (a, b):
        held = r.open_files()
        assert str(r.state / "db.sqlite3") in held, held
        assert SYSTEM_DB not in held  # Debian's shared file is only ever read, to make the snapshot

    # Both write at the same time: every write succeeds (no SQLite3::BusyException, which Redmine answers
    # with 500), and each sees only what was written to it.
    failures: list[str] = []
    names = {r.port: f"p{uuid.uuid4().hex[:10]}" for r in (a, b)}

    def write(r: Redmine) -> None:
        ident = names[r.port]
        created = r.call(
            "POST",
            "projects.json",
            json={"project": {"name": ident, "identifier": ident, "tracker_ids": [1, 2, 3]}},
        )
        if created.status_code != 201:
            failures.append(f"{r.port} project: {created.status_code} {created.text[:200]}")
            return
        for n in range(12):
            issue = r.call(
                "POST",
                "issues.json",
                json={"issue": {"project_id": ident, "tracker_id": 1, "subject": f"issue {n}"}},
            )
            if issue.status_code != 201:
                failures.append(f"{r.port} issue {n}: {issue.status_code} {issue.text[:200]}")

    writers = [threading.Thread(target=write, args=(r,)) for r in (a, b)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert failures == []
    assert a.projects() == [names[a.port]] and b.projects() == [names[b.port]]

    # Attachments land in the state folder too (reset clears them without touching anybody else's).
    upload = a.call(
        "POST",
        "uploads.json?filename=note.txt",
        data=b"hello",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert upload.status_code == 201
    assert [p.name.endswith("_note.txt") for p in (a.state / "files").rglob("*") if p.is_file()] == [True]

    # reset gives a fresh copy of the configured database: the project is gone, the API key still works.
    assert a.script("reset").returncode == 0
    assert not (a.state / "files").exists()
    started = a.script("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert a.projects() == [] and b.projects() == [names[b.port]]
