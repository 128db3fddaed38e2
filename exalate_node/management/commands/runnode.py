"""Run the web server and a django-q2 worker together; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Start the web server, the sync worker (django-q2 qcluster) and the sweeper. Ctrl-C stops them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default=os.environ.get("NODE_ADDR", "127.0.0.1:8000"))
        parser.add_argument("--no-worker", action="store_true", help="Only the web server.")

    def handle(self, *args: Any, addr: str, no_worker: bool, **options: Any) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        # runserver serves each request in a new thread: a persistent database connection would outlive its
        # thread and pile up on PostgreSQL, so the web process closes its connections after each request.
        web_env = {**os.environ, "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "0")}
        procs = {"web": subprocess.Popen([*manage, "runserver", addr, "--noreload"], env=web_env)}
        if not no_worker:
            procs["worker"] = subprocess.Popen([*manage, "qcluster"])
            # Retries to peers and lost-task recovery every few seconds (django-q2 schedules tick per minute).
            procs["sweeper"] = subprocess.Popen([*manage, "node_sweeper"])
        self.stdout.write(self.style.SUCCESS(f"exalate-node is starting at http://{addr}/ (Ctrl-C stops it)"))

        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"The {name} process exited with code {proc.returncode}; stopping.")
                        stopping = True
                time.sleep(0.3)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.stdout.write("exalate-node stopped.")
