"""``manage.py backup --output FILE``: the node's database and attachments in one archive.

The database is copied consistently while the node runs: ``pg_dump`` (one snapshot) on PostgreSQL, SQLite's
online backup API on SQLite. ``MEDIA_ROOT`` (attachments) follows. The at-rest keys (``SECRETS_KEYS``) and
``SECRET_KEY`` are not in the archive unless ``--include-keys``: without them nothing encrypted in the dump
can be read, so keep them apart from the archive (a secrets manager), and with the archive only if it is
itself encrypted. ``manage.py restore`` reads the archive; docs/backup.md has the procedure.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from exalate_node import __version__

FORMAT = 1


def pg_env(db: dict[str, Any]) -> dict[str, str]:
    """libpq's environment for the database in ``db`` (a DATABASES entry): no password on a command line."""
    env = {**os.environ, "PGDATABASE": str(db["NAME"])}
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    return env


def engine() -> str:
    vendor = connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise CommandError(f"Backups support PostgreSQL and SQLite; this node uses {vendor}.")
    return vendor


class Command(BaseCommand):
    help = "Back up the node: its database (consistent while it runs) and MEDIA_ROOT, into one .tar.gz."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--output", required=True, help="The archive to write (.tar.gz).")
        parser.add_argument(
            "--include-keys",
            action="store_true",
            help="Also store SECRET_KEY and SECRETS_KEYS (then keep the archive itself encrypted).",
        )

    def handle(self, *args: Any, output: str, include_keys: bool, **opts: Any) -> None:
        target = Path(output)
        if target.exists():
            raise CommandError(
                f"{target} exists already: choose a new file name (backups are never overwritten)."
            )
        vendor = engine()
        applied = sorted(MigrationRecorder(connection).applied_migrations())
        manifest = {
            "format": FORMAT,
            "app_version": __version__,
            "created_at": timezone.now().isoformat(),
            "database": vendor,
            "node_url": settings.NODE_URL,
            "migrations": [f"{app}.{name}" for app, name in applied],
            "keys_included": include_keys,
        }
        with tempfile.TemporaryDirectory() as scratch:
            dump = Path(scratch) / "database"
            if vendor == "postgresql":
                self._pg_dump(dump)
            else:
                self._sqlite_backup(dump)
            partial = target.with_name(target.name + ".partial")
            with tarfile.open(partial, "w:gz") as archive:
                _add_bytes(archive, "manifest.json", json.dumps(manifest, indent=2).encode())
                archive.add(dump, arcname="database")
                media = Path(settings.MEDIA_ROOT)
                if media.is_dir():
                    archive.add(media, arcname="media")
                if include_keys:
                    _add_bytes(archive, "keys/SECRET_KEY", settings.SECRET_KEY.encode())
                    _add_bytes(archive, "keys/SECRETS_KEYS", ",".join(settings.SECRETS_KEYS).encode())
            os.chmod(partial, 0o600)
            partial.rename(target)
        size = target.stat().st_size
        self.stdout.write(f"Backed up the {vendor} database and MEDIA_ROOT to {target} ({size} bytes).")
        if not include_keys:
            self.stdout.write(
                "The at-rest keys are not in it: keep SECRETS_KEYS and SECRET_KEY safe apart from it; "
                "without them the restored node cannot read its credentials."
            )

    def _pg_dump(self, dump: Path) -> None:
        if not shutil.which("pg_dump"):
            raise CommandError(
                "pg_dump is not installed: install PostgreSQL's client tools (postgresql-client)."
            )
        result = subprocess.run(
            ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={dump}"],
            env=pg_env(settings.DATABASES["default"]),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CommandError(f"pg_dump failed: {result.stderr.strip()[:500]}")

    def _sqlite_backup(self, dump: Path) -> None:
        source = sqlite3.connect(str(settings.DATABASES["default"]["NAME"]))
        copy = sqlite3.connect(str(dump))
        try:
            source.backup(copy)  # consistent, while the node's processes keep writing
        finally:
            copy.close()
            source.close()


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(timezone.now().timestamp())
    archive.addfile(info, io.BytesIO(data))
