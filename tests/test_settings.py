"""Settings read from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEBUG", "SECRET_KEY", "SECRETS_KEYS", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    clean.update({"VAR_DIR": str(tmp_path), **env})
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_secret_key_is_a_clear_startup_error(tmp_path):
    result = _check({"DEBUG": "false"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set. In production (DEBUG=false)" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_production_needs_the_at_rest_keys_too(tmp_path):
    result = _check({"DEBUG": "false", "SECRET_KEY": "x" * 50}, tmp_path)
    assert result.returncode != 0
    assert "SECRETS_KEYS is not set" in result.stderr


def test_development_generates_secrets_once_into_var(tmp_path):
    assert _check({"DEBUG": "true"}, tmp_path).returncode == 0
    first = (tmp_path / "secret_key").read_text()
    assert _check({"DEBUG": "true"}, tmp_path).returncode == 0
    assert (tmp_path / "secret_key").read_text() == first
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_secrets_can_come_from_files(tmp_path):
    (tmp_path / "sk").write_text("k" * 50)
    (tmp_path / "ek").write_text("a-long-passphrase-for-the-at-rest-key")
    result = _check(
        {
            "DEBUG": "false",
            "SECRET_KEY_FILE": str(tmp_path / "sk"),
            "SECRETS_KEYS_FILE": str(tmp_path / "ek"),
        },
        tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_secret_key_fallbacks_keep_old_sessions_valid(tmp_path):
    """After rotating SECRET_KEY, what the old key signed (sessions, CSRF, reset tokens) still verifies while
    the old key is listed in SECRET_KEY_FALLBACKS, and no longer once it is removed."""
    old, new = "o" * 50, "n" * 50
    code = (
        "from django.core import signing\n"
        f"value = signing.Signer(key={old!r}, salt='x').sign('session')\n"
        "try:\n    print(signing.Signer(salt='x').unsign(value))\n"
        "except signing.BadSignature:\n    print('refused')\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "DEBUG")}
    base.update(
        VAR_DIR=str(tmp_path), DEBUG="true", SECRET_KEY=new, DJANGO_SETTINGS_MODULE="exalate_node.settings"
    )

    def run(fallbacks: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env={**base, "SECRET_KEY_FALLBACKS": fallbacks},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert run(old) == "session"
    assert run("") == "refused"


def test_the_web_process_of_runnode_keeps_no_persistent_postgres_connection(tmp_path):
    """runserver serves each request on a new thread: with persistent connections they pile up on
    PostgreSQL. DB_CONN_MAX_AGE (which runnode sets to 0 for the web process) controls it."""
    code = "from django.conf import settings; print(settings.DATABASES['default']['CONN_MAX_AGE'])"
    base = {k: v for k, v in os.environ.items() if k not in ("DB_CONN_MAX_AGE", "DJANGO_SETTINGS_MODULE")}
    base.update(VAR_DIR=str(tmp_path), DEBUG="true", DATABASE_URL="postgres://u@127.0.0.1:5432/x")

    def conn_max_age(**extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert conn_max_age() == "60"
    assert conn_max_age(DB_CONN_MAX_AGE="0") == "0"


def test_runnode_starts_the_web_server_without_persistent_connections(monkeypatch):
    from exalate_node.management.commands import runnode

    monkeypatch.delenv("DB_CONN_MAX_AGE", raising=False)
    # The commands and environments runnode's supervisor starts (exalate_node/supervisor.py passes both to
    # Popen as they are; None: the worker inherits runnode's environment).
    started = {
        child.argv[2]: child.env or dict(os.environ) for child in runnode.children("127.0.0.1:0", worker=True)
    }
    assert started["runserver"]["DB_CONN_MAX_AGE"] == "0"
    assert "DB_CONN_MAX_AGE" not in started["qcluster"]
