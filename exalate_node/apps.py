"""The node's own app: installs what every process needs before it does anything else."""

from __future__ import annotations

from django.apps import AppConfig


class ExalateNodeConfig(AppConfig):
    name = "exalate_node"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from exalate_node.redaction import install_log_redaction

        # Secret values are redacted from every log record, whichever handler it goes to.
        install_log_redaction()
