"""Fault injectors for the end-to-end fault-injection suite.

* :class:`FaultProxy` — a threaded HTTP proxy on loopback put in front of a node's web process. The node
  advertises the proxy as its ``NODE_URL``, so everything the *other* node sends it (message batches,
  acks, attachment downloads, status) crosses the proxy, which answers a share of the requests itself with
  429 + ``Retry-After``, 500, a slow answer, a connection dropped before forwarding, or a connection
  dropped *after* forwarding (the peer applied the batch, the sender never hears it: the at-least-once case).
* :class:`MediaOutage` — makes a node's ``MEDIA_ROOT`` unusable for a while: the directory is moved aside
  and a plain file takes its place, so every attachment write (and read) fails with an ``OSError`` as on a
  full or failed disk. (The suite runs as root in CI, so ``chmod`` cannot make a directory unwritable, and
  mounting a tiny file system needs privileges the runners do not have.)
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "host",
    "server",
    "date",
}


class FaultProxy:
    """An HTTP proxy with a fault switch. ``rate`` is the share of requests that get a fault."""

    KINDS = ("http_429", "http_500", "slow", "drop_before", "drop_after")

    def __init__(self, name: str, rng: random.Random, *, fault_prefix: str = "/node/") -> None:
        self.name = name
        self.fault_prefix = fault_prefix  # only requests under this path get faults
        self.rng = rng
        self.lock = threading.Lock()
        self.upstream = ""
        self.rate = 0.0
        self.kinds: tuple[str, ...] = self.KINDS  # the faults drawn from while ``rate`` > 0
        self.counts: Counter[str] = Counter()
        self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                try:
                    proxy.handle(self)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

        self.handler = Handler
        self._serve(0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _serve(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self.handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"proxy-{self.name}", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def go_down(self) -> None:
        """Stop listening: every connection is refused, as when the service behind is stopped."""
        self.close()

    def come_back(self) -> None:
        """Listen again on the same address."""
        self._serve(int(self.url.rsplit(":", 1)[1]))

    def _pick(self) -> str | None:
        with self.lock:
            if self.rate and self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
                self.counts[kind] += 1
                return kind
            return None

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: dict[str, str], **headers: str) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        kind = self._pick() if h.path.startswith(self.fault_prefix) else None
        if kind == "http_429":
            throttled = {"detail": "Too many requests (injected)", "code": "throttled"}
            return self._reply(h, 429, throttled, Retry_After="1")
        if kind == "http_500":
            return self._reply(h, 500, {"detail": "Internal error (injected)", "code": "server_error"})
        if kind == "drop_before":
            return self._drop(h)
        if kind == "slow":
            time.sleep(1.5)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"
        try:
            resp = requests.request(
                h.command,
                self.upstream + h.path,
                data=body or None,
                headers=headers,
                timeout=(5, 60),
                allow_redirects=False,
            )
        except requests.RequestException as exc:  # the node's web process is down
            with self.lock:
                self.counts["upstream_down"] += 1
            bad = {"detail": f"Bad gateway: {type(exc).__name__}", "code": "bad_gateway"}
            return self._reply(h, 502, bad)
        with self.lock:
            self.forwarded += 1
        if kind == "drop_after":
            return self._drop(h)  # the node did the work; its answer is lost on the way back
        h.send_response(resp.status_code)
        for name, value in resp.headers.items():
            if name.lower() not in HOP_BY_HOP:
                h.send_header(name, value)
        h.send_header("Content-Length", str(len(resp.content)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(resp.content)


class MediaOutage:
    """Replace a node's MEDIA_ROOT with a plain file (every attachment read/write fails) and put it back."""

    def __init__(self, media_root: Path) -> None:
        self.media = media_root
        self.aside = media_root.with_name(media_root.name + ".outage")
        self.active = False

    def start(self) -> None:
        if self.active:
            return
        if self.media.is_dir():
            self.media.rename(self.aside)
        else:
            self.aside.mkdir(parents=True, exist_ok=True)
        self.media.write_bytes(b"disk unavailable (fault injection)\n")
        self.active = True

    def stop(self) -> None:
        if not self.active:
            return
        self.media.unlink(missing_ok=True)
        self.aside.rename(self.media)
        self.active = False
