"""The Django admin for node-level models: API tokens can be listed and revoked, never read."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from exalate_node.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "expires_at", "last_used_at"]
    list_filter = ["user"]
    search_fields = ["prefix", "name", "user__username"]
    fields = ["prefix", "user", "name", "created_at", "expires_at", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are made by /api/v1/auth/token/ or `manage.py create_api_token`
