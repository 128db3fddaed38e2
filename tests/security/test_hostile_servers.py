"""Talking to an untrusted node or tracker (issue #17, part 4).

Anyone can mint a valid invitation code (the key travels inside it), so the node URL in a code may point at
a hostile server, and a tracker URL is whatever an admin typed. Every test here talks to a real HTTP server
on a loopback address (``tests/hostile_http.py``) that trickles, sends huge or deeply nested answers, or
redirects, and checks that the request ends by its deadline, that the server was not read past the cap
(the bytes it managed to send), that memory stays bounded, and that the error says what happened.
"""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
import uuid

import pytest
from rest_framework.test import APIClient

from connections import signing
from connections.handshake import HandshakeError, connection_accept, preview_invitation
from connections.invitation import Invitation as Sealed
from connections.invitation import InvitationError, new_secret, seal_invitation
from connections.models import Connection, OutboundMessage
from instances.connectors.base import ConnectorError
from instances.connectors.http import HttpClient
from instances.models import Instance
from tests.hostile_http import HostileServer, answer, deep_json, head, huge, timed, trickle

MiB = 1024 * 1024
# Kernel socket buffers on loopback hold a few MiB the client never read; far below the bodies sent here.
SOCKET_SLACK = 8 * MiB


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    started: list[HostileServer] = []

    def start(behaviour, host: str = "127.0.0.1") -> HostileServer:  # type: ignore[no-untyped-def]
        server = HostileServer(behaviour, host=host)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def limits(settings):  # type: ignore[no-untyped-def]
    """Short deadlines and a small answer cap, so hostile answers show quickly."""
    settings.OUTBOUND_PEER_DEADLINE = 2.0
    settings.OUTBOUND_TRACKER_DEADLINE = 2.0
    settings.OUTBOUND_MAX_ANSWER_BYTES = 1 * MiB
    settings.OUTBOUND_MIN_DOWNLOAD_RATE = 1 * MiB
    return settings


def tracker(server: HostileServer, **kwargs) -> HttpClient:  # type: ignore[no-untyped-def]
    kwargs.setdefault("max_attempts", 1)
    return HttpClient(
        server.url,
        service="Redmine",
        headers={"X-Redmine-API-Key": "key-SENTINEL-9f8e7d6c5b"},
        bucket_key=f"hostile-{uuid.uuid4().hex}",
        rate_per_s=1000,
        **kwargs,
    )


def peak_memory(fn):  # type: ignore[no-untyped-def]
    """(seconds, result or exception, peak bytes allocated by Python meanwhile)."""
    tracemalloc.start()
    try:
        elapsed, result = timed(fn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return elapsed, result, peak


def code_for(node_url: str, *, tracker_url: str = "") -> str:
    """An invitation code anyone could mint, naming ``node_url``."""
    return seal_invitation(
        Sealed(
            secret=new_secret(),
            connection_type="script",
            connection_name="Forged",
            invitation_id=str(uuid.uuid4()),
            initiator_node="mallory",
            initiator_user="mallory",
            app_version="1.0",
            features=("replica-1", "batches"),
            tracker_type="builtin",
            tracker_version="",
            tracker_url=tracker_url,
            node_url=node_url,
            instance_uid=uuid.uuid4().hex,
            instance_name="Elsewhere",
            expires_at=int(time.time()) + 3600,
        )
    )


@pytest.fixture
def local_instance(db):  # type: ignore[no-untyped-def]
    return Instance.objects.create(name="Support desk", tracker_type="builtin")


# --- trackers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["body", "head"])
def test_a_tracker_answer_trickled_a_byte_at_a_time_ends_at_the_deadline(limits, servers, what):
    server = servers(trickle(0.5, body=what == "body", length=30))  # 15 s if read to the end
    elapsed, error = timed(lambda: tracker(server).get_json("issues.json", action="list the issues"))
    assert elapsed < 2.0 + 1.5, f"held for {elapsed:.1f} s"
    assert isinstance(error, ConnectorError) and error.retryable
    assert "Redmine did not answer within 2 s" in error.message and "list the issues" in error.message


def test_retries_of_a_trickling_tracker_share_the_requests_deadline(limits, servers):
    server = servers(trickle(0.5, length=30))
    client = tracker(server, max_attempts=4, deadline=3.0)
    elapsed, error = timed(lambda: client.get_json("issues.json"))
    assert isinstance(error, ConnectorError) and error.retryable
    assert elapsed < 3.0 + 1.5, f"held for {elapsed:.1f} s over {client.requests_made} attempts"


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-content-length"])
def test_a_huge_tracker_answer_is_refused_at_the_cap_without_reading_it(limits, servers, announce):
    server = servers(huge(200 * MiB, announce=announce))
    elapsed, error, peak = peak_memory(lambda: tracker(server).get_json("issues.json"))
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "OUTBOUND_MAX_ANSWER_BYTES" in error.message and "Redmine's answer" in error.message
    assert server.sent < 1 * MiB + SOCKET_SLACK, f"the server sent {server.sent / MiB:.0f} MiB"
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB allocated"
    assert elapsed < 2.0 + 1.5


def test_deeply_nested_tracker_json_is_a_clear_error(limits, servers):
    server = servers(answer(200, deep_json(100_000)))
    error = timed(lambda: tracker(server).get_json("issues/1.json", action="read issue #1"))[1]
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "Redmine's answer to the request to read issue #1 is JSON nested deeper than 64 levels" in str(
        error
    )


def test_tracker_text_that_is_not_valid_unicode_is_refused_naming_the_tracker(limits, servers):
    server = servers(answer(200, b'{"issue": {"id": 1, "subject": "a\\ud800"}}'))
    error = timed(lambda: tracker(server).get_json("issues/1.json", action="read issue #1"))[1]
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "Redmine's answer to the request to read issue #1 holds text that is not valid Unicode" in str(
        error
    )
    assert "$.issue.subject" in str(error) and "Correct it in Redmine" in str(error)


@pytest.mark.parametrize(
    "text, too_deep",
    [
        ("[" * 64 + "]" * 64, False),
        ("[" * 65 + "]" * 65, True),
        ('{"a":' * 40 + "[" * 24 + "1" + "]" * 24 + "}" * 40, False),
        ('{"a":' * 40 + "[" * 25 + "1" + "]" * 25 + "}" * 40, True),
        (json.dumps([{"id": i, "f": [{"v": [i]}]} for i in range(500)]), False),
    ],
)
def test_answers_may_nest_64_levels_and_not_one_more(text, too_deep):
    from exalate_node.outbound import BadAnswer, parse_json

    if too_deep:
        with pytest.raises(BadAnswer):
            parse_json(text.encode())
    else:
        assert parse_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://tracker.example.com/", "gopher://x/"])
def test_only_http_and_https_tracker_urls_are_called(db, url):
    error = timed(lambda: HttpClient(url, service="Redmine").get_json("issues.json"))[1]
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "is not an http or https URL" in error.message and "Set the instance URL" in error.message


@pytest.mark.parametrize("url", ["ftp://tracker.example.com/", "file:///etc/passwd"])
def test_an_instance_url_that_is_not_http_is_refused_where_it_comes_in(db, admin_user, client, url):
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post(
        "/api/v1/instances/", {"name": "T", "tracker_type": "redmine", "url": url}, format="json"
    )
    assert response.status_code == 400 and "url" in response.json()["fields"], response.content
    client.force_login(admin_user)
    page = client.post(
        "/admin/instances/instance/add/",
        {"name": "T", "kind": "local", "tracker_type": "redmine", "url": url, "settings": "{}"},
    )
    refused = b"is not an http or https URL" in page.content or b"Enter a valid URL" in page.content
    assert page.status_code == 200 and refused, page.content
    assert not Instance.objects.filter(name="T").exists()


def test_with_private_addresses_refused_a_tracker_on_loopback_is_not_contacted(limits, servers):
    limits.OUTBOUND_REFUSE_PRIVATE_ADDRESSES = True
    server = servers(answer(200, b"{}"))
    error = timed(lambda: tracker(server).get_json("issues.json"))[1]
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "127.0.0.1" in error.message and "OUTBOUND_REFUSE_PRIVATE_ADDRESSES is on" in error.message
    assert "OUTBOUND_ALLOWED_NETWORKS" in error.message
    assert server.requests == []
    limits.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    assert tracker(server).get_json("issues.json") == {}


def test_a_download_redirected_to_a_refused_address_is_not_followed(limits, servers):
    limits.OUTBOUND_REFUSE_PRIVATE_ADDRESSES = True
    limits.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    inside = servers(answer(200, b"secret file"), host="127.0.0.2")
    front = servers(answer(302, b"", {"Location": f"{inside.url}/files/1"}))
    error = timed(lambda: b"".join(tracker(front).download("attachments/1", action="download file 1")))[1]
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "127.0.0.2" in error.message and inside.requests == [] and len(front.requests) == 1


def test_dns_rebinding_cannot_reach_a_refused_address(limits, servers, monkeypatch):
    """The name is resolved once per connection and the connection goes to the address that was checked: a
    name that resolves to an allowed address when checked and to a refused one a moment later (DNS
    rebinding) never reaches the refused one, and a connection made while it resolves to it is refused."""
    limits.OUTBOUND_REFUSE_PRIVATE_ADDRESSES = True
    limits.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    allowed = servers(answer(200, b'{"where": "allowed"}'))
    refused = servers(answer(200, b'{"where": "refused"}'), host="127.0.0.2")
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"] + ["127.0.0.2"] * 20)

    def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "tracker.test":
            address = next(answers)
            port = allowed.port if address == "127.0.0.1" else refused.port
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://tracker.test:{allowed.port}"
    assert HttpClient(url, service="Redmine", rate_per_s=1000).get_json("issues.json") == {"where": "allowed"}
    error = timed(lambda: HttpClient(url, service="Redmine", rate_per_s=1000).get_json("issues.json"))[1]
    assert isinstance(error, ConnectorError) and "127.0.0.2" in error.message, error
    assert refused.requests == [] and len(allowed.requests) == 1


def test_a_download_redirected_to_another_host_carries_no_credentials(limits, servers):
    storage = servers(answer(200, b"file content", {"Content-Type": "application/octet-stream"}))
    front = servers(answer(302, b"", {"Location": f"http://localhost:{storage.port}/blob/1"}))
    assert b"".join(tracker(front).download("attachments/1")) == b"file content"
    assert front.requests[0].header("X-Redmine-API-Key") == "key-SENTINEL-9f8e7d6c5b"
    assert storage.requests[0].header("X-Redmine-API-Key") == ""


def test_an_api_request_redirected_to_another_host_is_refused(limits, servers):
    elsewhere = servers(answer(200, b"{}"))
    front = servers(answer(301, b"", {"Location": f"http://localhost:{elsewhere.port}/issues.json"}))
    error = timed(lambda: tracker(front).get_json("issues.json", action="list the issues"))[1]
    assert isinstance(error, ConnectorError) and not error.retryable, error
    assert "redirected the request to list the issues to another address" in error.message
    assert elsewhere.requests == []


def test_a_trickled_download_ends_but_a_big_one_at_a_fair_speed_arrives(limits, servers):
    limits.OUTBOUND_TRACKER_DEADLINE = 1.0
    limits.OUTBOUND_MIN_DOWNLOAD_RATE = 1 * MiB  # 1 s, plus 1 s per MiB received

    def steady(server, conn, request):  # type: ignore[no-untyped-def]
        server.send(conn, head(200, {"Content-Length": str(3 * MiB)}))
        for _ in range(32):  # 3 MiB in about 1.6 s: longer than the fixed second, faster than the rate
            server.send(conn, b"x" * (96 * 1024))
            time.sleep(0.05)

    big = servers(steady)
    elapsed, content = timed(lambda: b"".join(tracker(big).download("attachments/1")))
    assert isinstance(content, bytes) and len(content) == 3 * MiB, content
    assert elapsed > 1.0
    slow = servers(trickle(0.2, length=100))
    elapsed, error = timed(
        lambda: b"".join(tracker(slow).download("attachments/2", action="download file 2"))
    )
    assert isinstance(error, ConnectorError) and error.retryable, error
    assert "the download for download file 2 did not finish within 1 s" in error.message
    assert elapsed < 1.0 + 1.5


def test_an_attachment_larger_than_the_limit_is_not_downloaded_whole(limits, servers):
    limits.ATTACHMENT_MAX_BYTES = 1 * MiB
    server = servers(huge(100 * MiB, announce=False))
    error = timed(lambda: sum(len(c) for c in tracker(server).download("attachments/1")))[1]
    assert isinstance(error, ConnectorError) and not error.retryable and "ATTACHMENT_MAX_BYTES" in str(error)
    assert server.sent < 1 * MiB + SOCKET_SLACK


# --- peers: forged invitation codes -------------------------------------------------------------------------


def test_a_forged_code_whose_node_sends_a_huge_answer_is_refused_without_reading_it(
    limits, servers, local_instance
):
    server = servers(huge(200 * MiB, announce=False))
    elapsed, error, peak = peak_memory(
        lambda: connection_accept(code=code_for(server.url), local_instance=local_instance)
    )
    assert isinstance(error, HandshakeError), error
    assert "larger than the 1.0 MiB this node accepts" in error.message
    assert "OUTBOUND_MAX_ANSWER_BYTES" in error.message
    assert server.sent < 1 * MiB + SOCKET_SLACK, f"the server sent {server.sent / MiB:.0f} MiB"
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB allocated"
    assert elapsed < 2.0 + 1.5
    assert not Connection.objects.exists()


def test_a_forged_code_whose_node_trickles_its_answer_ends_at_the_deadline(limits, servers, local_instance):
    server = servers(trickle(0.5, length=30))
    elapsed, error = timed(
        lambda: connection_accept(code=code_for(server.url), local_instance=local_instance)
    )
    assert isinstance(error, HandshakeError) and error.code == "unreachable", error
    assert "no complete answer within 2 s" in error.message
    assert elapsed < 2.0 + 1.5, f"held for {elapsed:.1f} s"


def test_a_forged_code_whose_node_answers_deeply_nested_json_is_a_400_not_a_500(
    limits, servers, local_instance, admin_user
):
    server = servers(answer(200, deep_json(100_000)))
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post(
        "/api/v1/connections/accept/",
        {"code": code_for(server.url), "local_instance": local_instance.pk},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "nested deeper than 64 levels" in response.json()["detail"]
    assert len(server.requests) == 1 and not Connection.objects.exists()


@pytest.mark.parametrize(
    "node_url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://node.example.com",
        "http://",
        "http://mallory:secret@node.example.com",
        "http://node.example.com/?next=/admin",
    ],
)
def test_a_code_whose_node_url_is_not_an_http_url_is_refused_at_check_code(
    db, admin_user, client, local_instance, node_url
):
    code = code_for(node_url)
    with pytest.raises(InvitationError) as refused:
        preview_invitation(code)
    assert refused.value.code == "bad_url" and "NODE_URL" in refused.value.message
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post("/api/v1/connections/preview/", {"code": code}, format="json")
    assert response.status_code == 400 and "cannot be used" in response.json()["detail"]
    client.force_login(admin_user)
    page = client.post("/ui/connections/accept/", {"code": code, "local_instance": local_instance.pk})
    assert page.status_code == 400 and b"This invitation code cannot be used" in page.content
    assert not Connection.objects.exists()


def test_a_code_whose_tracker_url_is_not_an_http_url_is_refused(db):
    with pytest.raises(InvitationError) as refused:
        preview_invitation(code_for("https://node.example.com", tracker_url="javascript:alert(1)"))
    assert refused.value.code == "bad_url" and "tracker URL" in refused.value.message


def test_a_code_naming_a_private_address_is_refused_at_check_code_when_the_setting_is_on(
    db, settings, admin_user, client, local_instance
):
    code = code_for("http://127.0.0.1:8200/admin")
    assert preview_invitation(code)["node"]["url"] == "http://127.0.0.1:8200/admin"  # off: local demos work
    settings.OUTBOUND_REFUSE_PRIVATE_ADDRESSES = True
    with pytest.raises(InvitationError) as refused:
        preview_invitation(code)
    assert refused.value.code == "refused_address"
    assert (
        "127.0.0.1" in refused.value.message and "OUTBOUND_REFUSE_PRIVATE_ADDRESSES" in refused.value.message
    )
    client.force_login(admin_user)
    page = client.post("/ui/connections/accept/", {"code": code, "local_instance": local_instance.pk})
    assert page.status_code == 400 and b"OUTBOUND_REFUSE_PRIVATE_ADDRESSES is on" in page.content
    with pytest.raises(InvitationError):
        connection_accept(code=code, local_instance=local_instance)


# --- peers: an established connection -----------------------------------------------------------------------


KEY = b"k" * 32


def signed(status: int, body: bytes):  # type: ignore[no-untyped-def]
    """An answer signed with the test connection's key (as the real peer would sign it)."""

    def run(server, conn, request):  # type: ignore[no-untyped-def]
        nonce = request.header(signing.HEADER_NONCE)
        signature = signing.sign_response(key=KEY, status=status, body=body, request_nonce=nonce)
        answer(status, body, signature)(server, conn, request)

    return run


def peer_connection(local_instance: Instance, url: str) -> Connection:
    return Connection.objects.create(
        name="To a hostile node",
        status=Connection.Status.ACTIVE,
        local_instance=local_instance,
        remote_node_url=url,
        peer_uid=uuid.uuid4(),
        key=KEY.hex(),
    )


@pytest.mark.parametrize(
    "behaviour, expected",
    [
        (answer(400, deep_json(100_000)), "refused a batch of messages (400)"),
        (signed(200, deep_json(100_000)), "is JSON nested deeper than 64 levels"),
        (huge(200 * MiB, announce=False, status=400), "larger than the 1.0 MiB this node accepts"),
        (trickle(0.5, length=30), "no complete answer within 2 s"),
    ],
    ids=["deep-error", "deep-answer", "huge-error", "trickle"],
)
def test_delivering_to_a_hostile_node_fails_clearly_and_boundedly(
    limits, servers, local_instance, behaviour, expected
):
    from connections import tasks

    server = servers(behaviour)
    conn = peer_connection(local_instance, server.url)
    OutboundMessage.objects.create(connection=conn, kind="event", payload={"type": "event"}, size=15)
    elapsed, result, peak = peak_memory(lambda: tasks.deliver(conn.pk))
    assert not isinstance(result, Exception), result
    conn.refresh_from_db()
    assert expected in conn.status_message, conn.status_message
    assert OutboundMessage.objects.filter(delivered_at__isnull=True).count() == 1  # kept for the retry
    assert conn.next_attempt_at is not None  # backing off
    assert elapsed < 2.0 + 1.5 and peak < 16 * MiB and server.sent < 1 * MiB + SOCKET_SLACK


def signed_attachment(size: int, *, pause: float = 0.0, piece: int = 64 * 1024):  # type: ignore[no-untyped-def]
    """A peer's attachment answer, signed with the test connection's key, then ``size`` bytes of body in
    pieces of ``piece`` bytes with ``pause`` seconds between them."""

    def run(server, conn, request):  # type: ignore[no-untyped-def]
        digest = "0" * 64
        nonce = request.header(signing.HEADER_NONCE)
        signature = signing.sign_response(key=KEY, status=200, body=digest.encode(), request_nonce=nonce)
        headers = {"Content-Type": "application/octet-stream", "X-Content-SHA256": digest, **signature}
        server.send(conn, head(200, {**headers, "Connection": "close"}))
        left = size
        while left > 0 and not server.stopped.wait(pause):
            server.send(conn, b"x" * min(piece, left))
            left -= piece

    return run


def test_an_attachment_trickled_by_a_peer_ends_at_its_deadline(limits, servers, local_instance):
    from connections.transport import fetch_attachment

    limits.OUTBOUND_PEER_DEADLINE = 1.0
    server = servers(signed_attachment(100, pause=0.3, piece=1))  # 30 s if read to the end
    conn = peer_connection(local_instance, server.url)
    elapsed, error = timed(lambda: b"".join(fetch_attachment(conn, "SUP-1", "7")))
    assert isinstance(error, ConnectorError) and error.retryable, error
    assert "did not finish within 1 s" in error.message, error.message
    assert elapsed < 1.0 + 1.5, f"held for {elapsed:.1f} s"


def test_an_attachment_from_a_peer_stops_at_the_attachment_limit(limits, servers, local_instance):
    from connections.transport import fetch_attachment

    limits.ATTACHMENT_MAX_BYTES = 1 * MiB
    server = servers(signed_attachment(200 * MiB))
    conn = peer_connection(local_instance, server.url)
    error = timed(lambda: sum(len(chunk) for chunk in fetch_attachment(conn, "SUP-1", "7")))[1]
    assert isinstance(error, ConnectorError) and not error.retryable and "ATTACHMENT_MAX_BYTES" in str(error)
    assert server.sent < 1 * MiB + SOCKET_SLACK, f"the server sent {server.sent / MiB:.0f} MiB"


def test_the_invitation_preview_of_a_good_code_still_shows_the_node_url(db):
    preview = preview_invitation(code_for("https://node-b.example.com/exalate"))
    assert preview["node"]["url"] == "https://node-b.example.com/exalate"


def test_a_mistyped_allowed_network_is_a_clear_startup_error(tmp_path):
    from tests.test_settings import _check

    result = _check({"DEBUG": "true", "OUTBOUND_ALLOWED_NETWORKS": "10.1.2.0/24,intranet"}, tmp_path)
    assert result.returncode != 0
    assert "OUTBOUND_ALLOWED_NETWORKS holds 'intranet', which is not a network" in result.stderr
    assert (
        _check({"DEBUG": "true", "OUTBOUND_ALLOWED_NETWORKS": "10.1.2.0/24,fd00::/8"}, tmp_path).returncode
        == 0
    )
