"""Show an item's Entity Sync Status from a shell."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from instances.models import Instance
from replicas.selectors import sync_status


class Command(BaseCommand):
    help = "Show the sync status of a local item: twins, state, remote item, replicas, recent events."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("key", help="The item's key, e.g. SUP-12.")
        parser.add_argument("--instance", help="Instance name or id (default: every local instance).")
        parser.add_argument(
            "--replicas", action="store_true", help="Also print the local and remote replica."
        )
        parser.add_argument("--json", action="store_true", help="Print everything as JSON.")

    def handle(
        self, *args: Any, key: str, instance: str | None, replicas: bool, json: bool, **opts: Any
    ) -> None:
        instances = Instance.objects.filter(kind="local")
        if instance:
            instances = (
                instances.filter(pk=int(instance)) if instance.isdigit() else instances.filter(name=instance)
            )
            if not instances.exists():
                raise CommandError(
                    f"No local instance '{instance}'. See `manage.py shell` or the admin for names."
                )
        found = False
        for inst in instances:
            status = sync_status(instance=inst, key=key)
            if not status["twins"]:
                continue
            found = True
            if json:
                self.stdout.write(_dumps(status))
                continue
            for twin in status["twins"]:
                self.stdout.write(
                    f"{inst.name} {key} on '{twin['connection']['name']}': {twin['state']}; remote "
                    f"{twin['remote']['key'] or '(not yet known)'} {twin['remote']['url']}; "
                    f"last synced {twin['last_synced_at'] or 'never'}"
                )
                for event in twin["events"][:10]:
                    when = f"{event['created_at']:%Y-%m-%d %H:%M:%S}"
                    line = f"  {when} {event['direction']:>3} {event['status']:<10} {event['trace_id']}"
                    self.stdout.write(f"{line} {event['error']}".rstrip())
                for error in twin["errors"]:
                    self.stdout.write(self.style.ERROR(f"  error #{error['id']}: {error['message']}"))
                if replicas:
                    self.stdout.write("  local replica:  " + _dumps(twin["local_replica"]))
                    self.stdout.write("  remote replica: " + _dumps(twin["remote_replica"]))
        if not found:
            raise CommandError(f"{key} is not synced on any connection of this node.")


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)
