"""Model fields shared by the apps."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput

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


class JSONField(models.JSONField):
    """``models.JSONField`` read back with ``ScrubbingJSONDecoder``: a lone surrogate stored before the doors
    refused it (``exalate_node.parsers``) reads as U+FFFD, so the pages and API answers that show the value
    stay readable instead of failing with a 500 (issue #17).

    The decoder only changes how values are read, not the column, so migrations see a plain
    ``models.JSONField`` (``deconstruct``): no migration, and no table rebuild on SQLite.
    ``tests/test_text_at_rest.py::test_every_json_column_reads_with_the_scrubbing_decoder`` checks that every
    model uses this field.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from exalate_node.text import ScrubbingJSONDecoder

        kwargs.setdefault("decoder", ScrubbingJSONDecoder)
        super().__init__(*args, **kwargs)

    def formfield(self, **kwargs: Any) -> Any:
        # Forms (the Django admin) decode what a person typed with the plain decoder, so that text that is
        # not valid Unicode is refused with a message rather than stored (or silently replaced).
        return super().formfield(**{"form_class": EncodableJSONFormField, "decoder": None, **kwargs})

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        from exalate_node.text import ScrubbingJSONDecoder

        name, _path, args, kwargs = super().deconstruct()
        if kwargs.get("decoder") is ScrubbingJSONDecoder:
            del kwargs["decoder"]
        return name, "django.db.models.JSONField", args, kwargs


class EncodableJSONFormField(forms.JSONField):
    """A JSON form field that refuses text that is not valid Unicode (``"\\ud800"`` decodes into a lone
    surrogate, which no page can show), naming where it is. A refused value is shown again with U+FFFD, so
    the form with its error still renders."""

    def to_python(self, value: Any) -> Any:
        from exalate_node.text import unencodable_message, unencodable_path

        data = super().to_python(value)
        where = unencodable_path(data)
        if where is not None:
            raise ValidationError(unencodable_message(where, "This value"), code="unencodable")
        return data

    def bound_data(self, data: Any, initial: Any) -> Any:
        from exalate_node.text import ScrubbingJSONDecoder

        if self.disabled:
            return initial
        if data is None:
            return None
        try:
            return json.loads(data, cls=ScrubbingJSONDecoder)
        except json.JSONDecodeError:
            return InvalidJSONInput(data)


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
