"""Invitation codes: round trip, copy/paste tolerance, every failure mode, and fuzzing."""

from __future__ import annotations

import base64
import json
import uuid
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connections.invitation import (
    AAD,
    PREFIX,
    Invitation,
    InvitationError,
    clean_code,
    invitation_fingerprint,
    new_secret,
    open_invitation,
    seal_invitation,
)

NOW = 1_790_000_000  # 2026-09-21
EXPIRES = 1_796_119_200  # 2026-12-01 10:00 UTC


def make_invitation(**overrides) -> Invitation:
    fields = dict(
        secret=bytes(range(32)),
        connection_type="script",
        connection_name="Jira ↔ GitHub: ops",
        invitation_id=str(uuid.UUID(int=0x1234)),
        initiator_node="node-a",
        initiator_user="Ada Admin",
        app_version="0.1.0",
        features=["script", "attachments"],
        tracker_type="jira",
        tracker_version="9.12",
        tracker_url="https://jira.example.com",
        node_url="https://sync-a.example.com",
        instance_uid="inst-1",
        instance_name="Jira prod",
        expires_at=EXPIRES,
    )
    fields.update(overrides)
    return Invitation(**fields)


INV = make_invitation()
CODE = seal_invitation(INV)


def _blob(code: str) -> bytes:
    body = code[len(PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _forge(payload: object) -> str:
    """A correctly sealed code around an arbitrary payload (anyone can do this: the key is inside)."""
    key, nonce = AESGCM.generate_key(bit_length=256), b"\0" * 12
    ct = AESGCM(key).encrypt(nonce, zlib.compress(json.dumps(payload).encode()), AAD)
    return PREFIX + base64.urlsafe_b64encode(key + nonce + ct).rstrip(b"=").decode()


def test_round_trip():
    assert CODE.startswith("EXN1-")
    got = open_invitation(CODE, now=NOW)
    assert got == INV
    assert got.features == ("script", "attachments")
    assert got.secret == bytes(range(32))


def test_codes_are_fresh_and_do_not_show_plaintext():
    assert seal_invitation(INV) != CODE  # random key and nonce each time
    body = _blob(CODE)
    assert INV.secret not in body
    assert b"jira.example.com" not in body and "jira" not in CODE


@pytest.mark.parametrize(
    "wrap",
    [
        lambda c: f"  {c}\n",
        lambda c: f'"{c}"',
        lambda c: f"<{c}>",
        lambda c: f"“{c}”",
        lambda c: f"`{c}`",
        lambda c: "\n".join(c[i : i + 60] for i in range(0, len(c), 60)),  # wrapped in an e-mail
        lambda c: "\r\n  ".join(c[i : i + 40] for i in range(0, len(c), 40)),
        lambda c: c[:30] + "\u00ad\u200b" + c[30:],  # soft hyphen / zero-width space from a mail client
    ],
)
def test_copy_paste_tolerance(wrap):
    assert open_invitation(wrap(CODE), now=NOW) == INV


def test_expired():
    with pytest.raises(InvitationError) as exc:
        open_invitation(CODE, now=EXPIRES)
    assert exc.value.code == "expired"
    assert "expired on 2026-12-01 10:00 UTC" in str(exc.value)
    assert "new one" in str(exc.value)
    assert open_invitation(CODE, now=EXPIRES - 1) == INV


def test_default_now_is_real_clock():
    # EXPIRES is in 2026; use a far-future expiry so the test does not rot.
    code = seal_invitation(make_invitation(expires_at=4_000_000_000))
    assert open_invitation(code).expires_at == 4_000_000_000
    with pytest.raises(InvitationError, match="expired"):
        open_invitation(seal_invitation(make_invitation(expires_at=1_000)))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ('""', "empty"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "bad_prefix"),  # a JWT
        ("hello world", "bad_prefix"),
        ("https://sync-a.example.com/invite/123", "bad_prefix"),
        ("exn1-" + CODE[5:], "bad_prefix"),
        ("EXN9-" + CODE[5:], "unsupported_version"),
        ("EXN2-abc", "unsupported_version"),
        ("EXN1-", "truncated"),
        (CODE[:40], "truncated"),
        (CODE[:-1], "corrupted"),
        (CODE[:-10], "corrupted"),
        (CODE[:50] + CODE[51:], "corrupted"),
        (CODE + "A", "corrupted"),
        (CODE[:50] + "!" + CODE[51:], "corrupted"),
        (CODE[:50] + "+" + CODE[51:], "corrupted"),
        (CODE + "==", "corrupted"),
        ("EXN1-" + "A" * 20_000, "corrupted"),
    ],
)
def test_failures(text, code):
    with pytest.raises(InvitationError) as exc:
        open_invitation(text, now=NOW)
    assert exc.value.code == code
    assert str(exc.value)


def test_damaged_message_says_what_to_do():
    with pytest.raises(InvitationError) as exc:
        open_invitation(CODE[:-3], now=NOW)
    msg = str(exc.value)
    assert "damaged" in msg and "Copy the whole code again" in msg and "EXN1-" in msg


def test_every_single_char_change_fails():
    alphabet = "AQgw_-09"
    for i in range(len(PREFIX), len(CODE)):
        for ch in alphabet:
            if ch == CODE[i]:
                continue
            with pytest.raises(InvitationError):
                open_invitation(CODE[:i] + ch + CODE[i + 1 :], now=NOW)


def test_last_char_trailing_bits_matter():
    # base64 decoders ignore unused low bits of the last char; we must not.
    last = CODE[-1]
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if ch != last:
            with pytest.raises(InvitationError):
                open_invitation(CODE[:-1] + ch, now=NOW)


def _valid_payload() -> dict:
    return json.loads(
        zlib.decompress(AESGCM(_blob(CODE)[:32]).decrypt(_blob(CODE)[32:44], _blob(CODE)[44:], AAD))
    )


def test_forged_but_malformed_payloads_are_corrupted():
    good = _valid_payload()
    assert open_invitation(_forge(good), now=NOW) == INV
    bad_payloads = [
        [],
        "x",
        {**good, "secret": "short"},
        {**good, "secret": 5},
        {**good, "connection_type": "magic"},
        {**good, "invitation_id": "not-a-uuid"},
        {**good, "features": "script"},
        {**good, "features": [1]},
        {**good, "expires_at": "tomorrow"},
        {**good, "expires_at": True},
        {**good, "expires_at": 10**30},
        {**good, "expires_at": -5},
        {**good, "initiator": "node-a"},
        {**good, "tracker": {"type": "jira"}},
        {k: v for k, v in good.items() if k != "node_url"},
    ]
    for payload in bad_payloads:
        with pytest.raises(InvitationError) as exc:
            open_invitation(_forge(payload), now=NOW)
        assert exc.value.code == "corrupted", payload


def test_forged_nan_and_unknown_payload_version():
    good = _valid_payload()
    key, nonce = AESGCM.generate_key(bit_length=256), b"\1" * 12
    raw = json.dumps({**good, "expires_at": float("nan")}).encode()
    ct = AESGCM(key).encrypt(nonce, zlib.compress(raw), AAD)
    with pytest.raises(InvitationError, match="damaged"):
        open_invitation(PREFIX + base64.urlsafe_b64encode(key + nonce + ct).rstrip(b"=").decode(), now=NOW)
    with pytest.raises(InvitationError) as exc:
        open_invitation(_forge({**good, "v": 2}), now=NOW)
    assert exc.value.code == "unsupported_version"


def test_zlib_bomb_is_rejected():
    key, nonce = AESGCM.generate_key(bit_length=256), b"\2" * 12
    ct = AESGCM(key).encrypt(nonce, zlib.compress(b" " * 10_000_000), AAD)
    with pytest.raises(InvitationError) as exc:
        open_invitation(PREFIX + base64.urlsafe_b64encode(key + nonce + ct).rstrip(b"=").decode(), now=NOW)
    assert exc.value.code == "corrupted"


def test_unknown_extra_fields_are_kept():
    got = open_invitation(_forge({**_valid_payload(), "future_field": [1, 2]}), now=NOW)
    assert got == INV and got.extra == {"future_field": [1, 2]}


def test_seal_validates():
    for bad in [
        {"secret": b"short"},
        {"connection_type": "full"},
        {"invitation_id": "nope"},
        {"expires_at": float("inf")},
        {"tracker_url": None},
    ]:
        with pytest.raises(ValueError):
            seal_invitation(make_invitation(**bad))


def test_fingerprint():
    fp = invitation_fingerprint(CODE)
    assert len(fp) == 9 and fp[4] == "-"
    assert fp == invitation_fingerprint(INV.secret) == invitation_fingerprint(INV)
    assert fp == invitation_fingerprint(f"<{CODE}>")
    assert invitation_fingerprint(new_secret()) != fp
    # works on an expired code too (for display in the "expired" screen)
    expired = seal_invitation(make_invitation(expires_at=1))
    assert invitation_fingerprint(expired) == fp
    with pytest.raises(InvitationError):
        invitation_fingerprint("garbage")


def test_clean_code_non_str():
    assert clean_code(None) == ""  # type: ignore[arg-type]
    with pytest.raises(InvitationError) as exc:
        open_invitation(None, now=NOW)  # type: ignore[arg-type]
    assert exc.value.code == "empty"


# --- fuzzing ---------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_fuzz_arbitrary_text(text):
    with pytest.raises(InvitationError):
        open_invitation(text, now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
def test_fuzz_prefixed_base64(body):
    with pytest.raises(InvitationError):
        open_invitation(PREFIX + body, now=NOW)


_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(min_value=0), st.characters()),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.characters()),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just("")),
    st.tuples(st.just("swap"), st.integers(min_value=0), st.just("")),
)


def _apply(code: str, mutation: tuple[str, int, str]) -> str:
    kind, pos, ch = mutation
    pos %= len(code)
    if kind == "replace":
        return code[:pos] + ch + code[pos + 1 :]
    if kind == "insert":
        return code[:pos] + ch + code[pos:]
    if kind == "delete":
        return code[:pos] + code[pos + 1 :]
    nxt = (pos + 1) % len(code)
    chars = list(code)
    chars[pos], chars[nxt] = chars[nxt], chars[pos]
    return "".join(chars)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_mutations_of_valid_code(mutations):
    text = CODE
    for m in mutations:
        text = _apply(text, m)
    if clean_code(text) == CODE:
        # Only whitespace / wrappers / invisible characters were added: tolerated by design.
        assert open_invitation(text, now=NOW) == INV
    else:
        with pytest.raises(InvitationError):
            open_invitation(text, now=NOW)
