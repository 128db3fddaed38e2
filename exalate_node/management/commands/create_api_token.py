"""Create an API token for a staff user and print its key (shown only here)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exalate_node.models import ApiToken
from exalate_node.tokens import token_create


class Command(BaseCommand):
    help = "Create an API token for a staff user and print its key; only a digest is stored."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for (shown in the admin).")
        parser.add_argument(
            "--days", type=int, default=None, help="Lifetime (default API_TOKEN_TTL_DAYS; 0: none)."
        )
        parser.add_argument("--reset", action="store_true", help="Revoke the user's other tokens first.")

    def handle(
        self, *args: Any, username: str, name: str, days: int | None, reset: bool, **options: Any
    ) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user '{username}'. Create one with `manage.py createsuperuser`.")
        if not user.is_staff:
            raise CommandError(f"'{username}' is not staff; only staff users can use the API.")
        if reset:
            ApiToken.objects.filter(user=user).delete()
        token, key = token_create(user=user, name=name or "create_api_token", ttl_days=days)
        self.stdout.write(key)
        expires = f"expires {token.expires_at:%Y-%m-%d}" if token.expires_at else "never expires"
        self.stderr.write(f"Token {token.prefix}… for {username}, {expires}. Keep the key: it is not stored.")
