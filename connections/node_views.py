"""The node-to-node protocol (v1), served under ``/node/v1/``: machine endpoints, no session, no CSRF.

Every request except the handshake is signed with the connection key (``connections.signing``): the
sender names the *receiver's* connection uid in ``X-Exalate-Connection`` (its ``peer_uid``), so the lookup
is direct. A request that fails authentication changes nothing (401); every answer to an authenticated
request is signed, so the sender knows its peer (not a proxy) answered. Errors are JSON
``{"detail": ..., "code": ...}``.

Checks run cheapest first: body size (413), content type (415), signature and replay (401), JSON shape
(400), then the connection's state (409).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from connections import signing
from connections.messages import (
    MAX_BATCH,
    MessageRejected,
    NodeRequestError,
    apply_messages,
    apply_peer_status,
    validate_messages,
)
from connections.models import Connection, SeenNonce
from connections.tasks import BATCH_MESSAGES, mark_delivered, next_batch, prune_nonces
from exalate_node.parsers import JSONRefused, load_json

logger = logging.getLogger(__name__)

# Row ids (BigAutoField) and cursors fit a signed 64-bit integer; a larger number cannot name a row, and
# the database driver raises OverflowError on it (a 500 before this check).
MAX_ROW_ID = 2**63 - 1


def max_body_bytes() -> int:
    return int(getattr(settings, "NODE_MAX_BODY_BYTES", 10 * 1024 * 1024))


def error_response(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status)


# --- request intake -----------------------------------------------------------------------------------------


def read_body(request: HttpRequest, *, limit: int | None = None) -> bytes:
    """The raw body, refused (413) above the limit, by Content-Length and by what actually arrives."""
    limit = max_body_bytes() if limit is None else limit
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise NodeRequestError(400, "bad_request", "The Content-Length header is not a number.")
    if declared > limit:
        raise _too_large(limit)
    body = request.read(limit + 1)  # not request.body: DATA_UPLOAD_MAX_MEMORY_SIZE is for forms, not us
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _too_large(limit: int) -> NodeRequestError:
    return NodeRequestError(
        413,
        "too_large",
        f"The request body is larger than this node accepts ({limit} bytes, NODE_MAX_BODY_BYTES). "
        "Send smaller batches, or raise NODE_MAX_BODY_BYTES on this node.",
    )


def require_json(request: HttpRequest) -> None:
    content_type = (request.META.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise NodeRequestError(
            415, "unsupported_media_type", "Node requests carry JSON: send Content-Type: application/json."
        )


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity), nested at most ``MAX_JSON_DEPTH`` levels, text valid Unicode (a lone
    surrogate such as ``"\\ud800"`` is refused here: stored, it broke every page that showed it)."""
    try:
        return load_json(body)
    except JSONRefused as exc:
        raise NodeRequestError(400, exc.code, exc.message)


@dataclass
class Signed:
    connection: Connection
    key: bytes
    nonce: str
    body: bytes


def authenticate(request: HttpRequest, body: bytes) -> Signed:
    """Verify the signature and record the nonce (replay guard). Raises 401 without changing anything."""
    try:
        claimed = signing.peek_connection_id(request.headers)
    except signing.SignatureError as exc:
        raise NodeRequestError(401, exc.reason, exc.message)
    try:
        conn = Connection.objects.select_related("local_instance").get(uid=uuid.UUID(claimed))
    except (ValueError, Connection.DoesNotExist):
        conn = None
    if conn is None or not conn.key or conn.is_local:
        raise NodeRequestError(
            401,
            "unknown_connection",
            "This node has no connection with that id. It was deleted here, or the request went to the "
            "wrong node; re-establish the connection with a new invitation.",
        )
    signed, key = _verify(conn, request, body)
    if random.random() < 0.01:  # noqa: S311  (now and then, in case no sweeper runs)
        prune_nonces()
    try:
        with transaction.atomic():
            SeenNonce.objects.create(connection=conn, nonce=signed.nonce)
    except IntegrityError:
        raise NodeRequestError(
            401, "replayed", "This request was already received (its nonce was used). Send a new request."
        )
    return Signed(conn, key, signed.nonce, body)


def _verify(conn: Connection, request: HttpRequest, body: bytes) -> tuple[signing.SignedRequest, bytes]:
    """Check the signature with the connection key, then, just after a key rotation, with the previous key
    (a message in flight, or the peer has not received the new key yet; valid until previous_key_until).
    Returns the claims and the key that verified them (the response is signed with the same key)."""
    previous = _previous_key(conn)
    error: signing.SignatureError | None = None
    for key in [bytes.fromhex(conn.key), *([previous] if previous else [])]:
        try:
            signed = signing.verify_request(
                key=key,
                headers=request.headers,
                method=request.method or "",
                path=request.get_full_path(),
                body=body,
            )
            return signed, key
        except signing.SignatureError as exc:
            error = error or exc
            if exc.reason != "bad_signature":
                break  # malformed or stale: another key would not help
    assert error is not None
    raise NodeRequestError(401, error.reason, error.message)


def _previous_key(conn: Connection) -> bytes | None:

    if conn.previous_key and conn.previous_key_until and conn.previous_key_until > timezone.now():
        return bytes.fromhex(conn.previous_key)
    return None


def signed_response(auth: Signed, data: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    for name, value in signing.sign_response(
        key=auth.key, status=status, body=response.content, request_nonce=auth.nonce
    ).items():
        response[name] = value
    return response


def node_endpoint(*methods: str) -> Callable:
    """Wrap a view ``(request, auth, data, **kwargs)``: size, content type, signature, JSON; errors as JSON.

    A POST carries JSON (``data``); a GET has no body (``data`` is None).

    Errors after authentication are signed too, so the sender can trust a 400 came from its peer.
    """

    def wrap(view: Callable) -> Callable:
        @csrf_exempt
        @require_http_methods(list(methods))
        @functools.wraps(view)
        def wrapper(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            auth: Signed | None = None
            try:
                body = read_body(request)
                is_post = request.method == "POST"
                if is_post:
                    require_json(request)
                auth = authenticate(request, body)
                data = parse_json(body) if is_post else None
                response = view(request, auth, data, **kwargs)
                if auth.connection.pk and (auth.connection.delivery_attempts or 0):
                    from connections.tasks import peer_is_back

                    peer_is_back(auth.connection.pk)
                return response
            except NodeRequestError as exc:
                if auth is not None:
                    return signed_response(auth, {"detail": exc.detail, "code": exc.code}, exc.status)
                return error_response(exc.status, exc.code, exc.detail)

        return wrapper

    return wrap


def _require_open(conn: Connection) -> None:
    if conn.status == Connection.Status.PENDING:
        raise NodeRequestError(
            409, "not_active", "This side of the connection is still pending; accept the invitation first."
        )


@node_endpoint("GET", "POST")
def messages(request: HttpRequest, auth: Signed, data: Any) -> HttpResponse:
    """POST: an ordered batch from the peer. GET: a private-mode peer fetches what we hold for it."""
    if request.method == "GET":
        return _serve_outbox(request, auth)
    conn = auth.connection
    _require_open(conn)
    if not isinstance(data, dict):
        raise MessageRejected('The body must be {"messages": [...]}.')
    batch = validate_messages(data.get("messages"))
    with transaction.atomic():
        accepted = apply_messages(conn, batch)
    return signed_response(auth, {"accepted": accepted}, 202)


def _serve_outbox(request: HttpRequest, auth: Signed) -> HttpResponse:
    conn = auth.connection
    _require_open(conn)
    if not conn.polled_by_peer:
        raise NodeRequestError(
            409, "not_private", "This connection is not in private mode: messages are pushed to you."
        )
    try:
        after = int(request.GET.get("after") or 0)
        limit = max(1, min(int(request.GET.get("limit") or BATCH_MESSAGES), BATCH_MESSAGES))
    except ValueError:
        raise NodeRequestError(400, "bad_request", "'after' and 'limit' must be integers.")
    if not 0 <= after <= MAX_ROW_ID:
        raise NodeRequestError(
            400, "bad_request", f"'after' must be a message id from 0 to {MAX_ROW_ID} (the last one applied)."
        )
    batch = next_batch(conn.pk, after=after, limit=limit)
    return signed_response(auth, {"messages": [{"id": m.pk, **m.payload} for m in batch]})


@node_endpoint("POST")
def messages_ack(request: HttpRequest, auth: Signed, data: Any) -> HttpResponse:
    """A private-mode peer applied these outbox messages: they are delivered."""
    ids = data.get("ids") if isinstance(data, dict) else None
    if (
        not isinstance(ids, list)
        or len(ids) > MAX_BATCH
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ROW_ID for i in ids)
    ):
        raise MessageRejected(
            f'The body must be {{"ids": [message ids]}}: at most {MAX_BATCH} ids, each an integer from 1 to '
            f"{MAX_ROW_ID}."
        )
    count = mark_delivered(auth.connection, ids)
    return signed_response(auth, {"acknowledged": count})


@node_endpoint("POST")
def status(request: HttpRequest, auth: Signed, data: Any) -> HttpResponse:
    """The peer activated, deactivated or deleted its side of the connection."""
    value = data.get("status") if isinstance(data, dict) else None
    conn = auth.connection
    if value not in ("active", "deactivated", "deleted"):
        raise MessageRejected("'status' must be 'active', 'deactivated' or 'deleted'.")
    if value == "deleted":
        response = signed_response(auth, {"status": "deleted"})
        with transaction.atomic():
            Connection.objects.filter(pk=conn.pk).update(peer=None)
            Connection.objects.filter(pk=conn.pk).delete()
        return response
    _require_open(conn)
    with transaction.atomic():
        apply_peer_status(conn, value)
    return signed_response(auth, {"status": Connection.objects.get(pk=conn.pk).status})


@node_endpoint("POST")
def rotate_key(request: HttpRequest, auth: Signed, data: Any) -> HttpResponse:
    """The peer rotates the connection key (``connections.rotation``): answer with our public key, signed
    with the key that verified the request (the one the peer holds), and switch to the new key."""
    from connections.rotation import RotationConflict, answer_rotation

    _require_open(auth.connection)
    try:
        answer = answer_rotation(auth.connection, auth.key, data)
    except RotationConflict as exc:
        raise NodeRequestError(409, "rotation_in_progress", str(exc))
    except ValueError as exc:
        raise MessageRejected(str(exc))
    return signed_response(auth, answer)


@node_endpoint("POST")
def rotate_key_confirm(request: HttpRequest, auth: Signed, data: Any) -> HttpResponse:
    """The peer holds the new key (this request is signed with it): the previous key's grace ends soon."""
    from connections.rotation import confirm_rotation

    return signed_response(auth, {"confirmed": confirm_rotation(auth.connection, auth.key)})


# Signing a streamed body would mean buffering it. Instead the response signature covers the status and
# the X-Content-SHA256 header (the MAC's "body" is the hex digest); the client checks the streamed bytes
# against that digest, and the pipeline checks them against the replica's sha256 as well.
@node_endpoint("GET")
def attachment(
    request: HttpRequest, auth: Signed, _data: Any, item_id: str, attachment_id: str
) -> HttpResponse:
    """Stream an attachment of an item that is under sync on this connection (else 404)."""
    from instances.connectors import ConnectorError, get_connector
    from replicas.models import Twin

    conn = auth.connection
    not_found = NodeRequestError(404, "not_found", "No such attachment on an item synced on this connection.")
    if not Twin.objects.filter(connection=conn, local_id=item_id).exists():
        raise not_found
    connector = get_connector(conn.local_instance)
    try:
        item = connector.get_item(item_id)
    except ConnectorError:
        raise not_found
    meta = next((a for a in item.get("attachments") or [] if str(a.get("id")) == attachment_id), None)
    if meta is None:
        raise not_found
    sha = str(meta.get("sha256") or "").lower()
    try:
        chunks = connector.open_attachment(item_id, attachment_id)
        first = next(chunks, b"")  # surfaces "missing file" errors before the 200 goes out
    except ConnectorError:
        raise not_found

    def stream() -> Any:
        digest = hashlib.sha256()
        if first:
            digest.update(first)
            yield first
        for chunk in chunks:
            digest.update(chunk)
            yield chunk

    response = StreamingHttpResponse(
        stream(), content_type=meta.get("mimeType") or "application/octet-stream"
    )
    response["X-Content-SHA256"] = sha
    if meta.get("size") is not None:
        response["Content-Length"] = str(meta["size"])
    for name, value in signing.sign_response(
        key=auth.key, status=200, body=sha.encode(), request_nonce=auth.nonce
    ).items():
        response[name] = value
    return response


# --- handshake (unsigned: the invitation secret proves the caller) ------------------------------------------

HANDSHAKE_MAX_BYTES = 64 * 1024


@csrf_exempt
@require_http_methods(["POST"])
def handshake(request: HttpRequest) -> HttpResponse:
    """The acceptor presents the invitation id, its ephemeral key and proof; see ``connections.handshake``."""
    from connections.handshake import HandshakeError, handshake_answer

    try:
        body = read_body(request, limit=HANDSHAKE_MAX_BYTES)
        require_json(request)
        data = parse_json(body)
    except NodeRequestError as exc:
        return error_response(exc.status, exc.code, exc.detail)
    try:
        answer = handshake_answer(data)
    except HandshakeError as exc:
        return error_response(exc.status, exc.code, exc.message)
    return JsonResponse(answer, status=200)
