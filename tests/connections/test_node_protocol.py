"""The node protocol: signed batches, acks, attachments, status, private mode, delivery with backoff, and
hostile requests (each a clear 4xx that changes nothing). Two in-process "nodes" share the test database;
see ``test_handshake.Wire``."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from django.utils import timezone

from connections import signing, tasks
from connections.models import Connection, OutboundMessage, SeenNonce
from connections.services import connection_activate, connection_deactivate, connection_delete
from instances.models import Comment, Issue
from instances.tracker import services
from replicas import pipeline
from replicas.models import SyncError, SyncEvent, Twin
from tests.connections import test_handshake as _harness

# The in-process two-node harness (fixtures) of the handshake tests.
wire, two_instances, connected = _harness.wire, _harness.two_instances, _harness.connected

MESSAGES = "/node/v1/messages/"


def _replica(item_id: str = "901", summary: str = "From afar", **extra) -> dict:  # type: ignore[no-untyped-def]
    hub = {"id": item_id, "key": f"FAR-{item_id}", "summary": summary, "comments": [], "attachments": []}
    hub.update(extra)
    return {"version": {"major": 1, "minor": 0, "patch": 0}, "hubIssue": hub}


def _event(seq: int = 1, item_id: str = "901", **kw) -> dict:  # type: ignore[no-untyped-def]
    return {
        "type": "event",
        "trace_id": str(uuid.uuid4()),
        "kind": "update",
        "seq": seq,
        "remote_item_id": item_id,
        "replica": kw.pop("replica", None) or _replica(item_id, **kw),
    }


class Peer:
    """Sends signed requests to one connection the way its peer node would."""

    def __init__(self, client, conn: Connection) -> None:  # type: ignore[no-untyped-def]
        self.client, self.conn = client, conn
        self.key = bytes.fromhex(conn.key)

    def headers(self, method: str, path: str, body: bytes, **kw) -> dict:  # type: ignore[no-untyped-def]
        signed = signing.sign_request(
            key=self.key,
            connection_id=kw.pop("cid", str(self.conn.uid)),
            method=method,
            path=path,
            body=body,
            **kw,
        )
        return {"HTTP_" + k.upper().replace("-", "_"): v for k, v in signed.items()}

    def post(self, path: str, payload, *, raw: bytes | None = None, content_type="application/json", **kw):  # type: ignore[no-untyped-def]
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = kw.pop("headers", None) or self.headers("POST", path, body, **kw)
        return self.client.generic("POST", path, data=body, content_type=content_type, **headers)

    def get(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return self.client.generic("GET", path, **self.headers("GET", path, b"", **kw))


@pytest.fixture
def receiver(connected, wire):  # type: ignore[no-untyped-def]
    """B's side, addressed by a test peer; A's deliveries are cut off so only the test talks to B."""
    a, b = connected
    wire.down = True
    return Peer(wire.client, b)


def _state() -> tuple:
    return (
        SyncEvent.objects.count(),
        Twin.objects.count(),
        Issue.objects.count(),
        list(Connection.objects.order_by("pk").values_list("status", flat=True)),
    )


def _verify(resp, peer: Peer, nonce_headers: dict) -> None:  # type: ignore[no-untyped-def]
    signing.verify_response(
        key=peer.key,
        headers=resp.headers,
        status=resp.status_code,
        body=resp.content,
        request_nonce=nonce_headers["HTTP_X_EXALATE_NONCE"],
    )


# --- accepted batches ---------------------------------------------------------------------------------------


def test_a_signed_batch_is_stored_applied_acknowledged_and_the_answer_is_signed(receiver):
    msg = _event()
    body = json.dumps({"messages": [msg]}).encode()
    headers = receiver.headers("POST", MESSAGES, body)
    resp = receiver.client.generic("POST", MESSAGES, data=body, content_type="application/json", **headers)
    assert resp.status_code == 202, resp.content
    assert resp.json() == {"accepted": [msg["trace_id"]]}
    _verify(resp, receiver, headers)
    event = SyncEvent.objects.get(connection=receiver.conn, direction="in")
    assert str(event.trace_id) == msg["trace_id"] and event.status == "done"
    assert Issue.objects.get(project__key="ENG").summary == "From afar"
    # The ack for the sender waits in the outbox (the sender is unreachable in this test).
    ack = OutboundMessage.objects.get(connection=receiver.conn, kind="ack")
    assert ack.payload["trace_id"] == msg["trace_id"] and ack.payload["local_item_id"] == "901"


def test_a_redelivered_batch_has_no_second_effect(receiver):
    msg = _event()
    assert receiver.post(MESSAGES, {"messages": [msg]}).status_code == 202
    assert receiver.post(MESSAGES, {"messages": [msg]}).status_code == 202  # new nonce, same message
    assert SyncEvent.objects.filter(direction="in").count() == 1
    assert Issue.objects.filter(project__key="ENG").count() == 1


def test_events_of_a_batch_apply_in_sequence_order(receiver):
    first, second = _event(1, summary="one"), _event(2, summary="two")
    assert receiver.post(MESSAGES, {"messages": [first, second]}).status_code == 202
    assert Issue.objects.get(project__key="ENG").summary == "two"


def test_a_deactivated_connection_still_queues_incoming_messages(receiver):
    Connection.objects.filter(pk=receiver.conn.pk).update(status="deactivated")
    assert receiver.post(MESSAGES, {"messages": [_event()]}).status_code == 202
    assert SyncEvent.objects.get(direction="in").status == "pending"
    assert not Issue.objects.filter(project__key="ENG").exists()


def test_a_pending_connection_refuses_messages(receiver):
    Connection.objects.filter(pk=receiver.conn.pk).update(status="pending")
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [_event()]})
    assert resp.status_code == 409 and resp.json()["code"] == "not_active"
    assert _state() == before


def test_an_ack_teaches_the_sender_the_remote_item(connected, wire):
    a, b = connected
    issue = services.issue_create(project=a.local_instance.projects.get(), actor="u@example.com", summary="x")
    wire.down = True  # keep the event in A's outbox
    twin = pipeline.exalate(connection=a, key=issue.key)
    out = SyncEvent.objects.get(connection=a, direction="out")
    peer = Peer(wire.client, a)
    ack = {
        "type": "ack",
        "trace_id": str(out.trace_id),
        "remote_item_id": "77",
        "remote_key": "ENG-77",
        "remote_url": "http://node-b.test/eng-77",
        "local_item_id": twin.local_id,
    }
    assert peer.post(MESSAGES, {"messages": [ack]}).status_code == 202
    twin.refresh_from_db()
    assert (twin.remote_id, twin.remote_key, twin.state) == ("77", "ENG-77", Twin.State.SYNCHRONIZED)
    assert SyncEvent.objects.get(pk=out.pk).status == "done"


# --- hostile requests: a clear 4xx, nothing changes ---------------------------------------------------------


def test_a_tampered_body_is_401(receiver):
    body = json.dumps({"messages": [_event()]}).encode()
    headers = receiver.headers("POST", MESSAGES, body)
    before = _state()
    resp = receiver.post(MESSAGES, None, raw=body.replace(b"From afar", b"From evil"), headers=headers)
    assert resp.status_code == 401 and resp.json()["code"] == "bad_signature"
    assert _state() == before


def test_a_missing_signature_is_401(receiver):
    before = _state()
    resp = receiver.client.post(
        MESSAGES, data=json.dumps({"messages": [_event()]}), content_type="application/json"
    )
    assert resp.status_code == 401 and resp.json()["code"] == "missing_header"
    assert "X-Exalate-Connection" in resp.json()["detail"]
    assert _state() == before


def test_a_stale_signature_is_401(receiver):
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [_event()]}, now=time.time() - 3600)
    assert resp.status_code == 401 and resp.json()["code"] == "stale_timestamp"
    assert "NTP" in resp.json()["detail"]
    assert _state() == before


def test_a_replayed_request_is_401(receiver):
    body = json.dumps({"messages": [_event()]}).encode()
    headers = receiver.headers("POST", MESSAGES, body)
    assert receiver.post(MESSAGES, None, raw=body, headers=headers).status_code == 202
    before = _state()
    resp = receiver.post(MESSAGES, None, raw=body, headers=headers)
    assert resp.status_code == 401 and resp.json()["code"] == "replayed"
    assert _state() == before


def test_an_unknown_connection_is_401(receiver):
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [_event()]}, cid=str(uuid.uuid4()))
    assert resp.status_code == 401 and resp.json()["code"] == "unknown_connection"
    assert _state() == before


def test_the_key_of_another_connection_is_401(receiver):
    other = Peer(receiver.client, receiver.conn)
    other.key = bytes(32)
    before = _state()
    assert other.post(MESSAGES, {"messages": [_event()]}).status_code == 401
    assert _state() == before


def test_a_wrong_content_type_is_415(receiver):
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [_event()]}, content_type="text/plain")
    assert resp.status_code == 415
    assert _state() == before


def test_an_oversized_body_is_413(receiver, settings):
    settings.NODE_MAX_BODY_BYTES = 2000
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [_event(description="x" * 5000)]})
    assert resp.status_code == 413 and "NODE_MAX_BODY_BYTES" in resp.json()["detail"]
    assert _state() == before


def test_deeply_nested_json_is_400(receiver):
    before = _state()
    nested = "[" * 200 + "]" * 200
    resp = receiver.post(MESSAGES, None, raw=f'{{"messages": {nested}}}'.encode())
    assert resp.status_code == 400 and resp.json()["code"] == "too_deep"
    very = "[" * 100000 + "]" * 100000
    resp = receiver.post(MESSAGES, None, raw=very.encode())
    assert resp.status_code == 400
    assert _state() == before


def test_malformed_json_is_400(receiver):
    before = _state()
    resp = receiver.post(MESSAGES, None, raw=b'{"messages": [')
    assert resp.status_code == 400 and resp.json()["code"] == "malformed_json"
    assert _state() == before


def test_a_batch_with_one_invalid_replica_stores_nothing(receiver):
    good = _event(1)
    bad = _event(2, replica={"version": {"major": 1, "minor": 0, "patch": 0}, "hubIssue": {"summary": 5}})
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [good, bad]})
    assert resp.status_code == 400 and resp.json()["code"] == "replica_invalid"
    assert resp.json()["detail"].startswith("Message 1")
    assert _state() == before


@pytest.mark.parametrize(
    "message",
    [
        {"type": "gossip"},
        {"type": "event", "trace_id": "nope", "kind": "update", "seq": 1, "remote_item_id": "1"},
        {"type": "event", "trace_id": str(uuid.uuid4()), "kind": "explode", "seq": 1, "remote_item_id": "1"},
        {"type": "event", "trace_id": str(uuid.uuid4()), "kind": "update", "seq": -1, "remote_item_id": "1"},
        {"type": "ack", "trace_id": str(uuid.uuid4())},
        {"type": "status", "status": "deleted"},
    ],
)
def test_malformed_messages_are_400_naming_the_index(receiver, message):
    before = _state()
    resp = receiver.post(MESSAGES, {"messages": [message]})
    assert resp.status_code == 400 and resp.json()["detail"].startswith("Message 0")
    assert _state() == before


def test_an_error_answer_to_a_signed_request_is_signed_too(receiver):
    body = json.dumps({"messages": [{"type": "gossip"}]}).encode()
    headers = receiver.headers("POST", MESSAGES, body)
    resp = receiver.post(MESSAGES, None, raw=body, headers=headers)
    assert resp.status_code == 400
    _verify(resp, receiver, headers)


def test_old_nonces_are_pruned(receiver):
    from datetime import timedelta

    from django.utils import timezone

    assert receiver.post(MESSAGES, {"messages": []}).status_code == 202
    assert SeenNonce.objects.count() == 1
    assert tasks.prune_nonces(now=timezone.now() + timedelta(hours=1)) == 1


# --- attachments --------------------------------------------------------------------------------------------


def test_attachments_stream_only_for_items_under_sync(connected, wire):
    a, b = connected
    issue = services.issue_create(project=a.local_instance.projects.get(), actor="u@example.com", summary="x")
    att = services.attachment_add(
        issue=issue, actor="u@example.com", filename="log.txt", content=b"trace" * 1000
    )
    peer = Peer(wire.client, a)
    path = f"/node/v1/attachments/{issue.pk}/{att.pk}/"
    assert peer.get(path).status_code == 404  # not synced on this connection
    wire.down = True
    pipeline.exalate(connection=a, key=issue.key)
    headers = peer.headers("GET", path, b"")
    resp = wire.client.generic("GET", path, **headers)
    assert resp.status_code == 200 and resp.streaming
    content = b"".join(resp.streaming_content)
    assert content == b"trace" * 1000 and resp["X-Content-SHA256"] == att.sha256
    signing.verify_response(
        key=peer.key,
        headers=resp.headers,
        status=200,
        body=att.sha256.encode(),
        request_nonce=headers["HTTP_X_EXALATE_NONCE"],
    )
    assert peer.get(f"/node/v1/attachments/{issue.pk}/999999/").status_code == 404


def test_a_corrupted_attachment_download_is_detected(connected, wire):
    from connections.transport import fetch_attachment
    from instances.connectors import ConnectorError

    a, b = connected
    issue = services.issue_create(project=a.local_instance.projects.get(), actor="u@example.com", summary="x")
    att = services.attachment_add(issue=issue, actor="u@example.com", filename="f.bin", content=b"good bytes")
    wire.down = True
    pipeline.exalate(connection=a, key=issue.key)
    wire.down = False
    chunks = b"".join(fetch_attachment(b, str(issue.pk), str(att.pk)))
    assert chunks == b"good bytes"

    def corrupt(method, url, resp):  # type: ignore[no-untyped-def]
        resp._content = b"evil bytes"
        return resp

    wire.hook = corrupt
    with pytest.raises(ConnectorError) as err:
        b"".join(fetch_attachment(b, str(issue.pk), str(att.pk)))
    assert err.value.retryable and "SHA-256" in err.value.message


# --- the whole pipeline over HTTP (in-process) --------------------------------------------------------------


def test_two_nodes_sync_everything_both_ways_over_the_protocol(connected, wire):
    a, b = connected
    sup = a.local_instance.projects.get()
    issue = services.issue_create(
        project=sup, actor="u@example.com", summary="Printer on fire", priority="High"
    )
    services.comment_add(issue=issue, actor="anna@example.com", body="Seen twice")
    services.attachment_add(issue=issue, actor="anna@example.com", filename="log.txt", content=b"trace")
    pipeline.exalate(connection=a, key=issue.key)

    copy = Issue.objects.get(project__key="ENG")
    assert (copy.summary, copy.priority) == ("Printer on fire", "High")
    assert [c.body for c in copy.comments.all()] == ["Seen twice"]
    assert copy.attachments.get().sha256 == issue.attachments.get().sha256
    twin_a, twin_b = Twin.objects.get(connection=a), Twin.objects.get(connection=b)
    assert (twin_a.remote_key, twin_b.remote_key) == (copy.key, issue.key)
    assert twin_a.state == twin_b.state == Twin.State.SYNCHRONIZED
    out = SyncEvent.objects.get(connection=a, direction="out")
    inc = SyncEvent.objects.get(connection=b, direction="in")
    assert out.trace_id == inc.trace_id and out.delivered and out.status == inc.status == "done"
    assert not OutboundMessage.objects.filter(delivered_at__isnull=True).exists()

    services.issue_update(issue=copy, actor="ed@example.com", status="In Progress")
    services.comment_add(issue=copy, actor="ed@example.com", body="On it")
    assert Issue.objects.get(pk=issue.pk).status == "In Progress"
    assert sorted(Comment.objects.filter(issue=issue).values_list("body", flat=True)) == [
        "On it",
        "Seen twice",
    ]
    services.attachment_add(issue=copy, actor="ed@example.com", filename="fix.patch", content=b"diff")
    assert sorted(issue.attachments.values_list("filename", flat=True)) == ["fix.patch", "log.txt"]
    assert not SyncEvent.objects.filter(status__in=["pending", "processing", "failed"]).exists()


def test_a_down_peer_queues_in_order_and_everything_arrives_when_it_is_back(connected, wire):
    a, b = connected
    issue = services.issue_create(
        project=a.local_instance.projects.get(), actor="u@example.com", summary="v0"
    )
    pipeline.exalate(connection=a, key=issue.key)
    copy = Issue.objects.get(project__key="ENG")
    wire.down = True
    for n in range(1, 4):
        services.issue_update(issue=Issue.objects.get(pk=issue.pk), actor="u@example.com", summary=f"v{n}")
    services.comment_add(issue=issue, actor="u@example.com", body="while down")
    a.refresh_from_db()
    assert a.status == "active" and a.status_message.startswith(
        "Waiting for the other node (http://node-a.test)"
    )
    assert "connection refused" in a.status_message and "queued; next try in" in a.status_message
    assert a.next_attempt_at is not None and a.delivery_attempts >= 1
    assert Issue.objects.get(pk=copy.pk).summary == "v0"
    wire.down = False
    assert tasks.deliver(a.pk, force=True) >= 1
    copy.refresh_from_db()
    assert copy.summary == "v3" and [c.body for c in copy.comments.all()] == ["while down"]
    a.refresh_from_db()
    assert a.status_message == "" and a.delivery_attempts == 0


def test_deliver_sends_in_batches(connected, wire, monkeypatch):
    a, b = connected
    monkeypatch.setattr(tasks, "BATCH_MESSAGES", 2)
    wire.down = True
    for _ in range(5):
        OutboundMessage.objects.create(
            connection=a, kind="status", payload={"type": "status", "status": "active"}
        )
    wire.down = False
    wire.calls.clear()
    assert tasks.deliver(a.pk, force=True) == 5
    assert [m for m, u in wire.calls if u.endswith(MESSAGES)] == ["POST"] * 3


def test_a_401_from_the_peer_is_a_connection_error_that_says_what_to_do(connected, wire):
    a, b = connected
    Connection.objects.filter(pk=b.pk).update(key=bytes(32).hex())  # the peer no longer shares our key
    issue = services.issue_create(project=a.local_instance.projects.get(), actor="u@example.com", summary="x")
    pipeline.exalate(connection=a, key=issue.key)
    error = SyncError.objects.get(impact="connection", connection=a)
    assert "refuses this node's signature" in error.message and "new invitation" in error.message
    assert OutboundMessage.objects.filter(connection=a, delivered_at__isnull=True).count() == 1
    a.refresh_from_db()
    assert a.status == "active" and a.status_message == error.message
    # Fixed on the other side: the next delivery goes through and the error resolves itself.
    Connection.objects.filter(pk=b.pk).update(key=a.key)
    assert tasks.deliver(a.pk, force=True) == 1
    a.refresh_from_db()
    assert a.status_message == "" and SyncError.objects.get(pk=error.pk).resolved_at is not None
    assert Issue.objects.filter(project__key="ENG").count() == 1


def test_429_retry_after_is_honoured(connected, wire):
    a, b = connected

    def busy(method, url, resp):  # type: ignore[no-untyped-def]
        out = requests.Response()
        out.status_code, out._content, out.headers["Retry-After"] = 429, b'{"detail": "slow down"}', "120"
        return out

    wire.hook = busy
    OutboundMessage.objects.create(
        connection=a, kind="status", payload={"type": "status", "status": "active"}
    )
    tasks.deliver(a.pk)
    a.refresh_from_db()
    from django.utils import timezone

    assert (a.next_attempt_at - timezone.now()).total_seconds() > 100
    assert "busy (429)" in a.status_message


def test_backoff_is_capped_with_full_jitter(settings):
    settings.NODE_RETRY_MAX_SECONDS = 300
    delays = [tasks.backoff_delay(20) for _ in range(200)]
    assert max(delays) <= 300 and min(delays) < 150
    assert tasks.backoff_delay(1, retry_after=30) >= 30


def test_sweep_renudges_due_delivery(connected, wire):
    a, b = connected
    OutboundMessage.objects.update(delivered_at=timezone.now())
    # Nothing to deliver: an idle node's sweep queues no task (it queued one per connection every 2 s).
    assert tasks.sweep() == 0
    wire.down = True
    OutboundMessage.objects.create(
        connection=a, kind="status", payload={"type": "status", "status": "active"}
    )
    Connection.objects.filter(pk=a.pk).update(next_attempt_at=None)
    wire.down = False
    assert tasks.sweep() >= 1
    assert not OutboundMessage.objects.filter(delivered_at__isnull=True).exists()


# --- status -------------------------------------------------------------------------------------------------


def test_deactivation_and_activation_travel_to_the_peer(connected, wire):
    a, b = connected
    connection_deactivate(connection=a)
    b.refresh_from_db()
    assert b.status == "deactivated" and "other node" in b.status_message
    connection_activate(connection=a)
    b.refresh_from_db()
    assert b.status == "active"


def test_deleting_a_connection_deletes_the_peer_side(connected, wire):
    a, b = connected
    connection_delete(connection=a)
    assert not Connection.objects.exists()


def test_status_endpoint_rejects_unknown_values(receiver):
    before = _state()
    resp = receiver.post("/node/v1/status/", {"status": "exploded"})
    assert resp.status_code == 400
    assert _state() == before


# --- private mode -------------------------------------------------------------------------------------------


def test_private_mode_the_private_node_polls_and_acks(wire, two_instances):
    from connections.handshake import connection_accept, connection_initiate

    support, engineering = two_instances
    a, code = connection_initiate(name="Private link", local_instance=support)
    b = connection_accept(code=code, local_instance=engineering, private=True)
    a.refresh_from_db()
    issue = services.issue_create(
        project=support.projects.get(), actor="u@example.com", summary="Behind a wall"
    )
    wire.calls.clear()
    pipeline.exalate(connection=a, key=issue.key)
    # A cannot call B: the message waits in A's outbox, nothing was sent.
    assert not wire.calls
    assert OutboundMessage.objects.filter(connection=a, delivered_at__isnull=True).count() == 1
    assert not Issue.objects.filter(project__key="ENG").exists()
    # B polls (its sweeper does this every few seconds), applies, acks; its own ack is pushed to A.
    assert tasks.poll(b.pk) == 1
    assert Issue.objects.get(project__key="ENG").summary == "Behind a wall"
    assert not OutboundMessage.objects.filter(connection=a, delivered_at__isnull=True).exists()
    twin_a = Twin.objects.get(connection=a)
    assert twin_a.state == Twin.State.SYNCHRONIZED and twin_a.remote_key.startswith("ENG-")
    # Polling again finds nothing new and applies nothing twice.
    assert tasks.poll(b.pk) == 0
    assert Issue.objects.filter(project__key="ENG").count() == 1


def test_only_private_connections_serve_their_outbox(receiver):
    resp = receiver.get("/node/v1/messages/?after=0")
    assert resp.status_code == 409 and resp.json()["code"] == "not_private"
