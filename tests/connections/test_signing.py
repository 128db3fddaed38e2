"""Handshake key agreement and request/response signing."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connections.signing import (
    SignatureError,
    SignedRequest,
    derive_connection_key,
    handshake_proof,
    handshake_transcript,
    new_keypair,
    peek_connection_id,
    sign_request,
    sign_response,
    verify_handshake_proof,
    verify_request,
    verify_response,
)

SECRET = bytes(range(32))
INV_ID = "00000000-0000-0000-0000-000000001234"
B_INFO = {
    "node_name": "node-b",
    "node_url": "https://b.example.com",
    "app_version": "0.1.0",
    "features": ["x"],
}


# --- handshake -------------------------------------------------------------------------------------------


def run_handshake(secret_a: bytes = SECRET, secret_b: bytes = SECRET):
    """Walk the protocol exactly as the views will: returns (key_a, key_b)."""
    # B: keypair + proof over the transcript without A's key.
    b_priv, b_pub = new_keypair()
    t1_b = handshake_transcript(
        invitation_id=INV_ID, initiator_pub=None, acceptor_pub=b_pub, acceptor_info=B_INFO
    )
    request = {
        "invitation_id": INV_ID,
        "acceptor_pub": b_pub,
        "acceptor_info": B_INFO,
        "proof": handshake_proof(secret_b, t1_b, "acceptor"),
    }
    # A: recompute the partial transcript from what it received, check the proof, answer.
    t1_a = handshake_transcript(
        invitation_id=request["invitation_id"],
        initiator_pub=None,
        acceptor_pub=request["acceptor_pub"],
        acceptor_info=request["acceptor_info"],
    )
    if not verify_handshake_proof(secret_a, t1_a, "acceptor", request["proof"]):
        raise PermissionError("A rejects B")
    a_priv, a_pub = new_keypair()
    full_a = handshake_transcript(
        invitation_id=INV_ID, initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info=request["acceptor_info"]
    )
    key_a = derive_connection_key(private=a_priv, peer_public=b_pub, secret=secret_a, transcript=full_a)
    response = {"initiator_pub": a_pub, "proof": handshake_proof(secret_a, full_a, "initiator")}
    # B: check A's proof over the full transcript and derive.
    full_b = handshake_transcript(
        invitation_id=INV_ID,
        initiator_pub=response["initiator_pub"],
        acceptor_pub=b_pub,
        acceptor_info=B_INFO,
    )
    if not verify_handshake_proof(secret_b, full_b, "initiator", response["proof"]):
        raise PermissionError("B rejects A")
    key_b = derive_connection_key(
        private=b_priv, peer_public=response["initiator_pub"], secret=secret_b, transcript=full_b
    )
    return key_a, key_b


def test_handshake_both_sides_get_the_same_key():
    key_a, key_b = run_handshake()
    assert key_a == key_b and len(key_a) == 32
    assert key_a != SECRET
    # fresh ephemeral keys: a second handshake with the same invitation gives a different key
    assert run_handshake()[0] != key_a


def test_handshake_wrong_secret_fails():
    with pytest.raises(PermissionError, match="A rejects B"):
        run_handshake(secret_b=b"\xff" * 32)


def test_transcript_is_canonical_and_binding():
    _, b_pub = new_keypair()
    _, a_pub = new_keypair()
    t = handshake_transcript(
        invitation_id=INV_ID, initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info=B_INFO
    )
    reordered = dict(reversed(list(B_INFO.items())))
    assert t == handshake_transcript(
        invitation_id=INV_ID, initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info=reordered
    )
    proof = handshake_proof(SECRET, t, "initiator")
    assert verify_handshake_proof(SECRET, t, "initiator", proof)
    assert verify_handshake_proof(SECRET, t, "initiator", proof.upper())
    changed = [
        handshake_transcript(
            invitation_id=INV_ID[:-1] + "5", initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info=B_INFO
        ),
        handshake_transcript(
            invitation_id=INV_ID, initiator_pub=b_pub, acceptor_pub=a_pub, acceptor_info=B_INFO
        ),
        handshake_transcript(
            invitation_id=INV_ID, initiator_pub=None, acceptor_pub=b_pub, acceptor_info=B_INFO
        ),
        handshake_transcript(
            invitation_id=INV_ID,
            initiator_pub=a_pub,
            acceptor_pub=b_pub,
            acceptor_info={**B_INFO, "node_url": "https://evil.example.com"},
        ),
    ]
    for other in changed:
        assert other != t
        assert not verify_handshake_proof(SECRET, other, "initiator", proof)
    # role is bound: A's proof cannot be reflected back as B's
    assert not verify_handshake_proof(SECRET, t, "acceptor", proof)
    assert not verify_handshake_proof(b"\0" * 32, t, "initiator", proof)


@pytest.mark.parametrize("bad", ["", "zz", "é" * 64, None, 12, "0" * 64, "a" * 63])
def test_verify_handshake_proof_never_raises(bad):
    assert verify_handshake_proof(SECRET, b"t", "acceptor", bad) is False


def test_handshake_proof_rejects_unknown_role():
    with pytest.raises(ValueError):
        handshake_proof(SECRET, b"t", "admin")
    assert verify_handshake_proof(SECRET, b"t", "admin", "00") is False


def test_changed_transcript_gives_different_key():
    a_priv, a_pub = new_keypair()
    _, b_pub = new_keypair()
    t = handshake_transcript(
        invitation_id=INV_ID, initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info=B_INFO
    )
    t2 = handshake_transcript(
        invitation_id=INV_ID, initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info={**B_INFO, "x": 1}
    )
    k = derive_connection_key(private=a_priv, peer_public=b_pub, secret=SECRET, transcript=t)
    assert k != derive_connection_key(private=a_priv, peer_public=b_pub, secret=SECRET, transcript=t2)
    assert k != derive_connection_key(private=a_priv, peer_public=b_pub, secret=b"\1" * 32, transcript=t)


def test_secret_alone_does_not_give_the_key():
    """An attacker with the code (secret + transcript, public keys) but neither private key gets nowhere."""
    a_priv, a_pub = new_keypair()
    b_priv, b_pub = new_keypair()
    t = handshake_transcript(
        invitation_id=INV_ID, initiator_pub=a_pub, acceptor_pub=b_pub, acceptor_info=B_INFO
    )
    real = derive_connection_key(private=a_priv, peer_public=b_pub, secret=SECRET, transcript=t)
    assert real == derive_connection_key(private=b_priv, peer_public=a_pub, secret=SECRET, transcript=t)
    m_priv, _ = new_keypair()
    assert derive_connection_key(private=m_priv, peer_public=b_pub, secret=SECRET, transcript=t) != real
    assert derive_connection_key(private=m_priv, peer_public=a_pub, secret=SECRET, transcript=t) != real
    # nor anything computed from public material + secret alone
    assert hmac.new(SECRET, t, hashlib.sha256).digest() != real
    assert hashlib.sha256(SECRET + t).digest() != real


LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_peer_key_rejected(point):
    priv, _ = new_keypair()
    with pytest.raises(ValueError, match="invalid"):
        derive_connection_key(private=priv, peer_public=point, secret=SECRET, transcript=b"t")


def test_malformed_keys_rejected():
    priv, pub = new_keypair()
    with pytest.raises(ValueError):
        derive_connection_key(private=priv[:31], peer_public=pub, secret=SECRET, transcript=b"t")
    with pytest.raises(ValueError):
        derive_connection_key(private=priv, peer_public=pub + b"\0", secret=SECRET, transcript=b"t")
    with pytest.raises(ValueError):
        derive_connection_key(private=priv, peer_public=pub, secret=b"", transcript=b"t")
    with pytest.raises(ValueError):
        handshake_transcript(
            invitation_id=INV_ID, initiator_pub=None, acceptor_pub=b"short", acceptor_info={}
        )
    with pytest.raises(ValueError):
        handshake_transcript(
            invitation_id=INV_ID, initiator_pub=None, acceptor_pub=pub, acceptor_info={"x": float("nan")}
        )


# --- requests --------------------------------------------------------------------------------------------

KEY = bytes(range(100, 132))
CONN = "c0ffee00-1111-2222-3333-444455556666"
NOW = 1_790_000_000
PATH = "/api/v1/sync/events?since=5&limit=10"
BODY = b'{"events": [1, 2, 3]}'


def signed(**overrides):
    args = dict(key=KEY, connection_id=CONN, method="POST", path=PATH, body=BODY, now=NOW)
    args.update(overrides)
    return sign_request(**args)


def verify(headers, **overrides):
    args = dict(key=KEY, headers=headers, method="POST", path=PATH, body=BODY, now=NOW)
    args.update(overrides)
    return verify_request(**args)


def reason(fn, *a, **kw) -> str:
    with pytest.raises(SignatureError) as exc:
        fn(*a, **kw)
    assert str(exc.value)
    return exc.value.reason


def test_request_round_trip():
    headers = signed()
    assert set(headers) == {
        "X-Exalate-Connection",
        "X-Exalate-Timestamp",
        "X-Exalate-Nonce",
        "X-Exalate-Signature",
    }
    assert headers["X-Exalate-Timestamp"] == str(NOW)
    assert len(headers["X-Exalate-Nonce"]) == 32
    assert headers["X-Exalate-Signature"].startswith("v1=")
    got = verify(headers)
    assert got == SignedRequest(connection_id=CONN, timestamp=NOW, nonce=headers["X-Exalate-Nonce"])
    assert peek_connection_id(headers) == CONN
    assert signed()["X-Exalate-Nonce"] != headers["X-Exalate-Nonce"]


def test_request_default_clock_and_empty_body():
    headers = sign_request(key=KEY, connection_id=CONN, method="get", path="/api/v1/ping", body=b"")
    assert verify_request(key=KEY, headers=headers, method="GET", path="/api/v1/ping", body=b"").nonce


def test_headers_case_insensitive_and_django_meta():
    headers = signed()
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify(lower).connection_id == CONN
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    meta["REQUEST_METHOD"] = "POST"
    assert verify(meta).connection_id == CONN
    assert peek_connection_id(meta) == CONN


def test_headers_django_request_headers():
    from django.http.request import HttpHeaders

    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in signed().items()}
    assert verify(HttpHeaders(meta)).connection_id == CONN


@pytest.mark.parametrize(
    "change",
    [
        {"method": "PUT"},
        {"path": "/api/v1/sync/events?since=6&limit=10"},
        {"path": "/api/v1/sync/events?limit=10&since=5"},
        {"path": "/api/v1/sync/events"},
        {"path": "/api/v1/sync/other?since=5&limit=10"},
        {"body": BODY + b" "},
        {"body": b""},
        {"key": bytes(32)},
        {"method": "POST\n"},
        {"path": "no-slash"},
    ],
)
def test_tampered_request_parts_fail(change):
    assert reason(verify, signed(), **change) == "bad_signature"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Exalate-Timestamp", str(NOW + 1)),
        ("X-Exalate-Timestamp", str(NOW - 1000)),  # also stale, but the forgery is what is reported
        ("X-Exalate-Nonce", "0" * 32),
        ("X-Exalate-Nonce", None),  # same nonce upper-cased: must not count as a new nonce
        ("X-Exalate-Connection", "c0ffee00-1111-2222-3333-444455556667"),
        ("X-Exalate-Signature", "v1=" + "0" * 64),
    ],
)
def test_tampered_headers_fail(header, value):
    headers = signed()
    headers[header] = value if value is not None else headers[header].upper()
    assert reason(verify, headers) == "bad_signature"


def test_signature_flip_every_hex_digit():
    headers = signed()
    sig = headers["X-Exalate-Signature"]
    for i in range(3, len(sig)):
        flipped = "1" if sig[i] != "1" else "2"
        assert (
            reason(verify, {**headers, "X-Exalate-Signature": sig[:i] + flipped + sig[i + 1 :]})
            == "bad_signature"
        )


def test_stale_timestamp_both_directions():
    headers = signed()
    assert verify(headers, now=NOW + 300).timestamp == NOW
    assert verify(headers, now=NOW - 300).timestamp == NOW
    with pytest.raises(SignatureError) as exc:
        verify(headers, now=NOW + 412)
    assert exc.value.reason == "stale_timestamp"
    assert "412 s" in str(exc.value) and "limit 300 s" in str(exc.value) and "NTP" in str(exc.value)
    assert "behind" in str(exc.value)
    with pytest.raises(SignatureError) as exc:
        verify(headers, now=NOW - 301)
    assert exc.value.reason == "stale_timestamp" and "ahead of" in str(exc.value)
    assert reason(verify, headers, now=NOW + 61, max_skew=60) == "stale_timestamp"


@pytest.mark.parametrize(
    "header", ["X-Exalate-Connection", "X-Exalate-Timestamp", "X-Exalate-Nonce", "X-Exalate-Signature"]
)
def test_missing_headers(header):
    headers = signed()
    del headers[header]
    assert reason(verify, headers) == "missing_header"
    headers[header] = "   "
    assert reason(verify, headers) == "missing_header"


def test_missing_header_message_names_header():
    with pytest.raises(SignatureError, match="X-Exalate-Connection"):
        peek_connection_id({})


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Exalate-Connection", "has space"),
        ("X-Exalate-Connection", "x" * 129),
        ("X-Exalate-Connection", "a/b"),
        ("X-Exalate-Timestamp", "1.5"),
        ("X-Exalate-Timestamp", "-5"),
        ("X-Exalate-Timestamp", "soon"),
        ("X-Exalate-Timestamp", "9" * 13),
        ("X-Exalate-Nonce", "abc"),
        ("X-Exalate-Nonce", "g" * 32),
        ("X-Exalate-Nonce", "a" * 65),
        ("X-Exalate-Signature", "0" * 64),
        ("X-Exalate-Signature", "v2=" + "0" * 64),
        ("X-Exalate-Signature", "v1=" + "0" * 63),
        ("X-Exalate-Signature", "v1=" + "z" * 64),
        ("X-Exalate-Signature", "sha256=abc"),
    ],
)
def test_malformed_headers(header, value):
    assert reason(verify, {**signed(), header: value}) == "malformed_header"


def test_non_string_header_value_is_malformed():
    assert reason(peek_connection_id, {"X-Exalate-Connection": 5}) == "malformed_header"


def test_sign_request_validates_inputs():
    for bad in [
        {"connection_id": "bad id"},
        {"nonce": "xyz"},
        {"method": "GE T"},
        {"path": "/a\nb"},
        {"key": b"short"},
    ]:
        with pytest.raises(ValueError):
            signed(**bad)
    assert signed(nonce="ab" * 8)["X-Exalate-Nonce"] == "ab" * 8


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_to_body_fails(data):
    body = data.draw(st.binary(min_size=1, max_size=200))
    headers = signed(body=body)
    assert verify(headers, body=body).connection_id == CONN
    i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != body[i]))
    tampered = body[:i] + bytes([new]) + body[i + 1 :]
    assert reason(verify, headers, body=tampered) == "bad_signature"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "X-Exalate-Connection",
                "X-Exalate-Timestamp",
                "X-Exalate-Nonce",
                "X-Exalate-Signature",
                "x-exalate-nonce",
                "Other",
            ]
        ),
        st.text(),
    )
)
def test_fuzz_headers_only_raise_signature_error(headers):
    with pytest.raises(SignatureError):
        verify(headers)


# --- responses -------------------------------------------------------------------------------------------


def test_response_round_trip_and_tampering():
    nonce = signed()["X-Exalate-Nonce"]
    headers = sign_response(key=KEY, status=200, body=b'{"ok":true}', request_nonce=nonce)
    assert list(headers) == ["X-Exalate-Signature"]
    verify_response(key=KEY, headers=headers, status=200, body=b'{"ok":true}', request_nonce=nonce)
    verify_response(
        key=KEY,
        headers={"x-exalate-signature": headers["X-Exalate-Signature"]},
        status=200,
        body=b'{"ok":true}',
        request_nonce=nonce,
    )
    for change in [
        {"status": 201},
        {"body": b'{"ok":false}'},
        {"request_nonce": "0" * 32},
        {"request_nonce": nonce.upper()},
        {"request_nonce": "nope"},
        {"key": bytes(32)},
    ]:
        args = dict(key=KEY, headers=headers, status=200, body=b'{"ok":true}', request_nonce=nonce)
        args.update(change)
        assert reason(verify_response, **args) == "bad_signature"
    assert (
        reason(verify_response, key=KEY, headers={}, status=200, body=b"", request_nonce=nonce)
        == "missing_header"
    )
    assert (
        reason(
            verify_response,
            key=KEY,
            headers={"X-Exalate-Signature": "v1=x"},
            status=200,
            body=b"",
            request_nonce=nonce,
        )
        == "malformed_header"
    )


def test_request_signature_is_not_a_valid_response_signature():
    headers = signed(body=b"")
    nonce = headers["X-Exalate-Nonce"]
    assert reason(verify_response, key=KEY, headers=headers, status=200, body=b"", request_nonce=nonce) == (
        "bad_signature"
    )
