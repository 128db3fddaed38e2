"""``manage.py restore FILE``: a ``backup`` archive into this node's (empty) database and MEDIA_ROOT.

Run it on the new host with the node stopped and the same settings as the old one (NODE_URL above all: the
peers know the node by it), then ``manage.py migrate`` (a newer release upgrades the restored data) and
``manage.py runnode``. Peers deliver what they queued meanwhile; what this node had applied after the backup
was taken is not in it (docs/backup.md says what that means and what to do).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from exalate_node.management.commands.backup import FORMAT, engine, pg_env


def _members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members, refusing any that would land outside the folder it is unpacked into."""
    members = archive.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise CommandError(f"The archive holds {member.name!r}, which a backup never does: not restored.")
    return members


class Command(BaseCommand):
    help = "Restore a backup archive into this node's empty database and MEDIA_ROOT (node stopped)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("archive", help="The .tar.gz written by `manage.py backup`.")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Restore over a database that already holds a node (wipes it).",
        )

    def handle(self, *args: Any, archive: str, force: bool, **opts: Any) -> None:
        path = Path(archive)
        if not path.is_file():
            raise CommandError(f"{path} is not a file: give the archive `manage.py backup` wrote.")
        vendor = engine()
        with tempfile.TemporaryDirectory() as scratch, tarfile.open(path, "r:gz") as tar:
            tar.extractall(scratch, members=_members(tar), filter="data")
            root = Path(scratch)
            try:
                manifest = json.loads((root / "manifest.json").read_text())
            except (OSError, ValueError):
                raise CommandError(
                    f"{path} has no readable manifest.json: it is not a node backup."
                ) from None
            if manifest.get("format") != FORMAT:
                raise CommandError(
                    f"{path} is a backup of format {manifest.get('format')!r}; this node reads {FORMAT}."
                )
            if manifest.get("database") != vendor:
                raise CommandError(
                    f"{path} holds a {manifest.get('database')} database and this node uses {vendor}: set "
                    "DATABASE_URL to the same kind of database."
                )
            if manifest.get("node_url") and manifest["node_url"] != settings.NODE_URL:
                self.stderr.write(
                    f"Warning: the backup is of the node at {manifest['node_url']} and this one is set to "
                    f"{settings.NODE_URL}; its peers will keep calling the old address."
                )
            if connection.introspection.table_names() and not force:
                raise CommandError(
                    "This node's database is not empty: restore into a new, empty database, or add --force "
                    "to replace what is in it."
                )
            if vendor == "postgresql":
                self._pg_restore(root / "database", force=force)
            else:
                self._sqlite_restore(root / "database")
            media = Path(settings.MEDIA_ROOT)
            if (root / "media").is_dir():
                shutil.copytree(root / "media", media, dirs_exist_ok=True)
            keys = root / "keys"
            if keys.is_dir():
                self._keys(keys)
        self.stdout.write(
            f"Restored the backup of {manifest.get('created_at')} (release {manifest.get('app_version')}). "
            "Next: `manage.py migrate`, then start the node."
        )

    def _pg_restore(self, dump: Path, *, force: bool) -> None:
        if not shutil.which("pg_restore"):
            raise CommandError("pg_restore is not installed: install PostgreSQL's client tools.")
        connection.close()
        command = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        if force:
            command += ["--clean", "--if-exists"]
        env = pg_env(settings.DATABASES["default"])
        result = subprocess.run(
            [*command, f"--dbname={env['PGDATABASE']}", str(dump)], env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise CommandError(f"pg_restore failed: {result.stderr.strip()[:500]}")

    def _sqlite_restore(self, dump: Path) -> None:
        connection.close()
        name = Path(str(settings.DATABASES["default"]["NAME"]))
        source = sqlite3.connect(str(dump))
        target = sqlite3.connect(str(name))
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()

    def _keys(self, keys: Path) -> None:
        secret_key = (keys / "SECRET_KEY").read_text()
        at_rest = (keys / "SECRETS_KEYS").read_text()
        if settings.DEBUG and not os.environ.get("SECRET_KEY") and not os.environ.get("SECRETS_KEYS"):
            for name, value in (("secret_key", secret_key), ("secrets_keys", at_rest)):
                target = Path(settings.VAR_DIR) / name
                target.write_text(value)
                target.chmod(0o600)
            self.stdout.write(f"Restored the keys into {settings.VAR_DIR}.")
        elif (secret_key, at_rest.split(",")) != (settings.SECRET_KEY, list(settings.SECRETS_KEYS)):
            self.stderr.write(
                "The archive holds keys that differ from this node's SECRET_KEY / SECRETS_KEYS: set those "
                "to the backed-up node's values before starting it, or it cannot read its credentials."
            )
