"""Accept an invitation code from another node: handshake, then the connection is active on both sides."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from connections.handshake import HandshakeError, connection_accept
from connections.invitation import InvitationError
from connections.management.commands._common import local_instance


class Command(BaseCommand):
    help = "Accept an invitation code from another node on a local instance."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--instance", required=True, help="Local instance: id, UID or name.")
        parser.add_argument("--code", default="-", help="The invitation code, or - to read it from stdin.")
        parser.add_argument("--name", default=None, help="Name for this side (default: the code's name).")
        parser.add_argument(
            "--private", action="store_true", help="This node has no public URL: poll the other node instead."
        )
        parser.add_argument("--json", action="store_true", help="Print {connection_id, uid, status}.")

    def handle(self, *args: Any, **opts: Any) -> None:
        instance = local_instance(opts["instance"])
        code = sys.stdin.read() if opts["code"] == "-" else opts["code"]
        try:
            conn = connection_accept(
                code=code, local_instance=instance, name=opts["name"], private=opts["private"]
            )
        except (InvitationError, HandshakeError) as exc:
            raise CommandError(str(exc))
        if opts["json"]:
            self.stdout.write(
                json.dumps({"connection_id": conn.pk, "uid": str(conn.uid), "status": conn.status})
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Connected: '{conn.name}' between {instance.name} and {conn.remote_instance.name} "
                    f"on {conn.peer_node_name or conn.remote_node_url} is {conn.status}."
                )
            )
