"""Dry-run through the API: a connection's script on a real item or a given replica, writing nothing."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.models import Connection
from exalate_node.api import TRACKER_FAILURES, tracker_failed
from exalate_node.text import unencodable_message, unencodable_path
from replicas import dryrun
from replicas.pipeline import OperationError
from syncrules.api.views import MAX_SCRIPT
from syncrules.engine import ScriptError


class DryRunSerializer(serializers.Serializer):
    direction = serializers.ChoiceField(choices=["outgoing", "incoming"])
    key = serializers.CharField(
        max_length=200, required=False, help_text="Outgoing: the local item; incoming: the item to update."
    )
    replica = serializers.JSONField(required=False, help_text="Incoming: the replica (or hubIssue) to apply.")
    outgoing = serializers.CharField(max_length=MAX_SCRIPT, required=False, trim_whitespace=False)
    incoming = serializers.CharField(max_length=MAX_SCRIPT, required=False, trim_whitespace=False)

    def validate(self, data: dict) -> dict:
        if data["direction"] == "outgoing" and not data.get("key"):
            raise serializers.ValidationError({"key": "An outgoing dry-run needs the key of a local item."})
        if data["direction"] == "incoming" and not isinstance(data.get("replica"), dict):
            raise serializers.ValidationError(
                {"replica": "An incoming dry-run needs a replica (a JSON object)."}
            )
        return data


def _connection(pk: int) -> Connection:
    return get_object_or_404(Connection.objects.select_related("local_instance"), pk=pk)


class RulesDryRunView(APIView):
    """Run a script without writing anything: outgoing on a real local item (shows the replica it would
    send), incoming on a given replica (shows the changes it would make)."""

    @extend_schema(request=DryRunSerializer, responses={200: dict})
    def post(self, request: Request, pk: int) -> Response:
        connection = _connection(pk)
        ser = DryRunSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        try:
            if data["direction"] == "outgoing":
                result = dryrun.dry_run_outgoing(
                    connection=connection, key=data["key"], outgoing=data.get("outgoing")
                )
            else:
                result = dryrun.dry_run_incoming(
                    connection=connection,
                    replica=data["replica"],
                    key=data.get("key"),
                    incoming=data.get("incoming"),
                )
        except ScriptError as exc:
            return Response(
                {"detail": str(exc), "code": "script_error", "line": exc.line, "kind": exc.kind},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        except OperationError as exc:
            raise ValidationError({"key": [str(exc)]})
        except TRACKER_FAILURES as exc:  # the tracker refused, failed or answered something unreadable
            raise tracker_failed(connection.local_instance, exc)
        where = unencodable_path(result)
        if where is not None:  # e.g. chr(55296): the answer could not even be encoded
            return Response(
                {"detail": unencodable_message(where, "The script's result"), "code": "script_error"},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return Response(result)
