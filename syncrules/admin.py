"""Admin page for rules versions (read-only: publishing goes through the rules service)."""

from __future__ import annotations

from django.contrib import admin

from syncrules.models import RulesVersion


@admin.register(RulesVersion)
class RulesVersionAdmin(admin.ModelAdmin):
    list_display = ["connection", "version", "published_by", "published_at", "note"]
    list_filter = ["connection"]
    search_fields = ["connection__name", "note", "outgoing", "incoming"]
    readonly_fields = [
        "connection",
        "version",
        "outgoing",
        "incoming",
        "published_by",
        "published_at",
        "note",
    ]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
