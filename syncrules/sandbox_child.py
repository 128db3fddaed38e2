"""The sandbox process: runs sync scripts for :mod:`syncrules.sandbox`, one run at a time, run after run.

Started by the parent as ``python -E -s -B -m syncrules.sandbox_child CONFIG`` (a fresh interpreter, never a
fork of a Django process) with a scrubbed environment and only its three pipes. It imports no Django and
reaches no database: what a script asks about the sync (``sync_helper``) is asked of the parent on the
same pipes.

Start-up: enable :mod:`faulthandler` (on fatal signals, and on SIGUSR1, which the parent sends before it
kills a child that missed its deadline: the Python traceback, with the script's line, goes to stderr even
while the child is stuck in C code), import the engine, set the OS limits (address space, open files, file
size 0, no core dumps; the CPU time limit is set before each run), drop root privileges, run a self-test
and say ``ready``.

Frames both ways are a 4-byte big-endian length and that many bytes of JSON (see ``syncrules.sandbox``).
Parent to child: ``run``, ``answer``. Child to parent: ``ready``, ``compiling``/``running`` (only when a
script is compiled: the parent allows compilation its own deadline), ``call``, ``result``, ``error``.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import signal
import sys
from typing import Any

# Before anything else: a crash during start-up is reported too.
faulthandler.enable(file=sys.stderr, all_threads=False)
faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=False, chain=False)

import resource  # noqa: E402

from syncrules import engine  # noqa: E402
from syncrules.engine import ScriptError  # noqa: E402

HEADER = 4
# What the parent may send in one frame (the item, the replica and the context of one run).
MAX_REQUEST_BYTES = 256 * 1024 * 1024
OPEN_FILES = 16
MIN_MEMORY_MB = 64  # an idle sandbox process uses about 20 MB of address space
SELF_TEST = "replica.summary = issue.summary\n"
SERVICES = ("is_under_sync", "local_key_for_remote", "remote_url")


class _Channel:
    """The child's end of the pipes: stdin for the parent's frames, the original stdout for its own."""

    def __init__(self) -> None:
        self.rfile = sys.stdin.buffer
        self.wfile = sys.stdout.buffer
        # Nothing else may write to the protocol's stream: a stray print goes to stderr.
        sys.stdout = sys.stderr

    def send(self, frame: dict[str, Any], payload: bytes | None = None) -> None:
        data = payload if payload is not None else _encode(frame)
        self.wfile.write(len(data).to_bytes(HEADER, "big") + data)
        self.wfile.flush()

    def receive(self) -> dict[str, Any] | None:
        """The next frame, or None when the parent has closed the pipe (it is gone: exit)."""
        header = self.rfile.read(HEADER)
        if len(header) < HEADER:
            return None
        size = int.from_bytes(header, "big")
        if size > MAX_REQUEST_BYTES:
            raise SystemExit(f"sandbox: a request of {size} bytes is larger than {MAX_REQUEST_BYTES}")
        data = self.rfile.read(size)
        if len(data) < size:
            return None
        frame = json.loads(data)
        if not isinstance(frame, dict):
            raise SystemExit("sandbox: a request is not a JSON object")
        return frame


def _encode(frame: dict[str, Any]) -> bytes:
    # ASCII only: text that cannot be encoded as UTF-8 travels as \\ud800 escapes and the parent refuses it.
    return json.dumps(frame, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class _RemoteServices:
    """``context["services"]`` inside the child: each question goes to the parent and waits for its answer."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def _ask(self, name: str, arg: str) -> Any:
        self._channel.send({"op": "call", "name": name, "arg": arg})
        answer = self._channel.receive()
        if answer is None:
            raise SystemExit(0)  # the parent is gone
        if answer.get("error"):
            raise ValueError(str(answer["error"]))
        return answer.get("value")

    def is_under_sync(self, key: str) -> bool:
        return bool(self._ask("is_under_sync", key))

    def local_key_for_remote(self, remote_id: str) -> str | None:
        return self._ask("local_key_for_remote", remote_id)

    def remote_url(self, remote_key: str) -> str | None:
        return self._ask("remote_url", remote_key)


def _bad_number(value: Any, path: str) -> tuple[str, str] | None:
    """Where in ``value`` the first number JSON cannot carry is, and why: an int too long to write as decimal
    text (Python refuses more than 4300 digits) or a float that is not finite."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where, "a number that is not finite (NaN or infinity)"
        if isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 14_000:
            try:
                str(item)
            except ValueError:
                return where, f"a number with more than {sys.get_int_max_str_digits()} digits"
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


class Sandbox:
    def __init__(self, config: dict[str, Any]) -> None:
        self.channel = _Channel()
        self.memory_mb = int(config["memory_mb"])
        self.grace_s = float(config["grace_s"])
        self.compiled: set[tuple[str, str]] = set()

    # --- start-up -------------------------------------------------------------------------------------------

    def limit(self, user: str) -> None:
        if self.memory_mb < MIN_MEMORY_MB:
            raise SystemExit(
                f"sandbox: SCRIPT_SANDBOX_MEMORY_MB is {self.memory_mb}, below the {MIN_MEMORY_MB} MB "
                "a sandbox process needs"
            )
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        memory = self.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if os.geteuid() == 0 and user:
            self._drop_privileges(user)
        # No new processes (ignored for root, which keeps the capability to exceed it).
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        os.chdir("/")

    @staticmethod
    def _drop_privileges(user: str) -> None:
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise SystemExit(
                f"sandbox: the node runs as root and the user {user!r} (SCRIPT_SANDBOX_USER) does not exist"
            ) from None
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SystemExit("sandbox: could not drop root privileges")

    def self_test(self) -> None:
        result = engine.run_outgoing(SELF_TEST, issue={"summary": "ok"}, context=None)
        if (result.replica or {}).get("summary") != "ok":
            raise SystemExit("sandbox: the self-test failed")

    # --- runs -----------------------------------------------------------------------------------------------

    def _cpu_limit(self, timeout_s: float) -> None:
        """A CPU limit per run, above the parent's wall deadline: a backstop if the parent cannot kill the
        child, and never hit by a long-lived child's accumulated CPU time."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + timeout_s + self.grace_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))

    def run(self, request: dict[str, Any]) -> bool:
        """Run one script and send its result or error. False when this child must not be used again."""
        direction, source = request["direction"], request["source"]
        try:
            key = (direction, source)
            if key not in self.compiled:
                self.channel.send({"op": "compiling"})
                engine.compile_script(source, direction=direction)
                if len(self.compiled) >= engine.CACHE_SIZE:
                    self.compiled.clear()
                self.compiled.add(key)
                self.channel.send({"op": "running"})
            context = request.get("context") or {}
            if request.get("services"):
                context["services"] = _RemoteServices(self.channel)
            self._cpu_limit(engine.script_limits(context)[0])
            if direction == "outgoing":
                result = engine.run_outgoing(source, issue=request["issue"], context=context)
                value = result.replica
            else:
                result = engine.run_incoming(
                    source,
                    replica=request["replica"],
                    issue=request["issue"],
                    previous=request.get("previous"),
                    first_sync=bool(request.get("first_sync")),
                    context=context,
                )
                value = result.issue
        except ScriptError as exc:
            if exc.kind == "memory":
                exc.message = self._memory_message(exc)
            self._error(exc.message, exc.line, direction, exc.kind)
            return exc.kind != "memory"
        except MemoryError:  # outside the script (e.g. reading its data)
            self._error(self._memory_message(None), None, direction, "memory")
            return False
        frame = {
            "op": "result",
            "value": value,
            "log": result.log,
            "unexalate": result.unexalate,
            "sync_back": result.sync_back,
            "duration_ms": result.duration_ms,
        }
        try:
            payload = _encode(frame)
        except ValueError as exc:  # a number JSON cannot carry
            found = _bad_number(value, "replica" if direction == "outgoing" else "issue")
            where, what = found or ("the log", str(exc))
            message = f"the result holds {what} at {where}; it cannot be stored or sent, store it as text"
            self._error(message, None, direction, "invalid")
            return True
        except MemoryError:
            self._error(self._memory_message(None), None, direction, "memory")
            return False
        self.channel.send(frame, payload)
        return True

    def _memory_message(self, exc: ScriptError | None) -> str:
        return (
            f"the script needed more than the {self.memory_mb} MB of memory a script run may use; "
            "check for large values built in a loop"
        )

    def _error(self, message: str, line: int | None, direction: str, kind: str) -> None:
        self.channel.send(
            {"op": "error", "message": message, "line": line, "direction": direction, "kind": kind}
        )

    def serve(self) -> None:
        self.channel.send({"op": "ready", "pid": os.getpid()})
        while True:
            request = self.channel.receive()
            if request is None:
                return
            if request.get("op") != "run":
                raise SystemExit(f"sandbox: unexpected request {request.get('op')!r}")
            if not self.run(request):
                return  # replaced by the parent (after a MemoryError the heap is not to be trusted)


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when a child ends (it closes
    # the pipe, or kills it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(sys.argv[1])
    sandbox = Sandbox(config)
    sandbox.limit(str(config.get("user") or ""))
    sandbox.self_test()
    sandbox.serve()


if __name__ == "__main__":
    main()
