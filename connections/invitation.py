"""Invitation codes: the one string an admin copies from node A and pastes into node B.

Format: ``EXN1-`` + base64url (no padding) of ``key(32) || nonce(12) || AES-256-GCM(key, nonce,
zlib(json), aad=b"exalate-node/invitation/v1")``.

Threat model: the code travels over e-mail/chat, so it is *not* confidential by construction (the AEAD
key rides inside the code). What the sealing buys is

* tamper evidence: any changed, dropped or added character fails authentication, so a damaged paste is
  reported as such instead of producing a half-wrong connection;
* no plaintext secret or URL readable at a glance (shoulder surfing, screenshots, log greps).

A leaked code is made worthless by the handshake (``connections.signing``): the connection key comes from an
ephemeral X25519 exchange, and the DB layer makes the invitation single-use, revocable and expiring. This
module only checks expiry. ``open_invitation`` raises nothing but :class:`InvitationError`, whatever
the input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exalate_node.outbound import RefusedDestination, check_url

PREFIX = "EXN1-"
AAD = b"exalate-node/invitation/v1"
CONNECTION_TYPES = frozenset({"script", "basic"})
SECRET_BYTES = 32

_KEY_LEN = 32
_NONCE_LEN = 12
_TAG_LEN = 16
_MAX_CODE_CHARS = 16_384  # real codes are well under 2 KB
_MAX_PLAINTEXT = 65_536  # zlib-bomb guard
_MAX_TEXT_FIELD = 2_048
_MAX_EXPIRY = 253_402_300_799  # 9999-12-31T23:59:59Z
_PAYLOAD_VERSION = 1

_VERSION_PREFIX_RE = re.compile(r"^EXN(\d{1,4})-")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
# Pasted codes often arrive wrapped in quotes, angle brackets or backticks.
_WRAPPERS = "\"'`<>«»“”‘’()[]"
# Invisible characters some mail/chat clients insert when wrapping long words.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_COPY_AGAIN = "Copy the whole code again from the other node's admin page (it starts with EXN1-)."


class InvitationError(ValueError):
    """Any problem with an invitation code; ``.code`` is a stable machine-readable reason.

    Codes: ``empty``, ``bad_prefix``, ``truncated``, ``corrupted``, ``unsupported_version``, ``expired``,
    ``bad_url`` (the node or tracker URL inside is not an http(s) URL), ``refused_address`` (the node URL's
    host is an address this node refuses, see ``connections.handshake.check_node_address``).
    ``str(err)`` is a sentence for the admin that says what to do next.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Invitation:
    """Everything the acceptor needs to contact the initiator and prove it holds the invitation."""

    secret: bytes  # 32 random bytes, see new_secret()
    connection_type: str  # "script" | "basic"
    connection_name: str
    invitation_id: str  # uuid string
    initiator_node: str  # node name shown to the other admin
    initiator_user: str  # admin who created the invitation
    app_version: str
    features: tuple[str, ...]
    tracker_type: str
    tracker_version: str
    tracker_url: str
    node_url: str
    instance_uid: str
    instance_name: str
    expires_at: int  # UTC epoch seconds
    # Not part of the sealed payload; lets callers keep extension fields if a newer node sends them.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Accept a list for convenience but store an immutable tuple.
        if not isinstance(self.features, tuple):
            object.__setattr__(self, "features", tuple(self.features))

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    @property
    def expires_at_text(self) -> str:
        return _format_utc(self.expires_at)


def new_secret() -> bytes:
    """32 fresh random bytes for :attr:`Invitation.secret`."""
    return secrets.token_bytes(SECRET_BYTES)


def seal_invitation(inv: Invitation) -> str:
    """Return the ``EXN1-...`` code for ``inv``. Raises ``ValueError`` if ``inv`` is not well-formed."""
    _validate(inv)
    payload = {
        "v": _PAYLOAD_VERSION,
        "secret": _b64e(inv.secret),
        "connection_type": inv.connection_type,
        "connection_name": inv.connection_name,
        "invitation_id": inv.invitation_id,
        "initiator": {"node": inv.initiator_node, "user": inv.initiator_user},
        "app_version": inv.app_version,
        "features": list(inv.features),
        "tracker": {"type": inv.tracker_type, "version": inv.tracker_version, "url": inv.tracker_url},
        "node_url": inv.node_url,
        "instance": {"uid": inv.instance_uid, "name": inv.instance_name},
        "expires_at": int(inv.expires_at),
    }
    plaintext = zlib.compress(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(), 9
    )
    key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(_NONCE_LEN)
    blob = key + nonce + AESGCM(key).encrypt(nonce, plaintext, AAD)
    return PREFIX + _b64e(blob)


def open_invitation(code: str, *, now: float | None = None) -> Invitation:
    """Parse, authenticate and expiry-check a pasted code. Raises only :class:`InvitationError`."""
    inv = _open(code)
    if inv.is_expired(now):
        raise InvitationError(
            "expired",
            f"This invitation code expired on {inv.expires_at_text}. "
            "Ask the other node's admin for a new one.",
        )
    return inv


def invitation_fingerprint(code_or_secret: str | bytes | Invitation) -> str:
    """Short fingerprint (``"1a2b-3c4d"``) both admins can compare by phone.

    Accepts the secret bytes, an :class:`Invitation` or a code (expired codes are fingerprinted too).
    It is the first 32 bits of SHA-256(secret): enough to spot a mix-up, useless for guessing the secret.
    """
    if isinstance(code_or_secret, Invitation):
        secret = code_or_secret.secret
    elif isinstance(code_or_secret, bytes | bytearray | memoryview):
        secret = bytes(code_or_secret)
    elif isinstance(code_or_secret, str):
        secret = _open(code_or_secret).secret
    else:
        raise TypeError("invitation_fingerprint() takes a code, secret bytes or an Invitation")
    digest = hashlib.sha256(secret).hexdigest()[:8]
    return f"{digest[:4]}-{digest[4:]}"


def clean_code(code: str) -> str:
    """Undo typical copy/paste damage: surrounding quotes/brackets and any whitespace or line breaks."""
    if not isinstance(code, str):
        return ""
    text = "".join(code.translate(_INVISIBLE).split())  # drops spaces, tabs, newlines, NBSP, ... anywhere
    prev = None
    while prev != text:
        prev = text
        text = text.strip(_WRAPPERS)
    return text


# --- internals -------------------------------------------------------------------------------------------


def _open(code: str) -> Invitation:
    text = clean_code(code)
    if not text:
        raise InvitationError(
            "empty", "No invitation code was entered. Paste the code from the other node's admin page."
        )
    m = _VERSION_PREFIX_RE.match(text)
    if m is None:
        raise InvitationError(
            "bad_prefix",
            "This is not an exalate-node invitation code (those start with EXN1-). "
            "Check that you copied the invitation code and not another token or link.",
        )
    if m.group(0) != PREFIX:
        raise InvitationError(
            "unsupported_version",
            f"This invitation code uses format {m.group(0)[:-1]}, which this node does not understand. "
            "Upgrade this node, or ask the other node's admin for a code this version can read.",
        )
    body = text[len(PREFIX) :]
    if len(text) > _MAX_CODE_CHARS:
        _damaged("corrupted", "it is much longer than any invitation code")
    if len(body) * 3 // 4 < _KEY_LEN + _NONCE_LEN + _TAG_LEN + 1:  # checked before decoding: not flaky
        _damaged("truncated", "part of it is missing")
    blob = _b64d_strict(body)
    key, nonce, ct = blob[:_KEY_LEN], blob[_KEY_LEN : _KEY_LEN + _NONCE_LEN], blob[_KEY_LEN + _NONCE_LEN :]
    try:
        compressed = AESGCM(key).decrypt(nonce, ct, AAD)
    except InvalidTag:
        _damaged("corrupted")
    try:
        return _parse_payload(_inflate(compressed))
    except InvitationError:
        raise
    except Exception:  # authenticated but malformed payload (forged or buggy sender)
        _damaged("corrupted", "its content is not valid")


def _damaged(code: str, what: str = "part of it is missing or was changed while copying") -> NoReturn:
    raise InvitationError(code, f"This invitation code is damaged: {what}. {_COPY_AGAIN}")


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, _MAX_PLAINTEXT)
    if d.unconsumed_tail or not d.eof:
        raise ValueError("payload too large or incomplete")
    return out


def _parse_payload(raw: bytes) -> Invitation:
    def reject_constant(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    p = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
    if not isinstance(p, dict):
        raise ValueError("payload is not an object")
    if p.get("v") != _PAYLOAD_VERSION:
        raise InvitationError(
            "unsupported_version",
            "This invitation code was made by a newer node version that this node does not understand. "
            "Upgrade this node, or ask the other node's admin for a code this version can read.",
        )
    initiator, tracker, instance = _obj(p, "initiator"), _obj(p, "tracker"), _obj(p, "instance")
    features = p["features"]
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValueError("features must be a list of strings")
    known = {"v", "secret", "connection_type", "connection_name", "invitation_id", "initiator"}
    known |= {"app_version", "features", "tracker", "node_url", "instance", "expires_at"}
    inv = Invitation(
        secret=_b64d_strict(_str(p, "secret")),
        connection_type=_str(p, "connection_type"),
        connection_name=_str(p, "connection_name"),
        invitation_id=_str(p, "invitation_id"),
        initiator_node=_str(initiator, "node"),
        initiator_user=_str(initiator, "user"),
        app_version=_str(p, "app_version"),
        features=tuple(features),
        tracker_type=_str(tracker, "type"),
        tracker_version=_str(tracker, "version"),
        tracker_url=_str(tracker, "url"),
        node_url=_str(p, "node_url"),
        instance_uid=_str(instance, "uid"),
        instance_name=_str(instance, "name"),
        expires_at=p["expires_at"],
        extra={k: v for k, v in p.items() if k not in known},
    )
    _validate(inv)
    _check_urls(inv)
    return inv


def _check_urls(inv: Invitation) -> None:
    """Anyone can seal a code, so the URLs inside are checked before anything uses or shows them: the node
    URL must be http(s) with a host, no user name, query or fragment (the node's paths are appended to
    it); a tracker URL, when there is one, http(s)."""
    node = urlsplit(inv.node_url)
    try:
        check_url(inv.node_url, what="The other node's address", userinfo=False)
        if node.query or node.fragment:
            raise RefusedDestination(
                f"The other node's address {inv.node_url[:200]!r} has a query or fragment; it must be "
                "http(s)://host[:port][/path]."
            )
    except RefusedDestination as exc:
        raise InvitationError(
            "bad_url",
            f"This invitation code cannot be used: {exc} Ask the other node's admin to set NODE_URL to the "
            "address this node can reach it at, and to make a new code.",
        )
    if inv.tracker_url:
        try:
            check_url(inv.tracker_url, what="The other side's tracker URL")
        except RefusedDestination as exc:
            raise InvitationError(
                "bad_url",
                f"This invitation code cannot be used: {exc} Ask the other node's admin to correct the "
                "instance's URL and to make a new code.",
            )


def _validate(inv: Invitation) -> None:
    if not isinstance(inv.secret, bytes) or len(inv.secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    if inv.connection_type not in CONNECTION_TYPES:
        raise ValueError(f"connection_type must be one of {sorted(CONNECTION_TYPES)}")
    try:
        if str(uuid.UUID(inv.invitation_id)) != inv.invitation_id.lower():
            raise ValueError
    except (ValueError, AttributeError, TypeError):
        raise ValueError("invitation_id must be a UUID string") from None
    for name in (
        "connection_name",
        "initiator_node",
        "initiator_user",
        "app_version",
        "tracker_type",
        "tracker_version",
        "tracker_url",
        "node_url",
        "instance_uid",
        "instance_name",
    ):
        value = getattr(inv, name)
        if not isinstance(value, str) or len(value) > _MAX_TEXT_FIELD:
            raise ValueError(f"{name} must be a string of at most {_MAX_TEXT_FIELD} characters")
    if not all(isinstance(f, str) and len(f) <= 200 for f in inv.features) or len(inv.features) > 200:
        raise ValueError("features must be a list of short strings")
    exp = inv.expires_at
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise ValueError("expires_at must be epoch seconds")
    if not 0 <= exp <= _MAX_EXPIRY:
        raise ValueError("expires_at out of range")


def _obj(p: dict[str, Any], key: str) -> dict[str, Any]:
    value = p[key]
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object")
    return value


def _str(p: dict[str, Any], key: str) -> str:
    value = p[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _format_utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"epoch {ts}"


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d_strict(text: str) -> bytes:
    """Decode unpadded base64url, rejecting stray characters and non-canonical trailing bits.

    Python's decoder silently skips unknown characters and ignores unused trailing bits, which would let
    some single-character changes decode to the same bytes; here every character must matter.
    """
    if not _B64URL_RE.match(text) or len(text) % 4 == 1:
        _damaged("corrupted")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        _damaged("corrupted")
    if _b64e(data) != text:
        _damaged("corrupted")
    return data
