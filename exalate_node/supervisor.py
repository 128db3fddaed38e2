"""Keep a node's processes running: start each child command, restart any that exits (with backoff), stop all
of them on request. ``runnode`` uses it for the web server, the django-q2 worker and the sweeper; the list
of commands is all it knows about them, so the web server can become gunicorn without touching this.

Each child runs in its own session (process group): when one dies, whatever it started (django-q2's
cluster forks a sentinel, workers, a monitor and a pusher) is killed with it before the restart, so no
orphaned worker goes on taking tasks beside the new one. Stopping sends SIGTERM to every group, waits up to
``grace`` seconds, then sends SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a child that exited: ``first`` seconds, doubling for each exit in a row, at
    most ``cap``. A child that stayed up ``stable_after`` seconds starts over at ``first``."""

    first: float = 1.0
    cap: float = 30.0
    stable_after: float = 60.0

    def delay(self, exits_in_a_row: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, exits_in_a_row - 1))


@dataclass
class Child:
    """One supervised command and its state."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    restarts: int = 0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Runs ``children`` until ``stop()``; ``log`` gets one line per event (exit, restart)."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        log: Callable[[str], None],
        backoff: Backoff = Backoff(),
        grace: float = 10.0,
        tick: float = 0.2,
        cwd: str | None = None,
    ) -> None:
        self.children = list(children)
        self.log = log
        self.backoff = backoff
        self.grace = grace
        self.tick = tick
        self.cwd = cwd
        self.stopping = False

    def stop(self, *_: object) -> None:
        """Ask ``run`` to stop everything (safe from a signal handler)."""
        self.stopping = True

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            list(child.argv),
            env=child.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        child.started_at = time.monotonic()
        child.restart_at = None

    def run(self) -> None:
        for child in self.children:
            self.start(child)
        try:
            while not self.stopping:
                self.check(time.monotonic())
                time.sleep(self.tick)
        finally:
            self.shutdown()

    def check(self, now: float) -> None:
        """Notice children that exited, and restart those whose delay is over."""
        for child in self.children:
            if self.stopping:
                return
            if child.proc is not None and child.proc.poll() is not None:
                self.exited(child, now)
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.start(child)
                self.log(
                    f"Restarted the {child.name} process (pid {child.proc.pid}; restart {child.restarts})."
                )

    def exited(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code, pid = child.proc.returncode, child.proc.pid
        left = kill_group(pid)  # what it started dies with it
        child.proc = None
        uptime = now - child.started_at
        if uptime >= self.backoff.stable_after:
            child.exits_in_a_row = 0
        child.exits_in_a_row += 1
        delay = self.backoff.delay(child.exits_in_a_row)
        child.restart_at = now + delay
        leftovers = f"; stopped {left} process(es) it had started" if left else ""
        self.log(
            f"The {child.name} process (pid {pid}) {describe_exit(code)} after {uptime:.0f} s{leftovers}; "
            f"restarting it in {delay:g} s. The other processes keep running."
        )

    def shutdown(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after ``grace`` seconds."""
        running = [c.proc for c in self.children if c.proc is not None]
        for proc in running:
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in running:
            # Whatever is still there, the child or what it started, gets no more time.
            kill_group(proc.pid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _die_with_parent() -> None:
    """In the child, before it runs (Linux): SIGTERM when the supervisor dies, even by SIGKILL, so that the
    node's processes (each in its own session) are not left running without it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:  # noqa: S110 (best effort: the supervisor normally stops its children itself)
        pass


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_group(pgid: int) -> int:
    """SIGKILL the processes left in a child's process group; returns how many there were."""
    members = group_members(pgid)
    signal_group(pgid, signal.SIGKILL)
    return len(members)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``, from /proc (Linux); [] elsewhere."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses): state, ppid, pgrp, ...
        rest = stat.rsplit(")", 1)[-1].split()
        if len(rest) > 2 and rest[0] != "Z" and int(rest[2]) == pgid:
            found.append(int(entry))
    return found
