"""Node-level models: API tokens, stored as digests."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """An API token of a staff user. Only its SHA-256 digest is stored: the key is shown once, when it is
    created (``exalate_node.tokens``); ``prefix`` (its first characters) tells tokens apart in lists."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class Heartbeat(models.Model):
    """The last time a part of the node showed it is working, by role ("sweeper", "worker"): written by the
    sweeper's loop and by a tiny task the sweeper enqueues for the worker (``exalate_node.health``), read
    by ``/readyz``. One row per role; any host's process of that role updates it."""

    role = models.CharField(max_length=20, primary_key=True)
    beat_at = models.DateTimeField()
    host = models.CharField(max_length=255, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.role} at {self.beat_at:%Y-%m-%d %H:%M:%S} on {self.host}"


# Upper edges (ms) of the latency histogram buckets; the last bucket holds everything slower.
LATENCY_EDGES_MS = (100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000)


class ActivityBucket(models.Model):
    """Sync activity of one connection in one minute or one hour, in one direction: finished events, failed
    events and a latency histogram (``lat_0`` … ``lat_11``, bucket edges ``LATENCY_EDGES_MS``), so the
    activity charts read a few hundred rows at any event volume. Written by ``exalate_node.ui.activity``
    from the sync events; minute rows are kept two days, hour rows forty."""

    class Size(models.TextChoices):
        MINUTE = "m", "Minute"
        HOUR = "h", "Hour"

    connection = models.ForeignKey("connections.Connection", on_delete=models.CASCADE, related_name="+")
    size = models.CharField(max_length=1, choices=Size.choices)
    start = models.DateTimeField()
    direction = models.CharField(max_length=3)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    lat_0 = models.PositiveIntegerField(default=0)
    lat_1 = models.PositiveIntegerField(default=0)
    lat_2 = models.PositiveIntegerField(default=0)
    lat_3 = models.PositiveIntegerField(default=0)
    lat_4 = models.PositiveIntegerField(default=0)
    lat_5 = models.PositiveIntegerField(default=0)
    lat_6 = models.PositiveIntegerField(default=0)
    lat_7 = models.PositiveIntegerField(default=0)
    lat_8 = models.PositiveIntegerField(default=0)
    lat_9 = models.PositiveIntegerField(default=0)
    lat_10 = models.PositiveIntegerField(default=0)
    lat_11 = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["size", "start", "connection", "direction"], name="activity_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.direction} {self.get_size_display()} {self.start:%Y-%m-%d %H:%M}"


class ActivityCursor(models.Model):
    """How far the sync events are rolled up into ``ActivityBucket`` rows: every event up to ``event_id`` is
    counted. One row."""

    event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"activity rolled up to event {self.event_id}"
