"""The node's secret values, and redaction of them from any text by value.

A tracker that answers 401 with the request's headers echoed back, a proxy's error page, a peer's error
detail or an exception message can carry a credential into a log line, a stored error or a page, whatever
the header or parameter was called. So secrets are redacted by *value*:

* **The registry** (``registry``) holds the secret values this process knows. It learns them where secrets
  exist in plain text: ``EncryptedTextField`` hands it every value it decrypts or encrypts (instance
  credentials, connection keys, invitation secrets), so a process knows a secret as soon as it has read or
  written it, and no credential is decrypted for the sake of redaction. The HTTP seam adds the credential
  header values it sends (``Bearer <token>``, Basic-auth forms, tokens obtained at run time).
  From a JSON object of credentials it keeps the values of every key except the ones that name an account
  (``IDENTITY_KEYS``: e-mail, user name, client id, URLs), plus the Basic-auth forms of identity and secret.
  Values shorter than ``MIN_SECRET_CHARS`` are not redacted: masking ``ab`` everywhere would garble text.
* **Redaction** (``redact``) replaces every known value with ``***`` in one regular-expression pass (the
  values are compiled into a trie, so the cost hardly grows with their number; rebuilt only when a new
  value is learned).
* **Where it is applied**: every log record, whatever its handler (``install_log_redaction``: a log record
  factory, plus ``RedactingFilter`` for handlers fed by other factories); every stored error, event and
  status text (``exalate_node.fields.RedactedTextField``, on write and on read); the messages of
  ``ConnectorError``, ``PeerError``, ``PeerUnreachable`` and ``HandshakeError`` when they are made; and the
  API's error bodies (``exalate_node.api.exception_handler``).

This module imports nothing from Django or the project, so any layer may use it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

MASK = "***"
MIN_SECRET_CHARS = 6
MAX_SECRETS = 2_000  # oldest forgotten first (a long test run); a node holds a few dozen to a few hundred
_TRIE_MAX_CHARS = 512  # longer values (a PEM key) are replaced one by one
_RECENT_MAX = 64  # values learned since the trie was compiled, searched one by one until it is rebuilt

# Credential keys whose values name an account rather than prove it: not redacted on their own (an e-mail
# address in every log line would be masked), but combined with the secrets into Basic-auth forms.
IDENTITY_KEYS = frozenset(
    {
        "email",
        "user",
        "username",
        "login",
        "client_id",
        "account",
        "account_id",
        "node_user",
        "org",
        "organization",
        "subdomain",
        "domain",
        "site",
    }
)


def _forms(value: str) -> list[str]:
    """``value`` as it may appear in text: as is, URL-encoded, and JSON-escaped."""
    forms = [value]
    for other in (quote(value, safe=""), json.dumps(value)[1:-1]):
        if other != value and other not in forms:
            forms.append(other)
    return forms


def _basic(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode("utf-8", "surrogatepass")).decode()


def secret_values(plaintext: str) -> list[str]:
    """The values to redact that a stored secret holds: for a JSON object of credentials, the value of every
    key but the ``IDENTITY_KEYS`` (nested objects and lists too) and the Basic-auth forms of each identity
    with each secret (``user:secret``, Zendesk's ``email/token:secret``, Azure's ``:pat``); for anything
    else, the text itself (a connection key)."""
    try:
        data = json.loads(plaintext)
    except (ValueError, RecursionError):
        return [plaintext]
    if not isinstance(data, dict):
        return [plaintext]
    secrets: list[str] = []
    identities: list[str] = [""]
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)
        elif isinstance(value, str) and value:
            name = key.lower()
            if name in IDENTITY_KEYS or name.endswith("url"):
                identities.append(value)
            else:
                secrets.append(value)
    derived = [
        _basic(f"{who}{suffix}", s) for s in secrets for who in identities for suffix in ("", "/token")
    ]
    return secrets + [d for d in derived if d]


def _trie_pattern(values: list[str]) -> str:
    """One regular expression matching any of ``values``, longest first, built as a trie (so matching costs
    about the same for 5 values or 5,000)."""
    root: dict[str, Any] = {}
    for value in values:
        node = root
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        # Runs of single children become literals without recursing (a 64-character key is one run).
        branches = []
        for char in sorted(k for k in node if k):
            literal, child = [re.escape(char)], node[char]
            while len(child) == 1 and "" not in child:
                (next_char,) = child
                literal.append(re.escape(next_char))
                child = child[next_char]
            branches.append("".join(literal) + (build(child) if set(child) != {""} else ""))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(root)


class SecretRegistry:
    """The secret values this process knows (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._learned: OrderedDict[str, None] = OrderedDict()  # digests of plaintexts already handled
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._compiled: set[str] = set()  # the values in the trie
        self._loose: tuple[str, ...] = ()  # the others (recent or long), searched one by one, longest first
        self._dirty = False

    def __len__(self) -> int:
        return len(self._values)

    def add(self, *values: Any) -> None:
        """Redact these values from now on (those shorter than ``MIN_SECRET_CHARS`` are ignored)."""
        with self._lock:
            for value in values:
                if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
                    continue
                for form in _forms(value):
                    if form in self._values:
                        self._values.move_to_end(form)
                    else:
                        self._values[form] = None
                        self._dirty = True
            while len(self._values) > MAX_SECRETS:
                self._values.popitem(last=False)
                self._dirty = True

    def learn(self, plaintext: str) -> None:
        """Redact what a stored secret holds (``secret_values``). Cheap when it was learned before."""
        if not plaintext:
            return
        digest = hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()
        if digest in self._learned:
            return
        self.add(*secret_values(plaintext))
        with self._lock:
            self._learned[digest] = None
            while len(self._learned) > MAX_SECRETS:
                self._learned.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._learned.clear()
            self._pattern, self._compiled, self._loose, self._dirty = None, set(), (), False

    def _rebuild(self) -> None:
        """Searching is ready for the values learned since the last call. Compiling the trie costs about a
        millisecond per hundred values, so new values are first searched one by one and the trie is only
        recompiled once ``_RECENT_MAX`` of them piled up (a forgotten value stays in the trie until then)."""
        with self._lock:
            if not self._dirty:
                return
            values = set(self._values)
            short = {v for v in values if len(v) <= _TRIE_MAX_CHARS}
            recent = short - self._compiled
            if len(recent) > _RECENT_MAX:
                self._pattern = re.compile(_trie_pattern(sorted(short))) if short else None
                self._compiled, recent = short, set()
            loose = recent | (values - short)
            self._loose = tuple(sorted(loose, key=len, reverse=True))
            self._dirty = False

    def redact(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        if not text or not self._values or not isinstance(text, str):
            return text
        if self._dirty:
            self._rebuild()
        pattern, loose = self._pattern, self._loose
        for value in loose:
            if value in text:
                text = text.replace(value, MASK)
        return pattern.sub(MASK, text) if pattern is not None else text


registry = SecretRegistry()


def redact(text: str) -> str:
    """``text`` with every secret value this process knows replaced by ``***``."""
    return registry.redact(text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like) with every string redacted (error bodies, lists of messages)."""
    if isinstance(value, str):
        return registry.redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value


# --- logging ------------------------------------------------------------------------------------------------


def redact_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its message (formatted now, with its arguments), its traceback text
    and its stack text. A record whose message cannot be formatted is left for the handler to report."""
    if getattr(record, "secrets_redacted", False):
        return
    record.secrets_redacted = True
    if not len(registry):
        return
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - the handler reports a broken format string, not us
        return
    clean = registry.redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        cleaned = registry.redact(text)
        if cleaned != text:
            record.exc_text = cleaned
    elif record.exc_text:
        record.exc_text = registry.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = registry.redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """For handlers: redacts records that did not come through ``install_log_redaction``'s factory."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_installed = False
_install_lock = threading.Lock()


def install_log_redaction() -> None:
    """Redact every log record when it is made, whichever logger and handler (pytest's too) it goes to.
    Idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        base = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
