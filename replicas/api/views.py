"""Entity sync status, sync events and sync errors through the API."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exalate_node.api import TRACKER_FAILURES, Pagination, tracker_failed
from instances.models import Instance
from replicas import pipeline
from replicas.models import SyncError, SyncEvent
from replicas.selectors import sync_status


class SyncEventSerializer(serializers.ModelSerializer):
    connection_name = serializers.CharField(source="connection.name", read_only=True)

    class Meta:
        model = SyncEvent
        fields = [
            "id",
            "trace_id",
            "connection",
            "connection_name",
            "twin",
            "direction",
            "kind",
            "seq",
            "status",
            "item_key",
            "rules_version",
            "attempts",
            "error",
            "created_at",
            "processed_at",
        ]


class SyncEventDetailSerializer(SyncEventSerializer):
    class Meta(SyncEventSerializer.Meta):
        fields = [*SyncEventSerializer.Meta.fields, "replica"]


class SyncErrorSerializer(serializers.ModelSerializer):
    trace_id = serializers.UUIDField(source="event.trace_id", read_only=True, allow_null=True)
    item_key = serializers.CharField(source="twin.local_key", read_only=True, allow_null=True)

    class Meta:
        model = SyncError
        fields = [
            "id",
            "impact",
            "connection",
            "twin",
            "event",
            "trace_id",
            "item_key",
            "message",
            "details",
            "script_line",
            "created_at",
            "resolved_at",
        ]


class SyncEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Outgoing and incoming sync events, newest first. Filter by connection, direction, status, item_key."""

    pagination_class = Pagination
    queryset = SyncEvent.objects.select_related("connection").order_by("-id")
    filterset_fields = ["connection", "direction", "status", "item_key", "trace_id", "kind"]
    ordering_fields = ["id", "created_at", "processed_at"]
    search_fields = ["item_key"]

    def get_serializer_class(self):  # type: ignore[no-untyped-def]
        return SyncEventDetailSerializer if self.action == "retrieve" else SyncEventSerializer


class SyncErrorViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Errors an admin must see, by impact; resolve, or resolve and retry."""

    pagination_class = Pagination
    queryset = SyncError.objects.select_related("event", "twin").order_by("-id")
    serializer_class = SyncErrorSerializer
    filterset_fields = {"impact": ["exact"], "connection": ["exact"], "resolved_at": ["isnull"]}
    ordering_fields = ["id", "created_at"]
    search_fields = ["message"]

    @extend_schema(request=None, responses={200: SyncErrorSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Resolve and retry: the blocked event (or held connection) goes again."""
        error = self.get_object()
        pipeline.error_resolve(error=error, retry=True)
        error.refresh_from_db()
        return Response(SyncErrorSerializer(error).data)

    @extend_schema(request=None, responses={200: SyncErrorSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        """Resolve without retry: a failed event is skipped and its twin goes on with the next one."""
        error = self.get_object()
        pipeline.error_resolve(error=error, retry=False)
        error.refresh_from_db()
        return Response(SyncErrorSerializer(error).data)


class EntitySyncStatusView(APIView):
    """Entity Sync Status of a local item: per connection, the twin's state, remote item, local and remote
    replica and the event timeline."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, instance_id: int, key: str) -> Response:
        instance = get_object_or_404(Instance, pk=instance_id)
        try:
            return Response(sync_status(instance=instance, key=key))
        except TRACKER_FAILURES as exc:  # looking the item up in the tracker failed
            raise tracker_failed(instance, exc)
