"""Rotate a connection's key with the other node and print the new key's fingerprint."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from connections.rotation import RotationError, key_fingerprint, rotate_key


class Command(BaseCommand):
    help = "Rotate the key of a connection to another node; both nodes switch, sync goes on."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("connection", help="The connection: id, UID or name.")

    def handle(self, *args: Any, **opts: Any) -> None:
        ref = opts["connection"]
        qs = Connection.objects.all()
        found = qs.filter(pk=int(ref)).first() if ref.isdigit() else None
        if found is None:
            try:
                found = qs.filter(uid=ref).first()
            except Exception:  # noqa: BLE001 - not a UUID: look it up by name
                found = None
        if found is None:
            named = list(qs.filter(name=ref)[:2])
            if len(named) > 1:
                raise CommandError(f"Several connections are named '{ref}'; use the id or UID instead.")
            found = named[0] if named else None
        if found is None:
            names = ", ".join(f"{c.pk}: {c.name}" for c in qs[:20]) or "none"
            raise CommandError(f"No connection '{ref}'. Connections: {names}.")
        try:
            rotated = rotate_key(found)
        except RotationError as exc:
            raise CommandError(str(exc))
        self.stdout.write(
            f"Rotated the key of “{rotated.name}”. New fingerprint: {key_fingerprint(rotated)} "
            "(the other node shows the same)."
        )
