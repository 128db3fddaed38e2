"""Connection key rotation between two nodes (in-process, over the node protocol; see ``test_handshake``):
both sides switch to the same fresh key, sync goes on, the old key stops working after its grace period, and
hostile or broken rotations change nothing."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from connections import rotation, signing
from connections.models import Connection
from connections.rotation import RotationError, key_fingerprint, rotate_key
from instances.models import Issue
from instances.tracker import services
from replicas import pipeline
from tests.connections import test_handshake as _harness
from tests.connections.test_node_protocol import Peer

wire, two_instances, connected = _harness.wire, _harness.two_instances, _harness.connected

ROTATE = "/node/v1/rotate-key/"


def _keys(*conns: Connection) -> list[tuple[str, str]]:
    out = []
    for conn in conns:
        conn.refresh_from_db()
        out.append((conn.key, conn.previous_key))
    return out


def test_both_nodes_switch_to_one_new_key_and_sync_goes_on(connected, wire):
    a, b = connected
    old = a.key
    assert old == b.key
    issue = services.issue_create(project=a.local_instance.projects.get(), actor="u@x", summary="before")
    pipeline.exalate(connection=a, key=issue.key)

    rotated = rotate_key(a)

    b.refresh_from_db()
    assert rotated.key == b.key != old
    assert rotated.previous_key == b.previous_key == old
    assert key_fingerprint(rotated) == key_fingerprint(b) != signing.fingerprint(bytes.fromhex(old))
    # A confirmed with the new key: B's grace for the old key is the short one, like A's.
    assert b.previous_key_until - timezone.now() <= rotation.SKEW_GRACE
    assert rotated.key_rotated_at and b.key_rotated_at
    # Sync goes on, both ways, with the new key.
    services.issue_update(issue=issue, actor="u@x", summary="after")
    copy = Issue.objects.get(project__key="ENG")
    assert copy.summary == "after"
    services.issue_update(issue=copy, actor="e@x", summary="back")
    assert Issue.objects.get(pk=issue.pk).summary == "back"


def test_a_request_signed_with_the_old_key_is_accepted_only_during_the_grace(connected, wire, client):
    a, b = connected
    old_signer = Peer(wire.client, b)  # signs as A's side would, with the key before the rotation
    rotate_key(a)
    assert old_signer.post("/node/v1/messages/", {"messages": []}).status_code == 202

    Connection.objects.filter(pk=b.pk).update(previous_key_until=timezone.now() - timedelta(seconds=1))
    refused = old_signer.post("/node/v1/messages/", {"messages": []})
    assert refused.status_code == 401 and refused.json()["code"] == "bad_signature"


def test_a_lost_answer_is_recovered_by_rotating_again(connected, wire):
    a, b = connected
    old = a.key

    def lose_the_answer(method, url, response):  # type: ignore[no-untyped-def]
        if url.endswith("/rotate-key/"):
            import requests

            raise requests.ConnectionError("connection reset while reading the answer")

    wire.hook = lose_the_answer
    with pytest.raises(RotationError, match="Nothing changed"):
        rotate_key(a)
    wire.hook = None
    (a_key, _), (b_key, b_previous) = _keys(a, b)
    assert a_key == old and b_key != old and b_previous == old  # B switched, A did not

    rotate_key(a)  # signed with the old key, which B still accepts
    (a_key, _), (b_key, _) = _keys(a, b)
    assert a_key == b_key != old
    issue = services.issue_create(project=a.local_instance.projects.get(), actor="u@x", summary="still syncs")
    pipeline.exalate(connection=a, key=issue.key)
    assert Issue.objects.filter(project__key="ENG", summary="still syncs").exists()


def test_an_unreachable_peer_changes_nothing(connected, wire):
    a, b = connected
    before = _keys(a, b)
    wire.down = True
    with pytest.raises(RotationError, match="retry when it is reachable"):
        rotate_key(a)
    assert _keys(a, b) == before
    assert Connection.objects.get(pk=a.pk).rotation_started_at is None


def test_a_rotation_running_on_the_peer_makes_the_other_wait(connected, wire):
    a, b = connected
    before = _keys(a, b)
    Connection.objects.filter(pk=b.pk).update(rotation_started_at=timezone.now())
    with pytest.raises(RotationError, match="rotating the key of this connection itself"):
        rotate_key(a)
    assert _keys(a, b) == before


def test_local_and_pending_connections_explain_why_they_cannot_rotate(wire, two_instances):
    from connections.handshake import connection_initiate
    from connections.services import connection_create_local

    support, engineering = two_instances
    local, _ = connection_create_local(name="local", instance_a=support, instance_b=engineering)
    with pytest.raises(RotationError, match="local connection has no key"):
        rotate_key(local)
    pending, _ = connection_initiate(name="pending", local_instance=support, user="anna")
    with pytest.raises(RotationError, match="waiting for the other node"):
        rotate_key(pending)


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "'rotation' must be a UUID"),
        ({"rotation": "nope", "pub": base64.b64encode(b"x" * 32).decode()}, "'rotation' must be a UUID"),
        ({"rotation": "0b8f2c2e-9d1b-4c53-9d55-0d3c1f0e9a11", "pub": "AAAA"}, "X25519 public key"),
        ({"rotation": "0b8f2c2e-9d1b-4c53-9d55-0d3c1f0e9a11", "pub": 7}, "X25519 public key"),
        (
            {"rotation": "0b8f2c2e-9d1b-4c53-9d55-0d3c1f0e9a11", "pub": base64.b64encode(bytes(32)).decode()},
            "invalid",
        ),
    ],
)
def test_a_malformed_rotation_request_is_a_400_that_changes_nothing(connected, wire, body, message):
    a, b = connected
    before = _keys(a, b)
    response = Peer(wire.client, b).post(ROTATE, body)
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]
    assert _keys(a, b) == before


def test_an_unsigned_or_forged_rotation_request_is_refused(connected, wire):
    a, b = connected
    before = _keys(a, b)
    body = {"rotation": "0b8f2c2e-9d1b-4c53-9d55-0d3c1f0e9a11", "pub": base64.b64encode(b"k" * 32).decode()}
    unsigned = wire.client.post(ROTATE, data=json.dumps(body), content_type="application/json")
    assert unsigned.status_code == 401
    forger = Peer(wire.client, b)
    forger.key = b"\x01" * 32
    forged = forger.post(ROTATE, body)
    assert forged.status_code == 401 and forged.json()["code"] == "bad_signature"
    assert _keys(a, b) == before


def test_api_command_and_page_rotate_and_show_the_same_fingerprint(
    connected, wire, admin_user, admin_client, capsys
):
    from rest_framework.test import APIClient

    a, b = connected
    api = APIClient()
    api.force_authenticate(admin_user)
    answer = api.post(f"/api/v1/connections/{a.pk}/rotate-key/")
    assert answer.status_code == 200, answer.content
    b.refresh_from_db()
    assert answer.json()["key_fingerprint"] == key_fingerprint(b)
    assert b.key not in answer.content.decode() and b.previous_key not in answer.content.decode()

    call_command("rotate_connection_key", str(a.pk))
    b.refresh_from_db()
    assert key_fingerprint(b) in capsys.readouterr().out

    page = admin_client.post(f"/ui/connections/{a.pk}/rotate-key/", follow=True)
    b.refresh_from_db()
    assert key_fingerprint(b) in page.content.decode()
    assert "Rotate key" in page.content.decode()

    with pytest.raises(CommandError, match="No connection 'nope'"):
        call_command("rotate_connection_key", "nope")
