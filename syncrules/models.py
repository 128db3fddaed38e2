"""Versioned sync rules: every publish adds a version, old versions are kept."""

from __future__ import annotations

from django.db import models


class RulesVersion(models.Model):
    """One published version of a connection side's outgoing and incoming scripts.

    The newest version of a connection is the one in force; each sync event records the version it ran with.
    """

    connection = models.ForeignKey("connections.Connection", on_delete=models.CASCADE, related_name="rules")
    version = models.PositiveIntegerField()
    outgoing = models.TextField(help_text="Outgoing script: fills `replica` from `issue`.")
    incoming = models.TextField(help_text="Incoming script: changes `issue` from `replica`.")
    note = models.CharField(max_length=300, blank=True)
    published_by = models.CharField(max_length=150, blank=True)
    published_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connection", "-version"]
        constraints = [models.UniqueConstraint(fields=["connection", "version"], name="rules_version_unique")]

    def __str__(self) -> str:
        return f"{self.connection} rules v{self.version}"
