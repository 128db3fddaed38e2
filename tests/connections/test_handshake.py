"""Connecting two nodes through an invitation code, in-process.

Both "nodes" share the test database; the single outbound-HTTP function (``connections.transport.
http_request``) is patched to call Django's test client, so every byte goes through the real node views.
The real two-process test is ``tests/e2e/test_two_nodes.py``.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from connections import handshake, signing, transport
from connections.handshake import HandshakeError, connection_accept, connection_initiate, preview_invitation
from connections.invitation import Invitation as Sealed
from connections.invitation import InvitationError, new_secret, open_invitation, seal_invitation
from connections.models import Connection, Invitation
from instances.models import Instance
from instances.tracker import services
from syncrules.models import RulesVersion

NODE_URL = "http://node-a.test"


class Wire:
    """Routes ``http_request`` to the test client; ``hook`` may rewrite or replace a response."""

    def __init__(self) -> None:
        self.client = Client()
        self.calls: list[tuple[str, str]] = []
        self.hook = None
        self.down = False

    def __call__(self, method, url, *, data=b"", headers=None, stream=False, timeout=None):  # type: ignore[no-untyped-def]
        self.calls.append((method, url))
        if self.down:
            raise requests.ConnectionError(f"HTTPConnectionPool: [Errno 111] Connection refused ({url})")
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = dict(headers or {})
        content_type = headers.pop("Content-Type", "")
        meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
        resp = self.client.generic(method, path, data=data, content_type=content_type, **meta)
        out = requests.Response()
        out.status_code = resp.status_code
        out.reason = resp.reason_phrase
        out._content = b"".join(resp.streaming_content) if resp.streaming else resp.content
        out._content_consumed = True
        out.headers = CaseInsensitiveDict(dict(resp.items()))
        out.url = url
        if self.hook is not None:
            replaced = self.hook(method, url, out)  # (a Response is falsy when its status is >= 400)
            out = out if replaced is None else replaced
        return out


@pytest.fixture
def wire(monkeypatch, settings):  # type: ignore[no-untyped-def]
    settings.NODE_URL = NODE_URL
    settings.NODE_NAME = "node-a"
    w = Wire()
    monkeypatch.setattr(transport, "http_request", w)
    return w


@pytest.fixture
def two_instances(transactional_db):  # type: ignore[no-untyped-def]
    support = Instance.objects.create(name="Support desk", tracker_type="builtin", url=NODE_URL)
    engineering = Instance.objects.create(
        name="Engineering", tracker_type="builtin", url="http://node-b.test"
    )
    services.project_create(instance=support, key="SUP", name="Support")
    services.project_create(instance=engineering, key="ENG", name="Engineering")
    from replicas import pipeline

    pipeline.META_CACHE.clear()
    return support, engineering


@pytest.fixture
def connected(wire, two_instances):  # type: ignore[no-untyped-def]
    """(A's connection, B's connection), joined by a real handshake."""
    support, engineering = two_instances
    side_a, code = connection_initiate(name="Support ⇄ Engineering", local_instance=support, user="anna")
    side_b = connection_accept(code=code, local_instance=engineering, user="ed")
    side_a.refresh_from_db()
    return side_a, side_b


def _snapshot() -> tuple:
    return (
        list(Connection.objects.order_by("pk").values_list("pk", "status", "peer_uid", "key")),
        list(Invitation.objects.order_by("pk").values_list("pk", "used_at", "revoked_at")),
        Instance.objects.count(),
        RulesVersion.objects.count(),
    )


def test_accepting_a_code_connects_both_sides_with_one_fresh_key(connected, two_instances):
    a, b = connected
    support, engineering = two_instances
    assert a.status == b.status == Connection.Status.ACTIVE
    assert a.key and a.key == b.key and len(bytes.fromhex(a.key)) == 32
    assert (a.peer_uid, b.peer_uid) == (b.uid, a.uid)
    assert (a.initiated_by, b.initiated_by) == ("local", "remote")
    assert a.remote_node_url == NODE_URL and b.remote_node_url == NODE_URL
    assert b.remote_instance.uid == support.uid and a.remote_instance.uid == engineering.uid
    assert b.name == "Support ⇄ Engineering" and b.type == a.type
    assert "replica-1" in a.peer_features and "batches" in b.peer_features
    assert (
        RulesVersion.objects.filter(connection=a).exists()
        and RulesVersion.objects.filter(connection=b).exists()
    )
    invitation = Invitation.objects.get(connection=a)
    assert invitation.used_at is not None
    # The key is not derivable from the code: it never travelled, and the secret alone does not give it.
    assert invitation.secret not in a.key


def test_the_code_carries_what_the_brief_lists(wire, two_instances):
    support, _ = two_instances
    conn, code = connection_initiate(name="Link", local_instance=support, type="basic", user="anna")
    inv = open_invitation(code)
    row = Invitation.objects.get(connection=conn)
    assert inv.invitation_id == str(row.invitation_id) and inv.secret.hex() == row.secret
    assert (inv.connection_type, inv.connection_name, inv.initiator_node, inv.initiator_user) == (
        "basic",
        "Link",
        "node-a",
        "anna",
    )
    assert (inv.node_url, inv.instance_uid, inv.instance_name, inv.tracker_type) == (
        NODE_URL,
        support.uid,
        "Support desk",
        "builtin",
    )
    assert set(handshake.FEATURES) <= set(inv.features)
    hours = (row.expires_at - timezone.now()).total_seconds() / 3600
    assert 71.9 < hours <= 72
    assert conn.status == Connection.Status.PENDING


def test_invitation_ttl_comes_from_settings(wire, two_instances, settings):
    settings.INVITATION_TTL_HOURS = 1
    conn, _ = connection_initiate(name="Short", local_instance=two_instances[0])
    left = Invitation.objects.get(connection=conn).expires_at - timezone.now()
    assert timedelta(minutes=59) < left <= timedelta(hours=1)


def test_preview_says_what_the_code_connects_to_and_changes_nothing(wire, two_instances):
    conn, code = connection_initiate(name="Link", local_instance=two_instances[0], user="anna")
    before = _snapshot()
    info = preview_invitation(code)
    assert info["connection_name"] == "Link"
    assert info["node"] == {"name": "node-a", "url": NODE_URL, "user": "anna"}
    assert info["tracker"]["type"] == "builtin" and info["instance"]["name"] == "Support desk"
    assert info["expires_at"] and info["fingerprint"] == Invitation.objects.get(connection=conn).fingerprint
    assert _snapshot() == before and not wire.calls


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda c: c[:-12] + ("A" if c[-12] != "A" else "B") + c[-11:], "corrupted"),
        (lambda c: c[:40], "truncated"),
    ],
    ids=["tampered", "truncated"],
)
def test_a_damaged_code_is_refused_before_anything_is_sent(wire, two_instances, damage, reason):
    _, code = connection_initiate(name="Link", local_instance=two_instances[0])
    before = _snapshot()
    with pytest.raises(InvitationError) as err:
        connection_accept(code=damage(code), local_instance=two_instances[1])
    assert err.value.code == reason and "Copy the whole code again" in str(err.value)
    assert _snapshot() == before and not wire.calls


def test_a_used_code_is_refused_on_the_second_accept(connected, two_instances):
    a, _ = connected
    code = _code_for(a)
    other = Instance.objects.create(name="Other", tracker_type="builtin")
    before = _snapshot()
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=other)
    assert err.value.code == "used" and "already used" in str(err.value) and "new code" in str(err.value)
    assert _snapshot() == before


def _code_for(conn: Connection) -> str:
    """Re-seal the code of a connection's invitation (an admin pasting the same code twice)."""
    row = Invitation.objects.filter(connection=conn).first()
    return seal_invitation(
        Sealed(
            secret=bytes.fromhex(row.secret),
            connection_type=conn.type,
            connection_name=conn.name,
            invitation_id=str(row.invitation_id),
            initiator_node="node-a",
            initiator_user="",
            app_version="0.1.0",
            features=handshake.FEATURES,
            tracker_type="builtin",
            tracker_version="",
            tracker_url="",
            node_url=NODE_URL,
            instance_uid=conn.local_instance.uid,
            instance_name=conn.local_instance.name,
            expires_at=int(row.expires_at.timestamp()),
        )
    )


def test_a_revoked_code_is_refused_and_says_what_to_do(wire, two_instances):
    conn, code = connection_initiate(name="Link", local_instance=two_instances[0])
    handshake.invitation_revoke(invitation=Invitation.objects.get(connection=conn))
    before = _snapshot()
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=two_instances[1])
    assert err.value.code == "revoked" and "Ask them for a new code" in str(err.value)
    assert _snapshot() == before


def test_an_expired_code_is_refused_by_both_nodes(wire, two_instances):
    conn, code = connection_initiate(name="Link", local_instance=two_instances[0])
    # The accepting node reads the expiry from the code itself...
    with pytest.raises(InvitationError) as err:
        open_invitation(code, now=timezone.now().timestamp() + 73 * 3600)
    assert err.value.code == "expired"
    # ...and the issuing node checks its own record (clock skew, or a code kept past its time).
    Invitation.objects.filter(connection=conn).update(expires_at=timezone.now() - timedelta(seconds=1))
    before = _snapshot()
    with pytest.raises(HandshakeError) as err2:
        connection_accept(code=code, local_instance=two_instances[1])
    assert err2.value.code == "expired" and "new code" in str(err2.value)
    assert _snapshot() == before


def test_a_code_from_another_node_is_refused(wire, two_instances):
    foreign = seal_invitation(
        Sealed(
            secret=new_secret(),
            connection_type="script",
            connection_name="Not ours",
            invitation_id=str(uuid.uuid4()),
            initiator_node="elsewhere",
            initiator_user="",
            app_version="0.1.0",
            features=handshake.FEATURES,
            tracker_type="builtin",
            tracker_version="",
            tracker_url="",
            node_url=NODE_URL,
            instance_uid=uuid.uuid4().hex,
            instance_name="Theirs",
            expires_at=int(timezone.now().timestamp()) + 3600,
        )
    )
    before = _snapshot()
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=foreign, local_instance=two_instances[1])
    assert err.value.code == "unknown_invitation" and err.value.status == 404
    assert "new invitation code" in str(err.value)
    assert _snapshot() == before


def test_a_wrong_proof_is_refused_and_the_invitation_stays_usable(wire, two_instances):
    conn, code = connection_initiate(name="Link", local_instance=two_instances[0])
    inv = open_invitation(code)
    body = {
        "invitation_id": inv.invitation_id,
        "acceptor_pub": base64.b64encode(signing.new_keypair()[1]).decode(),
        "acceptor_info": _info(two_instances[1]),
        "proof": "0" * 64,
    }
    before = _snapshot()
    resp = wire.client.post("/node/v1/handshake/", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 403 and resp.json()["code"] == "bad_proof"
    assert _snapshot() == before
    # The genuine acceptor can still use the code.
    assert connection_accept(code=code, local_instance=two_instances[1]).status == "active"


def _info(instance: Instance) -> dict:
    return {
        "node_url": "http://node-b.test",
        "node_name": "node-b",
        "app_version": "0.1.0",
        "features": list(handshake.FEATURES),
        "connection_uid": str(uuid.uuid4()),
        "private": False,
        "instance": {
            "uid": instance.uid,
            "name": instance.name,
            "tracker_type": "builtin",
            "url": "",
            "tracker_version": "",
        },
    }


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{", 400),
        (b"[]", 400),
        (json.dumps({"invitation_id": "x", "acceptor_pub": "short", "acceptor_info": {}, "proof": "p"}), 400),
    ],
)
def test_malformed_handshakes_get_a_clear_4xx(wire, two_instances, body, status):
    before = _snapshot()
    resp = wire.client.post("/node/v1/handshake/", data=body, content_type="application/json")
    assert resp.status_code == status and resp.json()["detail"]
    assert _snapshot() == before


def test_handshake_wrong_content_type_is_415(wire, two_instances):
    resp = wire.client.post("/node/v1/handshake/", data=b"{}", content_type="text/plain")
    assert resp.status_code == 415


def test_an_unreachable_node_is_reported_with_what_to_do(wire, two_instances):
    _, code = connection_initiate(name="Link", local_instance=two_instances[0])
    wire.down = True
    before = _snapshot()
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=two_instances[1])
    assert str(err.value) == (
        f"Could not reach the other node at {NODE_URL} (connection refused). Check that it is running and "
        "reachable from here, then try again."
    )
    assert _snapshot() == before


def test_a_web_page_instead_of_a_node_is_reported(wire, two_instances):
    _, code = connection_initiate(name="Link", local_instance=two_instances[0])

    def portal(method, url, resp):  # type: ignore[no-untyped-def]
        resp.status_code, resp._content = 200, b"<html>Welcome to the hotel wifi</html>"
        return resp

    wire.hook = portal
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=two_instances[1])
    assert err.value.code == "not_a_node" and "not as an exalate-node" in str(err.value)
    assert not Connection.objects.filter(initiated_by="remote").exists()


def test_an_answer_without_the_initiators_proof_is_refused(wire, two_instances):
    _, code = connection_initiate(name="Link", local_instance=two_instances[0])

    def forge(method, url, resp):  # type: ignore[no-untyped-def]
        data = json.loads(resp.content)
        data["proof"] = "ab" * 32
        resp._content = json.dumps(data).encode()
        return resp

    wire.hook = forge
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=two_instances[1])
    assert err.value.code == "bad_proof" and "impersonating" in str(err.value)
    assert not Connection.objects.filter(initiated_by="remote").exists()


def test_a_local_failure_after_the_peer_accepted_undoes_the_peer(wire, two_instances, monkeypatch):
    conn, code = connection_initiate(name="Link", local_instance=two_instances[0])
    original = handshake._publish_defaults

    def fail_on_acceptor(c):  # type: ignore[no-untyped-def]
        if c.initiated_by == Connection.Side.REMOTE:
            raise RuntimeError("disk full")
        return original(c)

    monkeypatch.setattr(handshake, "_publish_defaults", fail_on_acceptor)
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=two_instances[1])
    assert err.value.code == "local_failure" and "disk full" in str(err.value)
    assert not Connection.objects.exists()  # the initiator dropped its half when told


def test_accepting_on_the_same_instance_is_refused(wire, two_instances):
    _, code = connection_initiate(name="Link", local_instance=two_instances[0])
    with pytest.raises(HandshakeError) as err:
        connection_accept(code=code, local_instance=two_instances[0])
    assert err.value.code == "same_instance" and not wire.calls


def test_private_mode_accept_marks_both_sides(wire, two_instances):
    a, code = connection_initiate(name="Link", local_instance=two_instances[0])
    b = connection_accept(code=code, local_instance=two_instances[1], private=True)
    a.refresh_from_db()
    assert b.polls_peer and not b.polled_by_peer
    assert a.polled_by_peer and a.remote_node_url == ""


def test_management_commands_connect_two_instances(wire, two_instances, capsys):
    from django.core.management import call_command

    support, engineering = two_instances
    call_command("initiate_connection", "--instance", support.uid, "--name", "CLI link", "--code-only")
    code = capsys.readouterr().out.strip()
    assert code.startswith("EXN1-")
    call_command("accept_invitation", "--instance", engineering.name, "--code", code)
    out = capsys.readouterr().out
    assert "Connected" in out
    assert Connection.objects.filter(status="active").count() == 2


@pytest.mark.parametrize(
    "where, url",
    [
        ("node_url", "file:///etc/passwd"),
        ("node_url", "http://node-b.test/?next=/admin"),
        ("instance.url", "javascript:alert(1)"),
    ],
)
def test_an_acceptor_naming_a_url_that_is_not_http_is_refused_and_nothing_changes(
    wire, two_instances, where, url
):
    """The initiator would call the acceptor's node URL later, and shows its tracker URL: only http(s)."""
    conn, code = connection_initiate(name="Link", local_instance=two_instances[0])
    inv = open_invitation(code)
    info = _info(two_instances[1])
    if where == "node_url":
        info["node_url"] = url
    else:
        info["instance"]["url"] = url
    public = signing.new_keypair()[1]
    transcript = signing.handshake_transcript(
        invitation_id=inv.invitation_id, initiator_pub=None, acceptor_pub=public, acceptor_info=info
    )
    body = {
        "invitation_id": inv.invitation_id,
        "acceptor_pub": base64.b64encode(public).decode(),
        "acceptor_info": info,
        "proof": signing.handshake_proof(inv.secret, transcript, "acceptor"),
    }
    before = _snapshot()
    resp = wire.client.post("/node/v1/handshake/", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400 and resp.json()["code"] == "bad_request", resp.content
    assert "http" in resp.json()["detail"]
    assert _snapshot() == before
