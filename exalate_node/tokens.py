"""API tokens: random keys shown once, stored as SHA-256 digests, with an expiry.

``Authorization: Token <key>`` authenticates a staff user (``TokenAuthentication``). A database dump holds
no usable key. ``API_TOKEN_TTL_DAYS`` (default 90; 0 = no expiry) sets the lifetime of new tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from exalate_node.models import ApiToken

KEY_PREFIX = "exn_"
# Recording every use would be a write per API request: once a minute is enough to see what is in use.
LAST_USED_EVERY = timedelta(minutes=1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(
    *, user: AbstractBaseUser, name: str = "", ttl_days: int | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns it with its key, which is not stored and cannot be shown again."""
    days = settings.API_TOKEN_TTL_DAYS if ttl_days is None else ttl_days
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    ApiToken.objects.filter(user=user, expires_at__lt=now).delete()  # expired ones are of no use
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        prefix=key[: len(KEY_PREFIX) + 6],
        digest=digest(key),
        expires_at=now + timedelta(days=days) if days else None,
    )
    return token, key


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <key>``, checked against the stored digests."""

    keyword = "Token"

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid token header: send `Authorization: Token <key>` with the key and nothing else."
            )
        try:
            key = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token: the key has characters no key has.")
        token = ApiToken.objects.select_related("user").filter(digest=digest(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed(
                "Invalid token. Get a new one at /api/v1/auth/token/ or with `manage.py create_api_token`."
            )
        now = timezone.now()
        if token.expires_at and token.expires_at <= now:
            raise exceptions.AuthenticationFailed(
                f"This token expired on {token.expires_at:%Y-%m-%d}. Get a new one at /api/v1/auth/token/ or "
                "with `manage.py create_api_token`."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user is inactive.")
        if token.last_used_at is None or token.last_used_at < now - LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword  # unauthenticated requests get a 401 with WWW-Authenticate: Token


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "exalate_node.tokens.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A key from /api/v1/auth/token/ or `manage.py create_api_token`, after "Token ".',
        }
