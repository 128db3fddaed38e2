"""What the Azure DevOps, GitLab, Zendesk, ServiceNow and Salesforce connectors share.

* **The transport seam.** Every one of these connectors builds its ``HttpClient`` through ``build_http``.
  Tests (and anything else that must not touch the network) swap what that client talks to with
  ``use_transport(factory, sleep=..., clock=...)``: ``factory(tracker_type)`` returns the
  ``requests.Session`` to use (typically one with an in-memory fake mounted as a transport adapter), and
  ``sleep``/``clock``/``wall_clock`` replace the client's so retries and rate limits run instantly. Outside
  the context manager the connectors use a plain ``requests.Session`` and the real clocks. A connector's
  ``http`` attribute can also be assigned directly (``connector.http = HttpClient(...)``).
* Credentials from ``instance.credentials`` (a JSON object), with messages that say which key is missing.
* ``SeenWindow``: de-duplication of polled changes on (id, updated) inside the overlap window (a whole-second
  ``updated`` is only skipped once a poll answered after its second ended: a same-second edit is not lost).
* ``OwnWrites``: the versions of items the node itself wrote, so ``is_own_change`` can recognise them.
* ``ReplayGuard``: webhook deliveries already handled (by delivery id), so a redelivery has no second effect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

from instances.connectors.base import ConnectorError
from instances.connectors.http import HttpClient

if TYPE_CHECKING:
    from instances.models import Instance


@dataclass
class _Transport:
    session_factory: Callable[[str], requests.Session] | None = None
    sleep: Callable[[float], None] | None = None
    clock: Callable[[], float] | None = None
    wall_clock: Callable[[], float] | None = None


_transport = _Transport()


@contextmanager
def use_transport(
    session_factory: Callable[[str], requests.Session],
    *,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    wall_clock: Callable[[], float] | None = None,
) -> Iterator[None]:
    """Within the block, connectors built by ``build_http`` use ``session_factory(tracker_type)`` as their
    session and the given sleep/clocks (the test seam; see the module docstring)."""
    global _transport
    previous = _transport
    _transport = _Transport(session_factory, sleep, clock, wall_clock)
    try:
        yield
    finally:
        _transport = previous


def build_http(
    instance: Instance,
    *,
    tracker_type: str,
    service: str,
    base_url: str,
    headers: Mapping[str, str],
    hints: Mapping[int, str] | None = None,
    default_rate: float = 10.0,
) -> HttpClient:
    """The HttpClient for one connector, honouring ``use_transport`` and ``settings.rate_limit_per_s``."""
    extra: dict[str, Any] = {}
    if _transport.session_factory is not None:
        extra["session"] = _transport.session_factory(tracker_type)
    for name in ("sleep", "clock", "wall_clock"):
        value = getattr(_transport, name)
        if value is not None:
            extra[name] = value
    return HttpClient(
        base_url,
        service=service,
        headers=dict(headers),
        bucket_key=instance.uid or base_url,
        rate_per_s=float((instance.settings or {}).get("rate_limit_per_s", default_rate)),
        hints=hints,
        **extra,
    )


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def credentials(instance: Instance, service: str, required: tuple[str, ...], example: str) -> dict[str, Any]:
    """``instance.credentials`` as a dict with every key of ``required``; a clear error otherwise."""
    try:
        creds = json.loads(instance.credentials or "{}")
    except ValueError:
        creds = None
    if not isinstance(creds, dict):
        raise ConnectorError(
            f"{instance.name}: the credentials are not a JSON object. Set them to {example}.", status=401
        )
    missing = [k for k in required if not creds.get(k)]
    if missing:
        raise ConnectorError(
            f"{instance.name}: the {service} credentials lack {', '.join(missing)}. Set them to {example}.",
            status=401,
        )
    return creds


def base_url(instance: Instance, service: str, example: str) -> str:
    if not instance.url:
        raise ConnectorError(f"{instance.name} has no URL. Set it to the {service} base URL ({example}).")
    return instance.url.rstrip("/")


def account_key(instance: Instance, secret: str) -> str:
    """Identifies the account (instance, URL and credentials) for per-process memory, without the secret."""
    digest = hashlib.sha256(f"{instance.url}\n{secret}".encode()).hexdigest()[:16]
    return f"{instance.uid}:{digest}"


def parse_ts(value: str) -> datetime:
    """An ISO 8601 time (``Z``, offsets or none = UTC; ServiceNow's ``YYYY-MM-DD HH:MM:SS`` too)."""
    text = str(value).strip().replace(" ", "T", 1).replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":" and "T" in text:
        text = text[:-2] + ":" + text[-2:]  # Salesforce's +0000
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; False when either is empty."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else ``{}``. Webhook bodies are read through this (and
    ``scalar``) field by field, since a signed delivery may still have any shape (a 500 before)."""
    return value if isinstance(value, dict) else {}


def scalar(value: Any) -> str:
    """A JSON string or integer as text; objects, lists, booleans, fractions and null as ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def header(headers: Mapping[str, str], name: str) -> str:
    """A header value, case-insensitively (webhook views hand over plain dicts)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return str(value)
    return ""


# A poll's answer only proves that an ``updated`` value is final once the tracker answered after that
# value's time unit (its second, for whole-second times) had ended; by how much later:
SETTLE_MARGIN = 1.0  # seconds between the tracker running the query and stamping its ``Date`` (commit lag)
CLOCK_SKEW = 2.0  # more seconds when only the node's clock is known (no ``Date``): the clocks may differ
# Finer units (Jira's, GitLab's and Azure DevOps' milliseconds) are final at once: a poll landing between two
# changes inside one such unit is not a practical risk, while the clocks above are only good to a second.
SETTLED_BELOW = timedelta(seconds=1)

_CLOCK_RE = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,](\d+))?)?")


def resolution(updated: str) -> timedelta:
    """The time unit ``updated`` is written in: two changes within it can carry the same value.

    Judged from how it is written: no fractional part is whole seconds (Redmine, GitHub, Zendesk,
    ServiceNow); trailing zeros do not count (Salesforce writes ``.000`` though its times are whole seconds,
    Azure DevOps drops trailing zeros), so ``.120`` is read as hundredths. Reading a unit too coarse only
    costs a re-read; too fine would lose a change.
    """
    match = _CLOCK_RE.search(str(updated))
    if match is None:
        return timedelta(seconds=1)
    if match.group(0).count(":") == 1:
        return timedelta(minutes=1)  # no seconds at all
    digits = (match.group(1) or "").rstrip("0")
    return max(timedelta(seconds=10.0 ** -len(digits)), timedelta(microseconds=1))


def observed_second(http: HttpClient | None) -> int:
    """A second, on the tracker's clock, that the query answered by ``http``'s last response surely ran
    after: its ``Date`` header minus ``SETTLE_MARGIN``; without one, the node's clock at the response minus
    ``SETTLE_MARGIN + CLOCK_SKEW``; with no client at all, the node's clock now likewise."""
    date = getattr(http, "last_response_date", None)
    if date is not None:
        return math.floor(date - SETTLE_MARGIN)
    arrived = getattr(http, "last_response_at", None)
    if arrived is None:
        arrived = getattr(http, "wall_clock", time.time)()
    return math.floor(arrived - SETTLE_MARGIN - CLOCK_SKEW)


@dataclass
class _Mark:
    when: datetime  # the ``updated`` time, for forgetting
    settled: bool  # returned by a poll answered after ``updated``'s time unit had ended
    returned_at: int  # ``observed_second`` of the poll that last returned it


class SeenWindow:
    """What a poll already returned, per account: (id, updated) pairs, forgotten once older than the window.

    Polls re-read an overlap window behind the cursor (late commits, clock skew); a change already
    returned is skipped, so each change is returned once. But ``updated`` has a finite precision (whole
    seconds on many trackers): a second change in the same second as one already returned carries the same
    (id, updated), so skipping it would lose it. A mark is therefore *settled* only when the poll that
    returned it was answered after ``updated``'s second had ended (on the tracker's clock: the response's
    ``Date`` header, see ``observed_second``); an unsettled mark is returned again by a later poll (one
    answered in a later second) until one settles it. Returning an unchanged item again costs its
    pipeline one read and no write (an unchanged replica is not sent). Times with a finer unit than a
    second (``resolution``) are settled at once (``SETTLED_BELOW``).
    """

    def __init__(self) -> None:
        self._seen: dict[str, dict[tuple[str, str], _Mark]] = {}
        self._lock = threading.Lock()

    def fresh(self, account: str, item_id: str, updated: str, http: HttpClient | None = None) -> bool:
        """Whether to return (item_id, updated) for ``account`` now: the first time it is offered, and again
        while it is not settled; remembers it. ``http`` is the client whose last response listed it (its
        ``Date`` tells when the tracker answered); without it, the node's clock now is used."""
        observed = observed_second(http)
        with self._lock:
            seen = self._seen.setdefault(account, {})
            key = (str(item_id), str(updated))
            mark = seen.get(key)
            if mark is not None and (mark.settled or observed <= mark.returned_at):
                return False  # settled; or not, but answered in the same second as it was last returned
            when = parse_ts(updated) if mark is None else mark.when
            unit = resolution(updated)
            settled = unit < SETTLED_BELOW or observed >= (when + unit).timestamp()
            seen[key] = _Mark(when, settled, observed)
            return True

    def forget_before(self, account: str, floor: datetime) -> None:
        with self._lock:
            seen = self._seen.get(account, {})
            for key in [k for k, mark in seen.items() if mark.when < floor]:
                del seen[key]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


class OwnWrites:
    """Versions (rev, updated time, ...) of items as the node's own writes left them, per account.

    ``is_own_change`` asks whether an item's current version is one the node made: if so, nothing
    happened since, and syncing it back would be an echo. Bounded, so it cannot grow without end.
    """

    def __init__(self, size: int = 50_000) -> None:
        self._marks: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def remember(self, account: str, item_id: str, version: Any) -> None:
        if version in (None, ""):
            return
        with self._lock:
            self._marks[(account, str(item_id), str(version))] = time.monotonic()
            while len(self._marks) > self._size:
                self._marks.popitem(last=False)

    def knows(self, account: str, item_id: str, version: Any) -> bool:
        with self._lock:
            return (account, str(item_id), str(version)) in self._marks

    def clear(self) -> None:
        with self._lock:
            self._marks.clear()


class ReplayGuard:
    """Webhook delivery ids handled recently (bounded, with a time to live)."""

    def __init__(self, ttl: float = 24 * 3600.0, size: int = 100_000) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._ttl, self._size = ttl, size
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, *, now: float | None = None) -> bool:
        """True the first time ``delivery_id`` is seen (within the TTL); empty ids are always new."""
        if not delivery_id:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._ids and next(iter(self._ids.values())) < now - self._ttl:
                self._ids.popitem(last=False)
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = now
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)
            return True

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
