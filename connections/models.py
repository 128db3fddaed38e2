"""Connections between a local instance and a remote one, their invitations and replay protection."""

from __future__ import annotations

import uuid

from django.db import models

from exalate_node.fields import EncryptedTextField, JSONField, RedactedTextField
from instances.models import Instance


class Connection(models.Model):
    """One side of a sync link between a local instance and a remote instance; it owns this side's rules.

    A node-to-node connection has one row on each node, joined by ``peer_uid``. A *local* connection (both
    instances on this node) has two rows here, one per side, linked by ``peer``; messages between them are
    delivered in-process instead of over HTTP.
    """

    class Type(models.TextChoices):
        SCRIPT = "script", "Script"
        BASIC = "basic", "Basic"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        DEACTIVATED = "deactivated", "Deactivated"
        ERROR = "error", "Error"

    class Side(models.TextChoices):
        LOCAL = "local", "This node"
        REMOTE = "remote", "The other node"

    uid = models.UUIDField("connection id", default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.SCRIPT)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    local_instance = models.ForeignKey(Instance, on_delete=models.PROTECT, related_name="connections")
    remote_instance = models.ForeignKey(
        Instance, on_delete=models.PROTECT, null=True, blank=True, related_name="remote_connections"
    )
    initiated_by = models.CharField(max_length=10, choices=Side.choices, default=Side.LOCAL)
    peer = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="The other side of a local connection.",
    )
    peer_uid = models.UUIDField("peer connection id", null=True, blank=True)
    remote_node_url = models.URLField(max_length=500, blank=True)
    private_mode = models.BooleanField(default=False, help_text="Poll the peer instead of being called.")
    key = EncryptedTextField(blank=True, default="", help_text="Connection key (hex), encrypted at rest.")
    # Key rotation (connections.rotation): the key before the last rotation stays valid for incoming
    # requests until ``previous_key_until``, so messages signed just before the switch still verify.
    previous_key = EncryptedTextField(blank=True, default="", help_text="The key before the last rotation.")
    previous_key_until = models.DateTimeField(null=True, blank=True)
    key_rotated_at = models.DateTimeField(null=True, blank=True)
    rotation_started_at = models.DateTimeField(null=True, blank=True)
    status_message = RedactedTextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # What the peer told us at the handshake (feature negotiation, support diagnostics).
    peer_node_name = models.CharField(max_length=200, blank=True, default="")
    peer_app_version = models.CharField(max_length=50, blank=True, default="")
    peer_features = JSONField(default=list, blank=True)
    # Node-to-node delivery: one sender per connection at a time (a lease, like the twin lease of the
    # pipeline), and the backoff state of the last failure.
    delivery_token = models.CharField(max_length=32, blank=True, default="")
    delivery_until = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Private mode, polling side: the id of the last peer outbox message applied here.
    poll_after = models.BigIntegerField(default=0)
    # Alerts (connections/alerts.py): where this connection's errors are announced. Blank: the node's
    # defaults (ALERT_EMAILS, ALERT_WEBHOOK_URL).
    alert_emails = models.CharField(
        max_length=1000,
        blank=True,
        default="",
        help_text="E-mail addresses for this connection's alerts, comma-separated; blank: ALERT_EMAILS.",
    )
    # An incoming-webhook URL is a credential (whoever has it can post): encrypted at rest, never shown back.
    alert_webhook_url = EncryptedTextField(
        blank=True,
        default="",
        help_text="Incoming-webhook URL (Slack, Teams, ...) for this connection's alerts; "
        "blank: ALERT_WEBHOOK_URL.",
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_local(self) -> bool:
        return self.peer_id is not None

    @property
    def polls_peer(self) -> bool:
        """Private mode, this side: we have no public URL, so we fetch the peer's messages ourselves."""
        return self.private_mode and bool(self.remote_node_url)

    @property
    def polled_by_peer(self) -> bool:
        """Private mode, the public side: the peer cannot be called; it fetches our messages instead."""
        return self.private_mode and not self.remote_node_url

    @property
    def accepts_messages(self) -> bool:
        return self.status in (self.Status.ACTIVE, self.Status.DEACTIVATED, self.Status.ERROR)


class Invitation(models.Model):
    """An invitation code issued for a pending connection: single-use, expiring, revocable.

    Only a hash of the shared secret is kept readable; the secret itself is encrypted at rest.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="invitations")
    invitation_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    secret = EncryptedTextField(help_text="Shared secret (hex), encrypted at rest.")
    fingerprint = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invitation {self.fingerprint or self.invitation_id} for {self.connection}"


class SeenNonce(models.Model):
    """A nonce of a signed node request, kept while its timestamp could still be accepted (replay guard)."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64)
    seen_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "nonce"], name="nonce_once")]

    def __str__(self) -> str:
        return self.nonce


class OutboundMessage(models.Model):
    """A message for the peer node, written in the same transaction as the change it carries (outbox).

    The sender task delivers undelivered messages in id order, in batches; a peer in private mode fetches
    them instead. ``payload`` is the message exactly as it travels (see ``connections.node_views``).
    """

    class Kind(models.TextChoices):
        EVENT = "event", "Sync event"
        ACK = "ack", "Acknowledgement"
        STATUS = "status", "Connection status"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="outbox")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    trace_id = models.CharField(max_length=64, blank=True, default="")
    payload = JSONField()
    size = models.PositiveIntegerField(default=0, help_text="Bytes of the payload as JSON.")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["connection", "delivered_at", "id"], name="outbox_queue")]

    def __str__(self) -> str:
        return f"{self.kind} {self.trace_id} to {self.connection}"


class AlertCursor(models.Model):
    """How far the alerts to one destination (an e-mail list or a webhook) have got: the newest error
    announced as opened and the newest clearing announced, and the last attempt (the digest's throttle)."""

    destination = models.CharField(max_length=600, unique=True)
    opened_after = models.BigIntegerField(default=0, help_text="The last SyncError id announced.")
    cleared_after = models.DateTimeField(null=True, blank=True, help_text="The last clearing announced.")
    sent_at = models.DateTimeField(null=True, blank=True, help_text="The last attempt to send.")
    failures = models.PositiveIntegerField(default=0)
    last_error = RedactedTextField(blank=True, default="")

    def __str__(self) -> str:
        return self.destination
