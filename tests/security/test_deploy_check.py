"""``manage.py check --deploy`` is clean in a production configuration, and production answers carry the
transport-security headers (HSTS, https redirect, secure cookies)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DJANGO_SETTINGS_MODULE",
            "DEBUG",
            "SECRET_KEY",
            "SECRETS_KEYS",
            "DATABASE_URL",
            "TASKS_INLINE",
            "MEDIA_ROOT",
            "ALLOWED_HOSTS",
            "NODE_URL",
            "CSRF_TRUSTED_ORIGINS",
        )
        and not k.startswith("SECURE_")
        and k != "SESSION_COOKIE_SECURE"
    }
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "SECRETS_KEYS": secrets.token_urlsafe(32),
            "NODE_URL": "https://node.example.com",
            "ALLOWED_HOSTS": "node.example.com",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'node.sqlite3'}",
            "VAR_DIR": str(tmp_path / "var"),
            **extra,
        }
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_in_production(tmp_path):
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], _production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_turn_on_transport_security(tmp_path):
    script = textwrap.dedent(
        """
        import django
        from django.conf import settings
        django.setup()
        s = settings
        print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS,
              s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.X_FRAME_OPTIONS,
              s.SECURE_CONTENT_TYPE_NOSNIFF, s.SECURE_REFERRER_POLICY, s.DEBUG)
        from django.test import Client
        c = Client()
        r = c.get("/ui/", HTTP_HOST="node.example.com")
        print(r.status_code, r.headers.get("Location"))
        r = c.get("/ui/", HTTP_HOST="node.example.com", secure=True)
        print(r.headers.get("Strict-Transport-Security"))
        """
    )
    env = _production_env(tmp_path, DJANGO_SETTINGS_MODULE="exalate_node.settings")
    result = _run(["-c", script], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "True 31536000 True True True DENY True same-origin False"
    assert lines[1] == "301 https://node.example.com/ui/"  # http is redirected to https
    assert lines[2] == "max-age=31536000; includeSubDomains"


def test_healthz_is_not_redirected_and_reveals_only_status_and_version(tmp_path):
    script = textwrap.dedent(
        """
        import django
        django.setup()
        from django.core.management import call_command
        call_command("migrate", verbosity=0)
        from django.test import Client
        r = Client().get("/healthz", HTTP_HOST="node.example.com")
        print(r.status_code, sorted(r.json()), r.json()["status"])
        """
    )
    env = _production_env(tmp_path, DJANGO_SETTINGS_MODULE="exalate_node.settings")
    result = _run(["-c", script], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "200 ['status', 'version'] ok"


def test_an_http_node_url_keeps_plain_http_working(tmp_path):
    """A production node on plain http (e.g. behind a VPN) is not redirected; check --deploy says so."""
    env = _production_env(tmp_path, NODE_URL="http://node.example.com")
    result = _run(["manage.py", "check", "--deploy"], env)
    assert result.returncode == 0
    assert "security.W008" in result.stderr + result.stdout  # the honest warning stays visible
