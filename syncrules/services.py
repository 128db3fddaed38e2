"""Rules life-cycle: publish (a new version every time), read the version in force, validate.

Dry-run runs with the pipeline: ``replicas.dryrun``."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from connections.models import Connection
from syncrules.models import RulesVersion


class RulesInvalid(ValueError):
    """Rules with compile errors cannot be published; ``problems`` lists them with line numbers."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]
        line = first.get("line") or "?"
        super().__init__(f"The {first['direction']} script has an error on line {line}: {first['message']}")
        self.problems = problems


def rules_current(connection: Connection) -> RulesVersion:
    """The version in force; a connection without rules gets its tracker type's defaults published."""
    rules = RulesVersion.objects.filter(connection=connection).order_by("-version").first()
    return rules or rules_publish_defaults(connection=connection)


def rules_publish_defaults(*, connection: Connection) -> RulesVersion:
    from syncrules.defaults import default_rules

    outgoing, incoming = default_rules(connection.local_instance.tracker_type)
    return rules_publish(connection=connection, outgoing=outgoing, incoming=incoming, note="Default rules")


def rules_validate(*, outgoing: str, incoming: str) -> list[dict[str, Any]]:
    from syncrules import engine

    return engine.validate(outgoing, incoming)


def rules_publish(
    *, connection: Connection, outgoing: str, incoming: str, note: str = "", published_by: str = ""
) -> RulesVersion:
    """Validate and publish a new version; a script with a compile error is refused."""
    errors = [p for p in rules_validate(outgoing=outgoing, incoming=incoming) if p["severity"] == "error"]
    if errors:
        raise RulesInvalid(errors)
    for _ in range(5):
        try:
            with transaction.atomic():
                latest = (
                    RulesVersion.objects.filter(connection=connection).aggregate(v=Max("version"))["v"] or 0
                )
                return RulesVersion.objects.create(
                    connection=connection,
                    version=latest + 1,
                    outgoing=outgoing,
                    incoming=incoming,
                    note=note[:300],
                    published_by=published_by[:150],
                )
        except IntegrityError:  # two publishes raced for the same number
            continue
    raise RuntimeError("Could not allocate a rules version number; try again.")
