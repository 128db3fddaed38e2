"""The transport adapter every fake is built on: routing, contract checks, call log, scripted failures."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.templating.responses.exceptions import ResponseNotFound
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from tests.contracts.specs import openapi


def describe(errors: list[Exception]) -> str:
    """The innermost schema messages of openapi-core errors, with their JSON paths (short)."""
    out = []
    for error in errors:
        cause = error.__cause__ or error
        inner = getattr(cause, "schema_errors", None) or []
        if inner:
            for e in inner:
                path = "/".join(str(p) for p in getattr(e, "absolute_path", []))
                out.append(f"{type(error).__name__} at /{path}: {getattr(e, 'message', e)}"[:400])
        else:
            out.append(f"{type(error).__name__}: {cause}"[:400])
    return "; ".join(out)


class ContractViolation(AssertionError):
    """The connector sent (or the fake would answer) something the official API description forbids."""


@dataclass
class Call:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: CaseInsensitiveDict
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # path parameters from the route

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; bytes/str as is; None → empty
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Reply]


def _read_body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        chunks = []
        while chunk := body.read(64 * 1024):
            chunks.append(chunk if isinstance(chunk, bytes) else chunk.encode())
        return b"".join(chunks)
    return b"".join(body)  # an iterable of chunks (streamed upload)


class ContractFake(BaseAdapter):
    """A fake tracker. Subclasses set ``base_url`` and ``spec`` and register routes with ``route``.

    ``fail_next(Reply, ...)`` makes the next requests get these replies before any routing (rate limits,
    outages); such replies are exempt from the response check when their status is one the service
    documents outside the description (``UNDECLARED_OK``). ``calls`` logs every request; ``violations``
    every contract breach (also raised at once as ``ContractViolation``).
    """

    base_url = ""
    spec = ""
    # Statuses the real service sends on any endpoint though the description does not list them.
    UNDECLARED_OK: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.scripted: list[Reply] = []
        self.lose: list[tuple[str, re.Pattern[str]]] = []  # answers to lose (see lose_next_answer)
        self.openapi = openapi(self.spec)

    # --- set-up ---------------------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """``pattern`` is a path with ``{name}`` placeholders (one path segment each)."""
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        self.routes.append((method.upper(), re.compile(f"^{regex}$"), handler))

    def fail_next(self, *replies: Reply) -> None:
        self.scripted.extend(replies)

    def lose_next_answer(self, method: str, path_regex: str = "") -> None:
        """Carry out the next ``method`` request whose path matches, then drop the connection instead of
        answering (requests raises ConnectionError): the tracker did the work and the client never heard."""
        self.lose.append((method.upper(), re.compile(path_regex)))

    def session(self) -> requests.Session:
        """A session with this fake mounted for its base URL (nothing else is reachable)."""
        s = requests.Session()
        s.mount("http://", _Unreachable())
        s.mount("https://", _Unreachable())
        s.mount(self.base_url, self)
        return s

    def requests_to(self, method: str, path_regex: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and re.search(path_regex, c.path)]

    @property
    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method not in ("GET", "HEAD")]

    # --- the adapter ----------------------------------------------------------------------------------------
    def close(self) -> None:
        pass

    def send(
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        body = _read_body(request.body)
        parts = urlsplit(request.url or "")
        call = Call(
            method=(request.method or "GET").upper(),
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=CaseInsensitiveDict(request.headers),
            body=body,
        )
        self.calls.append(call)
        checked = request.copy()
        checked.body = body or None
        self.check_request(checked, call)
        if self.scripted:
            reply = self.scripted.pop(0)
        else:
            reply = self.dispatch(call)
        response = self._response(request, reply)
        self.check_response(checked, call, response)
        for i, (method, regex) in enumerate(self.lose):
            if method == call.method and regex.search(call.path):
                del self.lose[i]
                raise requests.ConnectionError("('Connection aborted.', RemoteDisconnected('answer lost'))")
        return response

    def dispatch(self, call: Call) -> Reply:
        for method, regex, handler in self.routes:
            match = regex.match(call.path)
            if match and method == call.method:
                call.params = match.groupdict()
                return handler(call)
        return self.not_found(call)

    def not_found(self, call: Call) -> Reply:
        return Reply(404, {"message": "Not Found"})

    def _response(self, request: requests.PreparedRequest, reply: Reply) -> requests.Response:
        payload = reply.body
        headers = dict(reply.headers)
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        elif isinstance(payload, str):
            payload = payload.encode()
        payload = payload or b""
        headers.setdefault("Content-Length", str(len(payload)))
        response = requests.Response()
        response.status_code = reply.status
        response.reason = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}.get(
            reply.status, "Error" if reply.status >= 400 else "OK"
        )
        response.headers = CaseInsensitiveDict(headers)
        response.raw = io.BytesIO(payload)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    # --- the contract ------------------------------------------------------------------------------------
    def violation(self, text: str) -> None:
        text = text if len(text) < 3000 else text[:1500] + " … " + text[-1500:]
        self.violations.append(text)
        raise ContractViolation(text)

    def validate_request_body(self, call: Call) -> bool:
        """Whether openapi-core checks this request's body (False where a fake checks it itself)."""
        return True

    def check_request(self, request: requests.PreparedRequest, call: Call) -> None:
        wrapped = RequestsOpenAPIRequest(request)
        if self.validate_request_body(call):
            errors = list(self.openapi.iter_request_errors(wrapped))
        else:
            from openapi_core.validation.request.validators import (
                V30RequestParametersValidator,
                V30RequestSecurityValidator,
            )

            errors = []
            for cls in (V30RequestParametersValidator, V30RequestSecurityValidator):
                errors += list(cls(self.openapi.spec).iter_errors(wrapped))
        if errors:
            details = "; ".join(
                f"{type(e).__name__}: {e} {getattr(e, '__cause__', '') or ''}" for e in errors
            )
            self.violation(f"{call.method} {call.path}: request breaks the API description: {details}")

    def exempt_response(self, call: Call, response: requests.Response) -> bool:
        """Responses the service documents outside the description (see ``UNDECLARED_OK``)."""
        return response.status_code in self.UNDECLARED_OK

    def check_response(
        self, request: requests.PreparedRequest, call: Call, response: requests.Response
    ) -> None:
        wrapped = RequestsOpenAPIRequest(request)
        errors = list(self.openapi.iter_response_errors(wrapped, RequestsOpenAPIResponse(response)))
        if response.status_code == 204:
            # Some descriptions (Jira's) give a 204 a JSON content type with an empty schema; a 204 has no
            # body by definition (RFC 9110 §15.3.5), so "missing data" is not a breach there.
            errors = [e for e in errors if type(e).__name__ != "MissingData"]
        if not errors:
            return
        if all(isinstance(e, ResponseNotFound) for e in errors) and self.exempt_response(call, response):
            return
        self.violation(
            f"{call.method} {call.path} -> {response.status_code}: response breaks the description: "
            f"{describe(errors)}"
        )


class _Unreachable(BaseAdapter):
    """Anything but the fake: the tests never reach the network."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise requests.ConnectionError(f"tests have no network: {request.url}")

    def close(self) -> None:
        pass
