"""Rotate a connection's key with the other node and print the new key's fingerprint."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from connections.management.commands._common import connection
from connections.rotation import RotationError, key_fingerprint, rotate_key


class Command(BaseCommand):
    help = "Rotate the key of a connection to another node; both nodes switch, sync goes on."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("connection", help="The connection: id, UID or name.")

    def handle(self, *args: Any, **opts: Any) -> None:
        found = connection(opts["connection"])
        try:
            rotated = rotate_key(found)
        except RotationError as exc:
            raise CommandError(str(exc))
        self.stdout.write(
            f"Rotated the key of “{rotated.name}”. New fingerprint: {key_fingerprint(rotated)} "
            "(the other node shows the same)."
        )
