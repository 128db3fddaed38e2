"""The sandbox processes that run sync scripts: same answers as the engine in-process, OS limits that really
apply, a deadline the parent enforces, replacement of a child that crashed, ran out of memory or missed its
deadline, and a parent that treats what a child sends as hostile."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.bench_rules import CONTEXT, ISSUE
from syncrules import engine
from syncrules.defaults import DEFAULT_INCOMING, DEFAULT_OUTGOING
from syncrules.engine import ScriptError
from syncrules.sandbox import (
    CHILD_ENV,
    TRACEBACK_SECONDS,
    SandboxConfig,
    SandboxPool,
    SandboxUnavailable,
    get_pool,
    run_incoming,
    run_outgoing,
)
from tests.syncrules.test_hostile_scripts import HOSTILE, LIMITS, PREVIOUS, REPLICA
from tests.syncrules.test_hostile_scripts import ISSUE as H_ISSUE

ROOT = Path(__file__).resolve().parents[2]
NESTED = "t = ()\nfor i in range(200000):\n    t = (t,)\n"
SORT_LOOP = "s = set(range(0, 7919000000, 7919))\nfor i in range(127):\n    y = sorted(s)\n"


@pytest.fixture
def pool():  # type: ignore[no-untyped-def]
    pools: list[SandboxPool] = []

    def make(**config) -> SandboxPool:  # type: ignore[no-untyped-def]
        made = SandboxPool(SandboxConfig(**config))
        pools.append(made)
        return made

    yield make
    for made in pools:
        made.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _one_child(p: SandboxPool) -> int:
    run_outgoing("replica.summary = 'warm'\n", issue={}, pool=p)
    (pid,) = p.pids()
    return pid


# --- the same answers as in-process ----------------------------------------------------------------------


def test_the_default_rules_give_the_same_results_in_the_sandbox_as_in_process(pool):
    p = pool()
    out = engine.run_outgoing(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT)
    boxed = run_outgoing(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT, pool=p)
    assert (boxed.replica, boxed.log, boxed.unexalate, boxed.sync_back) == (
        out.replica,
        out.log,
        False,
        False,
    )
    previous = dict(out.replica, summary="older", labels=[])
    for first_sync in (True, False):
        kwargs = dict(
            replica=out.replica, issue=ISSUE, previous=previous, first_sync=first_sync, context=CONTEXT
        )
        inc = engine.run_incoming(DEFAULT_INCOMING, **kwargs)
        boxed = run_incoming(DEFAULT_INCOMING, **kwargs, pool=p)
        assert (boxed.issue, boxed.log, boxed.unexalate) == (inc.issue, inc.log, inc.unexalate)


def test_flags_and_log_lines_come_back_from_the_sandbox(pool):
    result = run_incoming(
        "log.info('hello', 3)\nprint('printed')\nsync_helper.unexalate()\nsync_helper.sync_back()\n",
        replica={},
        issue={},
        previous=None,
        first_sync=False,
        pool=pool(),
    )
    assert result.log == ["INFO: hello 3", "PRINT: printed"]
    assert result.unexalate and result.sync_back


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_hostile_catalogue_fails_the_same_way_in_the_sandbox(name):
    src, kinds = HOSTILE[name]
    args = dict(replica=REPLICA, issue=H_ISSUE, previous=PREVIOUS, first_sync=False, context=LIMITS)
    with pytest.raises(ScriptError) as boxed:
        run_incoming(src, **copy.deepcopy(args))
    assert boxed.value.kind in kinds, str(boxed.value)
    if boxed.value.kind != "timeout":  # where a timeout stops depends on the clock
        with pytest.raises(ScriptError) as in_process:
            engine.run_incoming(src, **copy.deepcopy(args))
        assert str(boxed.value) == str(in_process.value)
        assert boxed.value.line == in_process.value.line


# --- crash, memory, deadline ------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
def test_a_script_that_crashes_its_process_is_a_crash_error_with_its_line(pool, direction):
    p = pool()
    pid = _one_child(p)
    target = "replica" if direction == "outgoing" else "issue"
    script = NESTED + f"{target}.summary = str(len({{t}}))\n"
    with pytest.raises(ScriptError) as info:
        if direction == "outgoing":
            run_outgoing(script, issue={}, pool=p)
        else:
            run_incoming(script, replica={}, issue={}, previous=None, first_sync=True, pool=p)
    e = info.value
    assert (e.kind, e.line, e.direction) == ("crash", 4, direction)
    assert "crashed the process that runs it (SIGSEGV)" in str(e)
    assert not _alive(pid) and pid not in p.pids()
    assert run_outgoing("replica.summary = 'after'\n", issue={}, pool=p).replica["summary"] == "after"


def test_a_memory_hog_is_stopped_at_the_memory_limit_and_the_limit_leaves_room_for_real_work(pool):
    p = pool(memory_mb=256)
    slow = {"limits": {"timeout_s": 20}}
    # About 140 MB of tuples fits under 256 MB (an idle sandbox process uses about 20 MB) ...
    fits = "r = range(1000000)\nx = [tuple(r) for i in range(3)]\nreplica.summary = str(len(x))\n"
    assert run_outgoing(fits, issue={}, context=slow, pool=p).replica["summary"] == "3"
    pid = p.pids()[0]
    # ... six times that does not, and stops at the limit long before the time limit.
    started = time.monotonic()
    with pytest.raises(ScriptError) as info:
        run_outgoing(
            "r = range(1000000)\nx = [tuple(r) for i in range(20)]\n", issue={}, context=slow, pool=p
        )
    assert time.monotonic() - started < 5
    assert (info.value.kind, info.value.line) == ("memory", 2)
    assert "more than the 256 MB of memory" in str(info.value)
    assert not _alive(pid)
    assert run_outgoing("replica.summary = 'after'\n", issue={}, pool=p).replica["summary"] == "after"


@pytest.mark.parametrize(
    "script, line",
    [(SORT_LOOP, 3), ("s = set(range(0, 7919000000, 7919))\n" + "y = sorted(s)\n" * 20, None)],
    ids=["sorted-in-a-short-loop", "sorted-straight-line"],
)
def test_a_run_past_its_deadline_is_killed_within_the_timeout_plus_the_grace(pool, script, line):
    p = pool(grace_s=0.3)
    pid = _one_child(p)
    started = time.monotonic()
    with pytest.raises(ScriptError) as info:
        run_outgoing(script, issue={}, context={"limits": {"timeout_s": 0.5}}, pool=p)
    elapsed = time.monotonic() - started
    # 0.5 s + 0.3 s, then at most TRACEBACK_SECONDS to collect the traceback before SIGKILL (plus slack
    # for a loaded machine)
    assert 0.8 <= elapsed < 0.8 + TRACEBACK_SECONDS + 0.2, elapsed
    assert info.value.kind == "timeout" and "took longer than 0.5 s" in str(info.value)
    assert info.value.line == line if line else 2 <= info.value.line <= 21
    assert not _alive(pid)


def test_a_big_script_gets_time_to_compile_beyond_its_run_time_limit(pool):
    script = "replica.summary = 'x'\n" * 5000 + "replica.labels = ['done']\n"
    started = time.monotonic()
    result = run_outgoing(script, issue={}, context={"limits": {"timeout_s": 0.05}}, pool=pool(grace_s=0.05))
    assert result.replica["labels"] == ["done"]
    assert time.monotonic() - started > 0.1  # compiling took longer than the run may


# --- what a child process has, and has not --------------------------------------------------------------


def test_a_child_inherits_no_descriptor_and_no_secret_of_the_node(pool, monkeypatch):
    secrets = {
        "SECRET_KEY": "sk-sentinel-1",
        "SECRETS_KEYS": "sk-sentinel-2",
        "DATABASE_URL": "postgres://u:sk-sentinel-3@db/x",
        "REDIS_URL": "redis://:sk-sentinel-4@r/0",
        "DJANGO_SETTINGS_MODULE": "exalate_node.settings",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    listening.set_inheritable(True)
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    try:
        pid = _one_child(pool())
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        assert fds == [0, 1, 2]
        assert all(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:") for fd in fds)
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert dict(item.decode().split("=", 1) for item in environ.split(b"\0") if item) == CHILD_ENV
        assert b"sk-sentinel" not in environ and b"DJANGO" not in environ
    finally:
        listening.close()
        os.close(read_end)
        os.close(write_end)


def test_a_child_runs_under_its_os_limits(pool):
    pid = _one_child(pool(memory_mb=300))
    limits = {}
    for row in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = row[:26].strip(), *row[26:].split()[:2]
        limits[name] = (soft, hard)
    assert limits["Max address space"] == (str(300 * 1024 * 1024),) * 2
    assert limits["Max open files"] == ("16", "16")
    assert limits["Max file size"] == ("0", "0")
    assert limits["Max core file size"] == ("0", "0")
    # CPU time: a soft limit a few seconds above what the child has used, set again before every run
    assert limits["Max cpu time"][0].isdigit() and int(limits["Max cpu time"][0]) <= 5
    assert os.readlink(f"/proc/{pid}/cwd") == "/"


@pytest.mark.skipif(os.geteuid() != 0, reason="the node runs as root here only")
def test_a_child_of_a_node_running_as_root_runs_as_nobody(pool):
    pid = _one_child(pool())
    status = dict(row.split(":", 1) for row in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert status["Groups"].strip() == ""


def test_the_child_program_imports_no_django():
    code = "import sys, syncrules.sandbox_child; print(sorted(m for m in sys.modules if 'django' in m))"
    out = subprocess.run(
        [sys.executable, "-E", "-s", "-B", "-c", code],
        cwd=ROOT,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_child_that_cannot_start_is_a_clear_error_naming_the_setting(pool):
    with pytest.raises(SandboxUnavailable) as info:
        run_outgoing("replica.summary = 'x'\n", issue={}, pool=pool(memory_mb=8))
    assert "SCRIPT_SANDBOX_MEMORY_MB is 8, below the 64 MB a sandbox process needs" in str(info.value)
    assert str(info.value).startswith("The outgoing script could not run: its sandbox process did not start")
    assert str(info.value).endswith("Fix the node's configuration, then retry.")
    assert info.value.kind == "unavailable"


def test_a_child_that_exits_before_it_is_ready_is_a_clear_error(pool, monkeypatch):
    from syncrules import sandbox

    monkeypatch.setattr(
        sandbox, "_command", lambda config: [sys.executable, "-c", "import sys; sys.exit('no python today')"]
    )
    with pytest.raises(SandboxUnavailable, match="did not start \\(no python today\\)"):
        run_incoming(
            "issue.summary = 'x'\n", replica={}, issue={}, previous=None, first_sync=True, pool=pool()
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="the user is only changed when the node runs as root")
def test_a_sandbox_user_that_does_not_exist_is_a_clear_error(pool):
    with pytest.raises(SandboxUnavailable) as info:
        run_outgoing("replica.summary = 'x'\n", issue={}, pool=pool(user="no-such-user-here"))
    assert "'no-such-user-here' (SCRIPT_SANDBOX_USER) does not exist" in str(info.value)


# --- the pool ---------------------------------------------------------------------------------------------


def test_children_are_started_on_first_use_and_reused(pool):
    p = pool()
    assert p.pids() == []
    pid = _one_child(p)
    for i in range(20):
        assert run_outgoing(f"replica.summary = '{i}'\n", issue={}, pool=p).replica["summary"] == str(i)
    assert p.pids() == [pid]


def test_a_child_killed_while_idle_is_replaced_and_the_run_goes_on(pool):
    p = pool()
    pid = _one_child(p)
    os.kill(pid, 9)
    time.sleep(0.1)
    assert run_outgoing("replica.summary = 'still'\n", issue={}, pool=p).replica["summary"] == "still"
    assert p.pids() and pid not in p.pids()


def test_threads_share_at_most_the_configured_number_of_children(pool):
    p = pool(processes=2)
    seen: set[int] = set()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                result = run_outgoing(
                    "replica.summary = issue.summary + '!'\n", issue={"summary": f"{n}-{i}"}, pool=p
                )
                assert result.replica["summary"] == f"{n}-{i}!"
                seen.update(p.pids())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= len(seen) <= 2


def test_a_forked_process_starts_its_own_pool_and_leaves_the_parents_alone():
    parent_pid = _one_child(get_pool())
    read_end, write_end = os.pipe()
    forked = os.fork()
    if forked == 0:  # the forked process: like a django-q2 worker forked by its cluster
        try:
            summary = run_outgoing("replica.summary = 'forked'\n", issue={}).replica["summary"]
            pids = get_pool().pids()
            os.write(write_end, f"{summary} {pids[0] if len(pids) == 1 else pids}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(forked, 0)
    answer = os.read(read_end, 100).decode().split()
    os.close(read_end)
    assert answer[0] == "forked" and answer[1].isdigit() and int(answer[1]) != parent_pid
    # The forked process's exit neither killed nor confused this process's child.
    assert run_outgoing("replica.summary = 'parent'\n", issue={}).replica["summary"] == "parent"
    assert parent_pid in get_pool().pids()


# --- sync_helper's questions ------------------------------------------------------------------------------


class _Services:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def is_under_sync(self, key: str) -> bool:
        self.asked.append(("is_under_sync", key))
        return key == "SUP-1"

    def local_key_for_remote(self, remote_id: str) -> str | None:
        self.asked.append(("local_key_for_remote", remote_id))
        return {"7": "SUP-7"}.get(remote_id)

    def remote_url(self, remote_key: str) -> str | None:
        self.asked.append(("remote_url", remote_key))
        raise RuntimeError("the database is down")


def test_sync_helper_questions_go_to_the_parent_with_checked_arguments(pool):
    services = _Services()
    p = pool()
    script = (
        "replica.labels = [sync_helper.is_under_sync('SUP-1'), sync_helper.is_under_sync(7),\n"
        "    sync_helper.local_key(7), sync_helper.local_key('8')]\n"
        "try:\n    sync_helper.local_key('k' * 1001)\nexcept ValueError as e:\n    replica.summary = str(e)\n"
        "try:\n    sync_helper.is_under_sync(chr(55296))\n"
        "except ValueError as e:\n    replica.description = str(e)\n"
    )
    result = run_outgoing(script, issue={}, context={"services": services}, pool=p)
    assert result.replica["labels"] == [True, False, "SUP-7", None]
    assert result.replica["summary"] == "the key is longer than 1,000 characters"
    assert "not valid Unicode" in result.replica["description"]
    assert services.asked == [
        ("is_under_sync", "SUP-1"),
        ("is_under_sync", "7"),
        ("local_key_for_remote", "7"),
        ("local_key_for_remote", "8"),
    ]
    # Without services (a dry-run of the engine alone) the helpers answer "nothing".
    assert run_outgoing("replica.labels = [sync_helper.local_key('7')]\n", issue={}, pool=p).replica[
        "labels"
    ] == [None]


def test_a_question_that_fails_in_the_parent_fails_there_and_the_child_is_replaced(pool):
    p = pool()
    pid = _one_child(p)
    with pytest.raises(RuntimeError, match="the database is down"):
        run_outgoing(
            "x = sync_helper.remote_url('A-1')\n", issue={}, context={"services": _Services()}, pool=p
        )
    assert not _alive(pid)
    assert run_outgoing("replica.summary = 'after'\n", issue={}, pool=p).replica["summary"] == "after"


def test_questions_count_against_the_deadline(pool):
    class Slow(_Services):
        def is_under_sync(self, key: str) -> bool:
            time.sleep(0.05)
            return False

    started = time.monotonic()
    with pytest.raises(ScriptError) as info:
        run_outgoing(
            "for i in range(100):\n    sync_helper.is_under_sync('x')\n",
            issue={},
            context={"services": Slow(), "limits": {"timeout_s": 0.3}},
            pool=pool(grace_s=0.2),
        )
    assert info.value.kind == "timeout" and time.monotonic() - started < 1.2


# --- a hostile child --------------------------------------------------------------------------------------

FAKE_CHILD = r"""
import sys, time
out = sys.stdout.buffer
def send(data):
    out.write(len(data).to_bytes(4, "big") + data)
    out.flush()
def result(value):
    send(b'{"op":"result","log":[],"duration_ms":1,"value":' + value + b'}')
send(b'{"op":"ready"}')
size = int.from_bytes(sys.stdin.buffer.read(4), "big")
sys.stdin.buffer.read(size)
%s
time.sleep(30)
"""
HOSTILE_FRAMES = {
    "two-gigabyte-frame": "out.write((2**31).to_bytes(4, 'big')); out.flush()",
    "not-json": "send(b'{op: result}')",
    "not-an-object": "send(b'[1, 2]')",
    "nan": "result(b'{\"summary\": NaN}')",
    "huge-number": "result(b'{\"n\": ' + b'9' * 5000 + b'}')",
    "nested-100000-deep": "send(b'[' * 100000 + b']' * 100000)",
    "nested-over-the-limit": "result(b'{\"a\":' + b'[' * 80 + b']' * 80 + b'}')",
    "value-not-a-dict": "result(b'[1]')",
    "log-not-text": 'send(b\'{"op":"result","log":[1],"duration_ms":1,"value":{}}\')',
    "unknown-op": 'send(b\'{"op":"exec","code":"import os"}\')',
    "unknown-service": 'send(b\'{"op":"call","name":"__init__","arg":"x"}\')',
    "service-arg-not-text": 'send(b\'{"op":"call","name":"remote_url","arg":[1]}\')',
    "error-of-unknown-kind": 'send(b\'{"op":"error","message":"m","line":1,"kind":"exec"}\')',
    "error-line-not-a-line": 'send(b\'{"op":"error","message":"m","line":true,"kind":"runtime"}\')',
    "exits-mid-run": "sys.exit(3)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FRAMES))
def test_a_child_that_breaks_the_protocol_is_killed_and_its_run_fails_cleanly(pool, monkeypatch, name):
    from syncrules import sandbox

    fake = [sys.executable, "-c", FAKE_CHILD % HOSTILE_FRAMES[name]]
    monkeypatch.setattr(sandbox, "_command", lambda config: fake)
    p = pool()
    started = time.monotonic()
    with pytest.raises(ScriptError) as info:
        run_outgoing("replica.summary = 'x'\n", issue={}, context={"services": _Services()}, pool=p)
    assert time.monotonic() - started < 2
    assert info.value.kind == "crash", str(info.value)
    assert "nothing was changed" in str(info.value)
    assert p.pids() == []  # killed and reaped


def test_a_child_that_floods_its_stderr_and_never_answers_is_stopped_at_the_deadline(pool, monkeypatch):
    from syncrules import sandbox

    flood = "sys.stderr.write('x' * 10_000_000); sys.stderr.flush()"
    monkeypatch.setattr(sandbox, "_command", lambda config: [sys.executable, "-c", FAKE_CHILD % flood])
    p = pool(grace_s=0.1)
    with pytest.raises(ScriptError) as info:
        run_outgoing("replica.summary = 'x'\n", issue={}, context={"limits": {"timeout_s": 0.3}}, pool=p)
    assert info.value.kind == "timeout"
    assert p.pids() == []


def test_a_result_with_text_that_is_not_valid_unicode_is_refused_and_the_child_kept(pool):
    p = pool()
    pid = _one_child(p)
    for script, where in [
        ("replica.summary = chr(55296)\n", "replica.summary"),
        ("replica.customFields = {'a' + chr(56320): 1}\n", "replica.customFields.?"),
        ("replica.comments = [{'body': 'ok'}, {'body': ['x', chr(57343)]}]\n", "replica.comments[1].body[1]"),
    ]:
        with pytest.raises(ScriptError) as info:
            run_outgoing(script, issue={}, pool=p)
        assert info.value.kind == "invalid"
        assert f"not valid Unicode at {where} " in str(info.value)
    # An emoji (a valid surrogate pair in JSON) is fine.
    assert run_outgoing("replica.summary = '🔥'\n", issue={}, pool=p).replica["summary"] == "🔥"
    assert p.pids() == [pid]


def test_data_the_node_already_stored_with_a_lone_surrogate_still_reaches_the_script(pool):
    result = run_outgoing(
        "replica.summary = str(len(issue.summary))\n", issue={"summary": "a\ud800b"}, pool=pool()
    )
    assert result.replica["summary"] == "3"
