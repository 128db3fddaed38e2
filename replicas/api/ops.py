"""Triggers, bulk operations, reconciliation and twin queries of a connection, through the API."""

from __future__ import annotations

import re
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.models import Connection
from exalate_node.api import TRACKER_FAILURES, Pagination, tracker_failed
from exalate_node.templatetags.links import item_url
from instances.connectors import ConnectorError
from replicas import bulk, reconcile, selectors, triggers
from replicas.models import BulkJob, ReconciliationReport, Trigger, Twin

MAX_STUCK_MINUTES = 10 * 366 * 24 * 60  # ten years


def _connection(pk: int) -> Connection:
    return get_object_or_404(Connection.objects.select_related("local_instance"), pk=pk)


class TriggerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Trigger
        fields = ["id", "entity_type", "query", "notes", "active", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"query": {"max_length": 2000}}


class TriggerListView(ListAPIView):
    """Triggers of this side of the connection; POST adds one (the query is checked by the tracker)."""

    pagination_class = Pagination
    serializer_class = TriggerSerializer
    queryset = Trigger.objects.none()  # for the schema; the real one depends on the URL

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return Trigger.objects.filter(connection=_connection(self.kwargs["pk"])).order_by("id")

    @extend_schema(request=TriggerSerializer, responses={201: TriggerSerializer})
    def post(self, request: Request, pk: int) -> Response:
        ser = TriggerSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            trigger = triggers.trigger_create(connection=_connection(pk), **ser.validated_data)
        except ConnectorError as exc:
            raise ValidationError({"query": [exc.message]})
        return Response(TriggerSerializer(trigger).data, status=status.HTTP_201_CREATED)


class TriggerDetailView(APIView):
    def _get(self, pk: int, trigger_id: int) -> Trigger:
        return get_object_or_404(
            Trigger.objects.select_related("connection"), pk=trigger_id, connection_id=pk
        )

    @extend_schema(responses={200: TriggerSerializer})
    def get(self, request: Request, pk: int, trigger_id: int) -> Response:
        return Response(TriggerSerializer(self._get(pk, trigger_id)).data)

    @extend_schema(request=TriggerSerializer, responses={200: TriggerSerializer})
    def patch(self, request: Request, pk: int, trigger_id: int) -> Response:
        trigger = self._get(pk, trigger_id)
        ser = TriggerSerializer(trigger, data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        try:
            trigger = triggers.trigger_update(trigger=trigger, **ser.validated_data)
        except ConnectorError as exc:
            raise ValidationError({"query": [exc.message]})
        return Response(TriggerSerializer(trigger).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int, trigger_id: int) -> Response:
        self._get(pk, trigger_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class BulkStartSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=BulkJob.Kind.choices)
    trigger = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,  # a row id; larger numbers overflowed the database driver
        help_text="Bulk Exalate: the trigger whose matches to sync.",
    )
    keys = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=bulk.MAX_ITEMS
    )
    csv = serializers.CharField(
        required=False, max_length=5_000_000, help_text="Bulk Connect: 'local key,remote key' per line."
    )


class BulkProgressSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.FloatField()
    rate_per_s = serializers.FloatField()
    seconds_left = serializers.IntegerField(allow_null=True)
    errors = serializers.IntegerField()
    recent_errors = serializers.ListField(child=serializers.DictField())
    message = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class BulkListView(APIView):
    """Bulk jobs of the connection with their progress; POST starts one."""

    @extend_schema(responses={200: BulkProgressSerializer(many=True)})
    def get(self, request: Request, pk: int) -> Response:
        jobs = BulkJob.objects.filter(connection=_connection(pk)).order_by("-id")[:50]
        return Response([bulk.progress(j) for j in jobs])

    @extend_schema(request=BulkStartSerializer, responses={202: BulkProgressSerializer})
    def post(self, request: Request, pk: int) -> Response:
        connection = _connection(pk)
        ser = BulkStartSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        trigger = None
        if data.get("trigger") is not None:
            trigger = Trigger.objects.filter(pk=data["trigger"], connection=connection).first()
            if trigger is None:
                raise ValidationError({"trigger": ["No such trigger on this connection."]})
        try:
            job = bulk.bulk_start(
                connection=connection,
                kind=data["kind"],
                trigger=trigger,
                keys=data.get("keys"),
                pairs_csv=data.get("csv"),
                user=request.user.get_username(),
            )
        except (bulk.BulkError, ConnectorError) as exc:
            raise ValidationError({"non_field_errors": [str(exc)]})
        job.refresh_from_db()
        return Response(bulk.progress(job), status=status.HTTP_202_ACCEPTED)


class BulkDetailView(APIView):
    @extend_schema(responses={200: BulkProgressSerializer})
    def get(self, request: Request, pk: int, job_id: int) -> Response:
        return Response(bulk.progress(get_object_or_404(BulkJob, pk=job_id, connection_id=pk)))


class BulkCancelView(APIView):
    @extend_schema(request=None, responses={200: BulkProgressSerializer})
    def post(self, request: Request, pk: int, job_id: int) -> Response:
        job = get_object_or_404(BulkJob, pk=job_id, connection_id=pk)
        bulk.bulk_cancel(job=job)
        job.refresh_from_db()
        return Response(bulk.progress(job))


class ReconciliationSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReconciliationReport
        fields = ["id", "started_at", "finished_at", "checked", "drifted", "repaired", "missing", "findings"]


class ReconcileView(APIView):
    """POST: scan the connection now (drift is repaired); GET: the latest reports."""

    @extend_schema(responses={200: ReconciliationSerializer(many=True)})
    def get(self, request: Request, pk: int) -> Response:
        reports = ReconciliationReport.objects.filter(connection=_connection(pk)).order_by("-id")[:20]
        return Response(ReconciliationSerializer(reports, many=True).data)

    @extend_schema(request=None, responses={200: ReconciliationSerializer})
    def post(self, request: Request, pk: int) -> Response:
        connection = _connection(pk)
        try:
            report = reconcile.reconcile(connection=connection)
        except TRACKER_FAILURES as exc:
            raise tracker_failed(connection.local_instance, exc)
        return Response(ReconciliationSerializer(report).data)


class TwinSerializer(serializers.ModelSerializer):
    class Meta:
        model = Twin
        fields = [
            "id",
            "local_key",
            "local_url",
            "remote_key",
            "remote_url",
            "state",
            "last_synced_at",
            "created_at",
        ]

    def to_representation(self, instance: Twin) -> dict[str, Any]:
        data = super().to_representation(instance)
        # Older built-in tracker links pointed at the admin change form: the item's UI page instead.
        data["local_url"], data["remote_url"] = item_url(data["local_url"]), item_url(data["remote_url"])
        return data


class TwinListView(ListAPIView):
    """Items under sync on the connection; ``?stuck_minutes=N`` lists those not synchronized for N
    minutes; ``?state=`` filters by state."""

    pagination_class = Pagination
    serializer_class = TwinSerializer
    queryset = Twin.objects.none()  # for the schema; the real one depends on the URL

    @extend_schema(
        parameters=[
            OpenApiParameter("stuck_minutes", int, description="Only twins not synchronized for this long."),
            OpenApiParameter("state", str, enum=Twin.State.values),
        ]
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        pk = _connection(self.kwargs["pk"]).pk
        stuck = self.request.query_params.get("stuck_minutes")
        if stuck is not None:
            # ASCII digits only ("²".isdigit() is true, int() refuses it), and at most ten years: a larger
            # number overflowed the date arithmetic.
            if not re.fullmatch(r"[0-9]{1,9}", stuck) or int(stuck) > MAX_STUCK_MINUTES:
                raise ValidationError(
                    {"stuck_minutes": [f"Give a whole number of minutes from 0 to {MAX_STUCK_MINUTES}."]}
                )
            qs = selectors.twins_stuck(connection_id=pk, minutes=int(stuck))
        else:
            qs = selectors.twins_under_sync(connection_id=pk)
        state = self.request.query_params.get("state")
        if state:
            if state not in Twin.State.values:
                raise ValidationError({"state": [f"Use one of: {', '.join(Twin.State.values)}."]})
            qs = qs.filter(state=state)
        return qs
