"""Model fields shared by the apps."""

from __future__ import annotations

from typing import Any

from django.db import models

from exalate_node.redaction import redact
from exalate_node.redaction import registry as secret_registry


class AlreadyEncrypted(str):
    """A value that is already a token (key rotation writes these): stored as it is."""


class EncryptedTextField(models.TextField):
    """A text field stored encrypted at rest (Fernet, keys from ``SECRETS_KEYS``, rotatable).

    The Python value is the plaintext; the column holds ``enc1:<token>``. An empty string stays empty.

    Every plaintext it decrypts or encrypts is handed to the secret registry
    (``exalate_node.redaction``), so a process redacts a secret from logs and errors as soon as it has read
    or written it, without decrypting anything for that purpose.
    """

    description = "Text encrypted at rest"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if not value:
            return value
        from exalate_node.secrets_at_rest import get_box

        plaintext = get_box().decrypt(value)
        secret_registry.learn(plaintext)
        return plaintext

    def get_prep_value(self, value: Any) -> str | None:
        if isinstance(value, AlreadyEncrypted):
            return str(value)
        value = super().get_prep_value(value)
        if not value:
            return value
        from exalate_node.secrets_at_rest import get_box

        secret_registry.learn(value)
        return get_box().encrypt(value)


class RedactedTextField(models.TextField):
    """A text field for what the node writes about errors and status (messages that may quote a tracker's
    or a peer's answer): every secret value the process knows is replaced by ``***`` when the text is
    stored (``save``, ``update`` and lookups alike) and again when it is read (text stored before the
    secret was known). The column is a plain text column: migrations see a ``TextField``."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return redact(value) if isinstance(value, str) else value

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if isinstance(value, str):
            value = redact(value)
            setattr(model_instance, self.attname, value)  # what the caller shows next is the stored text
        return value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return redact(value) if isinstance(value, str) else value

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.TextField", args, kwargs
