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


class AlertSettingsSerializer(serializers.Serializer):
    """Where this connection's alerts go. Blank: the node's ALERT_EMAILS / ALERT_WEBHOOK_URL."""

    emails = serializers.CharField(
        required=False, allow_blank=True, max_length=1000, help_text="Comma-separated e-mail addresses."
    )
    webhook_url = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        write_only=True,
        help_text="Incoming-webhook URL (a credential: stored encrypted, never shown back).",
    )
    webhook_set = serializers.BooleanField(read_only=True, help_text="Whether this connection has its own.")

    def validate_emails(self, value: str) -> str:
        from connections.alerts import parse_emails

        try:
            return ", ".join(parse_emails(value))
        except ValueError as exc:
            raise serializers.ValidationError(f"{exc} Write addresses separated by commas.") from None

    def validate_webhook_url(self, value: str) -> str:
        from connections.alerts import check_webhook_url

        try:
            return check_webhook_url(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class AlertResultSerializer(serializers.Serializer):
    destination = serializers.CharField()
    outcome = serializers.CharField(help_text="'sent', or 'failed: ' and why.")
