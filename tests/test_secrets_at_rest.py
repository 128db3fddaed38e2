"""Secrets at rest: round trip, rotation, passphrase keys, tampering, settings wiring."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from exalate_node import secrets_at_rest
from exalate_node.secrets_at_rest import SecretBox, SecretDecryptError, generate_key, get_box, is_encrypted

OLD = generate_key()
NEW = generate_key()
PASSPHRASE = "some-long-random-string-from-the-environment"


def test_generate_key_is_a_fernet_key():
    key = generate_key()
    assert isinstance(key, str) and len(key) == 44 and key != generate_key()
    Fernet(key)


@pytest.mark.parametrize("plaintext", ["", "hunter2", "tøkén ✓ 🔑", "x" * 10_000, "line1\nline2"])
def test_round_trip(plaintext):
    box = SecretBox([NEW])
    token = box.encrypt(plaintext)
    assert token.startswith("enc1:") and is_encrypted(token)
    assert plaintext not in token[5:] or plaintext == ""
    assert box.decrypt(token) == plaintext
    assert box.encrypt(plaintext) != token  # random IV
    assert box.is_current(token)


def test_interoperates_with_plain_fernet():
    token = SecretBox([NEW]).encrypt("s3cret")
    assert Fernet(NEW).decrypt(token[5:].encode()) == b"s3cret"


def test_rotation():
    old_token = SecretBox([OLD]).encrypt("api-token")
    box = SecretBox([NEW, OLD])
    assert box.decrypt(old_token) == "api-token"  # old key second still decrypts
    assert not box.is_current(old_token)
    rotated = box.rotate(old_token)
    assert rotated != old_token and rotated.startswith("enc1:")
    assert box.is_current(rotated)
    assert box.rotate(rotated) == rotated  # already current: unchanged
    new_only = SecretBox([NEW])
    assert new_only.decrypt(rotated) == "api-token"
    with pytest.raises(SecretDecryptError) as exc:
        new_only.decrypt(old_token)
    assert exc.value.reason == "unknown_key"
    msg = str(exc.value)
    assert "not in SECRETS_KEYS any more" in msg
    assert "Add the old key back (after the new one)" in msg and "manage.py rotate_secrets" in msg
    with pytest.raises(SecretDecryptError):
        new_only.rotate(old_token)
    new_box_encrypts = box.encrypt("x")
    assert SecretBox([NEW]).decrypt(new_box_encrypts) == "x"
    with pytest.raises(SecretDecryptError):
        SecretBox([OLD]).decrypt(new_box_encrypts)


def test_passphrase_keys():
    box = SecretBox([PASSPHRASE])
    token = box.encrypt("pw")
    assert SecretBox([PASSPHRASE]).decrypt(token) == "pw"  # deterministic derivation
    assert SecretBox([NEW, PASSPHRASE]).decrypt(token) == "pw"  # mixable with Fernet keys
    with pytest.raises(SecretDecryptError):
        SecretBox([PASSPHRASE + "x"]).decrypt(token)
    # the passphrase itself is not used as (or turned trivially into) the key
    raw = PASSPHRASE.encode()[:32]
    with pytest.raises(SecretDecryptError):
        SecretBox([base64.urlsafe_b64encode(raw).decode()]).decrypt(token)


def test_short_passphrase_rejected():
    with pytest.raises(ValueError, match="too short"):
        SecretBox(["short"])


@pytest.mark.parametrize("keys", [[], [""], ["  ", ""], "", " , "])
def test_empty_keys(keys):
    with pytest.raises(ValueError) as exc:
        SecretBox(keys)
    assert "SECRETS_KEYS is empty" in str(exc.value) and "generate_key" in str(exc.value)


def test_comma_separated_string_and_whitespace():
    token = SecretBox([OLD]).encrypt("v")
    assert SecretBox(f" {NEW} , {OLD} ").decrypt(token) == "v"
    assert SecretBox([f" {OLD}\n"]).decrypt(token) == "v"


def test_non_string_key_rejected():
    with pytest.raises(ValueError):
        SecretBox([b"bytes-key-0123456789"])  # type: ignore[list-item]


def test_tampered_tokens_fail_cleanly():
    box = SecretBox([NEW])
    token = box.encrypt("credential")
    body = token[5:]
    tampered = [
        token[:-1],
        token[:40],
        "enc1:",
        "enc1:garbage",
        "enc1:" + body[:20] + ("A" if body[20] != "A" else "B") + body[21:],
        "enc1:" + body + "AAAA",
        "enc1:é" + body,
        "enc1:" + body[:-4],
    ]
    for value in tampered:
        with pytest.raises(SecretDecryptError) as exc:
            box.decrypt(value)
        assert exc.value.reason in {"damaged", "unknown_key"}, value
        assert str(exc.value)
        assert not box.is_current(value)


def test_structurally_broken_token_is_reported_as_damaged():
    box = SecretBox([NEW])
    with pytest.raises(SecretDecryptError) as exc:
        box.decrypt("enc1:not-a-token")
    assert exc.value.reason == "damaged" and "Enter the secret again" in str(exc.value)


@pytest.mark.parametrize("value", ["plain", "", "ENC1:x"])
def test_not_encrypted(value):
    box = SecretBox([NEW])
    with pytest.raises(SecretDecryptError) as exc:
        box.decrypt(value)
    assert exc.value.reason == "not_encrypted"
    assert not box.is_current(value) and not is_encrypted(value)


def test_type_checks():
    box = SecretBox([NEW])
    with pytest.raises(TypeError):
        box.encrypt(b"bytes")  # type: ignore[arg-type]
    assert not box.is_current(None)  # type: ignore[arg-type]
    with pytest.raises(SecretDecryptError):
        box.decrypt(None)  # type: ignore[arg-type]


def test_get_box_reads_settings_and_caches(settings):
    secrets_at_rest._box_for.cache_clear()
    settings.SECRETS_KEYS = [NEW, OLD]
    box = get_box()
    assert get_box() is box
    token = SecretBox([OLD]).encrypt("t")
    assert box.decrypt(token) == "t"
    settings.SECRETS_KEYS = [OLD]
    assert get_box() is not box and get_box().is_current(token)
    settings.SECRETS_KEYS = f"{NEW},{OLD}"
    assert get_box() is box  # same key tuple -> same cached box
    settings.SECRETS_KEYS = []
    with pytest.raises(ValueError, match="SECRETS_KEYS is empty"):
        get_box()
