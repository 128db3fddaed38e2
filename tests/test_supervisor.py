"""The supervisor behind runnode: a child that dies is restarted with a doubling delay and the others keep
running; stopping ends every child and whatever it started (issue #18). With real (tiny) processes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from exalate_node.supervisor import Backoff, Child, Supervisor, group_members

PY = sys.executable


def test_the_restart_delay_doubles_from_one_second_to_thirty_and_starts_over_after_a_stable_run() -> None:
    backoff = Backoff(first=1.0, cap=30.0, stable_after=60.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def run_for(supervisor: Supervisor, seconds: float, *, until: object = None) -> None:
    """Run the supervisor for ``seconds``, or (with ``until``, a callable) until it is true, for at most 30 s:
    a loaded machine starts interpreters slowly, so counts of restarts are waited for, not timed."""
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    deadline = time.monotonic() + (30 if until else seconds)
    while time.monotonic() < deadline and not (until and until()):  # type: ignore[operator]
        time.sleep(0.02)
    supervisor.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_a_child_that_keeps_dying_is_restarted_with_growing_delays_while_the_others_run(
    tmp_path: Path,
) -> None:
    starts = tmp_path / "starts"
    lines: list[str] = []
    crasher = Child("crasher", [PY, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"])
    steady = Child("steady", [PY, "-c", "import time; time.sleep(60)"])
    supervisor = Supervisor(
        [crasher, steady], log=lines.append, backoff=Backoff(first=0.2, cap=0.8, stable_after=30), tick=0.02
    )
    run_for(supervisor, 0, until=lambda: starts.exists() and len(starts.read_text()) >= 5)
    assert len(starts.read_text()) >= 5, lines  # started, then restarted after 0.2, 0.4, 0.8, 0.8 s
    assert steady.restarts == 0  # never touched
    delays = [
        line.split("restarting it in ")[1].split(" s")[0] for line in lines if "restarting it in" in line
    ]
    assert delays[:4] == ["0.2", "0.4", "0.8", "0.8"]
    assert "The crasher process (pid" in lines[0] and "exited with code 3" in lines[0]
    assert "The other processes keep running." in lines[0]


def test_a_child_that_stayed_up_long_enough_is_restarted_after_the_first_delay_again() -> None:
    lines: list[str] = []
    child = Child("worker", [PY, "-c", "import time; time.sleep(0.6)"])
    supervisor = Supervisor(
        [child], log=lines.append, backoff=Backoff(first=0.1, cap=10, stable_after=0.5), tick=0.02
    )
    run_for(supervisor, 0, until=lambda: sum("restarting it in" in line for line in lines) >= 2)
    delays = [
        line.split("restarting it in ")[1].split(" s")[0] for line in lines if "restarting it in" in line
    ]
    assert delays[:2] == ["0.1", "0.1"], lines  # it ran 0.6 s > 0.5 s each time: no doubling


def test_a_killed_child_takes_what_it_started_with_it(tmp_path: Path) -> None:
    """A killed qcluster leaves its sentinel and workers behind unless the supervisor ends them: they would
    go on taking tasks beside the new cluster."""
    pidfile = tmp_path / "grandchild"
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    lines: list[str] = []
    parent = Child("worker", [PY, "-c", code])
    supervisor = Supervisor([parent], log=lines.append, backoff=Backoff(first=5), tick=0.02)
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
        first = parent.proc
        assert first is not None and grandchild in group_members(first.pid)
        os.kill(first.pid, 9)
        deadline = time.monotonic() + 5
        while grandchild in group_members(first.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grandchild not in group_members(first.pid)
        assert any("was killed by SIGKILL" in line and "stopped 1 process(es)" in line for line in lines), (
            lines
        )
    finally:
        supervisor.stop()
        thread.join(timeout=20)


def test_stopping_ends_every_child_and_what_it_started_even_one_that_ignores_sigterm() -> None:
    stubborn = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    children = [
        Child("polite", [PY, "-c", "import time; time.sleep(60)"]),
        Child("stubborn", [PY, "-c", stubborn]),
    ]
    supervisor = Supervisor(children, log=lambda line: None, grace=0.5, tick=0.02)
    groups: list[int] = []
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    time.sleep(1.0)
    groups = [c.proc.pid for c in children if c.proc is not None]
    assert len(groups) == 2 and all(group_members(g) for g in groups)
    started = time.monotonic()
    supervisor.stop()
    thread.join(timeout=20)
    assert time.monotonic() - started < 5  # the grace period, then SIGKILL
    assert [group_members(g) for g in groups] == [[], []]


@pytest.mark.parametrize("addr", ["127.0.0.1:notaport", "localhost"])
def test_runnode_refuses_an_address_it_cannot_serve_on_with_what_to_do(addr: str) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="HOST:PORT"):
        call_command("runnode", "--addr", addr)


def test_runnode_refuses_a_port_in_use_and_names_another() -> None:
    import socket

    from django.core.management import CommandError, call_command

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match=f"--addr 127.0.0.1:{port + 1}"):
            call_command("runnode", "--addr", f"127.0.0.1:{port}")


def test_each_child_gets_its_own_environment(tmp_path: Path) -> None:
    """runnode gives the web server DB_CONN_MAX_AGE=0 and the worker runnode's own environment
    (tests/test_settings.py::test_runnode_starts_the_web_server_without_persistent_connections)."""
    out = tmp_path / "env"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ.get('DB_CONN_MAX_AGE', 'unset'))"
    child = Child(
        "web server",
        [PY, "-c", code + "; import time; time.sleep(60)"],
        env={**os.environ, "DB_CONN_MAX_AGE": "0"},
    )
    supervisor = Supervisor([child], log=lambda line: None, tick=0.02)
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.read_text() == "0"
    finally:
        supervisor.stop()
        thread.join(timeout=20)
