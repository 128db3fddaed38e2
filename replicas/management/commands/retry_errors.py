"""Resolve and retry open sync errors from a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from replicas import pipeline
from replicas.models import SyncError


class Command(BaseCommand):
    help = "Resolve and retry open sync errors (all, or those of one connection or impact)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="Error ids (default: every open error).")
        parser.add_argument("--connection", type=int, help="Only errors of this connection id.")
        parser.add_argument("--impact", choices=SyncError.Impact.values)
        parser.add_argument("--no-retry", action="store_true", help="Resolve without retrying.")

    def handle(
        self, *args: Any, ids: list[int], connection: int | None, impact: str | None, **opts: Any
    ) -> None:
        errors = SyncError.objects.filter(resolved_at__isnull=True).order_by("id")
        if ids:
            errors = errors.filter(pk__in=ids)
        if connection:
            errors = errors.filter(connection_id=connection)
        if impact:
            errors = errors.filter(impact=impact)
        count = 0
        for error in errors:
            pipeline.error_resolve(error=error, retry=not opts["no_retry"])
            count += 1
            self.stdout.write(f"#{error.pk} [{error.impact}] {error.message[:100]}")
        verb = "resolved" if opts["no_retry"] else "resolved and retried"
        self.stdout.write(self.style.SUCCESS(f"{count} error(s) {verb}."))
