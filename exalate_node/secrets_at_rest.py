"""Encryption of secrets at rest (connection keys, tracker credentials) with rotatable keys.

Threat model: someone obtains a copy of the database (backup, dump, SQL injection) but not the process
environment. Values are Fernet tokens (AES-128-CBC + HMAC-SHA256, authenticated) prefixed with ``enc1:``
so encrypted values are recognisable. Keys come from ``settings.SECRETS_KEYS``:

* several keys are accepted; the first encrypts, all decrypt (``MultiFernet``), so rotation is: put the new
  key first, keep the old one after it, run ``manage.py rotate_secrets``, then drop the old key;
* a key is either a Fernet key (``generate_key()``) or any long random passphrase, turned into a Fernet key
  with HKDF-SHA256 and a fixed context string. HKDF is not a password hash: passphrases must be machine
  secrets (>= 16 chars of randomness), not something a person picks.

This does not protect against an attacker who can read the environment or the running process.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "enc1:"
MIN_PASSPHRASE_CHARS = 16
_PASSPHRASE_CONTEXT = b"exalate-node/secrets-at-rest/passphrase/v1"
_GENERATE_HINT = (
    "Generate one with: python -c "
    '"from exalate_node.secrets_at_rest import generate_key; print(generate_key())"'
)


class SecretDecryptError(Exception):
    """A stored secret could not be decrypted.

    ``.reason`` is ``not_encrypted``, ``damaged`` or ``unknown_key``; ``str(err)`` names the fix.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def generate_key() -> str:
    """A new random Fernet key (44 chars, urlsafe base64) for ``SECRETS_KEYS``."""
    return Fernet.generate_key().decode("ascii")


def is_encrypted(value: object) -> bool:
    """True if ``value`` looks like an ``enc1:`` token (it may still fail to decrypt)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def _to_fernet(key: str, index: int) -> Fernet:
    if not isinstance(key, str):
        raise ValueError(f"SECRETS_KEYS entry #{index + 1} is not a string.")
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
        if len(key) == 44 and len(raw) == 32:
            return Fernet(key.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeError):
        pass
    # Not a Fernet key: treat it as a passphrase.
    if len(key) < MIN_PASSPHRASE_CHARS:
        raise ValueError(
            f"SECRETS_KEYS entry #{index + 1} is too short ({len(key)} characters). Use a Fernet key or a "
            f"random passphrase of at least {MIN_PASSPHRASE_CHARS} characters. {_GENERATE_HINT}"
        )
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PASSPHRASE_CONTEXT).derive(
        key.encode("utf-8", "surrogatepass")
    )
    return Fernet(base64.urlsafe_b64encode(derived))


class SecretBox:
    """Encrypts with the first key, decrypts with any. Immutable; cheap to share between threads."""

    def __init__(self, keys: Iterable[str] | str) -> None:
        if isinstance(keys, str):  # tolerate "k1,k2" straight from an env var
            keys = keys.split(",")
        cleaned = [k.strip() if isinstance(k, str) else k for k in keys]
        cleaned = [k for k in cleaned if k != ""]
        if not cleaned:
            raise ValueError(
                "SECRETS_KEYS is empty, so secrets cannot be stored encrypted. Set SECRETS_KEYS to at least "
                f"one key (comma-separated, newest first). {_GENERATE_HINT}"
            )
        self._current = _to_fernet(cleaned[0], 0)
        self._fernets = [self._current] + [_to_fernet(k, i) for i, k in enumerate(cleaned[1:], start=1)]
        self._multi = MultiFernet(self._fernets)

    def encrypt(self, plaintext: str) -> str:
        if not isinstance(plaintext, str):
            raise TypeError("SecretBox.encrypt() takes a str")
        token = self._multi.encrypt(plaintext.encode("utf-8", "surrogatepass"))
        return PREFIX + token.decode("ascii")

    def decrypt(self, token: str) -> str:
        raw = self._token_bytes(token)
        try:
            data = self._multi.decrypt(raw)
        except InvalidToken:
            raise self._unknown_key_error(raw) from None
        return data.decode("utf-8", "surrogatepass")

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key. Returns ``token`` unchanged if it already is current."""
        if self.is_current(token):
            return token
        raw = self._token_bytes(token)
        try:
            return PREFIX + self._multi.rotate(raw).decode("ascii")
        except InvalidToken:
            raise self._unknown_key_error(raw) from None

    def is_current(self, token: str) -> bool:
        """True if the first (current) key decrypts ``token``; False for anything else, never raises."""
        try:
            self._current.decrypt(self._token_bytes(token))
        except (SecretDecryptError, InvalidToken):
            return False
        return True

    @staticmethod
    def _token_bytes(token: str) -> bytes:
        if not is_encrypted(token):
            raise SecretDecryptError(
                "not_encrypted",
                "This value is not an encrypted secret (it does not start with 'enc1:'). If it was stored "
                "in plain text before encryption was enabled, run `manage.py rotate_secrets` to encrypt it.",
            )
        # Fernet's base64 decoding is lenient (skips junk, ignores data after padding); insist on the
        # canonical encoding so a modified stored value is always reported as such.
        try:
            raw = token[len(PREFIX) :].encode("ascii")
            canonical = base64.urlsafe_b64encode(base64.urlsafe_b64decode(raw)) == raw
        except (UnicodeError, binascii.Error, ValueError):
            canonical = False
        if not canonical:
            raise _damaged()
        return raw

    @staticmethod
    def _unknown_key_error(raw: bytes) -> SecretDecryptError:
        # Fernet cannot tell a wrong key from a modified token; the structure check gives a better hint.
        if not _well_formed_fernet(raw):
            return _damaged()
        return SecretDecryptError(
            "unknown_key",
            "This secret was encrypted with a key that is not in SECRETS_KEYS any more. Add the old key "
            "back (after the new one) and run `manage.py rotate_secrets`. (If no key was removed, the "
            "stored value was modified and the secret must be entered again.)",
        )


def _damaged() -> SecretDecryptError:
    return SecretDecryptError(
        "damaged",
        "This encrypted secret is damaged (the stored value was truncated or modified) and cannot be "
        "decrypted with any key. Enter the secret again.",
    )


def _well_formed_fernet(raw: bytes) -> bool:
    """version(1)=0x80 || timestamp(8) || iv(16) || ciphertext(16n, n>=1) || hmac(32)."""
    try:
        data = base64.urlsafe_b64decode(raw)
    except (binascii.Error, ValueError):
        return False
    return len(data) >= 73 and data[0] == 0x80 and (len(data) - 57) % 16 == 0


@functools.lru_cache(maxsize=4)
def _box_for(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(list(keys))


def get_box() -> SecretBox:
    """The SecretBox for ``settings.SECRETS_KEYS`` (list/tuple, or a comma-separated string).

    Cached per key tuple, so tests that override settings get a fresh box.
    """
    from django.conf import settings  # imported lazily: the module stays usable without Django

    keys = getattr(settings, "SECRETS_KEYS", None)
    if keys is None:
        keys = ()
    elif isinstance(keys, str):
        keys = keys.split(",")
    return _box_for(tuple(k.strip() if isinstance(k, str) else k for k in keys))
