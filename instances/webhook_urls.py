"""Webhook intake URLs, included by the URL root under ``hooks/``: ``/hooks/<tracker>/<instance uid>/``."""

from __future__ import annotations

from django.urls import path

from instances import webhooks

app_name = "hooks"

urlpatterns = [
    path("<slug:tracker>/<str:uid>/", webhooks.intake, name="intake"),
]
