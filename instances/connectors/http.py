"""The one HTTP seam every connector goes through.

``HttpClient`` wraps a ``requests.Session`` with what talking to a tracker safely needs:

* a base URL and default timeouts (connect 5 s, read 30 s), and what ``exalate_node.outbound`` adds for an
  answer the node cannot trust: a total deadline per attempt (``OUTBOUND_TRACKER_DEADLINE``, never past
  the logical request's deadline), a cap on the answer's size counted as it streams
  (``OUTBOUND_MAX_ANSWER_BYTES``), JSON parsed with a depth limit and refused when it holds text that is
  not valid Unicode (``TrackerResponse.json``), http(s) URLs only, optionally no private addresses;
* redirects followed only for reads: to the tracker's own origin with the credentials, to another origin
  (a download's storage host) only for downloads and without them; never reading a redirect's body;
* retries on 429, 5xx, timeouts and connection errors, honouring ``Retry-After`` (seconds or an HTTP date)
  and rate-limit headers (``X-RateLimit-Remaining``/``X-RateLimit-Reset``, ``RateLimit-Reset``), otherwise
  exponential backoff with full jitter (base 0.5 s, cap 30 s), never sleeping past a total deadline;
* but a request that is not idempotent (a POST, unless the caller says it only reads; a PUT that adds a
  comment) is repeated only when the tracker cannot have acted on it: the connection was never made, or
  the answer was 429 or 503. After a lost answer, a timeout or another 5xx it fails (retryable), and the
  pipeline checks what the earlier attempt did before trying again, instead of creating a duplicate;
* a request budget per tracker instance (a token bucket shared by every client of that instance in this
  process), so a busy connection cannot flood a tracker;
* streaming downloads and uploads (file objects are handed to the socket, never read whole); a download
  keeps to ``ATTACHMENT_MAX_BYTES`` and to a deadline that grows with the bytes received
  (``OUTBOUND_MIN_DOWNLOAD_RATE``);
* logs of method, path and status that never contain credentials (and the values of its credential
  headers are added to the node's secret registry, ``exalate_node.redaction``, so they are redacted by
  value wherever a tracker echoes them);
* counters of requests made (per client, and by method) for benchmarks;
* errors as ``ConnectorError``: ``retryable`` for outages and rate limits, not for other refusals, with a
  message that says what happened and what to do.

Sleeping and the clocks are injectable so tests run instantly.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from exalate_node import outbound
from exalate_node.redaction import redact as redact_secrets
from exalate_node.redaction import registry as secret_registry
from instances import traffic
from instances.connectors.base import ConnectorError

logger = logging.getLogger("exalate.http")

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_DEADLINE = 90.0  # seconds for one logical request, all retries included
DEFAULT_RATE_PER_S = 10.0
CHUNK_SIZE = 64 * 1024
MAX_REDIRECTS = 5

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
# Answers saying the server did not act on the request: safe to repeat even one that is not idempotent.
NOT_ACTED_STATUSES = frozenset({429, 503})


def never_sent(exc: BaseException) -> bool:
    """Whether a failed request cannot have reached the server: the connection was never made (refused,
    unresolvable, connect timeout). A reset or a read timeout after sending may have been acted on."""
    pending: list[Any] = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)):
            return True  # NewConnectionError is a ConnectTimeoutError too
        pending += [*error.args, getattr(error, "reason", None), error.__cause__, error.__context__]
    return False


# Query parameters and headers whose values are secrets; matched case-insensitively.
SECRET_PARAMS = (
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "refresh_token",
    "private_token",
    "password",
    "secret",
    "client_secret",
    "signature",
    "sig",
)
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-redmine-api-key", "private-token", "x-api-key", "cookie"}
)
_SECRET_QUERY_RE = re.compile(r"(?i)(?<![A-Za-z0-9_])(" + "|".join(SECRET_PARAMS) + r")=([^&#\s'\"]*)")
_USERINFO_RE = re.compile(r"(?i)(https?://)[^/@\s]+@")

# What to tell the user for the usual refusals; connectors may pass their own (``hints=``).
DEFAULT_HINTS: dict[int, str] = {
    400: "the request was malformed. Check the values the sync rules produce.",
    401: "the credentials were rejected. Check the API key or token in the instance's credentials.",
    403: "the credentials have no permission for this. Check the user's role or the token's scopes.",
    404: "it does not exist or is not visible to this user. Check the URL, project and permissions.",
    409: "it conflicts with the current state of the item. Read it again and retry.",
    413: "the payload is too large for the tracker. Check its upload size limit.",
    422: "the tracker rejected the values. Check the sync rules' mapping.",
}


def redact(text: str) -> str:
    """``text`` with secrets in query strings and URL user-info replaced by ``***``."""
    text = _USERINFO_RE.sub(r"\1***@", text)
    return _SECRET_QUERY_RE.sub(lambda m: f"{m.group(1)}=***", text)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``headers`` with credential headers masked (for debugging output)."""
    return {k: ("***" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def _loggable(url: str) -> str:
    """Path and query of ``url``, redacted: what a log line may show."""
    parts = urlsplit(url)
    return redact(parts.path + (f"?{parts.query}" if parts.query else ""))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (a ``Date`` header) as epoch seconds, or None when absent or unreadable."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" or an obsolete form: HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def rate_limit_wait(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds until the rate limit resets when the headers say the budget is used up, else None.

    ``X-RateLimit-Reset`` is an epoch time on GitHub/GitLab and a delta elsewhere; ``RateLimit-Reset`` (IETF
    draft) is a delta. A value above 10^9 is read as an epoch time.
    """
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining")
    reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
    if reset is None or remaining is None:
        return None
    try:
        if float(remaining) > 0:
            return None
        value = float(reset)
    except ValueError:
        return None
    return max(0.0, value - now if value > 1e9 else value)


class TokenBucket:
    """``rate`` requests per second with bursts up to ``capacity``; ``acquire`` waits for a token."""

    def __init__(
        self,
        rate: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = max(float(rate), 0.001)
        self.capacity = float(capacity) if capacity else max(1.0, self.rate)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.hold_until = 0.0  # set when the tracker says the budget is used up
        self.lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def reserve(self) -> float:
        """Take a token; the seconds the caller must wait before using it (0 when one was available)."""
        with self.lock:
            now = self.clock()
            self._refill(now)
            self.tokens -= 1.0  # may go negative: later callers queue behind this one
            wait = 0.0 if self.tokens >= 0 else -self.tokens / self.rate
            return max(wait, self.hold_until - now)

    def hold(self, seconds: float) -> None:
        """Make every client of this instance pause ``seconds`` (the tracker said the budget is spent)."""
        with self.lock:
            self.hold_until = max(self.hold_until, self.clock() + seconds)


# Requests by method made by every client in this process (benchmarks: API calls per change).
process_requests: Counter[str] = Counter()
_process_lock = threading.Lock()

_buckets: dict[str, TokenBucket] = {}
_buckets_lock = threading.Lock()


def bucket_for(key: str, rate: float, *, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
    """The process-wide bucket for an instance (by uid); its rate follows the latest setting."""
    with _buckets_lock:
        bucket = _buckets.get(key)
        if bucket is None or bucket.clock != clock:  # a test with its own clock gets its own bucket
            bucket = _buckets[key] = TokenBucket(rate, clock=clock)
        elif bucket.rate != max(float(rate), 0.001):
            bucket.rate = max(float(rate), 0.001)
            bucket.capacity = max(1.0, bucket.rate)
        return bucket


class TrackerResponse(requests.Response):
    """A tracker's answer, its body read under the size cap. ``json()`` raises ``ConnectorError`` (not
    retryable, naming the tracker) for JSON nested too deep or holding text that is not valid Unicode, and
    ``ValueError`` as usual for something that is not JSON. Every response ``HttpClient`` returns is one."""

    service = "The tracker"
    answer_to = ""

    def json(self, **kwargs: Any) -> Any:
        what = f"{self.service}'s answer" + (f" to the request to {self.answer_to}" if self.answer_to else "")
        try:
            return outbound.parse_json(self.content, what=what)
        except outbound.BadAnswer as exc:
            raise ConnectorError(
                f"{exc}. Nothing of it was used or stored. Correct it in {self.service} (or check the "
                "instance URL: something else may answer there), then retry.",
                retryable=False,
            )
        except ValueError as exc:  # not JSON, or not UTF-8
            # As requests raises it (a ValueError, and a RequestException the API maps to a 502 naming the
            # tracker): callers that catch either keep working.
            if isinstance(exc, json.JSONDecodeError):
                raise requests.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
            raise requests.JSONDecodeError(str(exc), "", 0) from None


class HttpClient:
    """A tracker's HTTP API: ``request`` returns a successful response or raises ``ConnectorError``.

    ``service`` names the tracker in messages ("Redmine refused ..."). ``bucket_key`` (the instance uid)
    selects the shared request budget of ``rate_per_s`` requests per second.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service: str = "The tracker",
        headers: Mapping[str, str] | None = None,
        bucket_key: str | None = None,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        hints: Mapping[int, str] | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.service = service
        self.session = session or outbound.new_session()
        self.session.headers.update(headers or {})
        self._known_credentials: set[str] = set()
        self._learn_credentials()
        self.max_attempts = max(1, int(max_attempts))
        self.timeout = timeout
        self.deadline = deadline
        self.hints = {**DEFAULT_HINTS, **(hints or {})}
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self.jitter = jitter
        self.bucket = bucket_for(bucket_key or self.base_url, rate_per_s, clock=clock)
        self.traffic_key = bucket_key or ""  # the instance uid: requests counted for /metrics
        self.requests_made = 0
        self.requests_by_method: Counter[str] = Counter()
        # When the last response arrived: its ``Date`` header (the tracker's clock, epoch seconds; None when
        # it had none or an unreadable one) and ``wall_clock()`` on arrival. Polls use them to tell whether
        # a whole-second ``updated`` time could still change in the same second (``SeenWindow``).
        self.last_response_date: float | None = None
        self.last_response_at: float | None = None

    # --- helpers -----------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the base URL) or ``path`` itself when absolute."""
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the tracker's host (credentials may be sent there)."""
        a, b = urlsplit(self.base_url), urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    @property
    def writes_made(self) -> int:
        """Requests that change something (POST, PUT, PATCH, DELETE)."""
        return sum(n for m, n in self.requests_by_method.items() if m not in ("GET", "HEAD", "OPTIONS"))

    def _learn_credentials(self) -> None:
        """Add the values of the credential headers (whole, and without ``Bearer``/``Basic``) to the secret
        registry, so they are redacted by value wherever a tracker or a library echoes them. Headers can
        change (Salesforce sets a fresh access token), so this runs before every request; cheap."""
        for name, value in self.session.headers.items():
            if name.lower() in SECRET_HEADERS and value and value not in self._known_credentials:
                self._known_credentials.add(str(value))
                secret_registry.add(str(value), str(value).split(" ", 1)[-1])

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform between 0 and min(cap, base * 2^(attempt - 1)), attempt counting from 1."""
        return self.jitter(0.0, min(BACKOFF_CAP, BACKOFF_BASE * (2 ** (attempt - 1))))

    def _refusal(self, response: requests.Response, action: str) -> ConnectorError:
        status = response.status_code
        reason = response.reason or ""
        hint = self.hints.get(status) or (
            "the tracker refused it. Check the request and the credentials."
            if status < 500
            else "the tracker failed. Try again later."
        )
        details = ""
        try:
            body = outbound.parse_json(response.content)
        except (ValueError, outbound.OutboundError, RuntimeError):
            body = None
        if isinstance(body, dict):
            errors = (
                body.get("errors") or body.get("errorMessages") or body.get("message") or body.get("error")
            )
            if isinstance(errors, list):
                details = "; ".join(str(e) for e in errors)
            elif errors:
                details = str(errors)
        what = f" to {action}" if action else ""
        message = f"{self.service} refused the request{what} ({status} {reason}".rstrip() + f"): {hint}"
        if details:
            message += f" {self.service} said: {redact(details)[:500]}"
        return ConnectorError(message, retryable=status >= 500 or status == 429, status=status)

    def _scrub(self, text: str, headers: Mapping[str, Any] | None = None) -> str:
        """``text`` redacted, and with the values of this client's credential headers masked: an exception
        message (from a proxy, a TLS library) may quote the request's headers."""
        text = redact_secrets(redact(text))
        for name, value in {**self.session.headers, **dict(headers or {})}.items():
            if name.lower() not in SECRET_HEADERS or not value:
                continue
            for secret in (str(value), str(value).split(" ", 1)[-1]):  # "Bearer <token>" and the bare token
                if len(secret) >= 8:
                    text = text.replace(secret, "***")
        return text

    def _rewind(self, data: Any, start: int | None) -> bool:
        """Put a file body back at its start for a retry; False when it cannot be (a one-shot stream)."""
        if data is None or isinstance(data, (bytes, str, dict, list, tuple)):
            return True
        if start is None:
            return False
        try:
            data.seek(start)
        except (AttributeError, OSError, ValueError):
            return False
        return True

    # --- the request loop ---------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        action: str = "",
        ok_statuses: tuple[int, ...] = (),
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send with retries; a 2xx response (or one in ``ok_statuses``), or ``ConnectorError``.

        ``action`` says what the request was for, for error messages ("update issue #42"). ``data`` may be a
        file object: it is streamed, and rewound for a retry when it is seekable. ``idempotent``: whether
        sending it twice does no more than once; by default every method but POST. A request that is not
        is repeated only when the tracker cannot have acted on it (see the module's docstring).

        The body of the answer is read (under ``OUTBOUND_MAX_ANSWER_BYTES``) before it is returned, unless
        ``stream``: then the caller reads it (``download`` does, under its own limits).
        """
        method = method.upper()
        repeatable = idempotent if idempotent is not None else method != "POST"
        url = self.url(path)
        if not self.same_origin(url):
            # Never send the tracker's credentials to another host.
            raise ConnectorError(
                f"{self.service} pointed to another host ({urlsplit(url).netloc}); the node only "
                f"sends credentials to {urlsplit(self.base_url).netloc}.",
                retryable=False,
            )
        self._check_destination(url)
        self._learn_credentials()
        shown = _loggable(url if not params else requests.Request(method, url, params=params).prepare().url)
        what = action or f"{method} {urlsplit(shown).path}"
        start_pos: int | None = None
        if data is not None and hasattr(data, "read"):
            try:
                start_pos = data.tell()
            except (AttributeError, OSError, ValueError):
                start_pos = None
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            if self.traffic_key:
                traffic.maybe_flush()
            budget_wait = self.bucket.reserve()
            self._wait(budget_wait, started, what, reason="the request budget")
            self._count_wait(budget_wait)
            self.requests_made += 1
            self.requests_by_method[method] += 1
            with _process_lock:
                process_requests[method] += 1
            t0 = self.clock()
            # One attempt may take OUTBOUND_TRACKER_DEADLINE seconds in all, and never run past the logical
            # request's deadline (retries included).
            left = self.deadline - (self.clock() - started)
            budget = outbound.Budget(max(0.001, min(outbound.tracker_deadline(), left)))
            try:
                with outbound.deadline(budget):
                    response = self._send(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=data,
                        headers=headers,
                        stream=stream,
                        what=what,
                    )
                    self._read(response, stream=stream, ok_statuses=ok_statuses, what=what)
            except outbound.RefusedDestination as exc:
                raise ConnectorError(
                    f"{self.service}: {str(exc).rstrip('.')}. The request to {what} was not sent.",
                    retryable=False,
                )
            except outbound.AnswerTooLarge as exc:
                raise ConnectorError(
                    f"{exc} (OUTBOUND_MAX_ANSWER_BYTES). Check the instance URL; if the tracker's answers "
                    "really are this large, raise the limit.",
                    retryable=False,
                )
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
                outbound.DeadlinePassed,
            ) as exc:
                unsent = never_sent(exc)
                self._count("error")
                if budget.expired or isinstance(exc, outbound.DeadlinePassed):
                    kind = f"did not answer within {budget.describe()}"
                elif isinstance(exc, requests.Timeout):
                    kind = "timed out"
                else:
                    kind = "could not connect" if unsent else "dropped the connection"
                logger.warning(
                    "%s %s -> %s (attempt %d): %s",
                    method,
                    shown,
                    kind,
                    attempt,
                    self._scrub(str(exc), headers),
                )
                problem = f"{self.service} {kind} ({redact(type(exc).__name__)})"
                if not repeatable and not unsent:
                    raise ConnectorError(
                        f"{problem} while trying to {what}, and the answer was lost: {self.service} may have "
                        f"done it. The node will check before trying again, so it is not done twice.",
                        retryable=True,
                    )
                delay = self._backoff(attempt)
                if attempt >= self.max_attempts or not self._rewind(data, start_pos):
                    raise ConnectorError(
                        f"{problem} while trying to {what}, {attempt} attempt(s). Check that "
                        f"{urlsplit(self.base_url).netloc} is reachable; the node will retry later.",
                        retryable=True,
                    )
                self._wait(delay, started, what, reason=problem)
                continue
            except requests.RequestException as exc:  # an unusable URL or header: trying again cannot help
                raise ConnectorError(
                    f"{self.service}: the request to {what} could not be made ({type(exc).__name__}: "
                    f"{self._scrub(str(exc), headers)[:300]}). Check the instance URL.",
                    retryable=False,
                )
            elapsed = self.clock() - t0
            status = response.status_code
            self._count(str(status))
            logger.info("%s %s -> %s (%.2f s)", method, shown, status, elapsed)
            now = self.wall_clock()
            self.last_response_at = now
            self.last_response_date = parse_http_date(response.headers.get("Date"))
            limit_wait = rate_limit_wait(response.headers, now=now)
            if limit_wait and 200 <= status < 300:
                self.bucket.hold(limit_wait)  # spent: every client of this instance pauses until reset
            if 200 <= status < 300 or status in ok_statuses:
                return response
            throttled = status == 429 or (status == 403 and limit_wait is not None)
            if not throttled and status not in RETRYABLE_STATUSES:
                error = self._refusal(response, action)
                response.close()
                raise error
            # Retryable: how long does the tracker want us to wait?
            server_wait = parse_retry_after(response.headers.get("Retry-After"), now=now)
            if server_wait is None:
                server_wait = limit_wait
            delay = server_wait if server_wait is not None else self._backoff(attempt)
            if throttled and server_wait is not None:
                self.bucket.hold(server_wait)
            response.close()
            unsure = not repeatable and not throttled and status not in NOT_ACTED_STATUSES
            gave_up = unsure or attempt >= self.max_attempts or not self._rewind(data, start_pos)
            if gave_up or self.clock() + delay - started > self.deadline:
                label = "rate-limited the node" if throttled else f"failed ({status} {response.reason or ''})"
                after = f" It asked to wait {server_wait:.0f} s." if server_wait is not None else ""
                if unsure:
                    after += " It may have done it anyway: the node will check before trying again."
                raise ConnectorError(
                    f"{self.service} {label.rstrip()} on the request to {what}, {attempt} attempt(s).{after} "
                    f"The node will retry later; if this persists, lower the instance's rate_limit_per_s "
                    f"or check the tracker's health.",
                    retryable=True,
                    status=status,
                )
            self._wait(delay, started, what, reason=f"{status}")
            if throttled:
                self._count_wait(delay)

    def _count(self, outcome: str) -> None:
        if self.traffic_key:
            traffic.record(self.traffic_key, outcome)

    def _count_wait(self, seconds: float) -> None:
        if self.traffic_key and seconds > 0:
            traffic.waited(self.traffic_key, seconds)

    def _check_destination(self, url: str) -> None:
        """http(s) only; with OUTBOUND_REFUSE_PRIVATE_ADDRESSES and a proxy in the way, the host is checked by
        name here (without a proxy the connection itself checks every address it connects to)."""
        try:
            outbound.check_url(url, what=f"{self.service}'s URL")
            if outbound.refuse_private() and outbound.uses_proxy(url):
                outbound.check_host(urlsplit(url).hostname or "", urlsplit(url).port)
        except outbound.RefusedDestination as exc:
            raise ConnectorError(
                f"{exc} Set the instance URL to the tracker's http(s) address.", retryable=False
            )

    def _send(
        self, method: str, url: str, *, params: Any, stream: bool, what: str, **kwargs: Any
    ) -> TrackerResponse:
        """One attempt, following redirects of reads: to the tracker's origin with the credentials, to another
        origin only for a download (``stream``) and without them. A redirect's body is never read."""
        request_headers = dict(kwargs.pop("headers", None) or {})
        for hop in range(MAX_REDIRECTS + 1):
            response = self.session.request(
                method,
                url,
                params=params,
                headers=request_headers,
                stream=True,
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
            response.__class__ = TrackerResponse
            response.service, response.answer_to = self.service, what  # type: ignore[attr-defined]
            if method not in ("GET", "HEAD") or not response.is_redirect:
                return response  # type: ignore[return-value]
            target = urljoin(response.url or url, response.headers["Location"])
            response.close()
            outbound.check_url(target, what=f"The address {self.service} redirected to")
            if not self.same_origin(target):
                if not stream:
                    raise ConnectorError(
                        f"{self.service} redirected the request to {what} to another address "
                        f"({urlsplit(target).scheme}://{urlsplit(target).netloc}). The node only sends "
                        f"credentials to {urlsplit(self.base_url).netloc}: check the instance URL (it may "
                        "have to be https, or the tracker's canonical host name).",
                        retryable=False,
                    )
                # A download handed to a storage host: it gets no credentials.
                drop = {n: None for n in self.session.headers if n.lower() in SECRET_HEADERS}
                request_headers = {
                    **{k: v for k, v in request_headers.items() if k.lower() not in SECRET_HEADERS},
                    **drop,
                }
            url, params = target, None
            logger.info("%s redirected to %s (hop %d)", what, _loggable(target), hop + 1)
        raise ConnectorError(
            f"{self.service} redirected the request to {what} more than {MAX_REDIRECTS} times. Check the "
            "instance URL.",
            retryable=False,
        )

    def _read(
        self, response: requests.Response, *, stream: bool, ok_statuses: tuple[int, ...], what: str
    ) -> None:
        """Read the body of a successful answer under the size cap (not a download's: its caller reads it),
        and the start of a refusal's (its message may quote it)."""
        status = response.status_code
        if 200 <= status < 300 or status in ok_statuses:
            if not stream:
                outbound.read_body(
                    response,
                    limit=outbound.max_answer_bytes(),
                    what=f"{self.service}'s answer to the request to {what}",
                )
        elif status not in RETRYABLE_STATUSES and status != 429:
            try:
                outbound.read_body(response, limit=outbound.ERROR_BODY_BYTES, truncate=True)
            except (requests.RequestException, outbound.OutboundError):
                response._content, response._content_consumed = b"", True

    def _wait(self, seconds: float, started: float, what: str, *, reason: str) -> None:
        if seconds <= 0:
            return
        if self.clock() + seconds - started > self.deadline:
            raise ConnectorError(
                f"{self.service}: waiting {seconds:.0f} s for {reason} before the request to {what} "
                f"would pass the {self.deadline:.0f} s deadline. The node will retry later.",
                retryable=True,
            )
        self.sleep(seconds)

    # --- conveniences ---------------------------------------------------------------------------------------
    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None, action: str = "") -> Any:
        response = self.request("GET", path, params=params, action=action)
        return self._json(response, action or f"GET {path}")

    def send_json(
        self, method: str, path: str, body: Any, *, action: str = "", idempotent: bool | None = None
    ) -> Any:
        """Send ``body`` as JSON; the decoded response, or None when it has no body (204)."""
        response = self.request(method, path, json=body, action=action, idempotent=idempotent)
        if response.status_code == 204 or not response.content:
            return None
        return self._json(response, action or f"{method} {path}")

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"{self.service} answered the request to {what} with something that is not JSON "
                f"({response.headers.get('Content-Type', 'no content type')}). Check the instance URL.",
                retryable=False,
                status=response.status_code,
            )

    def upload(
        self,
        path: str,
        content: IO[bytes],
        *,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/octet-stream",
        action: str = "",
    ) -> requests.Response:
        """POST a file object as the raw body, streamed from the file (never read whole into memory)."""
        return self.request(
            "POST", path, params=params, data=content, headers={"Content-Type": content_type}, action=action
        )

    def download(self, path: str, *, action: str = "", chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body of ``path`` as a stream of chunks; the connection is released when the stream ends.

        At most ``ATTACHMENT_MAX_BYTES``, and within a deadline that grows with the bytes received:
        ``OUTBOUND_TRACKER_DEADLINE`` plus one second per ``OUTBOUND_MIN_DOWNLOAD_RATE`` bytes, so a big file
        at a fair speed arrives while a trickle is abandoned."""
        what = action or path
        limit = int(outbound.setting("ATTACHMENT_MAX_BYTES", 25 * 1024 * 1024))
        budget = outbound.Budget(outbound.tracker_deadline(), min_rate=outbound.min_download_rate())
        with outbound.deadline(budget):
            response = self.request("GET", path, stream=True, action=action)
        length = (response.headers.get("Content-Length") or "").strip()
        if length.isdigit() and int(length) > limit:
            response.close()
            raise self._too_big(what, limit)

        def chunks() -> Iterator[bytes]:
            try:
                yield from outbound.bounded_chunks(
                    response,
                    budget=budget,
                    limit=limit,
                    what=f"The download for {what}",
                    too_big=lambda: self._too_big(what, limit),
                    chunk_size=chunk_size,
                )
            except outbound.DownloadBroken as exc:
                raise ConnectorError(
                    f"{self.service}: the download for {what} {exc.why}. The node will retry later.",
                    retryable=True,
                )
            finally:
                response.close()

        return chunks()

    def _too_big(self, what: str, limit: int) -> ConnectorError:
        return ConnectorError(
            f"{self.service}: the file of {what} is larger than ATTACHMENT_MAX_BYTES ({limit} bytes) on this "
            "node. Raise the limit or remove the file.",
            retryable=False,
        )
