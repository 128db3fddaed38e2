"""Tokens made before exalate-node stored digests (DRF's authtoken table, keys in plain text) keep working:
their digests are carried over with a 90-day expiry, and the plain-text table is dropped."""

import hashlib
from datetime import timedelta

from django.db import migrations
from django.utils import timezone


def carry_over(apps, schema_editor):  # type: ignore[no-untyped-def]
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("exalate_node", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id FROM authtoken_token")
        rows = cursor.fetchall()
    expires = timezone.now() + timedelta(days=90)
    for key, user_id in rows:
        ApiToken.objects.create(
            user_id=user_id,
            name="carried over",
            prefix=key[:10],
            digest=hashlib.sha256(key.encode()).hexdigest(),
            expires_at=expires,
        )
    schema_editor.execute("DROP TABLE authtoken_token")


class Migration(migrations.Migration):
    dependencies = [("exalate_node", "0001_api_tokens")]

    operations = [migrations.RunPython(carry_over, migrations.RunPython.noop)]
