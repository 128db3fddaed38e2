"""Serializers for connections. The connection key never appears; the invitation code only in the
response that creates it."""

from __future__ import annotations

from rest_framework import serializers

from connections.models import Connection
from instances.models import Instance


class InstanceBriefSerializer(serializers.ModelSerializer):
    url = serializers.CharField(read_only=True, help_text="The tracker's base URL (may be empty).")

    class Meta:
        model = Instance
        fields = ["id", "uid", "name", "kind", "tracker_type", "url"]


class ConnectionSerializer(serializers.ModelSerializer):
    local_instance = InstanceBriefSerializer(read_only=True)
    remote_instance = InstanceBriefSerializer(read_only=True)
    is_local = serializers.BooleanField(read_only=True)
    items_under_sync = serializers.IntegerField(read_only=True, default=0)
    queued_events = serializers.IntegerField(read_only=True, default=0)
    failed_events = serializers.IntegerField(read_only=True, default=0)
    # Empty for local connections: a plain string, not format "uri" (which "" would violate).
    remote_node_url = serializers.CharField(read_only=True)
    key_fingerprint = serializers.SerializerMethodField(
        help_text="A short, non-secret fingerprint of the connection key: equal on both nodes."
    )

    class Meta:
        model = Connection
        fields = [
            "id",
            "uid",
            "name",
            "type",
            "status",
            "status_message",
            "local_instance",
            "remote_instance",
            "initiated_by",
            "is_local",
            "peer",
            "remote_node_url",
            "private_mode",
            "items_under_sync",
            "queued_events",
            "failed_events",
            "created_at",
            "updated_at",
            "activated_at",
            "key_fingerprint",
            "key_rotated_at",
        ]
        read_only_fields = fields

    def get_key_fingerprint(self, obj: Connection) -> str:
        from connections.rotation import key_fingerprint

        return key_fingerprint(obj)


class InitiateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    local_instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.filter(kind="local"))
    type = serializers.ChoiceField(choices=Connection.Type.choices, default=Connection.Type.SCRIPT)


class InitiatedSerializer(serializers.Serializer):
    connection = ConnectionSerializer()
    invitation_code = serializers.CharField(help_text="Shown once: paste it on the other node.")
    expires_at = serializers.DateTimeField()


class AcceptSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=20000, help_text="The invitation code from the other node.")
    local_instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.filter(kind="local"))
    name = serializers.CharField(max_length=200, required=False)


class PreviewSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=20000)


class LocalConnectionSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    instance_a = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.filter(kind="local"))
    instance_b = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.filter(kind="local"))
    type = serializers.ChoiceField(choices=Connection.Type.choices, default=Connection.Type.BASIC)


class ItemKeySerializer(serializers.Serializer):
    key = serializers.CharField(max_length=200, help_text="The local item's key, e.g. SUP-12.")


class ConnectSerializer(serializers.Serializer):
    local_key = serializers.CharField(max_length=200)
    remote_key = serializers.CharField(max_length=200)
