"""Node-to-node authentication: handshake key agreement and HMAC request/response signing.

Handshake (at invitation acceptance). Acceptor B and initiator A each make an ephemeral X25519 key pair and
prove knowledge of the invitation secret with an HMAC over a transcript that binds the invitation id, both
public keys and B's node info. The connection key is HKDF(X25519 shared secret, salt=invitation secret,
info=label || transcript). Consequences:

* a passive attacker who later learns the invitation code (the secret) cannot compute the key: it needs one
  of the ephemeral private keys, which are discarded after the handshake;
* an active attacker without the secret cannot swap public keys (the proofs would not verify);
* someone holding the code *before* acceptance could impersonate B; the DB layer limits that with
  single-use, short-lived, revocable invitations and shows a fingerprint to compare.

Requests. Every node-to-node request carries ``X-Exalate-Connection``, ``X-Exalate-Timestamp``,
``X-Exalate-Nonce`` and ``X-Exalate-Signature: v1=<hex>``, where the signature is HMAC-SHA256(connection
key) over these lines joined by ``\\n``::

    exalate-node/request/v1, connection id, METHOD, path?query, timestamp, nonce, sha256 hex(body)

The timestamp bounds replay to ``max_skew`` seconds; the caller must reject re-used nonces in that window (DB
table). Responses are signed over ``exalate-node/response/v1\\n<status>\\n<request nonce>\\n<sha256(body)>``
so a client knows its peer (not a proxy or captive portal) answered *this* request. Distinct labels keep a
signature of one kind from being replayed as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HEADER_CONNECTION = "X-Exalate-Connection"
HEADER_TIMESTAMP = "X-Exalate-Timestamp"
HEADER_NONCE = "X-Exalate-Nonce"
HEADER_SIGNATURE = "X-Exalate-Signature"

DEFAULT_MAX_SKEW = 300
KEY_BYTES = 32
ROLES = frozenset({"initiator", "acceptor"})

_REQUEST_LABEL = b"exalate-node/request/v1"
_RESPONSE_LABEL = b"exalate-node/response/v1"
_TRANSCRIPT_LABEL = "exalate-node/handshake/v1"
_PROOF_LABEL = b"exalate-node/handshake-proof/v1"
_CONNECTION_KEY_INFO = b"exalate-node/connection-key/v1"
_ROTATION_LABEL = "exalate-node/key-rotation/v1"

_CONNECTION_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_NONCE_RE = re.compile(r"^[0-9a-fA-F]{16,64}$")
_SIGNATURE_RE = re.compile(r"^v1=([0-9a-fA-F]{64})$")
_METHOD_RE = re.compile(r"^[A-Z]{1,16}$")


class SignatureError(Exception):
    """A request or response failed authentication.

    ``.reason`` is one of ``missing_header``, ``malformed_header``, ``stale_timestamp``, ``bad_signature``;
    ``str(err)`` says what went wrong and what to check. Messages never contain the key or expected MAC.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request claimed; the caller still has to record ``nonce`` to stop replays."""

    connection_id: str
    timestamp: int
    nonce: str


# --- handshake -------------------------------------------------------------------------------------------


def new_keypair() -> tuple[bytes, bytes]:
    """Fresh ephemeral X25519 key pair as ``(private_raw_32, public_raw_32)``."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def handshake_transcript(
    *, invitation_id: str, initiator_pub: bytes | None, acceptor_pub: bytes, acceptor_info: dict
) -> bytes:
    """Canonical bytes (sorted-key compact JSON) of everything the handshake binds.

    B's first proof uses ``initiator_pub=None`` (A has no key yet); A's proof and the key derivation use the
    full transcript. ``acceptor_info`` must be JSON-serialisable (no NaN/inf).
    """
    if initiator_pub is not None:
        _check_pub(initiator_pub, "initiator_pub")
    _check_pub(acceptor_pub, "acceptor_pub")
    if not isinstance(invitation_id, str) or not invitation_id:
        raise ValueError("invitation_id must be a non-empty string")
    if not isinstance(acceptor_info, dict):
        raise ValueError("acceptor_info must be a dict")
    doc = {
        "v": _TRANSCRIPT_LABEL,
        "invitation_id": invitation_id,
        "initiator_pub": None if initiator_pub is None else initiator_pub.hex(),
        "acceptor_pub": acceptor_pub.hex(),
        "acceptor_info": acceptor_info,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def handshake_proof(secret: bytes, transcript: bytes, role: str) -> str:
    """HMAC-SHA256(secret, label || role || transcript) as hex; ``role`` is "initiator" or "acceptor"."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}")
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("secret must be non-empty bytes")
    msg = _PROOF_LABEL + b"\n" + role.encode() + b"\n" + transcript
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def verify_handshake_proof(secret: bytes, transcript: bytes, role: str, proof: str) -> bool:
    """Constant-time check of a peer's proof. Returns False (never raises) for any malformed proof."""
    if not isinstance(proof, str):
        return False
    try:
        expected = handshake_proof(secret, transcript, role).encode()
        given = proof.strip().lower().encode("ascii")
    except (ValueError, TypeError, UnicodeError):
        return False
    return hmac.compare_digest(expected, given)


def derive_connection_key(*, private: bytes, peer_public: bytes, secret: bytes, transcript: bytes) -> bytes:
    """32-byte connection key: HKDF-SHA256(X25519(private, peer_public), salt=secret, info=label||transcript).

    Raises ``ValueError`` for malformed keys or a low-order peer key (all-zero shared secret).
    """
    if not isinstance(private, bytes) or len(private) != 32:
        raise ValueError("private must be 32 raw bytes")
    _check_pub(peer_public, "peer_public")
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("secret must be non-empty bytes")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError:
        # OpenSSL refuses low-order points itself; normalise its message.
        raise ValueError("peer public key is invalid (low-order point); refusing the handshake") from None
    if not any(shared):
        raise ValueError("peer public key is invalid (all-zero shared secret); refusing the handshake")
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=secret, info=_CONNECTION_KEY_INFO + transcript
    )
    return hkdf.derive(shared)


def rotation_transcript(
    *, initiator_connection: str, rotation: str, initiator_pub: bytes, acceptor_pub: bytes
) -> bytes:
    """What both sides of a key rotation bind the new key to: the initiating side's connection id, the
    rotation id and both ephemeral public keys (canonical JSON)."""
    _check_pub(initiator_pub, "initiator_pub")
    _check_pub(acceptor_pub, "acceptor_pub")
    return json.dumps(
        {
            "label": _ROTATION_LABEL,
            "connection": initiator_connection,
            "rotation": rotation,
            "initiator_pub": initiator_pub.hex(),
            "acceptor_pub": acceptor_pub.hex(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def derive_rotated_key(*, private: bytes, peer_public: bytes, old_key: bytes, transcript: bytes) -> bytes:
    """The next connection key: a fresh X25519 exchange, salted with the current key.

    The request that carries the public keys is signed with the current key, so only the two nodes take
    part; the fresh exchange means a key stolen later cannot be used to compute the next one."""
    return derive_connection_key(
        private=private, peer_public=peer_public, secret=old_key, transcript=transcript
    )


def fingerprint(key: bytes) -> str:
    """A short, non-secret fingerprint of a connection key (``"1a2b-3c4d"``): equal on both sides after a
    rotation, so two admins can compare them."""
    digest = hashlib.sha256(b"exalate-node/key-fingerprint/v1" + key).hexdigest()
    return f"{digest[:4]}-{digest[4:8]}"


def decode_public_key(value: Any, name: str) -> bytes:
    """A base64 X25519 public key from a request body; ``ValueError`` (naming the field) otherwise."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"'{name}' must be a base64 X25519 public key (32 bytes).")
    return raw


def _check_pub(pub: Any, name: str) -> None:
    if not isinstance(pub, bytes) or len(pub) != 32:
        raise ValueError(f"{name} must be 32 raw bytes (X25519 public key)")


# --- requests --------------------------------------------------------------------------------------------


def new_nonce() -> str:
    """32 random hex characters."""
    return secrets.token_hex(16)


def sign_request(
    *,
    key: bytes,
    connection_id: str,
    method: str,
    path: str,
    body: bytes,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate this request. ``path`` is the path plus ``?query`` exactly as sent."""
    _check_key(key)
    if not isinstance(connection_id, str) or not _CONNECTION_ID_RE.match(connection_id):
        raise ValueError("connection_id must be 1-128 chars of [A-Za-z0-9._:-]")
    nonce = new_nonce() if nonce is None else nonce
    if not isinstance(nonce, str) or not _NONCE_RE.match(nonce):
        raise ValueError("nonce must be 16-64 hex characters")
    timestamp = int(time.time() if now is None else now)
    signature = _request_mac(key, connection_id, method, path, timestamp, nonce, body)
    return {
        HEADER_CONNECTION: connection_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: f"v1={signature}",
    }


def peek_connection_id(headers: Mapping[str, str]) -> str:
    """The claimed connection id (unauthenticated!) so the caller can load the key before verifying."""
    value = _header(headers, HEADER_CONNECTION)
    if not _CONNECTION_ID_RE.match(value):
        raise _malformed(HEADER_CONNECTION, "1-128 characters of letters, digits and . _ : -")
    return value


def verify_request(
    *,
    key: bytes,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: float | None = None,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> SignedRequest:
    """Check a request's signature and freshness; returns the claimed id, timestamp and nonce.

    ``headers`` may be a plain dict (any case), Django's ``request.headers`` or ``request.META``.
    The signature is checked before the clock, so ``stale_timestamp`` is only reported for genuine
    requests (a useful diagnosis) and forgeries always get ``bad_signature``.
    """
    _check_key(key)
    connection_id = peek_connection_id(headers)
    ts_text = _header(headers, HEADER_TIMESTAMP)
    nonce = _header(headers, HEADER_NONCE)
    sig_text = _header(headers, HEADER_SIGNATURE)
    if not _TIMESTAMP_RE.match(ts_text):
        raise _malformed(HEADER_TIMESTAMP, "whole Unix seconds")
    if not _NONCE_RE.match(nonce):
        raise _malformed(HEADER_NONCE, "16-64 hex characters")
    given = _parse_signature(sig_text)
    timestamp = int(ts_text)
    try:
        expected = _request_mac(key, connection_id, method, path, timestamp, nonce, body)
    except ValueError:
        # Method/path we could not even canonicalise: it cannot carry a valid signature.
        raise _bad_signature() from None
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise _bad_signature()
    skew = timestamp - int(time.time() if now is None else now)
    if abs(skew) > max_skew:
        raise SignatureError(
            "stale_timestamp",
            f"The request's timestamp is {abs(skew)} s {'ahead of' if skew > 0 else 'behind'} this node's "
            f"clock (limit {max_skew} s). Check that both machines keep time with NTP.",
        )
    # Lower-cased so a case-sensitive or case-insensitive replay table behaves the same.
    return SignedRequest(connection_id=connection_id, timestamp=timestamp, nonce=nonce.lower())


def _request_mac(
    key: bytes, connection_id: str, method: str, path: str, timestamp: int, nonce: str, body: bytes
) -> str:
    method = method.upper() if isinstance(method, str) else method
    if not isinstance(method, str) or not _METHOD_RE.match(method):
        raise ValueError("method must be an HTTP method name")
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or any(ord(c) < 0x20 or c == "\x7f" for c in path)
    ):
        raise ValueError("path must start with '/' and contain no control characters")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be bytes")
    canonical = b"\n".join(
        [
            _REQUEST_LABEL,
            connection_id.encode(),
            method.encode(),
            path.encode("utf-8", "surrogatepass"),
            str(timestamp).encode(),
            nonce.encode(),  # exactly as sent: a case change must not yield a "new" valid nonce
            hashlib.sha256(body).hexdigest().encode(),
        ]
    )
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


# --- responses -------------------------------------------------------------------------------------------


def sign_response(*, key: bytes, status: int, body: bytes, request_nonce: str) -> dict[str, str]:
    """``{"X-Exalate-Signature": "v1=<hex>"}`` binding status, body and the request's nonce."""
    _check_key(key)
    if not isinstance(request_nonce, str) or not _NONCE_RE.match(request_nonce):
        raise ValueError("request_nonce must be 16-64 hex characters")
    return {HEADER_SIGNATURE: f"v1={_response_mac(key, status, body, request_nonce)}"}


def verify_response(
    *, key: bytes, headers: Mapping[str, str], status: int, body: bytes, request_nonce: str
) -> None:
    """Raise :class:`SignatureError` unless the response was signed by the peer for this request."""
    _check_key(key)
    given = _parse_signature(_header(headers, HEADER_SIGNATURE))
    try:
        expected = _response_mac(key, status, body, request_nonce)
    except (ValueError, TypeError):
        raise _bad_signature("response") from None
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise _bad_signature("response")


def _response_mac(key: bytes, status: int, body: bytes, request_nonce: str) -> str:
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
        raise ValueError("status must be an HTTP status code")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be bytes")
    canonical = b"\n".join(
        [
            _RESPONSE_LABEL,
            str(status).encode(),
            request_nonce.encode(),
            hashlib.sha256(body).hexdigest().encode(),
        ]
    )
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


# --- helpers ---------------------------------------------------------------------------------------------


def _check_key(key: Any) -> None:
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError("key must be bytes (the 32-byte connection key)")


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive lookup that also understands Django's ``request.META`` (``HTTP_X_...``)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        meta_name = "HTTP_" + name.upper().replace("-", "_")
        for k, v in headers.items():
            if isinstance(k, str) and (k.lower() == lowered or k == meta_name):
                value = v
                break
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SignatureError(
            "missing_header",
            f"The request has no {name} header. The sender is not an exalate-node peer, or a proxy "
            "between the nodes strips X-Exalate-* headers.",
        )
    if not isinstance(value, str):
        raise _malformed(name, "text")
    return value.strip()


def _parse_signature(value: str) -> str:
    m = _SIGNATURE_RE.match(value)
    if m is None:
        raise _malformed(HEADER_SIGNATURE, "v1= followed by 64 hex characters")
    return m.group(1).lower()


def _malformed(name: str, expected: str) -> SignatureError:
    return SignatureError(
        "malformed_header",
        f"The {name} header is malformed (expected {expected}). The peer may run an incompatible "
        "exalate-node version, or a proxy changed the header.",
    )


def _bad_signature(what: str = "request") -> SignatureError:
    return SignatureError(
        "bad_signature",
        f"The {what} signature does not match. Either the {what} was changed on the way (e.g. by a proxy "
        "that rewrites paths or bodies), or the two nodes no longer share the same connection key; if it "
        "persists, re-establish the connection with a new invitation.",
    )
