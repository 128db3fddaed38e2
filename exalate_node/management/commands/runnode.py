"""Run the web server, a django-q2 worker and the sweeper together and keep them running; Ctrl-C stops all.

Production (DEBUG=false) serves the site with gunicorn (threaded workers) after collecting the static files;
a development node (DEBUG=true: `make run`, the demo) keeps Django's development server.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from exalate_node.supervisor import Backoff, Child, Supervisor


def web_server(addr: str, *, grace: float) -> Child:
    """The web process: gunicorn in production, runserver on a development node.

    gunicorn runs WEB_WORKERS processes of WEB_THREADS threads each (gthread): the node's requests mostly
    wait on the database and on sync-rule sandboxes, which threads overlap cheaply, and a fixed pool of
    threads keeps each thread's persistent database connection (DB_CONN_MAX_AGE) bounded. On SIGTERM it
    stops accepting and lets requests in flight finish for ``--graceful-timeout`` (a second less than
    runnode's grace, after which the supervisor SIGKILLs what is left).
    """
    if not settings.DEBUG:
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "exalate_node.wsgi:application",
            "--bind",
            addr,
            "--worker-class",
            "gthread",
            "--workers",
            str(settings.WEB_WORKERS),
            "--threads",
            str(settings.WEB_THREADS),
            "--graceful-timeout",
            f"{max(1.0, grace - 1):g}",
            "--no-control-socket",  # one fixed path per user: two nodes on a host would share it
            "--chdir",
            str(settings.BASE_DIR),
            "--error-logfile",
            "-",
            "--access-logfile",
            "-",
        ]
        return Child("web server", argv)
    # runserver serves each request in a new thread: a persistent database connection would outlive its
    # thread and pile up on PostgreSQL, so the development web process closes its connections after each
    # request.
    web_env = {**os.environ, "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "0")}
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    return Child("web server", [*manage, "runserver", addr, "--noreload"], env=web_env)


def children(addr: str, *, worker: bool, grace: float = 10.0) -> list[Child]:
    """The node's processes, as commands: the supervisor knows nothing else about them."""
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    procs = [web_server(addr, grace=grace)]
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


def static_sources_fingerprint() -> str:
    """A digest of every static source file's name, size and modification time (what collectstatic would
    copy), and of the storage that processes them."""
    digest = hashlib.sha256(settings.STORAGES["staticfiles"]["BACKEND"].encode())
    for finder in finders.get_finders():
        for path, storage in finder.list(["CVS", ".*", "*~"]):
            stat = os.stat(storage.path(path))
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def collect_static(log: Callable[[str], None]) -> None:
    """Collect, hash and compress the static files into STATIC_ROOT, unless the last run collected exactly
    these sources (compressing takes seconds; a restart should not)."""
    root = Path(settings.STATIC_ROOT)
    stamp = root / ".exalate-sources"
    fingerprint = static_sources_fingerprint()
    if (root / "staticfiles.json").exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return
    log(f"Collecting static files into {root} ...")
    call_command("collectstatic", interactive=False, verbosity=0)
    stamp.write_text(fingerprint)


class Command(BaseCommand):
    help = (
        "Start the web server (gunicorn when DEBUG=false, after collecting static files; runserver when "
        "DEBUG=true), the sync worker (django-q2 qcluster) and the sweeper, and restart any of them that "
        "stops. Ctrl-C (or SIGTERM) stops them all, letting requests in flight finish."
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

        if not settings.DEBUG:
            try:
                collect_static(log)
            except Exception as exc:
                raise CommandError(
                    f"Could not collect the static files into {settings.STATIC_ROOT}: {exc}. Check that "
                    "VAR_DIR is writable by this user (or set VAR_DIR to a directory that is)."
                )
        supervisor = Supervisor(
            children(addr, worker=not no_worker, grace=grace),
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
