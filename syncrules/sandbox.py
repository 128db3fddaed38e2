"""Run sync scripts in sandbox processes: a small warm pool of OS-limited child processes.

RestrictedPython and the engine's guards (:mod:`syncrules.engine`) are the language guard; they cannot make
C-level operations safe (hashing a tuple nested 200,000 deep overflows the C stack, ``sorted`` of a million
items cannot be interrupted). So every script run of the node (the pipeline's and dry-run) happens in a child
process (:mod:`syncrules.sandbox_child`) that the parent can kill:

* **Processes.** At most ``SCRIPT_SANDBOX_PROCESSES`` children per process of the node, started on first
  use and reused run after run (a run costs a round trip on a pipe, not a process start). Each is a fresh
  interpreter (``sys.executable -m syncrules.sandbox_child``), never a fork of a Django process: it imports
  no Django, inherits only its three pipes (``close_fds``) and a scrubbed environment (no ``SECRET_KEY``,
  ``SECRETS_KEYS``, ``DATABASE_URL``...), and runs as ``SCRIPT_SANDBOX_USER`` (``nobody``) when the node runs
  as root.
* **OS limits** in each child: address space ``SCRIPT_SANDBOX_MEMORY_MB``, a CPU time limit per run above
  the wall deadline, 16 open files, file size 0, no core dumps.
* **Deadline.** The parent waits at most the script's ``timeout_s`` plus ``SCRIPT_SANDBOX_GRACE_SECONDS``
  (compiling a script not compiled before by that child gets its own ``COMPILE_SECONDS``), then asks the
  child for its Python traceback (SIGUSR1, :mod:`faulthandler`) and kills it (SIGKILL). A child that
  crashes, runs out of memory or misses its deadline is replaced; the run becomes a :class:`ScriptError` of
  kind ``crash``, ``memory`` or ``timeout`` with the script's line where the traceback shows it.
* **Services.** ``context["services"]`` (``sync_helper``'s questions, which read the database) stays in the
  parent: the child asks on the same pipe during the run (whitelisted names, a str argument, still under
  the deadline).
* **Hostile child.** What a child sends is checked like input from the network: frames are length-prefixed
  JSON (never pickle), at most ``MAX_FRAME_BYTES``, parsed without NaN and with a nesting limit, and their
  shapes validated. A result holding text that cannot be encoded as UTF-8 (a lone surrogate) is refused
  as a script error; log lines are scrubbed instead.
* **Threads and forks.** A child serves one run at a time; the pool is per process (keyed by
  ``os.getpid()``): django-q2 forks its workers, and a forked process closes the pipes it inherited and
  starts its own pool.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exalate_node.text import is_encodable, scrub, unencodable_path
from syncrules.engine import MAX_NESTING, RunResult, ScriptError, script_limits

__all__ = ["SandboxConfig", "SandboxPool", "get_pool", "run_incoming", "run_outgoing"]

ROOT = Path(__file__).resolve().parent.parent
HEADER = 4
MAX_FRAME_BYTES = 32 * 1024 * 1024  # a result is at most 1,000,000 characters/elements (engine's max_size)
MAX_FRAME_DEPTH = MAX_NESTING + 4  # the result's nesting limit plus the frame around it
MAX_SERVICE_ARG = 1000
MAX_STDERR = 64 * 1024
COMPILE_SECONDS = 10.0
TRACEBACK_SECONDS = 0.2  # the most a child past its deadline is given to write its traceback
START_SECONDS = 20.0
MAX_RUNS_PER_CHILD = 10_000  # then replaced: a bound on whatever a long-lived interpreter accumulates
SERVICES = {"is_under_sync": bool, "local_key_for_remote": str, "remote_url": str}
KINDS = frozenset({"compile", "runtime", "timeout", "limit", "forbidden", "memory", "crash", "invalid"})
# Only what Python needs: nothing of the node's environment (secrets, database URLs) reaches a child.
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SCRIPT_FRAME = re.compile(r'File "<rules:(?:outgoing|incoming)>", line (\d+)')
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


@dataclass(frozen=True)
class SandboxConfig:
    processes: int = 2
    memory_mb: int = 512
    grace_s: float = 0.5
    user: str = "nobody"

    @classmethod
    def from_settings(cls) -> SandboxConfig:
        """The ``SCRIPT_SANDBOX_*`` settings; the defaults when Django is not configured (the bench)."""
        try:
            from django.conf import settings

            return cls(
                processes=max(1, int(settings.SCRIPT_SANDBOX_PROCESSES)),
                memory_mb=int(settings.SCRIPT_SANDBOX_MEMORY_MB),
                grace_s=float(settings.SCRIPT_SANDBOX_GRACE_SECONDS),
                user=str(settings.SCRIPT_SANDBOX_USER),
            )
        except Exception:  # not configured (ImproperlyConfigured), or an older settings module
            return cls()


class SandboxUnavailable(ScriptError):
    """The node could not start a sandbox process: a problem of the node, not of the script."""

    def __init__(self, message: str, *, direction: str) -> None:
        super().__init__(message, line=None, direction=direction, kind="unavailable")

    def __str__(self) -> str:
        return (
            f"The {self.direction} script could not run: {self.message.rstrip('.')}. "
            "Fix the node's configuration, then retry."
        )


class _Protocol(Exception):
    """A child broke the protocol (a frame too large, not JSON, the wrong shape): it is killed."""


# ----------------------------------------------------------------------------------------------------------
# one child


def _command(config: SandboxConfig) -> list[str]:
    """A fresh interpreter: -E ignores PYTHON* variables, -s the user's site-packages, -B writes no .pyc."""
    arg = json.dumps({"memory_mb": config.memory_mb, "grace_s": config.grace_s, "user": config.user})
    return [sys.executable, "-E", "-s", "-B", "-m", "syncrules.sandbox_child", arg]


class _Child:
    """One sandbox process and the parent's end of its pipes. Used by one thread at a time."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.runs = 0
        self.closed = False
        self.may_hold_surrogates = True  # of the last frame received
        self._buf = bytearray()
        self._stderr = bytearray()
        self.proc = subprocess.Popen(
            _command(config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            env=dict(CHILD_ENV),
            cwd=ROOT,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.pid = self.proc.pid
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._err = self.proc.stderr.fileno()
        # poll(2), not epoll: no extra descriptor to share with a forked process
        self._selector = selectors.PollSelector()
        self._selector.register(self._out, selectors.EVENT_READ)
        self._selector.register(self._err, selectors.EVENT_READ)

    def start(self, direction: str) -> None:
        """Wait for the child's ``ready``; a child that cannot start raises SandboxUnavailable."""
        try:
            frame = self.receive(time.monotonic() + START_SECONDS)
        except (TimeoutError, EOFError, _Protocol) as exc:
            self.kill(dump=False)
            why = self.stderr_tail().strip().splitlines()
            detail = why[-1] if why else f"{type(exc).__name__}, exit status {self.proc.returncode}"
            raise SandboxUnavailable(
                f"its sandbox process did not start ({detail[:300]}); check SCRIPT_SANDBOX_MEMORY_MB "
                "and SCRIPT_SANDBOX_USER",
                direction=direction,
            ) from None
        if frame.get("op") != "ready":
            self.kill(dump=False)
            raise SandboxUnavailable(
                "its sandbox process did not start (no ready signal)", direction=direction
            )

    # --- frames ---------------------------------------------------------------------------------------------

    def send(self, frame: dict[str, Any] | bytes) -> None:
        data = frame if isinstance(frame, bytes) else _encode(frame)
        view = memoryview(len(data).to_bytes(HEADER, "big") + data)
        while view:
            written = os.write(self._in, view)
            view = view[written:]

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next frame. TimeoutError at the deadline; EOFError when the child has gone."""
        while True:
            if len(self._buf) >= HEADER:
                size = int.from_bytes(self._buf[:HEADER], "big")
                if size > MAX_FRAME_BYTES:
                    raise _Protocol(f"a frame of {size:,} bytes")
                if len(self._buf) >= HEADER + size:
                    data = bytes(self._buf[HEADER : HEADER + size])
                    del self._buf[: HEADER + size]
                    self.may_hold_surrogates = _may_hold_surrogates(data)
                    return _decode(data)
                want = HEADER + size - len(self._buf)
            else:
                want = HEADER - len(self._buf)
            self._wait_readable(deadline, want)

    def _wait_readable(self, deadline: float, want: int) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        for key, _ in self._selector.select(remaining):
            if key.fd == self._err:
                self._read_stderr()
                continue
            chunk = os.read(self._out, min(max(want, 65536), 1 << 20))
            if not chunk:
                raise EOFError
            self._buf += chunk

    def _read_stderr(self) -> bool:
        chunk = os.read(self._err, 65536)
        if not chunk:
            self._selector.unregister(self._err)
            return False
        self._stderr += chunk
        if len(self._stderr) > MAX_STDERR:
            del self._stderr[: len(self._stderr) - MAX_STDERR]
        return True

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    # --- the end --------------------------------------------------------------------------------------------

    def kill(self, *, dump: bool) -> None:
        """Kill the child (after asking for its traceback when ``dump``), reap it, keep its last stderr."""
        if self.proc.returncode is None and self.proc.poll() is None:
            if dump:
                try:
                    os.kill(self.pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
                self._drain_stderr(time.monotonic() + TRACEBACK_SECONDS, quiet=0.02)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.reap()

    def reap(self) -> None:
        if self.closed:
            return
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            pass
        self._drain_stderr(time.monotonic() + 0.2, quiet=0.0)
        self.close()

    def _drain_stderr(self, until: float, quiet: float) -> None:
        """Read stderr until EOF, ``until``, or (when some arrived) ``quiet`` seconds without more."""
        got = False
        while self._err in self._selector.get_map():
            wait = until - time.monotonic()
            if got and quiet:
                wait = min(wait, quiet)
            if wait <= 0:
                return
            ready = [k for k, _ in self._selector.select(wait) if k.fd == self._err]
            if not ready:
                if got:
                    return
                continue
            if not self._read_stderr():
                return
            got = True

    def close(self) -> None:
        """Close the parent's ends of the pipes (in a forked process: only its inherited copies)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._selector.close()
        except Exception:  # noqa: S110 - closing is best effort
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass


def _encode(frame: dict[str, Any]) -> bytes:
    # ASCII: a lone surrogate the node stored before the doors refused such text travels as a \ud800 escape.
    return json.dumps(frame, separators=(",", ":")).encode("ascii")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON can carry")


def _decode(data: bytes) -> dict[str, Any]:
    try:
        frame = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # not JSON, NaN, a 5000-digit number, nested too deep
        raise _Protocol(f"a frame that is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        raise _Protocol("a frame that is not an object with an 'op'")
    # Fewer brackets than the limit cannot nest deeper than it (the common case: no walk).
    if data.count(b"[") + data.count(b"{") > MAX_FRAME_DEPTH and _too_deep(frame, MAX_FRAME_DEPTH):
        raise _Protocol(f"a frame nested deeper than {MAX_FRAME_DEPTH} levels")
    return frame


def _may_hold_surrogates(data: bytes) -> bool:
    """False when decoded ``data`` certainly holds no lone surrogate: a child writes ASCII JSON, where one can
    only come from a \\udXXX escape (raw bytes that are not ASCII: the full check runs)."""
    return not data.isascii() or _ESCAPED_SURROGATE.search(data) is not None


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


# ----------------------------------------------------------------------------------------------------------
# the pool


class SandboxPool:
    """At most ``config.processes`` children of this process, started on first use, reused run after run."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.processes)
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._closed = False

    def pids(self) -> list[int]:
        """The pids of the live children (for tests and diagnostics)."""
        with self._lock:
            return sorted(c.pid for c in self._all if c.proc.returncode is None)

    def run(self, request: dict[str, Any], services: Any, timeout_s: float) -> dict[str, Any]:
        """Run one request in a child; the child's checked ``result`` frame, or ScriptError."""
        direction = request["direction"]
        data = _encode(request)
        with self._slots:
            child = self._take(direction)
            healthy = False
            try:
                try:
                    child.send(data)
                except (BrokenPipeError, ConnectionResetError):
                    # It died while idle (killed from outside): a fresh one runs the request.
                    child.kill(dump=False)
                    self._forget(child)
                    child = self._take(direction)
                    child.send(data)
                frame = self._converse(child, services, timeout_s, direction)
                healthy = frame["op"] == "result" or frame["kind"] not in ("memory", "crash")
                if frame["op"] == "error":
                    raise ScriptError(
                        frame["message"], line=frame["line"], direction=direction, kind=frame["kind"]
                    )
                return frame
            finally:
                self._give_back(child, healthy)

    # --- children in and out --------------------------------------------------------------------------------

    def _take(self, direction: str) -> _Child:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            child = _Child(self.config)
        except OSError as exc:  # no process could be started (process or memory limits of the host)
            raise SandboxUnavailable(f"no sandbox process could be started ({exc})", direction=direction)
        with self._lock:
            self._all.add(child)
        try:
            child.start(direction)
        except BaseException:
            self._forget(child)
            raise
        return child

    def _give_back(self, child: _Child, healthy: bool) -> None:
        child.runs += 1
        if healthy and child.proc.returncode is None and child.runs < MAX_RUNS_PER_CHILD:
            with self._lock:
                if not self._closed:
                    self._idle.append(child)
                    return
        child.kill(dump=False)
        self._forget(child)

    def _forget(self, child: _Child) -> None:
        with self._lock:
            self._all.discard(child)
            if child in self._idle:
                self._idle.remove(child)

    def close(self) -> None:
        """End the idle children (a closed pipe makes a child exit); busy ones end when their run does."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()
            child.reap()
            self._forget(child)

    def abandon(self) -> None:
        """In a forked process: close the inherited pipe ends; the children belong to the parent process."""
        for child in list(self._all):
            child.close()
        self._idle, self._all, self._closed = [], set(), True

    # --- one run --------------------------------------------------------------------------------------------

    def _converse(self, child: _Child, services: Any, timeout_s: float, direction: str) -> dict[str, Any]:
        """Answer the child's calls until its result or error; kill it at the deadline or when it breaks the
        protocol or dies."""
        run_seconds = timeout_s + self.config.grace_s
        deadline = time.monotonic() + run_seconds
        try:
            while True:
                frame = child.receive(deadline)
                op = frame["op"]
                if op == "call":
                    child.send(self._answer(frame, services))
                elif op == "compiling":
                    deadline = time.monotonic() + COMPILE_SECONDS
                elif op == "running":
                    deadline = time.monotonic() + run_seconds
                elif op == "result":
                    return self._checked_result(frame, direction, child.may_hold_surrogates)
                elif op == "error":
                    return self._checked_error(frame, direction)
                else:
                    raise _Protocol(f"an unknown frame {op[:40]!r}")
        except TimeoutError:
            child.kill(dump=True)
            raise ScriptError(
                f"the script took longer than {timeout_s:g} s and was stopped; check for an endless loop or "
                "for slow work on large data (sorted, set, tuple of many items)",
                line=_script_line(child.stderr_tail()),
                direction=direction,
                kind="timeout",
            ) from None
        except EOFError:
            child.reap()
            raise self._died(child, direction) from None
        except _Protocol as exc:
            child.kill(dump=False)
            raise ScriptError(
                f"the sandbox process sent an answer the node refuses ({exc}); nothing was changed",
                line=None,
                direction=direction,
                kind="crash",
            ) from None
        except BaseException:  # a service raised (the database is down...): the child waits for an answer
            child.kill(dump=False)
            raise

    def _answer(self, frame: dict[str, Any], services: Any) -> dict[str, Any]:
        name, arg = frame.get("name"), frame.get("arg")
        if name not in SERVICES or not isinstance(arg, str):
            raise _Protocol("a call of an unknown service")
        if len(arg) > MAX_SERVICE_ARG:
            return {"op": "answer", "error": f"the key is longer than {MAX_SERVICE_ARG:,} characters"}
        if not is_encodable(arg):
            return {
                "op": "answer",
                "error": "the key holds text that is not valid Unicode (a lone surrogate)",
            }
        fn = getattr(services, name, None) if services is not None else None
        if fn is None and isinstance(services, dict):
            fn = services.get(name)
        if not callable(fn):
            return {"op": "answer", "value": None}
        value = fn(arg)
        if SERVICES[name] is bool:
            value = bool(value)
        elif value is not None:
            value = str(value)
        return {"op": "answer", "value": value}

    def _checked_result(self, frame: dict[str, Any], direction: str, surrogates: bool) -> dict[str, Any]:
        value, log = frame.get("value"), frame.get("log")
        if (
            not isinstance(value, dict)
            or not isinstance(log, list)
            or not all(isinstance(x, str) for x in log)
        ):
            raise _Protocol("a result of the wrong shape")
        if not isinstance(frame.get("duration_ms"), int | float):
            raise _Protocol("a result without its duration")
        root = "replica" if direction == "outgoing" else "issue"
        path = unencodable_path(value, root) if surrogates else None
        if path:
            message = (
                f"the result holds text that is not valid Unicode at {path} (a lone surrogate such as "
                "chr(55296)); such text cannot be stored or sent, nothing was changed"
            )
            return {"op": "error", "message": message, "line": None, "kind": "invalid"}
        return {
            "op": "result",
            "value": value,
            "log": [scrub(line) for line in log] if surrogates else log,
            "unexalate": frame.get("unexalate") is True,
            "sync_back": frame.get("sync_back") is True,
            "duration_ms": float(frame["duration_ms"]),
        }

    @staticmethod
    def _checked_error(frame: dict[str, Any], direction: str) -> dict[str, Any]:
        message, line, kind = frame.get("message"), frame.get("line"), frame.get("kind")
        if not isinstance(message, str) or kind not in KINDS:
            raise _Protocol("an error of the wrong shape")
        if not (line is None or (isinstance(line, int) and not isinstance(line, bool) and 0 < line < 10**7)):
            raise _Protocol("an error with a wrong line")
        return {"op": "error", "message": scrub(message)[:2000], "line": line, "kind": kind}

    def _died(self, child: _Child, direction: str) -> ScriptError:
        code = child.proc.returncode
        stderr = child.stderr_tail()
        line = _script_line(stderr)
        mb = self.config.memory_mb
        if "MemoryError" in stderr or "out of memory" in stderr.lower():
            return ScriptError(
                f"the script needed more than the {mb} MB of memory a script run may use; "
                "check for large values built in a loop",
                line=line,
                direction=direction,
                kind="memory",
            )
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if -code == signal.SIGXCPU:
                return ScriptError(
                    "the script used up its CPU time and was stopped; check for an endless loop",
                    line=line,
                    direction=direction,
                    kind="timeout",
                )
            hint = (
                "; this happens with values nested thousands of levels deep, such as t = (t,) in a loop"
                if -code in _CRASH_SIGNALS
                else " (the operating system killed it, often for lack of memory)"
            )
            return ScriptError(
                f"the script crashed the process that runs it ({name}){hint}; nothing was changed",
                line=line,
                direction=direction,
                kind="crash",
            )
        return ScriptError(
            f"the process that runs the script ended unexpectedly (exit status {code}); nothing was changed",
            line=line,
            direction=direction,
            kind="crash",
        )


def _script_line(stderr: str) -> int | None:
    """The script's innermost line in a faulthandler traceback (most recent call first)."""
    match = _SCRIPT_FRAME.search(stderr)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------------------------
# the process's pool

_POOL: SandboxPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(config: SandboxConfig | None = None) -> SandboxPool:
    """This process's pool (a new one after a fork, or when the settings changed)."""
    global _POOL
    config = config or SandboxConfig.from_settings()
    pool = _POOL
    if pool is not None and pool.pid == os.getpid() and pool.config == config:
        return pool
    with _POOL_LOCK:
        pool = _POOL
        if pool is None or pool.pid != os.getpid() or pool.config != config:
            old, _POOL = pool, SandboxPool(config)
            if old is not None and old.pid == os.getpid():
                old.close()
        return _POOL


def _after_fork_in_child() -> None:
    global _POOL, _POOL_LOCK
    _POOL_LOCK = threading.Lock()  # another thread may have held it at the fork
    if _POOL is not None:
        _POOL.abandon()
        _POOL = None


def _at_exit() -> None:
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


# ----------------------------------------------------------------------------------------------------------
# the engine's API, sandboxed


def _split_context(context: dict | None) -> tuple[dict, Any]:
    ctx = dict(context or {})
    services = ctx.pop("services", None)
    return ctx, services


def _run(request: dict[str, Any], context: dict | None, pool: SandboxPool | None) -> dict[str, Any]:
    ctx, services = _split_context(context)
    request["context"] = ctx
    request["services"] = services is not None
    timeout_s = script_limits(ctx)[0]
    return (pool or get_pool()).run(request, services, timeout_s)


def run_outgoing(
    source: str, *, issue: dict, context: dict | None = None, pool: SandboxPool | None = None
) -> RunResult:
    """:func:`syncrules.engine.run_outgoing` in a sandbox process."""
    request = {"op": "run", "direction": "outgoing", "source": source, "issue": issue or {}}
    frame = _run(request, context, pool)
    return RunResult(
        frame["value"], None, frame["log"], frame["unexalate"], frame["sync_back"], frame["duration_ms"]
    )


def run_incoming(
    source: str,
    *,
    replica: dict,
    issue: dict,
    previous: dict | None,
    first_sync: bool,
    context: dict | None = None,
    pool: SandboxPool | None = None,
) -> RunResult:
    """:func:`syncrules.engine.run_incoming` in a sandbox process."""
    request = {
        "op": "run",
        "direction": "incoming",
        "source": source,
        "replica": replica or {},
        "issue": issue or {},
        "previous": previous or {},
        "first_sync": bool(first_sync),
    }
    frame = _run(request, context, pool)
    return RunResult(
        None, frame["value"], frame["log"], frame["unexalate"], frame["sync_back"], frame["duration_ms"]
    )
