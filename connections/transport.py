"""Node-to-node delivery over HTTP: the outbox writer the pipeline calls, and the one outbound HTTP seam.

* ``HttpTransport.send`` / ``.ack`` run inside the pipeline's transaction: they only write an
  :class:`~connections.models.OutboundMessage` and enqueue ``connections.tasks.deliver`` after the commit.
  The message and the change it carries commit together or not at all (outbox); the sender task delivers
  in id order, in batches, and retries with backoff (``connections.tasks``).
* ``fetch_attachment`` streams a file from the peer's signed attachment endpoint.
* Every request to a peer goes through :func:`peer_request` (signs, verifies the signed answer) and every
  byte on the wire through :func:`http_request` (exact bytes, no redirects). Tests patch ``http_request``.

The peer may be hostile (anyone can mint an invitation code naming their own server), so the answers are
bounded (``exalate_node.outbound``): a total deadline per request (``OUTBOUND_PEER_DEADLINE``), a size cap
counted as the answer streams (``OUTBOUND_MAX_ANSWER_BYTES``; attachments: ``ATTACHMENT_MAX_BYTES`` and a
deadline that grows with the bytes received), JSON parsed with a depth limit and without text that is not
valid Unicode, http(s) URLs only and, with ``OUTBOUND_REFUSE_PRIVATE_ADDRESSES``, no private addresses.
Error texts from the peer are redacted of the node's secret values (``exalate_node.redaction``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings

from connections import signing
from connections.models import Connection, OutboundMessage
from exalate_node import outbound
from exalate_node.redaction import redact
from exalate_node.tasks import enqueue

if TYPE_CHECKING:
    from replicas.models import SyncEvent, Twin

logger = logging.getLogger(__name__)

NODE_PREFIX = "/node/v1"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
USER_AGENT = "exalate-node"


class PeerUnreachable(Exception):
    """The peer could not be reached at all (refused, DNS, timeout, TLS) or did not answer in time.
    ``str()`` is for an admin (secret values redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass
class PeerError(Exception):
    """The peer answered with an error status, or with an answer this node refuses (``status`` is then the
    answer's, or 0 when the request was not sent). ``detail`` and ``code`` come from its JSON error body
    or say what was refused; the node's secret values are redacted from ``detail``."""

    status: int
    detail: str
    code: str = ""
    retry_after: float | None = None
    body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.detail = redact(self.detail)

    def __str__(self) -> str:
        if self.code in REFUSED_ANSWER_CODES:
            return self.detail
        return f"The other node answered {self.status}: {self.detail}"


# Codes of a PeerError this node raises itself: the answer (or the address) was refused.
REFUSED_ANSWER_CODES = frozenset({"refused_destination", "too_large", "bad_response"})


@dataclass
class PeerResponse:
    status: int
    body: dict[str, Any]


# --- the one outbound seam ----------------------------------------------------------------------------------


def http_request(
    method: str,
    url: str,
    *,
    data: bytes = b"",
    headers: dict[str, str] | None = None,
    stream: bool = False,
    timeout: tuple[float, float] | None = None,
) -> requests.Response:
    """Send exactly ``data`` (the signed bytes) to ``url``; never follows redirects (they would break the
    signature and could leak it to another host).

    The whole request, answer included, ends within ``OUTBOUND_PEER_DEADLINE`` (or connect + read of an
    explicit ``timeout``, when shorter). Unless ``stream``, the answer is read here, at most
    ``OUTBOUND_MAX_ANSWER_BYTES``. Raises ``requests`` errors, ``outbound.DeadlinePassed``,
    ``outbound.AnswerTooLarge`` and ``outbound.RefusedDestination``."""
    outbound.check_url(url, what="The other node's URL", userinfo=False)
    if outbound.refuse_private() and outbound.uses_proxy(url):
        parts = urlsplit(url)
        outbound.check_host(parts.hostname or "", parts.port)
    seconds = outbound.peer_deadline() if timeout is None else min(outbound.peer_deadline(), sum(timeout))
    budget = outbound.Budget(seconds)
    with outbound.deadline(budget), outbound.new_session() as session:
        try:
            response = session.request(
                method,
                url,
                data=data,
                headers={"User-Agent": USER_AGENT, **(headers or {})},
                stream=True,
                timeout=timeout or (CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
            )
            if not stream:
                outbound.read_body(
                    response, limit=outbound.max_answer_bytes(), what=f"The answer from {_origin(url)}"
                )
        except requests.RequestException as exc:
            if budget.expired:
                raise outbound.DeadlinePassed(
                    f"The other node at {_origin(url)} did not answer within {budget.describe()} "
                    "(OUTBOUND_PEER_DEADLINE)",
                    within=budget.describe(),
                ) from exc
            raise
    return response


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def describe_network_error(url: str, exc: Exception) -> str:
    """A sentence for an admin: which URL, what happened, what to do."""
    text = str(exc).lower()
    if isinstance(exc, outbound.DeadlinePassed):
        what = f"no complete answer within {exc.within or 'the deadline'}"
    elif isinstance(exc, requests.Timeout):
        what = "timed out"
    elif "refused" in text:
        what = "connection refused"
    elif "name or service not known" in text or "nodename nor servname" in text or "resolve" in text:
        what = "host name not found"
    elif isinstance(exc, requests.exceptions.SSLError):
        what = "TLS certificate problem"
    else:
        what = type(exc).__name__
    return (
        f"Could not reach the other node at {url} ({what}). Check that it is running and reachable from "
        "here, then try again."
    )


def node_url(base: str, path: str) -> str:
    return base.rstrip("/") + NODE_PREFIX + path


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, min(float(value), 3600.0))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _error_from(resp: requests.Response, content: bytes) -> PeerError:
    try:
        body = outbound.parse_json(content or b"{}")
    except (ValueError, outbound.OutboundError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail") or f"HTTP {resp.status_code} {resp.reason or ''}".strip())[:1000]
    return PeerError(resp.status_code, detail, str(body.get("code") or ""), _retry_after(resp), body)


def _quote(segment: str) -> str:
    return quote(str(segment), safe=":@&+$,-_.!~*'()")


def connection_key(connection: Connection) -> bytes:
    return bytes.fromhex(connection.key)


def peer_request(
    connection: Connection, method: str, path: str, payload: Any = None, *, timeout: float | None = None
) -> PeerResponse:
    """A signed JSON request to the peer of ``connection``; returns its verified JSON answer.

    Raises :class:`PeerUnreachable` (network), :class:`PeerError` (error status, or an answer that is not
    signed by the peer: a proxy or captive portal answered).
    """
    url = node_url(connection.remote_node_url, path)
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    key = connection_key(connection)
    headers = signing.sign_request(
        key=key,
        connection_id=str(connection.peer_uid),
        method=method,
        path=urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else ""),
        body=body,
    )
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        resp = http_request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=(CONNECT_TIMEOUT, timeout) if timeout else None,
        )
        content = resp.content
    except (requests.RequestException, outbound.DeadlinePassed) as exc:
        raise PeerUnreachable(describe_network_error(connection.remote_node_url, exc)) from exc
    except outbound.OutboundError as exc:
        raise refused_answer(connection.remote_node_url, exc) from exc
    if resp.status_code >= 400:
        raise _error_from(resp, content)
    try:
        signing.verify_response(
            key=key,
            headers=resp.headers,
            status=resp.status_code,
            body=content,
            request_nonce=headers[signing.HEADER_NONCE],
        )
    except signing.SignatureError as exc:
        raise PeerError(
            resp.status_code,
            f"The answer from {connection.remote_node_url} is not signed by the other node ({exc.reason}). "
            "A proxy or captive portal may be answering in its place; check the node URL and the network.",
            "unsigned_response",
        )
    try:
        data = outbound.parse_json(content or b"{}", what=f"The answer from {connection.remote_node_url}")
    except outbound.BadAnswer as exc:
        raise refused_answer(connection.remote_node_url, exc, resp.status_code) from exc
    except ValueError:
        raise PeerError(resp.status_code, "The other node answered with malformed JSON.", "bad_response")
    return PeerResponse(resp.status_code, data if isinstance(data, dict) else {})


def refused_answer(base_url: str, exc: outbound.OutboundError, status: int = 0) -> PeerError:
    """A ``PeerError`` for an address or an answer this node refuses (not retried by itself: the admin
    fixes the URL or the setting, or the other node, then resolves and retries)."""
    if isinstance(exc, outbound.RefusedDestination):
        return PeerError(0, f"The request to the other node was not sent: {exc}", "refused_destination")
    code = "too_large" if isinstance(exc, outbound.AnswerTooLarge) else "bad_response"
    hint = " (OUTBOUND_MAX_ANSWER_BYTES)" if code == "too_large" else ""
    return PeerError(
        status,
        f"The other node at {base_url} gave an answer this node refuses: {exc}{hint}. Nothing of it was "
        "used. Check that the node URL points to an exalate-node of a compatible version.",
        code,
    )


# --- the outbox ---------------------------------------------------------------------------------------------


def queue_message(connection: Connection, kind: str, payload: dict[str, Any], *, trace_id: str = "") -> None:
    """Write a message for the peer (in the caller's transaction) and nudge the sender after the commit."""
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    OutboundMessage.objects.create(
        connection=connection, kind=kind, trace_id=trace_id, payload=payload, size=size
    )
    if not connection.polled_by_peer:  # a private peer fetches its messages itself
        enqueue("connections.tasks.deliver", connection.pk, group=f"deliver-{connection.pk}")


class HttpTransport:
    """The pipeline's transport for node-to-node connections (see ``replicas.transport.Transport``)."""

    def send(self, event: SyncEvent) -> None:
        payload = {
            "type": "event",
            "trace_id": str(event.trace_id),
            "kind": event.kind,
            "seq": event.seq,
            "remote_item_id": event.twin.local_id,
            "replica": event.replica,
        }
        queue_message(event.connection, OutboundMessage.Kind.EVENT, payload, trace_id=str(event.trace_id))

    def ack(self, event: SyncEvent, twin: Twin) -> None:
        from replicas.pipeline import ack_payload

        payload = {"type": "ack", **ack_payload(event, twin)}
        queue_message(twin.connection, OutboundMessage.Kind.ACK, payload, trace_id=str(event.trace_id))

    def fetch_attachment(
        self, connection: Connection, remote_item_id: str, attachment_id: str
    ) -> Iterator[bytes]:
        return fetch_attachment(connection, remote_item_id, attachment_id)


def fetch_attachment(connection: Connection, remote_item_id: str, attachment_id: str) -> Iterator[bytes]:
    """Stream an attachment from the peer; raises ``ConnectorError`` (retryable for outages) on failure.

    The peer signs the response status and its ``X-Content-SHA256`` header (not the streamed body); the
    content is checked against that digest as it arrives, so a changed byte fails at the end of the stream.
    The pipeline also checks the digest the replica carries.
    """
    from instances.connectors import ConnectorError

    # Quoted like Django's request.get_full_path() re-quotes it, so the signed path matches; a "/" inside an
    # id is not supported (it would split the path).
    path = f"/attachments/{_quote(remote_item_id)}/{_quote(attachment_id)}/"
    url = node_url(connection.remote_node_url, path)
    key = connection_key(connection)
    headers = signing.sign_request(
        key=key,
        connection_id=str(connection.peer_uid),
        method="GET",
        path=urlsplit(url).path,
        body=b"",
    )
    limit = int(getattr(settings, "ATTACHMENT_MAX_BYTES", 25 * 1024 * 1024))
    # The whole download within OUTBOUND_PEER_DEADLINE plus a second per OUTBOUND_MIN_DOWNLOAD_RATE bytes.
    budget = outbound.Budget(outbound.peer_deadline(), min_rate=outbound.min_download_rate())
    try:
        with outbound.deadline(budget):
            resp = http_request("GET", url, headers=headers, stream=True)
    except (requests.RequestException, outbound.DeadlinePassed) as exc:
        raise ConnectorError(describe_network_error(connection.remote_node_url, exc), retryable=True)
    except outbound.OutboundError as exc:
        raise ConnectorError(str(refused_answer(connection.remote_node_url, exc)), retryable=False)
    try:
        if resp.status_code != 200:
            with outbound.deadline(budget):
                try:
                    content = outbound.read_body(resp, limit=outbound.ERROR_BODY_BYTES, truncate=True)
                except (requests.RequestException, outbound.OutboundError):
                    content = b""
            err = _error_from(resp, content)
            raise ConnectorError(
                f"Could not fetch attachment {attachment_id} from the other node: {err.detail}",
                retryable=resp.status_code >= 500 or resp.status_code in (401, 429),
                status=resp.status_code,
            )
        expected = (resp.headers.get("X-Content-SHA256") or "").lower()
        try:
            signing.verify_response(
                key=key,
                headers=resp.headers,
                status=200,
                body=expected.encode(),
                request_nonce=headers[signing.HEADER_NONCE],
            )
        except signing.SignatureError:
            raise ConnectorError(
                "The attachment answer is not signed by the other node; a proxy may be in the way.",
                retryable=True,
            )
        length = (resp.headers.get("Content-Length") or "").strip()
        if length.isdigit() and int(length) > limit:
            raise _attachment_too_big(attachment_id, limit)
        digest = hashlib.sha256()
        chunks = outbound.bounded_chunks(
            resp,
            budget=budget,
            limit=limit,
            what=f"The download of attachment {attachment_id}",
            too_big=lambda: _attachment_too_big(attachment_id, limit),
        )
        try:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk
        except outbound.DownloadBroken as exc:
            raise ConnectorError(
                f"The download of attachment {attachment_id} from the other node {exc.why}; it is retried.",
                retryable=True,
            )
        if expected and digest.hexdigest() != expected:
            raise ConnectorError(
                f"Attachment {attachment_id} arrived corrupted (SHA-256 mismatch); it will be fetched again.",
                retryable=True,
            )
    finally:
        resp.close()


def _attachment_too_big(attachment_id: str, limit: int) -> Exception:
    from instances.connectors import ConnectorError

    return ConnectorError(
        f"Attachment {attachment_id} from the other node is larger than ATTACHMENT_MAX_BYTES ({limit} bytes) "
        "on this node. Raise the limit or remove the file.",
        retryable=False,
    )


# --- connection status --------------------------------------------------------------------------------------


def notify_peer_status(connection: Connection, status: str) -> None:
    """Tell the peer this side was activated or deactivated; queued in order with the messages."""
    if connection.is_local or connection.status == Connection.Status.PENDING or not connection.key:
        return
    queue_message(connection, OutboundMessage.Kind.STATUS, {"type": "status", "status": str(status)})


def notify_peer_deleted(connection: Connection) -> None:
    """Best effort: tell the peer to delete its side too. A failure is logged, never raised: the admin
    deleting a connection must not be stopped by an unreachable peer."""
    if connection.is_local or not connection.key or not connection.peer_uid:
        return
    if connection.polled_by_peer:
        return  # cannot call a private peer; its next poll gets 401 and it shows the connection as broken
    try:
        peer_request(connection, "POST", "/status/", {"status": "deleted"}, timeout=5)
    except (PeerUnreachable, PeerError) as exc:
        logger.warning("Could not tell the peer that connection %s was deleted: %s", connection.uid, exc)


def _settings_int(name: str, default: int) -> int:
    return int(getattr(settings, name, default))
