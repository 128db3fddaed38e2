"""Connecting two nodes: initiate (a pending connection and its invitation code), accept (the handshake).

The initiating admin gets a sealed code (``connections.invitation``) and gives it to the other admin. The
accepting node opens it and POSTs ``/node/v1/handshake/`` to the initiator with its ephemeral X25519 public
key, what it is (``acceptor_info``) and a proof that it holds the invitation secret. The initiator checks the
invitation (known, unused, not revoked, not expired) and the proof, marks the invitation used (a conditional
UPDATE, so two racing accepts cannot both win), derives the connection key and goes active; it answers with
its own ephemeral key and proof. The acceptor checks that proof, derives the same key and creates its side.
Both sides publish default rules. The key comes from the ephemeral exchange bound to the secret and the
whole transcript (``connections.signing``), so a leaked code is worth nothing once used.

Every failure raises :class:`HandshakeError` (or ``InvitationError`` for a damaged/expired code) whose
message says what went wrong and what to do, and leaves both sides as they were.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

import exalate_node
from connections import signing
from connections.invitation import Invitation as SealedInvitation
from connections.invitation import (
    InvitationError,
    invitation_fingerprint,
    new_secret,
    open_invitation,
    seal_invitation,
)
from connections.models import Connection, Invitation
from exalate_node import outbound
from exalate_node.redaction import redact
from instances.models import Instance

logger = logging.getLogger(__name__)

FEATURES = ("replica-1", "batches", "attachments-stream", "private-mode")
REQUIRED_FEATURES = frozenset({"replica-1"})
_TEXT_LIMIT = 500


class HandshakeError(Exception):
    """Connecting failed; nothing changed on this side. ``code`` is stable, ``message`` is for the admin,
    ``status`` is the HTTP status the initiator answers with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        message = redact(message)  # it may quote the other node's answer
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _ttl_hours() -> float:
    return float(getattr(settings, "INVITATION_TTL_HOURS", 72))


def _instance_info(instance: Instance) -> dict[str, str]:
    return {
        "uid": instance.uid,
        "name": instance.name,
        "tracker_type": instance.tracker_type,
        "url": instance.url or "",
        "tracker_version": instance.tracker_version or "",
    }


# --- initiator ----------------------------------------------------------------------------------------------


@transaction.atomic
def connection_initiate(
    *, name: str, local_instance: Instance, type: str = Connection.Type.SCRIPT, user: str = ""
) -> tuple[Connection, str]:
    """A pending connection on ``local_instance`` and the invitation code to give the other admin."""
    if not local_instance.is_local:
        raise HandshakeError(
            "not_local", f"{local_instance.name} is a remote instance; pick an instance of this node."
        )
    if type not in Connection.Type.values:
        raise HandshakeError("bad_type", f"Unknown connection type {type!r}; use script or basic.")
    connection = Connection.objects.create(
        name=name,
        type=type,
        status=Connection.Status.PENDING,
        local_instance=local_instance,
        initiated_by=Connection.Side.LOCAL,
    )
    _, code = invitation_create(connection=connection, user=user)
    return connection, code


@transaction.atomic
def invitation_create(*, connection: Connection, user: str = "") -> tuple[Invitation, str]:
    """A fresh invitation code for a pending connection (e.g. after the first one expired)."""
    if connection.status != Connection.Status.PENDING:
        raise HandshakeError("not_pending", "This connection is already established; it needs no invitation.")
    secret = new_secret()
    expires = timezone.now() + timedelta(hours=_ttl_hours())
    invitation = Invitation.objects.create(
        connection=connection,
        secret=secret.hex(),
        fingerprint=invitation_fingerprint(secret),
        expires_at=expires,
    )
    instance = connection.local_instance
    code = seal_invitation(
        SealedInvitation(
            secret=secret,
            connection_type=connection.type,
            connection_name=connection.name,
            invitation_id=str(invitation.invitation_id),
            initiator_node=settings.NODE_NAME,
            initiator_user=user or "",
            app_version=exalate_node.__version__,
            features=FEATURES,
            tracker_type=instance.tracker_type,
            tracker_version=instance.tracker_version or "",
            tracker_url=instance.url or "",
            node_url=settings.NODE_URL,
            instance_uid=instance.uid,
            instance_name=instance.name,
            expires_at=int(expires.timestamp()),
        )
    )
    return invitation, code


def invitation_revoke(*, invitation: Invitation) -> None:
    """Revoke an unused invitation: the code is refused from now on."""
    Invitation.objects.filter(pk=invitation.pk, revoked_at__isnull=True, used_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def _b64_key(value: Any, name: str) -> bytes:
    try:
        return signing.decode_public_key(value, name)
    except ValueError as exc:
        raise HandshakeError("bad_request", str(exc))


def _text(data: Any, name: str, *, required: bool = True, limit: int = _TEXT_LIMIT) -> str:
    value = data.get(name, "") if isinstance(data, dict) else None
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        raise HandshakeError("bad_request", f"'{name}' must be a string of at most {limit} characters.")
    return value


def _url(data: dict[str, Any], name: str, *, node: bool = False) -> str:
    """An optional http(s) URL (the node's own address: without a user name, query or fragment)."""
    value = _text(data, name, required=False)
    if value:
        parts = urlsplit(value)
        try:
            outbound.check_url(value, what=f"'{name}'", userinfo=not node)
        except outbound.RefusedDestination as exc:
            raise HandshakeError("bad_request", str(exc))
        if node and (parts.query or parts.fragment):
            raise HandshakeError(
                "bad_request", f"'{name}' must be http(s)://host[:port][/path], without a query."
            )
    return value


def _check_info(info: Any) -> dict[str, Any]:
    """The acceptor's (or initiator's) description of itself: shape and sizes, not trust."""
    if not isinstance(info, dict):
        raise HandshakeError("bad_request", "'acceptor_info' must be an object.")
    _url(info, "node_url", node=True)
    _text(info, "node_name", required=False, limit=200)
    _text(info, "app_version", required=False, limit=50)
    try:
        uuid.UUID(_text(info, "connection_uid", limit=64))
    except ValueError:
        raise HandshakeError("bad_request", "'connection_uid' must be a UUID.")
    features = info.get("features")
    if not isinstance(features, list) or len(features) > 100 or not all(isinstance(f, str) for f in features):
        raise HandshakeError("bad_request", "'features' must be a list of strings.")
    _check_instance(info.get("instance"))
    return info


def _check_instance(instance: Any) -> dict[str, Any]:
    if not isinstance(instance, dict):
        raise HandshakeError("bad_request", "'instance' must be an object.")
    _text(instance, "uid", limit=64)
    _text(instance, "name", limit=200)
    _text(instance, "tracker_type", limit=20)
    _url(instance, "url")
    _text(instance, "tracker_version", required=False, limit=50)
    return instance


def _missing_features(features: list[str]) -> list[str]:
    return sorted(REQUIRED_FEATURES - set(features))


def handshake_answer(data: Any) -> dict[str, Any]:
    """Initiator side of ``POST /node/v1/handshake/``: verify, activate, answer. Raises HandshakeError."""
    if not isinstance(data, dict):
        raise HandshakeError("bad_request", "The handshake body must be a JSON object.")
    invitation_id = _text(data, "invitation_id", limit=64)
    acceptor_pub = _b64_key(data.get("acceptor_pub"), "acceptor_pub")
    info = _check_info(data.get("acceptor_info"))
    proof = _text(data, "proof", limit=128)
    try:
        inv_uuid = uuid.UUID(invitation_id)
    except ValueError:
        inv_uuid = None
    invitation = (
        Invitation.objects.select_related("connection", "connection__local_instance")
        .filter(invitation_id=inv_uuid)
        .first()
        if inv_uuid
        else None
    )
    if invitation is None:
        raise HandshakeError(
            "unknown_invitation",
            f"The node '{settings.NODE_NAME}' has no such invitation: it was issued by another node or its "
            "connection was deleted. Ask the other admin for a new invitation code.",
            404,
        )
    secret = bytes.fromhex(invitation.secret)
    transcript0 = signing.handshake_transcript(
        invitation_id=invitation_id, initiator_pub=None, acceptor_pub=acceptor_pub, acceptor_info=info
    )
    if not signing.verify_handshake_proof(secret, transcript0, "acceptor", proof):
        raise HandshakeError(
            "bad_proof",
            "The invitation proof does not match: the code was altered or belongs to another invitation. "
            "Ask the other admin for a new invitation code.",
            403,
        )
    _check_usable(invitation)
    missing = _missing_features(info["features"])
    if missing:
        raise HandshakeError(
            "incompatible",
            f"The accepting node lacks required features ({', '.join(missing)}). Upgrade it, then try again.",
            400,
        )
    conn = invitation.connection
    instance_info = _check_instance(info["instance"])
    if instance_info["uid"] == conn.local_instance.uid:
        raise HandshakeError(
            "same_instance", "An instance cannot be connected to itself; accept on another instance.", 400
        )

    private, public = signing.new_keypair()
    transcript = signing.handshake_transcript(
        invitation_id=invitation_id, initiator_pub=public, acceptor_pub=acceptor_pub, acceptor_info=info
    )
    try:
        key = signing.derive_connection_key(
            private=private, peer_public=acceptor_pub, secret=secret, transcript=transcript
        )
    except ValueError as exc:
        raise HandshakeError("bad_request", f"The acceptor's key is not usable: {exc}.", 400)
    peer_private = bool(info.get("private")) or not info.get("node_url")
    with transaction.atomic():
        now = timezone.now()
        won = Invitation.objects.filter(
            pk=invitation.pk, used_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
        ).update(used_at=now)
        if won != 1:
            raise _used_error()
        remote = _remote_instance(instance_info, node_url=info.get("node_url") or "")
        activated = Connection.objects.filter(pk=conn.pk, status=Connection.Status.PENDING).update(
            status=Connection.Status.ACTIVE,
            key=key.hex(),
            peer_uid=uuid.UUID(info["connection_uid"]),
            remote_node_url=(info.get("node_url") or "").rstrip("/"),
            private_mode=peer_private,
            remote_instance=remote,
            activated_at=now,
            status_message="",
            peer_node_name=(info.get("node_name") or "")[:200],
            peer_app_version=(info.get("app_version") or "")[:50],
            peer_features=info["features"],
        )
        if activated != 1:
            raise _used_error()
        Invitation.objects.filter(connection=conn, used_at__isnull=True, revoked_at__isnull=True).update(
            revoked_at=now
        )
        conn.refresh_from_db()
        _publish_defaults(conn)
    return {
        "initiator_pub": base64.b64encode(public).decode(),
        "proof": signing.handshake_proof(secret, transcript, "initiator"),
        "connection_uid": str(conn.uid),
        "node_name": settings.NODE_NAME,
        "app_version": exalate_node.__version__,
        "features": list(FEATURES),
        "instance": _instance_info(conn.local_instance),
    }


def _used_error() -> HandshakeError:
    return HandshakeError(
        "used", "This invitation code was already used: each code connects once. Ask for a new code.", 410
    )


def _check_usable(invitation: Invitation) -> None:
    if invitation.revoked_at is not None:
        raise HandshakeError(
            "revoked", "This invitation was revoked by the other node's admin. Ask them for a new code.", 410
        )
    if invitation.used_at is not None or invitation.connection.status != Connection.Status.PENDING:
        raise _used_error()
    if invitation.expires_at <= timezone.now():
        raise HandshakeError(
            "expired",
            f"This invitation code expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask for a new code.",
            410,
        )


def _remote_instance(info: dict[str, Any], *, node_url: str) -> Instance:
    """The remote instance record for the peer's instance (one per instance UID, shared by connections)."""
    fields = {
        "name": info["name"][:200],
        "tracker_type": info["tracker_type"][:20],
        "url": (info.get("url") or "")[:500],
        "tracker_version": (info.get("tracker_version") or "")[:50],
        "node_url": node_url[:500],
    }
    existing = Instance.objects.filter(uid=info["uid"]).first()
    if existing is None:
        return Instance.objects.create(uid=info["uid"], kind=Instance.Kind.REMOTE, **fields)
    if existing.kind == Instance.Kind.REMOTE:
        Instance.objects.filter(pk=existing.pk).update(**fields)
        existing.refresh_from_db()
    # A *local* instance with that UID means both ends live in one database (tests, or a node connected
    # to itself over HTTP): keep it as it is.
    return existing


def _publish_defaults(conn: Connection) -> None:
    from syncrules.models import RulesVersion
    from syncrules.services import rules_publish_defaults

    if not RulesVersion.objects.filter(connection=conn).exists():
        rules_publish_defaults(connection=conn)


# --- acceptor -----------------------------------------------------------------------------------------------


def check_node_address(inv: SealedInvitation) -> None:
    """With OUTBOUND_REFUSE_PRIVATE_ADDRESSES, refuse a code whose node URL resolves to a refused address
    (at "Check code", before anything is sent). Raises InvitationError."""
    parts = urlsplit(inv.node_url)
    try:
        outbound.check_host(parts.hostname or "", parts.port)
    except outbound.RefusedDestination as exc:
        raise InvitationError(
            "refused_address", f"This invitation code names {inv.node_url} as the other node's address: {exc}"
        )


def preview_invitation(code: str) -> dict[str, Any]:
    """What a code would connect to, for the admin to check before accepting. Raises InvitationError."""
    inv = open_invitation(code)
    check_node_address(inv)
    return {
        "connection_name": inv.connection_name,
        "connection_type": inv.connection_type,
        "node": {"name": inv.initiator_node, "url": inv.node_url, "user": inv.initiator_user},
        "app_version": inv.app_version,
        "features": list(inv.features),
        "tracker": {"type": inv.tracker_type, "version": inv.tracker_version, "url": inv.tracker_url},
        "instance": {"uid": inv.instance_uid, "name": inv.instance_name},
        "expires_at": datetime.fromtimestamp(inv.expires_at, tz=UTC).isoformat(),
        "fingerprint": invitation_fingerprint(inv),
    }


def connection_accept(
    *, code: str, local_instance: Instance, user: str = "", name: str | None = None, private: bool = False
) -> Connection:
    """Accept an invitation code from another node: handshake, then this side's connection (active).

    ``private``: this node has no URL the other node can call; it polls the other node for messages.
    Raises ``InvitationError`` (damaged/expired code) or :class:`HandshakeError`; nothing changes then.
    """
    from connections.transport import describe_network_error, http_request, node_url, refused_answer

    inv = open_invitation(code)
    check_node_address(inv)
    if not local_instance.is_local:
        raise HandshakeError(
            "not_local", f"{local_instance.name} is a remote instance; pick an instance of this node."
        )
    if inv.instance_uid == local_instance.uid:
        raise HandshakeError(
            "same_instance",
            "This code was made for this very instance; an instance cannot be connected to itself. "
            "Accept it on another instance or another node.",
        )
    missing = _missing_features(list(inv.features))
    if missing:
        raise HandshakeError(
            "incompatible",
            f"The other node ({inv.app_version}) lacks required features ({', '.join(missing)}). "
            "Upgrade it, then ask for a new code.",
        )
    if not private and not settings.NODE_URL:
        raise HandshakeError(
            "no_node_url", "This node has no NODE_URL: set it, or accept in private mode (this node polls)."
        )
    connection_uid = uuid.uuid4()
    private_key, public = signing.new_keypair()
    info = {
        "node_url": "" if private else settings.NODE_URL,
        "node_name": settings.NODE_NAME,
        "app_version": exalate_node.__version__,
        "features": list(FEATURES),
        "connection_uid": str(connection_uid),
        "private": bool(private),
        "instance": _instance_info(local_instance),
    }
    transcript0 = signing.handshake_transcript(
        invitation_id=inv.invitation_id, initiator_pub=None, acceptor_pub=public, acceptor_info=info
    )
    body = json.dumps(
        {
            "invitation_id": inv.invitation_id,
            "acceptor_pub": base64.b64encode(public).decode(),
            "acceptor_info": info,
            "proof": signing.handshake_proof(inv.secret, transcript0, "acceptor"),
        },
        separators=(",", ":"),
    ).encode()
    url = node_url(inv.node_url, "/handshake/")
    try:
        resp = http_request("POST", url, data=body, headers={"Content-Type": "application/json"})
        content = resp.content
    except (requests.RequestException, outbound.DeadlinePassed) as exc:
        raise HandshakeError("unreachable", describe_network_error(inv.node_url, exc), 502)
    except outbound.OutboundError as exc:
        error = refused_answer(inv.node_url, exc)
        raise HandshakeError(error.code, f"Could not connect: {error.detail}", 502)
    answer = _parse_answer(resp.status_code, content, inv.node_url)

    initiator_pub = _b64_key(answer.get("initiator_pub"), "initiator_pub")
    transcript = signing.handshake_transcript(
        invitation_id=inv.invitation_id, initiator_pub=initiator_pub, acceptor_pub=public, acceptor_info=info
    )
    if not signing.verify_handshake_proof(inv.secret, transcript, "initiator", answer.get("proof")):
        raise HandshakeError(
            "bad_proof",
            f"The answer from {inv.node_url} does not prove it holds the invitation: something between the "
            "nodes may be impersonating it. Check the node URL and the network, then ask for a new code.",
            502,
        )
    try:
        peer_uid = uuid.UUID(_text(answer, "connection_uid", limit=64))
        remote_info = _check_instance(answer.get("instance"))
        key = signing.derive_connection_key(
            private=private_key, peer_public=initiator_pub, secret=inv.secret, transcript=transcript
        )
    except (HandshakeError, ValueError) as exc:
        raise HandshakeError(
            "bad_answer",
            f"The other node's answer is malformed ({exc}). Check that both run compatible versions.",
        )
    features = answer.get("features") if isinstance(answer.get("features"), list) else list(inv.features)
    try:
        with transaction.atomic():
            remote = _remote_instance(remote_info, node_url=inv.node_url)
            conn = Connection.objects.create(
                uid=connection_uid,
                name=(name or inv.connection_name)[:200],
                type=inv.connection_type,
                status=Connection.Status.ACTIVE,
                local_instance=local_instance,
                remote_instance=remote,
                initiated_by=Connection.Side.REMOTE,
                peer_uid=peer_uid,
                remote_node_url=inv.node_url.rstrip("/"),
                private_mode=bool(private),
                key=key.hex(),
                activated_at=timezone.now(),
                peer_node_name=str(answer.get("node_name") or inv.initiator_node)[:200],
                peer_app_version=str(answer.get("app_version") or inv.app_version)[:50],
                peer_features=[str(f)[:100] for f in features[:100]],
            )
            _publish_defaults(conn)
    except Exception as exc:
        # The other side is already active: tell it to drop its side, so nothing is left half-made.
        _undo_remote(inv.node_url, peer_uid, key)
        raise HandshakeError(
            "local_failure",
            f"The other node accepted, but this node could not store the connection ({type(exc).__name__}: "
            f"{exc}). The other side was asked to drop its half; ask for a new code and try again.",
            500,
        )
    logger.info("Connected '%s' with %s (%s)", conn.name, inv.initiator_node, inv.node_url)
    return conn


def _parse_answer(status: int, content: bytes, base_url: str) -> dict[str, Any]:
    try:
        data = outbound.parse_json(content or b"null", what=f"The answer from {base_url}")
    except outbound.BadAnswer as exc:
        raise HandshakeError(
            "bad_answer",
            f"{exc}. This node refuses it and changed nothing: check that the node URL in the code points to "
            "an exalate-node of a compatible version.",
            502,
        )
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise HandshakeError(
            "not_a_node",
            f"{base_url} answered ({status}), but not as an exalate-node. Check the node URL the invitation "
            "names (NODE_URL on the other node) and any proxy in between.",
            502,
        )
    if status != 200:
        code = str(data.get("code") or "refused")
        detail = str(data.get("detail") or f"HTTP {status}")
        raise HandshakeError(code, f"The other node refused the invitation: {detail}", status)
    return data


def _undo_remote(base_url: str, peer_uid: uuid.UUID, key: bytes) -> None:
    from connections.transport import PeerError, PeerUnreachable, peer_request

    stub = Connection(peer_uid=peer_uid, remote_node_url=base_url.rstrip("/"), key=key.hex())
    try:
        peer_request(stub, "POST", "/status/", {"status": "deleted"}, timeout=5)
    except (PeerUnreachable, PeerError) as exc:
        logger.warning("Could not undo the other side of a failed accept: %s", exc)


__all__ = [
    "FEATURES",
    "HandshakeError",
    "InvitationError",
    "connection_accept",
    "connection_initiate",
    "handshake_answer",
    "invitation_create",
    "invitation_revoke",
    "preview_invitation",
]
