"""Hostile HTTP servers for tests: real sockets on a loopback address, one thread per connection.

A ``HostileServer`` reads each request's head and body, then lets a *behaviour* answer: a huge body sent as
fast as the client takes it, an answer trickled a byte at a time (head or body), or a fixed answer (deep
JSON, a redirect, ...). It counts what it managed to send (``sent``), so a test can tell whether the
client stopped reading at its cap, and the requests it saw (``requests``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, name: str) -> str:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return ""


Behaviour = Callable[["HostileServer", socket.socket, Request], None]


@dataclass
class HostileServer:
    behaviour: Behaviour
    host: str = "127.0.0.1"
    sent: int = 0
    requests: list[Request] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # --- serving ------------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        # A small send buffer: what the server "managed to send" is close to what the client read.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        conn.settimeout(10)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            request = Request(head, body)
            length = int(request.header("Content-Length") or 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            request.body = body
            with self._lock:
                self.requests.append(request)
            self.behaviour(self, conn, request)
        except OSError:
            pass  # the client hung up: what a capped or timed-out client does
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def close(self) -> None:
        self.stopped.set()
        self._listener.close()
        self._thread.join(timeout=2)


# --- behaviours ---------------------------------------------------------------------------------------------


def head(status: int = 200, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """A complete answer (with Content-Length)."""

    def run(server: HostileServer, conn: socket.socket, request: Request) -> None:
        all_headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            **(headers or {}),
        }
        server.send(conn, head(status, all_headers) + body)

    return run


def huge(total: int, *, announce: bool = True, status: int = 200) -> Behaviour:
    """``total`` bytes of a JSON-looking body, as fast as the client takes them; with ``announce``, an honest
    Content-Length, else none (the body ends when the connection closes)."""

    def run(server: HostileServer, conn: socket.socket, request: Request) -> None:
        headers = {"Content-Type": "application/json"}
        headers.update({"Content-Length": str(total)} if announce else {"Connection": "close"})
        server.send(conn, head(status, headers))
        block = b"[" + b" " * (64 * 1024 - 1)
        left = total
        while left > 0 and not server.stopped.is_set():
            piece = block[: min(left, len(block))]
            server.send(conn, piece)
            left -= len(piece)

    return run


def trickle(
    interval: float, *, body: bool = True, length: int = 10_000, status: int = 200, extra: dict | None = None
) -> Behaviour:
    """One byte every ``interval`` seconds: of the body after a prompt head (``body``), or of the head
    itself. Stops when the client hangs up or the server closes."""

    def run(server: HostileServer, conn: socket.socket, request: Request) -> None:
        data = head(
            status, {"Content-Type": "application/json", "Content-Length": str(length), **(extra or {})}
        )
        if body:
            server.send(conn, data)
            data = b"[" * length
        for i in range(len(data)):
            if server.stopped.wait(interval if i else 0):
                return
            server.send(conn, data[i : i + 1])

    return run


def deep_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds taken, result or the exception raised)."""
    started = time.monotonic()
    try:
        result: object = fn()
    except Exception as exc:  # noqa: BLE001 - the caller inspects it
        result = exc
    return time.monotonic() - started, result
