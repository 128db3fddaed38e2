"""API tokens: the key is shown once and only its digest is stored; tokens expire; revoked, expired,
malformed and unknown tokens get a 401 that says what to do; DRF tokens made before carry over."""

from __future__ import annotations

import hashlib
import importlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from exalate_node.models import ApiToken
from exalate_node.tokens import token_create

pytestmark = pytest.mark.django_db


def _get(key: str, path: str = "/api/v1/instances/"):  # type: ignore[no-untyped-def]
    return APIClient().get(path, HTTP_AUTHORIZATION=f"Token {key}")


def _database_text() -> str:
    """Every text column of the token table, as a database dump would show it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM " + connection.ops.quote_name(ApiToken._meta.db_table))  # noqa: S608
        return repr(cursor.fetchall())


def test_the_endpoint_answers_a_new_key_once_and_stores_only_its_digest(client, admin_user):
    first = client.post("/api/v1/auth/token/", {"username": admin_user.username, "password": "pw-alice-123"})
    second = client.post("/api/v1/auth/token/", {"username": admin_user.username, "password": "pw-alice-123"})
    assert first.status_code == second.status_code == 200
    key = first.json()["token"]
    assert key.startswith("exn_") and key != second.json()["token"]
    assert first.json()["expires_at"]  # 90 days by default
    assert key not in _database_text() and hashlib.sha256(key.encode()).hexdigest() in _database_text()
    assert _get(key).status_code == 200 and _get(second.json()["token"]).status_code == 200


def test_a_wrong_password_gets_no_token(client, admin_user):
    response = client.post("/api/v1/auth/token/", {"username": admin_user.username, "password": "nope"})
    assert response.status_code == 400 and "Unable to log in" in response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_an_expired_token_is_refused_and_says_how_to_get_a_new_one(admin_user):
    token, key = token_create(user=admin_user, ttl_days=1)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _get(key)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"] and "/api/v1/auth/token/" in response.json()["detail"]


def test_a_revoked_token_stops_working(admin_user):
    token, key = token_create(user=admin_user)
    assert _get(key).status_code == 200
    token.delete()
    assert _get(key).status_code == 401


def test_a_token_of_a_user_who_lost_staff_is_refused(admin_user):
    _, key = token_create(user=admin_user)
    admin_user.is_staff = False
    admin_user.save()
    assert _get(key).status_code == 403


@pytest.mark.parametrize(
    "header",
    ["Token", "Token a b", "Token exn_unknown", "Token " + "x" * 5000, "Token \u00e9\u00e9"],
)
def test_malformed_or_unknown_token_headers_are_a_401(admin_user, header: str):
    response = APIClient().get("/api/v1/instances/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"
    assert response["WWW-Authenticate"] == "Token"


def test_use_is_recorded_at_most_once_a_minute(admin_user, django_assert_max_num_queries):
    token, key = token_create(user=admin_user)
    _get(key)
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    _get(key)
    token.refresh_from_db()
    assert token.last_used_at == first


def test_the_command_prints_a_key_that_works_and_can_revoke_the_others(admin_user):
    _, old = token_create(user=admin_user)
    out, err = StringIO(), StringIO()
    call_command("create_api_token", admin_user.username, "--days", "0", "--reset", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert _get(key).status_code == 200 and _get(old).status_code == 401
    assert "never expires" in err.getvalue() and ApiToken.objects.get().expires_at is None


def test_the_admin_lists_tokens_without_their_keys(admin_client, admin_user):
    token, key = token_create(user=admin_user, name="ci")
    page = admin_client.get(f"/admin/exalate_node/apitoken/{token.pk}/change/").content.decode()
    assert token.prefix in page and key not in page and token.digest not in page


def test_drf_tokens_made_before_carry_over_and_the_plain_text_table_is_dropped(admin_user):
    key = "4a2c9708be1b42f433068238b2b1534c4ca17c64"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created date)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [key, admin_user.pk, "2026-01-01"])
    migration = importlib.import_module("exalate_node.migrations.0002_carry_over_drf_tokens")
    from django.apps import apps

    class Editor:  # the part of a schema editor the migration uses (SQLite's can't run inside a test)
        def __init__(self) -> None:
            self.connection = connection

        def execute(self, sql: str) -> None:
            with connection.cursor() as cursor:
                cursor.execute(sql)

    migration.carry_over(apps, Editor())
    assert "authtoken_token" not in connection.introspection.table_names()
    assert _get(key).status_code == 200
    assert ApiToken.objects.get().expires_at > timezone.now() + timedelta(days=89)
