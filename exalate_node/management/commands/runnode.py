"""Run the web server, a django-q2 worker and the sweeper together and keep them running; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from exalate_node.supervisor import Backoff, Child, Supervisor


def children(addr: str, *, worker: bool) -> list[Child]:
    """The node's processes, as commands: the supervisor knows nothing else about them."""
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    # runserver serves each request in a new thread: a persistent database connection would outlive its
    # thread and pile up on PostgreSQL, so the web process closes its connections after each request.
    web_env = {**os.environ, "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "0")}
    procs = [Child("web server", [*manage, "runserver", addr, "--noreload"], env=web_env)]
    if worker:
        procs.append(Child("worker", [*manage, "qcluster"]))
        # Retries to peers, lost-task recovery and tracker polling every few seconds (django-q2 schedules
        # tick per minute).
        procs.append(Child("sweeper", [*manage, "node_sweeper"]))
    return procs


def check_free(addr: str) -> None:
    """Refuse to start on an address something already listens on (the web server would only fail, and
    be restarted, forever)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise CommandError(f"--addr must be HOST:PORT, e.g. 127.0.0.1:8000 (got {addr!r}).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            raise CommandError(
                f"Cannot serve on {addr}: {exc.strerror or exc}. Another node or program may be using it: "
                f"stop it, or pick another port, e.g. `manage.py runnode --addr {host}:{int(port) + 1}` "
                "(and set NODE_URL to match)."
            )


class Command(BaseCommand):
    help = (
        "Start the web server, the sync worker (django-q2 qcluster) and the sweeper, and restart any of them "
        "that stops. Ctrl-C (or SIGTERM) stops them all."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default=os.environ.get("NODE_ADDR", "127.0.0.1:8000"))
        parser.add_argument("--no-worker", action="store_true", help="Only the web server.")
        parser.add_argument(
            "--grace", type=float, default=10.0, help="Seconds the processes get to stop before SIGKILL."
        )

    def handle(self, *args: Any, addr: str, no_worker: bool, grace: float, **options: Any) -> None:
        check_free(addr)

        def log(line: str) -> None:
            self.stderr.write(f"runnode: {line}")
            self.stderr.flush()

        supervisor = Supervisor(
            children(addr, worker=not no_worker),
            log=log,
            backoff=Backoff(first=1.0, cap=30.0, stable_after=60.0),
            grace=grace,
        )
        signal.signal(signal.SIGINT, supervisor.stop)
        signal.signal(signal.SIGTERM, supervisor.stop)
        self.stdout.write(self.style.SUCCESS(f"exalate-node is starting at http://{addr}/ (Ctrl-C stops it)"))
        self.stdout.flush()
        supervisor.run()
        self.stdout.write("exalate-node stopped.")
