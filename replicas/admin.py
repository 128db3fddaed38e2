"""Admin pages for twins, sync events and sync errors."""

from __future__ import annotations

from django.contrib import admin

from replicas.models import BulkJob, EntityLink, ReconciliationReport, SyncError, SyncEvent, Trigger, Twin


class EntityLinkInline(admin.TabularInline):
    model = EntityLink
    extra = 0
    readonly_fields = ["kind", "local_id", "remote_id"]


@admin.register(Twin)
class TwinAdmin(admin.ModelAdmin):
    list_display = ["local_key", "remote_key", "connection", "state", "last_synced_at"]
    list_filter = ["state", "connection"]
    search_fields = ["local_key", "remote_key", "local_id", "remote_id"]
    list_select_related = ["connection"]
    readonly_fields = [f.name for f in Twin._meta.fields]
    inlines = [EntityLinkInline]


@admin.register(SyncEvent)
class SyncEventAdmin(admin.ModelAdmin):
    list_display = [
        "trace_id",
        "direction",
        "item_key",
        "connection",
        "status",
        "seq",
        "attempts",
        "created_at",
    ]
    list_filter = ["direction", "status", "connection"]
    search_fields = ["trace_id", "item_key"]
    list_select_related = ["connection"]
    readonly_fields = [f.name for f in SyncEvent._meta.fields]


@admin.register(SyncError)
class SyncErrorAdmin(admin.ModelAdmin):
    list_display = ["message", "impact", "connection", "twin", "created_at", "resolved_at"]
    list_filter = ["impact", "resolved_at", "connection"]
    search_fields = ["message", "details"]
    list_select_related = ["connection", "twin"]
    readonly_fields = [f.name for f in SyncError._meta.fields]


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    list_display = ["query", "entity_type", "connection", "active", "updated_at"]
    list_filter = ["active", "connection"]
    search_fields = ["query", "notes"]


@admin.register(BulkJob)
class BulkJobAdmin(admin.ModelAdmin):
    list_display = ["kind", "connection", "status", "position", "total", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
    readonly_fields = [f.name for f in BulkJob._meta.fields if f.name != "items"]
    exclude = ["items"]


@admin.register(ReconciliationReport)
class ReconciliationReportAdmin(admin.ModelAdmin):
    list_display = ["connection", "started_at", "checked", "drifted", "repaired", "missing"]
    list_filter = ["connection"]
    readonly_fields = [f.name for f in ReconciliationReport._meta.fields]
