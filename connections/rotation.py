"""Connection key rotation: both nodes switch to a new key without stopping the sync.

1. The rotating side (A) makes an ephemeral X25519 key pair and sends ``POST /node/v1/rotate-key/`` with a
   rotation id and its public key, signed with the current key K1.
2. The peer (B) checks the signature, makes its own pair, derives K2 = HKDF(X25519, salt=K1, info=label ||
   transcript), and switches in one transaction: key K2, previous key K1. It answers with its public key,
   signed with K1 (the key A verifies with).
3. A derives the same K2 and switches: key K2, previous key K1 for ``SKEW_GRACE`` (messages B signed with K1
   just before its switch). Then A confirms with ``POST /node/v1/rotate-key/confirm/`` signed with K2, and B
   shortens its own grace for K1 to ``SKEW_GRACE``.

Until A confirms, B accepts K1 for ``UNCONFIRMED_GRACE`` (A may not have received the answer: it retries the
rotation, signed with K1, and B derives a fresh key again). A request signed with K1 cannot be valid longer
than the signature's freshness window after its signer switched, which is what ``SKEW_GRACE`` covers.

Secrecy: K2 comes from a fresh exchange, so someone who steals K1 after the rotation cannot compute K2, and
the new key is never sent. Someone holding K1 *during* the rotation could sit in the middle; rotate after
fixing a leak, not during one (or re-establish the connection with a new invitation).
"""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connections import signing
from connections.models import Connection

SKEW_GRACE = timedelta(seconds=signing.DEFAULT_MAX_SKEW + 60)
UNCONFIRMED_GRACE = timedelta(hours=24)
# How long a started rotation blocks another one (on this side, and the peer's rotation of the same pair).
IN_FLIGHT = timedelta(seconds=60)


class RotationError(Exception):
    """The rotation did not happen (or did not finish): ``str()`` says why and what to do."""


class RotationConflict(ValueError):
    """The peer asked to rotate while this side is rotating the same connection."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _rotation_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError("'rotation' must be a UUID.") from None


def key_fingerprint(connection: Connection) -> str:
    """The current key's short fingerprint (equal on both nodes), or "" when the connection has no key."""
    return signing.fingerprint(bytes.fromhex(connection.key)) if connection.key else ""


def rotate_key(connection: Connection) -> Connection:
    """Rotate the key of a connection to another node (this node starts it). Returns the updated connection.

    Raises :class:`RotationError` with what to do when the connection cannot rotate, or the peer did not
    answer (nothing changed then: the old key keeps working, retry later).
    """
    if connection.is_local:
        raise RotationError(
            "A local connection has no key: both sides live in this node's database. Nothing to rotate."
        )
    if not connection.key or connection.status == Connection.Status.PENDING:
        raise RotationError(
            "This connection has no key yet: it is waiting for the other node to accept the invitation."
        )
    if connection.polled_by_peer:
        raise RotationError(
            "This node cannot call the other node (it fetches our messages instead): start the rotation on "
            f"the other node ({connection.peer_node_name or 'the peer'})."
        )
    now = timezone.now()
    started = (
        Connection.objects.filter(pk=connection.pk)
        .filter(Q(rotation_started_at__isnull=True) | Q(rotation_started_at__lt=now - IN_FLIGHT))
        .update(rotation_started_at=now)
    )
    if not started:
        raise RotationError(
            "A rotation of this connection is already running; wait a minute and check again."
        )
    try:
        return _rotate(connection)
    finally:
        Connection.objects.filter(pk=connection.pk).update(rotation_started_at=None)


def _rotate(connection: Connection) -> Connection:
    from connections.transport import PeerError, PeerUnreachable, peer_request

    old_key = connection.key
    rotation = str(uuid.uuid4())
    private, public = signing.new_keypair()
    try:
        answer = peer_request(connection, "POST", "/rotate-key/", {"rotation": rotation, "pub": _b64(public)})
    except PeerUnreachable as exc:
        raise RotationError(f"The key was not rotated: {exc} Nothing changed; retry when it is reachable.")
    except PeerError as exc:
        raise RotationError(f"The other node refused the rotation: {exc.detail} Nothing changed here.")
    try:
        peer_pub = signing.decode_public_key(answer.body.get("pub"), "pub")
        transcript = signing.rotation_transcript(
            initiator_connection=str(connection.uid),
            rotation=rotation,
            initiator_pub=public,
            acceptor_pub=peer_pub,
        )
        new_key = signing.derive_rotated_key(
            private=private, peer_public=peer_pub, old_key=bytes.fromhex(old_key), transcript=transcript
        )
    except ValueError as exc:
        raise RotationError(
            f"The other node's answer is not usable ({exc}). Nothing changed here; the other node accepts "
            "the current key for 24 hours: retry the rotation."
        )
    now = timezone.now()
    with transaction.atomic():
        # The key is encrypted at rest (not comparable in SQL): lock the row and compare here.
        current = Connection.objects.select_for_update().get(pk=connection.pk)
        if current.key != old_key:
            raise RotationError("Another rotation of this connection finished first; check its fingerprint.")
        Connection.objects.filter(pk=connection.pk).update(
            key=new_key.hex(), previous_key=old_key, previous_key_until=now + SKEW_GRACE, key_rotated_at=now
        )
    connection.refresh_from_db()
    try:
        peer_request(connection, "POST", "/rotate-key/confirm/", {"rotation": rotation})
    except (PeerUnreachable, PeerError):
        # The rotation stands (both sides hold the new key); the peer keeps accepting the old one for
        # UNCONFIRMED_GRACE instead of SKEW_GRACE.
        connection.status_message = (
            "Key rotated, but the other node did not confirm: it accepts the previous key for 24 hours."
        )
        connection.save(update_fields=["status_message", "updated_at"])
    return connection


def answer_rotation(connection: Connection, verified_with: bytes, data: Any) -> dict[str, str]:
    """The peer's side of step 2: switch to the new key; returns the answer (signed by the caller with the
    key that verified the request). Raises ``ValueError`` for a malformed request (nothing changes)."""
    if not isinstance(data, dict):
        raise ValueError("The body must be a JSON object with 'rotation' and 'pub'.")
    rotation = _rotation_id(data.get("rotation"))
    peer_pub = signing.decode_public_key(data.get("pub"), "pub")
    started = connection.rotation_started_at
    if started and started > timezone.now() - IN_FLIGHT:
        raise RotationConflict(
            "This node is rotating the key of this connection itself right now; retry in a minute."
        )
    private, public = signing.new_keypair()
    transcript = signing.rotation_transcript(
        initiator_connection=str(connection.peer_uid),
        rotation=rotation,
        initiator_pub=peer_pub,
        acceptor_pub=public,
    )
    new_key = signing.derive_rotated_key(
        private=private, peer_public=peer_pub, old_key=verified_with, transcript=transcript
    )
    now = timezone.now()
    with transaction.atomic():
        Connection.objects.filter(pk=connection.pk).update(
            key=new_key.hex(),
            previous_key=verified_with.hex(),
            previous_key_until=now + UNCONFIRMED_GRACE,
            key_rotated_at=now,
        )
    return {"rotation": rotation, "pub": _b64(public)}


def confirm_rotation(connection: Connection, verified_with: bytes) -> bool:
    """Step 3 on the peer: the other node proved it holds the new key; shorten the old key's grace."""
    if verified_with.hex() != connection.key or not connection.previous_key_until:
        return False  # signed with the old key: the other node has not switched, keep the long grace
    until = min(connection.previous_key_until, timezone.now() + SKEW_GRACE)
    Connection.objects.filter(pk=connection.pk).update(previous_key_until=until)
    return True
