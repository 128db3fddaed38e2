"""``manage.py restore`` refuses archives that are not a node's backup, before it touches anything."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def manifest(**overrides: object) -> bytes:
    return json.dumps({"format": 1, "database": "SAME", **overrides}).encode()  # SAME: this node's kind


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ({"../outside.txt": b"x", "manifest.json": manifest()}, "which a backup never does"),
        ({"/etc/cron.d/x": b"x", "manifest.json": manifest()}, "which a backup never does"),
        ({"database": b"x"}, "no readable manifest.json"),
        ({"manifest.json": b"{not json"}, "no readable manifest.json"),
        ({"manifest.json": manifest(format=99)}, "format 99"),
        ({"manifest.json": manifest(database="mysql")}, "holds a mysql database"),
        ({"manifest.json": manifest()}, "database is not empty"),  # the test database has the node's tables
    ],
)
def test_restore_refuses_what_is_not_a_backup_of_this_kind(tmp_path, members, says, settings) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    from django.db import connection

    members = {
        name: data.replace(b'"SAME"', f'"{connection.vendor}"'.encode()) for name, data in members.items()
    }
    archive = _archive(tmp_path / "x.tar.gz", members)
    with pytest.raises(CommandError, match=says):
        call_command("restore", str(archive))
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "media").exists()


def test_backup_never_overwrites_and_restore_needs_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    existing = tmp_path / "old.tar.gz"
    existing.write_bytes(b"an older backup")
    with pytest.raises(CommandError, match="exists already"):
        call_command("backup", "--output", str(existing))
    assert existing.read_bytes() == b"an older backup"
    with pytest.raises(CommandError, match="is not a file"):
        call_command("restore", str(tmp_path / "missing.tar.gz"))
