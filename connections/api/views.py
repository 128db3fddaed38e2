"""Connections through the API: list, read, delete; initiate (returns the invitation code once), accept,
activate, deactivate; exalate, unexalate and connect items."""

from __future__ import annotations

from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections import services
from connections.api.serializers import (
    AcceptSerializer,
    AlertResultSerializer,
    AlertSettingsSerializer,
    ConnectionSerializer,
    ConnectSerializer,
    InitiatedSerializer,
    InitiateSerializer,
    ItemKeySerializer,
    LocalConnectionSerializer,
    PreviewSerializer,
)
from connections.models import Connection
from exalate_node.api import TRACKER_FAILURES, Pagination, tracker_failed
from replicas import pipeline
from replicas.models import Twin


def _user(request: Request) -> str:
    return request.user.get_username()


def _invalid(exc: Exception) -> ValidationError:
    return ValidationError({"non_field_errors": [str(exc)]})


class ConnectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    pagination_class = Pagination
    serializer_class = ConnectionSerializer
    filterset_fields = ["status", "type"]
    search_fields = ["name", "remote_node_url"]
    ordering_fields = ["name", "status", "created_at", "updated_at"]

    def get_queryset(self):  # type: ignore[no-untyped-def]
        active = Q(twins__unexalated_at__isnull=True) & ~Q(twins__local_id="")
        return (
            Connection.objects.select_related("local_instance", "remote_instance")
            .annotate(
                items_under_sync=Count("twins", filter=active, distinct=True),
                queued_events=Count(
                    "events", filter=Q(events__status__in=["pending", "processing", "sent"]), distinct=True
                ),
                failed_events=Count("events", filter=Q(events__status="failed"), distinct=True),
            )
            .order_by("name", "id")
        )

    @extend_schema(request=InitiateSerializer, responses={201: InitiatedSerializer})
    def create(self, request: Request) -> Response:
        """Initiate a connection: it is created `pending` and the response carries the invitation code
        (shown only here) to paste on the other node."""
        from connections.handshake import connection_initiate

        ser = InitiateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        connection, code = connection_initiate(**ser.validated_data, user=_user(request))
        invitation = connection.invitations.order_by("-created_at").first()
        body = {
            "connection": ConnectionSerializer(self.get_queryset().get(pk=connection.pk)).data,
            "invitation_code": code,
            "expires_at": invitation.expires_at if invitation else None,
        }
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=AcceptSerializer, responses={201: ConnectionSerializer})
    @action(detail=False, methods=["post"])
    def accept(self, request: Request) -> Response:
        """Accept an invitation code from another node: the nodes agree on a key and both sides go active."""
        from connections.handshake import HandshakeError, connection_accept
        from connections.invitation import InvitationError

        ser = AcceptSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            connection = connection_accept(**ser.validated_data, user=_user(request))
        except (InvitationError, HandshakeError) as exc:
            raise _invalid(exc)
        return Response(
            ConnectionSerializer(self.get_queryset().get(pk=connection.pk)).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=PreviewSerializer, responses={200: dict})
    @action(detail=False, methods=["post"])
    def preview(self, request: Request) -> Response:
        """What an invitation code would connect to (node, tracker, connection name, expiry).

        Changes nothing."""
        from connections.handshake import preview_invitation
        from connections.invitation import InvitationError

        ser = PreviewSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            return Response(preview_invitation(ser.validated_data["code"]))
        except InvitationError as exc:
            raise _invalid(exc)

    @extend_schema(request=LocalConnectionSerializer, responses={201: ConnectionSerializer})
    @action(detail=False, methods=["post"])
    def local(self, request: Request) -> Response:
        """Create a local connection between two instances of this node (both sides active at once)."""
        ser = LocalConnectionSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            side_a, _ = services.connection_create_local(**ser.validated_data)
        except services.ConnectionError_ as exc:
            raise _invalid(exc)
        return Response(ConnectionSerializer(self.get_queryset().get(pk=side_a.pk)).data, status=201)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        services.connection_delete(connection=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: ConnectionSerializer})
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str | None = None) -> Response:
        try:
            services.connection_activate(connection=self.get_object())
        except services.ConnectionError_ as exc:
            raise _invalid(exc)
        return Response(ConnectionSerializer(self.get_queryset().get(pk=pk)).data)

    @extend_schema(request=None, responses={200: ConnectionSerializer})
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str | None = None) -> Response:
        try:
            services.connection_deactivate(connection=self.get_object())
        except services.ConnectionError_ as exc:
            raise _invalid(exc)
        return Response(ConnectionSerializer(self.get_queryset().get(pk=pk)).data)

    @extend_schema(request=None, responses={200: ConnectionSerializer})
    @extend_schema(request=AlertSettingsSerializer, responses={200: AlertSettingsSerializer})
    @action(detail=True, methods=["get", "put"])
    def alerts(self, request: Request, pk: str | None = None) -> Response:
        """Where this connection's alerts go (errors opened and cleared, as digests). PUT what to change;
        blank values fall back to the node's ALERT_EMAILS / ALERT_WEBHOOK_URL."""
        connection = self.get_object()
        if request.method == "PUT":
            ser = AlertSettingsSerializer(data=request.data)
            ser.is_valid(raise_exception=True)
            fields = []
            if "emails" in ser.validated_data:
                connection.alert_emails, fields = ser.validated_data["emails"], [*fields, "alert_emails"]
            if "webhook_url" in ser.validated_data:
                connection.alert_webhook_url = ser.validated_data["webhook_url"]
                fields.append("alert_webhook_url")
            if fields:
                connection.save(update_fields=fields)
        return Response(
            {"emails": connection.alert_emails, "webhook_set": bool(connection.alert_webhook_url)}
        )

    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request: Request, pk: str | None = None) -> Response:
        """Rotate the connection key with the other node (both nodes switch; sync goes on). The answer's
        `key_fingerprint` is the new key's, equal on both nodes."""
        from connections.rotation import RotationError, rotate_key

        try:
            rotate_key(self.get_object())
        except RotationError as exc:
            raise _invalid(exc)
        return Response(ConnectionSerializer(self.get_queryset().get(pk=pk)).data)

    def _twin_payload(self, twin: Twin) -> dict:
        return {
            "twin": twin.pk,
            "state": Twin.objects.get(pk=twin.pk).state,
            "local_key": twin.local_key,
            "remote_key": twin.remote_key,
        }

    @extend_schema(request=ItemKeySerializer, responses={202: dict})
    @action(detail=True, methods=["post"])
    def exalate(self, request: Request, pk: str | None = None) -> Response:
        """Start syncing a local item on this connection (or send its current state again)."""
        ser = ItemKeySerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        connection = self.get_object()
        try:
            twin = pipeline.exalate(connection=connection, key=ser.validated_data["key"])
        except pipeline.OperationError as exc:
            raise _invalid(exc)
        except TRACKER_FAILURES as exc:  # looking the item up in the tracker failed
            raise tracker_failed(connection.local_instance, exc)
        return Response(self._twin_payload(twin), status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ItemKeySerializer, responses={202: dict})
    @action(detail=True, methods=["post"])
    def unexalate(self, request: Request, pk: str | None = None) -> Response:
        """Stop syncing an item on this connection; both items stay."""
        ser = ItemKeySerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        key = ser.validated_data["key"]
        twin = Twin.objects.filter(connection=self.get_object(), local_key=key).first()
        if twin is None:
            raise NotFound(f"{key} is not synced on this connection.")
        pipeline.unexalate(twin=twin)
        return Response(self._twin_payload(twin), status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ConnectSerializer, responses={202: dict})
    @action(detail=True, methods=["post"])
    def connect(self, request: Request, pk: str | None = None) -> Response:
        """Link a local item to an item that already exists on the other side."""
        ser = ConnectSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        connection = self.get_object()
        try:
            twin = pipeline.connect(connection=connection, **ser.validated_data)
        except pipeline.OperationError as exc:
            raise _invalid(exc)
        except TRACKER_FAILURES as exc:
            raise tracker_failed(connection.local_instance, exc)
        return Response(self._twin_payload(twin), status=status.HTTP_202_ACCEPTED)


class AlertTestView(APIView):
    """Send a test alert to every destination now (the node's and each connection's), to check the set-up."""

    @extend_schema(request=None, responses={200: AlertResultSerializer(many=True)})
    def post(self, request: Request) -> Response:
        from connections.alerts import send_test

        results = [{"destination": d, "outcome": o} for d, o in send_test()]
        if not results:
            raise ValidationError(
                {
                    "non_field_errors": [
                        "No alert destination is set: set ALERT_EMAILS or ALERT_WEBHOOK_URL on the node, "
                        "or a connection's alerts (PUT /api/v1/connections/{id}/alerts/)."
                    ]
                }
            )
        return Response(results)
