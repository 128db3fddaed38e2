"""In-memory fake servers reachable through ``requests``: a transport adapter mounted on a session.

A ``FakeServer`` routes (method, path regex) to handlers that get a ``Call`` and return a ``Reply``. The
server is handed to connectors through ``instances.connectors._common.use_transport(server.session_factory)``:
every HttpClient a connector builds then talks to the fake, never to the network. Each server keeps a log
of calls, can be told to fail the next calls (``fail_next``: 429 with Retry-After, 5xx, ...), and keeps a
fake clock (``now``) that tests move forward.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


@dataclass
class Call:
    method: str
    url: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; bytes/str as is; None → empty
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """Raised by a handler to answer with an error status."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.reply = Reply(status, body, headers or {})


Handler = Callable[..., Reply | Any]


class FakeClock:
    """A wall clock for the fake and the client: ``time()``, ``monotonic()``, ``sleep()`` (moves it)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = (start or datetime(2026, 3, 1, 9, 0, tzinfo=UTC)).timestamp()
        self.slept: list[float] = []

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def catch_up(self, later: float = 60.0) -> None:
        """Jump to the real time plus ``later`` seconds: a person acting in the tracker after the node's
        writes (whose built-in side uses the real clock), so "later edit wins" comparisons are meaningful."""
        self.t = max(self.t, time.time()) + later

    def now(self) -> datetime:
        return datetime.fromtimestamp(round(self.t, 3), UTC)  # whole milliseconds: no float drift

    def iso(self, offset: timedelta = timedelta()) -> str:
        return (self.now() + offset).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeServer:
    """Routes and state of one fake tracker; subclasses add routes in ``__init__``."""

    host = "https://fake.example"

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.calls: list[Call] = []
        self.failures: list[Reply] = []
        self.statuses: list[int] = []  # the status of every reply, in order
        self.lose: list[tuple[str, re.Pattern[str]]] = []  # answers to lose (see lose_next_answer)

    # --- configuration ---------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method.upper(), re.compile(pattern + r"$"), handler))

    def lose_next_answer(self, method: str, path_regex: str = "") -> None:
        """Carry out the next ``method`` request whose path matches, then drop the connection instead of
        answering (requests raises ConnectionError): the tracker did the work and the client never heard."""
        self.lose.append((method.upper(), re.compile(path_regex)))

    def fail_next(
        self, status: int, *, times: int = 1, headers: dict[str, str] | None = None, body: Any = None
    ):
        for _ in range(times):
            self.failures.append(
                Reply(status, body if body is not None else {"error": "injected"}, headers or {})
            )

    def session_factory(self, tracker_type: str = "") -> requests.Session:
        session = requests.Session()
        adapter = FakeAdapter(self)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    # --- hooks for subclasses ---------------------------------------------------------------------------
    def authorize(self, call: Call) -> None:
        """Raise HttpError(401) when the call's credentials are wrong."""

    def check_request(self, call: Call) -> None:
        """Raise when the request breaks the API's contract (e.g. a spec validator)."""

    def check_response(self, call: Call, reply: Reply) -> None:
        """Raise when the fake's own reply breaks the API's contract."""

    # --- dispatch --------------------------------------------------------------------------------------
    def handle(self, call: Call) -> Reply:
        reply = self._handle(call)
        self.statuses.append(reply.status)
        return reply

    def _handle(self, call: Call) -> Reply:
        self.calls.append(call)
        if self.failures:
            return self.failures.pop(0)
        try:
            self.authorize(call)
            self.check_request(call)
            matched_path = False
            for method, pattern, handler in self.routes:
                match = pattern.match(call.path)
                if not match:
                    continue
                matched_path = True
                if method != call.method:
                    continue
                result = handler(call, **match.groupdict())
                reply = result if isinstance(result, Reply) else Reply(200, result)
                self.check_response(call, reply)
                return reply
            if matched_path:
                return Reply(405, {"message": f"{call.method} is not allowed on {call.path}"})
            return Reply(404, {"message": f"No route {call.method} {call.path}"})
        except HttpError as exc:
            return exc.reply

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method not in ("GET", "HEAD")]


class FakeAdapter(BaseAdapter):
    """A requests transport adapter that answers from a FakeServer (no sockets)."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__()
        self.server = server

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = request.body
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        elif hasattr(body, "read"):
            raw = body.read()  # a streamed upload: the connector handed over a file object
        else:
            raw = b"".join(body)
        parts = urlsplit(request.url or "")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        call = Call(
            request.method or "GET",
            request.url or "",
            parts.path,
            query,
            CaseInsensitiveDict(request.headers),
            raw,
        )
        reply = self.server.handle(call)
        for i, (method, regex) in enumerate(self.server.lose):
            if method == call.method and regex.search(call.path):
                del self.server.lose[i]
                raise requests.ConnectionError("('Connection aborted.', RemoteDisconnected('answer lost'))")
        payload = reply.body
        headers = CaseInsensitiveDict(reply.headers)
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        elif isinstance(payload, str):
            payload = payload.encode()
        elif payload is None:
            payload = b""
        response = requests.Response()
        response.status_code = reply.status
        response.reason = {200: "OK", 201: "Created", 204: "No Content"}.get(reply.status, "Error")
        response.headers = headers
        response.raw = io.BytesIO(payload)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass
