"""Model fields shared by the apps."""

from __future__ import annotations

from typing import Any

from django.db import models


class AlreadyEncrypted(str):
    """A value that is already a token (key rotation writes these): stored as it is."""


class EncryptedTextField(models.TextField):
    """A text field stored encrypted at rest (Fernet, keys from ``SECRETS_KEYS``, rotatable).

    The Python value is the plaintext; the column holds ``enc1:<token>``. An empty string stays empty.
    """

    description = "Text encrypted at rest"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if not value:
            return value
        from exalate_node.secrets_at_rest import get_box

        return get_box().decrypt(value)

    def get_prep_value(self, value: Any) -> str | None:
        if isinstance(value, AlreadyEncrypted):
            return str(value)
        value = super().get_prep_value(value)
        if not value:
            return value
        from exalate_node.secrets_at_rest import get_box

        return get_box().encrypt(value)
