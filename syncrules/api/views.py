"""Sync rules through the API: read the version in force, publish a new one, validate. (Dry-run:
``replicas.api.dryrun``.)"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.models import Connection
from syncrules import services
from syncrules.models import RulesVersion

MAX_SCRIPT = 100_000


class RulesSerializer(serializers.ModelSerializer):
    class Meta:
        model = RulesVersion
        fields = ["version", "outgoing", "incoming", "note", "published_by", "published_at"]
        read_only_fields = ["version", "published_by", "published_at"]
        extra_kwargs = {
            "outgoing": {"max_length": MAX_SCRIPT, "allow_blank": True, "trim_whitespace": False},
            "incoming": {"max_length": MAX_SCRIPT, "allow_blank": True, "trim_whitespace": False},
        }


class ValidateSerializer(serializers.Serializer):
    outgoing = serializers.CharField(max_length=MAX_SCRIPT, allow_blank=True, trim_whitespace=False)
    incoming = serializers.CharField(max_length=MAX_SCRIPT, allow_blank=True, trim_whitespace=False)


class ProblemSerializer(serializers.Serializer):
    direction = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()
    severity = serializers.CharField()


def _connection(pk: int) -> Connection:
    return get_object_or_404(Connection.objects.select_related("local_instance"), pk=pk)


class RulesView(APIView):
    """The rules in force on this side of the connection; PUT publishes a new version."""

    @extend_schema(responses={200: RulesSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(RulesSerializer(services.rules_current(_connection(pk))).data)

    @extend_schema(request=RulesSerializer, responses={201: RulesSerializer})
    def put(self, request: Request, pk: int) -> Response:
        connection = _connection(pk)
        ser = RulesSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            rules = services.rules_publish(
                connection=connection,
                outgoing=ser.validated_data["outgoing"],
                incoming=ser.validated_data["incoming"],
                note=ser.validated_data.get("note", ""),
                published_by=request.user.get_username(),
            )
        except services.RulesInvalid as exc:
            raise ValidationError({"non_field_errors": [str(exc)], "problems": exc.problems})
        return Response(RulesSerializer(rules).data, status=status.HTTP_201_CREATED)


class RulesValidateView(APIView):
    """Compile both scripts: errors with line numbers, warnings for unknown replica fields."""

    @extend_schema(request=ValidateSerializer, responses={200: ProblemSerializer(many=True)})
    def post(self, request: Request, pk: int) -> Response:
        _connection(pk)
        ser = ValidateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return Response(services.rules_validate(**ser.validated_data))
