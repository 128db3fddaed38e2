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
