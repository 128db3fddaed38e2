"""Serializers for instances and the built-in tracker."""

from __future__ import annotations

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from exalate_node.outbound import RefusedDestination, check_url
from instances.health import outage_message
from instances.models import Attachment, Comment, Instance, Issue, Project


def http_url(value: str, name: str) -> str:
    """The node only calls http(s) URLs (a URLField also takes ftp://); an empty value stays allowed."""
    if value:
        try:
            check_url(value, what=f"The {name}")
        except RefusedDestination as exc:
            raise serializers.ValidationError(str(exc))
    return value


class InstanceSerializer(serializers.ModelSerializer):
    """Credentials are write-only; responses only say whether some are stored."""

    credentials = serializers.JSONField(write_only=True, required=False)
    has_credentials = serializers.SerializerMethodField()
    reachable = serializers.SerializerMethodField(
        help_text="False while the tracker is marked unreachable (OUTAGE_AFTER_FAILURES failures in a row)."
    )
    outage = serializers.SerializerMethodField(
        help_text="While unreachable: since when, the last error, the next try and a message for people."
    )

    class Meta:
        model = Instance
        fields = [
            "id",
            "uid",
            "name",
            "kind",
            "tracker_type",
            "url",
            "tracker_version",
            "node_url",
            "settings",
            "credentials",
            "has_credentials",
            "reachable",
            "outage",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["uid", "created_at", "updated_at"]

    def get_has_credentials(self, obj: Instance) -> bool:
        return bool(obj.credentials)

    def get_reachable(self, obj: Instance) -> bool:
        return obj.unreachable_since is None

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "since": {"type": "string", "format": "date-time"},
                "failures": {"type": "integer"},
                "last_error": {"type": "string"},
                "next_try_at": {"type": "string", "format": "date-time", "nullable": True},
                "message": {"type": "string"},
            },
        }
    )
    def get_outage(self, obj: Instance) -> dict[str, object] | None:
        if obj.unreachable_since is None:
            return None
        return {
            "since": obj.unreachable_since.isoformat(),
            "failures": obj.failures,
            "last_error": obj.last_error,
            "next_try_at": obj.next_try_at.isoformat() if obj.next_try_at else None,
            "message": outage_message(obj),
        }

    def validate_url(self, value: str) -> str:
        return http_url(value, "url")

    def validate_node_url(self, value: str) -> str:
        return http_url(value, "node_url")

    def validate_settings(self, value: object) -> dict:
        # A form field "settings=null" is parsed as JSON and would reach the NOT NULL column (500).
        if not isinstance(value, dict):
            raise serializers.ValidationError("Settings must be a JSON object.")
        from instances.polling import POLL_SETTINGS, poll_setting_problem

        for key in POLL_SETTINGS:
            if value.get(key) is not None and (problem := poll_setting_problem(key, value[key])):
                raise serializers.ValidationError(problem)
        return value

    def validate_credentials(self, value: object) -> str:
        if not isinstance(value, dict):
            raise serializers.ValidationError('Credentials must be a JSON object, e.g. {"token": "..."}.')
        return json.dumps(value)


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "instance", "key", "name", "statuses", "priorities", "issue_types"]


class CommentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Comment
        fields = ["id", "body", "author", "internal", "created_at", "updated_at", "updated_by"]
        read_only_fields = ["created_at", "updated_at", "updated_by"]
        extra_kwargs = {"author": {"required": False}}


class AttachmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attachment
        fields = ["id", "filename", "mime_type", "size", "sha256", "created_at", "created_by"]
        read_only_fields = fields


class AttachmentUploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class IssueSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="key", queryset=Project.objects.all())
    type = serializers.CharField(source="issue_type", required=False, max_length=50)
    parent = serializers.SlugRelatedField(
        slug_field="key", queryset=Issue.objects.all(), required=False, allow_null=True
    )
    comments = CommentSerializer(many=True, read_only=True)
    attachments = AttachmentSerializer(many=True, read_only=True)

    class Meta:
        model = Issue
        fields = [
            "id",
            "key",
            "project",
            "summary",
            "description",
            "status",
            "priority",
            "type",
            "labels",
            "assignee",
            "reporter",
            "due_date",
            "parent",
            "custom_fields",
            "created_at",
            "updated_at",
            "updated_by",
            "version",
            "comments",
            "attachments",
        ]
        read_only_fields = ["key", "created_at", "updated_at", "updated_by", "version"]
        extra_kwargs = {"status": {"required": False}, "priority": {"required": False}}

    def validate_labels(self, value: object) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(x, str) and len(x) <= 100 for x in value):
            raise serializers.ValidationError(
                "Labels must be a list of strings (each at most 100 characters)."
            )
        return value

    def validate_custom_fields(self, value: object) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Custom fields must be a JSON object of name → value.")
        return value
