"""Admin pages for connections and invitations; key material is never shown."""

from __future__ import annotations

from django.contrib import admin

from connections.models import Connection, Invitation


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status",
        "type",
        "local_instance",
        "remote_instance",
        "initiated_by",
        "updated_at",
    ]
    list_filter = ["status", "type", "initiated_by", "private_mode"]
    search_fields = ["name", "uid", "remote_node_url"]
    exclude = ["key"]
    readonly_fields = ["uid", "peer", "peer_uid", "created_at", "updated_at", "activated_at", "has_key"]
    list_select_related = ["local_instance", "remote_instance"]

    @admin.display(boolean=True, description="connection key set")
    def has_key(self, obj: Connection) -> bool:
        return bool(obj.key)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["connection", "fingerprint", "created_at", "expires_at", "used_at", "revoked_at"]
    list_filter = ["used_at", "revoked_at"]
    search_fields = ["connection__name", "fingerprint"]
    exclude = ["secret"]
    readonly_fields = ["connection", "invitation_id", "fingerprint", "created_at", "expires_at", "used_at"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
