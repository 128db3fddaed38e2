"""Re-encrypt every secret at rest under the first key of SECRETS_KEYS."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from exalate_node.fields import AlreadyEncrypted, EncryptedTextField
from exalate_node.secrets_at_rest import get_box, is_encrypted


class Command(BaseCommand):
    help = (
        "Re-encrypt secrets at rest with the first key in SECRETS_KEYS. Put the new key first, keep the old "
        "one after it, run this, then remove the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        box = get_box()
        total = 0
        for model in apps.get_models():
            fields = [f.attname for f in model._meta.fields if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            # Raw column values: reading through the field would decrypt them.
            table, pk = model._meta.db_table, model._meta.pk.column
            columns = [model._meta.get_field(name).column for name in fields]
            qn = connection.ops.quote_name
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {qn(pk)}, {', '.join(qn(c) for c in columns)} FROM {qn(table)}")  # noqa: S608
                rows = cursor.fetchall()
            for pk_value, *values in rows:
                changes = {}
                for name, value in zip(fields, values, strict=True):
                    if not value:
                        continue
                    if not is_encrypted(value):
                        changes[name] = AlreadyEncrypted(box.encrypt(value))
                    elif not box.is_current(value):
                        changes[name] = AlreadyEncrypted(box.rotate(value))
                if changes:
                    with transaction.atomic():
                        model.objects.filter(pk=pk_value).update(**changes)
                    total += 1
        self.stdout.write(self.style.SUCCESS(f"{total} row(s) re-encrypted under the current key."))
