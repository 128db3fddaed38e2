"""Start a real django-q2 worker (``manage.py qcluster``) on the test database, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database the test process is using (the test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user, password = s.get("USER") or "", s.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


class Worker:
    """A qcluster process group sharing this test's database (and broker), killable at will."""

    def __init__(self, **env: str) -> None:
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "exalate_node.settings",
            "DEBUG": "true",
            "TASKS_INLINE": "false",
            "VAR_DIR": str(settings.VAR_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "DATABASE_URL": database_url(),
            "Q_POLL": "0.05",
            "PIPELINE_LEASE_SECONDS": "3",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, log: Path | None = None) -> Worker:
        """Start the cluster; its output goes to ``log`` when given (appended), else nowhere."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps its copy
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "qcluster"],
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
                stdout=out,
                stderr=out,
            )
        finally:
            if log:
                out.close()
        return self

    def kill(self) -> None:
        """SIGKILL the whole cluster, as a crash or OOM kill would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(check, timeout: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout} s waiting; last value: {value!r}")
