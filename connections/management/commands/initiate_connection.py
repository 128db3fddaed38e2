"""Start a connection to another node: print the invitation code to paste there."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from connections.handshake import HandshakeError, connection_initiate
from connections.management.commands._common import local_instance


class Command(BaseCommand):
    help = "Create a pending connection on a local instance and print its invitation code."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--instance", required=True, help="Local instance: id, UID or name.")
        parser.add_argument("--name", required=True, help="Connection name (both admins see it).")
        parser.add_argument("--type", default="script", choices=["script", "basic"])
        parser.add_argument("--user", default="", help="Who initiates (shown to the other admin).")
        parser.add_argument("--code-only", action="store_true", help="Print only the code (for scripts).")
        parser.add_argument(
            "--json", action="store_true", help="Print {connection_id, uid, code, expires_at}."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        instance = local_instance(opts["instance"])
        try:
            conn, code = connection_initiate(
                name=opts["name"], local_instance=instance, type=opts["type"], user=opts["user"]
            )
        except HandshakeError as exc:
            raise CommandError(exc.message)
        expires = conn.invitations.order_by("-created_at").first().expires_at
        if opts["json"]:
            payload = {
                "connection_id": conn.pk,
                "uid": str(conn.uid),
                "code": code,
                "expires_at": expires.isoformat(),
            }
            self.stdout.write(json.dumps(payload))
        elif opts["code_only"]:
            self.stdout.write(code)
        else:
            self.stdout.write(
                f"Connection '{conn.name}' is pending. Paste this invitation code on the other node "
                f"(valid until {expires:%Y-%m-%d %H:%M} UTC, single use):\n\n{code}\n"
            )
