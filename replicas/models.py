"""Twins (entity links), sync events and sync errors: the rows the sync pipeline runs on.

The database is the truth: every step of the pipeline is a row here, tasks only nudge.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from exalate_node.fields import JSONField, RedactedTextField


class Twin(models.Model):
    """A local item paired with its remote item on one connection (Exalate's *entity link*).

    ``local_replica`` is the hubIssue this side last sent (or recorded as sent after applying an incoming
    change, so it does not echo); ``remote_replica`` is the hubIssue last received (``previous`` for the
    next incoming run) and ``prev_remote_replica`` the one before it.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        IN_PROGRESS = "in_progress", "In progress"
        WAITING = "waiting", "Waiting for remote"
        SYNCHRONIZED = "synchronized", "Synchronized"
        FAILED = "failed", "Failed"
        PAUSED = "paused", "Paused"
        UNEXALATED = "unexalated", "Unexalated"

    connection = models.ForeignKey("connections.Connection", on_delete=models.CASCADE, related_name="twins")
    local_id = models.CharField(max_length=200, blank=True, db_index=True)
    local_key = models.CharField(max_length=200, blank=True, db_index=True)
    local_url = models.URLField(max_length=500, blank=True)
    remote_id = models.CharField(max_length=200, blank=True)
    remote_key = models.CharField(max_length=200, blank=True)
    remote_url = models.URLField(max_length=500, blank=True)
    state = models.CharField(max_length=15, choices=State.choices, default=State.QUEUED, db_index=True)
    local_replica = JSONField(null=True, blank=True)
    remote_replica = JSONField(null=True, blank=True)
    prev_remote_replica = JSONField(null=True, blank=True)
    # Conflicts compare when each side's values were last edited by a person, not the item's ``updated``
    # (which this node's own applies move too): the item's ``updated`` right after our last apply, and the
    # time of the last edit here by a person as of that apply ("" when there was none).
    sync_written_updated = models.CharField(max_length=64, blank=True, default="")
    person_updated = models.CharField(max_length=64, blank=True, default="")
    sent_seq = models.PositiveIntegerField(default=0, help_text="Sequence number of the last event sent.")
    applied_seq = models.PositiveIntegerField(
        default=0, help_text="Sequence number of the last event applied."
    )
    acked_seq = models.PositiveIntegerField(
        default=0, help_text="Sequence number of the last event sent that the other side has applied."
    )
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    unexalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "local_id"], condition=~Q(local_id=""), name="twin_local_unique"
            ),
            models.UniqueConstraint(
                fields=["connection", "remote_id"], condition=~Q(remote_id=""), name="twin_remote_unique"
            ),
        ]
        # Incoming events find their twin by (connection, remote id). SQLite cannot use the partial unique
        # index above for that lookup (it scanned every twin of the connection: quadratic in a backfill).
        indexes = [models.Index(fields=["connection", "remote_id"], name="twin_remote_lookup")]

    def __str__(self) -> str:
        return f"{self.local_key or '?'} ⇄ {self.remote_key or '?'} on {self.connection}"


class EntityLink(models.Model):
    """Maps a comment or attachment of a twin's local item to its counterpart on the remote item."""

    class Kind(models.TextChoices):
        COMMENT = "comment", "Comment"
        ATTACHMENT = "attachment", "Attachment"

    twin = models.ForeignKey(Twin, on_delete=models.CASCADE, related_name="links")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    local_id = models.CharField(max_length=200)
    remote_id = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["twin", "kind", "local_id"], name="link_local_unique"),
            models.UniqueConstraint(fields=["twin", "kind", "remote_id"], name="link_remote_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.local_id} ⇄ {self.remote_id}"


class SyncEvent(models.Model):
    """One change moving: an outgoing event here produces exactly one incoming event on the peer, and the
    two share ``trace_id`` so an admin can follow the change across nodes."""

    class Direction(models.TextChoices):
        OUTGOING = "out", "Outgoing"
        INCOMING = "in", "Incoming"

    class Kind(models.TextChoices):
        UPDATE = "update", "Create or update"
        UNEXALATE = "unexalate", "Stop syncing"

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        PROCESSING = "processing", "In progress"
        SENT = "sent", "Waiting for remote"
        DONE = "done", "Done"
        SKIPPED = "skipped", "No change"
        FAILED = "failed", "Failed"

    trace_id = models.UUIDField(default=uuid.uuid4, editable=False)
    connection = models.ForeignKey("connections.Connection", on_delete=models.CASCADE, related_name="events")
    twin = models.ForeignKey(Twin, on_delete=models.CASCADE, related_name="events", null=True, blank=True)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.UPDATE)
    seq = models.PositiveIntegerField(default=0, help_text="Per-twin sequence number (assigned when sent).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    item_key = models.CharField(max_length=200, blank=True, db_index=True)
    replica = JSONField(null=True, blank=True)
    rules_version = models.ForeignKey(
        "syncrules.RulesVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempts = models.PositiveIntegerField(default=0)
    # Incoming: the last of our events the sender had applied when it built this one (our twin's acked_seq
    # when it arrived; acks and events from one peer arrive in the order it made them). Our events after it
    # crossed this one on the way: their fields count as edited here. None for events stored before.
    peer_seen_seq = models.PositiveIntegerField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Retry not before (backoff).")
    delivered = models.BooleanField(default=False, help_text="Outgoing: the peer has stored it.")
    error = RedactedTextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    latency = models.DurationField(
        null=True,
        blank=True,
        help_text="Outgoing: from queued here to the peer's acknowledgement.",
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "direction", "trace_id"], name="event_trace_unique"
            ),
        ]
        indexes = [models.Index(fields=["twin", "status", "id"], name="event_twin_queue")]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.item_key} {self.trace_id}"


class SyncError(models.Model):
    """A problem an admin must see: it says what went wrong and can be resolved (and retried)."""

    class Impact(models.TextChoices):
        ENTITY = "entity", "Entity"
        CONNECTION = "connection", "Connection"
        NODE = "node", "Node"
        TRIGGER = "trigger", "Trigger"

    impact = models.CharField(max_length=12, choices=Impact.choices, db_index=True)
    connection = models.ForeignKey(
        "connections.Connection", on_delete=models.CASCADE, null=True, blank=True, related_name="errors"
    )
    twin = models.ForeignKey(Twin, on_delete=models.CASCADE, null=True, blank=True, related_name="errors")
    event = models.ForeignKey(
        SyncEvent, on_delete=models.CASCADE, null=True, blank=True, related_name="errors"
    )
    message = RedactedTextField()
    details = RedactedTextField(blank=True, default="")
    script_line = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"[{self.impact}] {self.message[:80]}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class Trigger(models.Model):
    """Items of the local instance that match ``query`` start syncing on this connection when they are
    created or changed. The query is in the tracker's own language (the built-in tracker's is a small
    filter language: ``project = SUP AND labels = sync``)."""

    connection = models.ForeignKey(
        "connections.Connection", on_delete=models.CASCADE, related_name="triggers"
    )
    entity_type = models.CharField(max_length=50, default="issue")
    query = models.TextField()
    notes = models.TextField(blank=True, default="")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["connection", "id"]

    def __str__(self) -> str:
        return f"{self.entity_type}: {self.query}"


class BulkJob(models.Model):
    """A background job over many items (exalate what a trigger matches, connect pairs from a CSV,
    unexalate). Progress is kept here, so a restart resumes after the last finished item."""

    class Kind(models.TextChoices):
        EXALATE = "exalate", "Bulk Exalate"
        CONNECT = "connect", "Bulk Connect"
        UNEXALATE = "unexalate", "Bulk Unexalate"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    connection = models.ForeignKey(
        "connections.Connection", on_delete=models.CASCADE, related_name="bulk_jobs"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    trigger = models.ForeignKey(Trigger, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    items = JSONField(default=list, help_text="The work list: keys, or [local, remote] key pairs.")
    position = models.PositiveIntegerField(default=0, help_text="Items finished (the resume point).")
    total = models.PositiveIntegerField(default=0)
    errors = JSONField(default=list)
    message = RedactedTextField(blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.connection} ({self.position}/{self.total})"


class ReconciliationReport(models.Model):
    """One reconciliation scan of a connection: twins checked, drift found and repaired, problems."""

    connection = models.ForeignKey(
        "connections.Connection", on_delete=models.CASCADE, related_name="reconciliations"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    checked = models.PositiveIntegerField(default=0)
    drifted = models.PositiveIntegerField(default=0)
    repaired = models.PositiveIntegerField(default=0)
    missing = models.PositiveIntegerField(default=0)
    findings = JSONField(default=list)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Reconciliation of {self.connection} at {self.started_at:%Y-%m-%d %H:%M}"
