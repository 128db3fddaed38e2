"""Instances (the trackers this node talks to) and the built-in tracker's issue store."""

from __future__ import annotations

import hashlib
import uuid

from django.db import models
from django.db.models import Q

from exalate_node.fields import EncryptedTextField, JSONField, RedactedTextField


class TrackerType(models.TextChoices):
    BUILTIN = "builtin", "Built-in tracker"
    REDMINE = "redmine", "Redmine"
    GITHUB = "github", "GitHub"
    JIRA = "jira", "Jira Cloud"
    GITLAB = "gitlab", "GitLab"
    ZENDESK = "zendesk", "Zendesk"
    SERVICENOW = "servicenow", "ServiceNow"
    AZURE = "azure", "Azure DevOps"
    SALESFORCE = "salesforce", "Salesforce"


def new_uid() -> str:
    return uuid.uuid4().hex


class Instance(models.Model):
    """A task management system known to this node.

    A *local* instance is one this node reads and writes (it holds the credentials); a *remote* instance is
    one that another node (or, for a local connection, the other side on this node) holds, learned from a
    connection. ``uid`` identifies the instance across nodes.
    """

    class Kind(models.TextChoices):
        LOCAL = "local", "Local"
        REMOTE = "remote", "Remote"

    uid = models.CharField("instance UID", max_length=64, unique=True, default=new_uid)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LOCAL)
    tracker_type = models.CharField(max_length=20, choices=TrackerType.choices, default=TrackerType.BUILTIN)
    url = models.URLField(max_length=500, blank=True, help_text="The tracker's base URL.")
    tracker_version = models.CharField(max_length=50, blank=True)
    node_url = models.URLField(
        max_length=500, blank=True, help_text="For a remote instance: the node that holds it."
    )
    credentials = EncryptedTextField(
        blank=True, default="", help_text="Tracker credentials as JSON, encrypted at rest."
    )
    settings = JSONField(default=dict, blank=True, help_text="Connector settings (project, table...).")
    poll_cursor = models.CharField(max_length=200, blank=True, help_text="Where the last poll stopped.")
    polled_at = models.DateTimeField(null=True, blank=True)
    poll_lease_until = models.DateTimeField(null=True, blank=True)
    # Whether the tracker answers (instances/health.py): retryable failures in a row, since when it is
    # unreachable (after OUTAGE_AFTER_FAILURES of them), why, and when the next probe may try it.
    failures = models.PositiveIntegerField(default=0)
    unreachable_since = models.DateTimeField(null=True, blank=True)
    last_error = RedactedTextField(blank=True, default="")
    next_try_at = models.DateTimeField(null=True, blank=True)
    poll_active_at = models.DateTimeField(
        null=True, blank=True, help_text="Last activity: a poll found changes, or the node wrote to it."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_tracker_type_display()}, {self.kind})"

    @property
    def is_local(self) -> bool:
        return self.kind == self.Kind.LOCAL

    def clean(self) -> None:
        """The node only calls http(s) URLs (a URLField also takes ftp://): forms refuse the others."""
        from django.core.exceptions import ValidationError

        from exalate_node.outbound import RefusedDestination, check_url

        errors = {}
        for name in ("url", "node_url"):
            value = getattr(self, name)
            if value:
                try:
                    check_url(value, what=f"The {name.replace('_', ' ')}")
                except RefusedDestination as exc:
                    errors[name] = str(exc)
        if errors:
            raise ValidationError(errors)


# --- The built-in tracker ---------------------------------------------------------------------------------


class Project(models.Model):
    """A project of the built-in tracker; its issues are keyed ``<KEY>-<number>``."""

    instance = models.ForeignKey(
        Instance,
        on_delete=models.CASCADE,
        related_name="projects",
        limit_choices_to={"tracker_type": TrackerType.BUILTIN, "kind": Instance.Kind.LOCAL},
    )
    key = models.CharField(max_length=10, unique=True, help_text="Upper-case letters, e.g. DEMO.")
    name = models.CharField(max_length=200)
    next_number = models.PositiveIntegerField(default=1, editable=False)
    statuses = JSONField(default=list, blank=True)
    priorities = JSONField(default=list, blank=True)
    issue_types = JSONField(default=list, blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(condition=Q(key__regex=r"^[A-Z][A-Z0-9]{0,9}$"), name="key_format")
        ]

    def __str__(self) -> str:
        return f"{self.key} – {self.name}"


DEFAULT_STATUSES = ["Open", "In Progress", "Resolved", "Closed"]
DEFAULT_PRIORITIES = ["Lowest", "Low", "Medium", "High", "Highest"]
DEFAULT_TYPES = ["Task", "Bug", "Story", "Epic"]


class Issue(models.Model):
    """An issue of the built-in tracker. ``version`` increases on every change (optimistic concurrency)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="issues")
    number = models.PositiveIntegerField(editable=False)
    key = models.CharField(max_length=32, unique=True, editable=False)
    summary = models.CharField(max_length=500)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=50, default="Open")
    priority = models.CharField(max_length=50, default="Medium")
    issue_type = models.CharField("type", max_length=50, default="Task")
    labels = JSONField(default=list, blank=True)
    assignee = models.EmailField(blank=True, default="")
    reporter = models.EmailField(blank=True, default="")
    due_date = models.DateField(null=True, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    custom_fields = JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    updated_by = models.CharField(max_length=200, blank=True, help_text="Who made the last change.")
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="issue_number_unique")]

    def __str__(self) -> str:
        return f"{self.key}: {self.summary}"


class Comment(models.Model):
    """A comment on a built-in tracker issue."""

    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()
    author = models.CharField(max_length=200, blank=True, help_text="E-mail of the author.")
    internal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Comment {self.pk} on {self.issue.key}"


def attachment_path(instance: Attachment, filename: str) -> str:
    return f"tracker/{instance.issue.project.key}/{uuid.uuid4().hex}"


class Attachment(models.Model):
    """A file attached to a built-in tracker issue, stored under the media root with its SHA-256."""

    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=attachment_path, max_length=300)
    filename = models.CharField(max_length=255)
    mime_type = models.CharField(max_length=100, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.filename

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class IssueChange(models.Model):
    """One change to a built-in tracker issue: who, when, which fields. The pipeline detects changes here."""

    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="changes")
    actor = models.CharField(max_length=200)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=30)
    fields = JSONField(default=list)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.issue.key} {self.action} by {self.actor}"


class TrackerTraffic(models.Model):
    """Requests this node sent to a tracker, by outcome, and the time it waited on the tracker's rate limits:
    cumulative counters for ``/metrics``, shared by every process and host of the node (each process adds its
    own counts every few seconds; see ``instances/traffic.py``)."""

    instance_uid = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, help_text="HTTP status code, or 'error' (no answer).")
    requests = models.PositiveBigIntegerField(default=0)
    waited_seconds = models.FloatField(default=0.0, help_text="Spent waiting on rate limits.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance_uid", "outcome"], name="traffic_per_outcome"),
        ]

    def __str__(self) -> str:
        return f"{self.instance_uid} {self.outcome}: {self.requests}"
