"""Settings read from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
# Every variable .env.example names: the environment of these tests sets none of them unless it means to.
NODE_VARIABLES = set(re.findall(r"^([A-Z_0-9]+)=", EXAMPLE.read_text(), re.M)) | {
    "DJANGO_SETTINGS_MODULE",
    "ENV_FILE",
    "DB_CONN_MAX_AGE",
    "SECRET_KEY_FILE",
    "SECRETS_KEYS_FILE",
    "DATABASE_URL_FILE",
    "REDIS_URL_FILE",
}


def _clean_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in NODE_VARIABLES}
    empty = tmp_path / "empty.env"  # not the checkout's .env, whatever a developer keeps there
    empty.touch()
    clean.update({"VAR_DIR": str(tmp_path), "ENV_FILE": str(empty), **env})
    return clean


def _manage(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_clean_env(tmp_path, env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _check(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _manage(tmp_path, env, "check")


SHOW = (
    "import json; from django.conf import settings as s; print(json.dumps(dict(media=str(s.MEDIA_ROOT), "
    "static=str(s.STATIC_ROOT), csrf=s.CSRF_TRUSTED_ORIGINS, node_url=s.NODE_URL, debug=s.DEBUG, "
    "db=str(s.DATABASES['default']['NAME']), engine=s.DATABASES['default']['ENGINE'], redis=s.REDIS_URL, "
    "hosts=s.ALLOWED_HOSTS, q_workers=s.Q_CLUSTER['workers'])))"
)


def _settings(tmp_path: Path, env: dict[str, str]) -> dict:
    result = _manage(tmp_path, env, "shell", "-c", SHOW)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _copy_example(tmp_path: Path, **values: str) -> Path:
    """.env.example copied as an operator would, with ``values`` filled in on their lines."""
    text = EXAMPLE.read_text()
    for name, value in values.items():
        text, found = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert found == 1, f"{name} is not a line of .env.example"
    path = tmp_path / "copied.env"
    path.write_text(text)
    return path


PRODUCTION_SECRETS = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "SECRETS_KEYS": secrets.token_urlsafe(32),
}


def test_a_copy_of_env_example_with_the_required_values_boots_a_production_node(tmp_path):
    var = tmp_path / "node-var"
    env_file = _copy_example(
        tmp_path, **PRODUCTION_SECRETS, NODE_URL="https://sync.example.com", VAR_DIR=str(var)
    )
    result = _check({"ENV_FILE": str(env_file), "VAR_DIR": ""}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    shown = _settings(tmp_path, {"ENV_FILE": str(env_file), "VAR_DIR": ""})
    # The empty lines of the copy are defaults, not empty values: VAR_DIR from the file places everything.
    assert shown["debug"] is False
    assert shown["media"] == str(var / "media")  # not Path("."): attachments stay out of the checkout
    assert shown["static"] == str(var / "static")
    assert shown["db"] == str(var / "node.sqlite3")
    assert shown["csrf"] == ["https://sync.example.com"]  # not [""]
    assert shown["node_url"] == "https://sync.example.com"
    assert shown["redis"] == ""
    assert shown["hosts"] == ["127.0.0.1", "localhost"]
    assert shown["q_workers"] == 2


def test_a_copy_of_env_example_without_node_url_refuses_to_start_in_production(tmp_path):
    env_file = _copy_example(tmp_path, **PRODUCTION_SECRETS)
    result = _check({"ENV_FILE": str(env_file)}, tmp_path)
    assert result.returncode != 0
    assert "NODE_URL is not set. In production (DEBUG=false) set NODE_URL" in result.stderr
    assert "e.g. NODE_URL=https://sync.example.com" in result.stderr


def test_node_url_must_be_an_http_address(tmp_path):
    result = _check({"DEBUG": "false", **PRODUCTION_SECRETS, "NODE_URL": "sync.example.com"}, tmp_path)
    assert result.returncode != 0
    assert "NODE_URL is 'sync.example.com', which is not an http(s) address" in result.stderr


def test_a_development_node_still_defaults_node_url_to_loopback(tmp_path):
    assert _settings(tmp_path, {"DEBUG": "true"})["node_url"] == "http://127.0.0.1:8000"


def test_var_dir_in_the_env_file_is_used(tmp_path):
    var = tmp_path / "from-file"
    env_file = tmp_path / "node.env"
    env_file.write_text(f"DEBUG=true\nVAR_DIR={var}\n")
    shown = _settings(tmp_path, {"ENV_FILE": str(env_file), "VAR_DIR": ""})
    assert shown["media"] == str(var / "media")
    assert (var / "secret_key").exists()  # the generated development secrets went there too


def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / "node.env"
    env_file.write_text("DEBUG=true\nQ_WORKERS=7\n")
    assert _settings(tmp_path, {"ENV_FILE": str(env_file), "Q_WORKERS": "3"})["q_workers"] == 3


def test_a_missing_env_file_is_a_clear_error(tmp_path):
    result = _check({"DEBUG": "true", "ENV_FILE": str(tmp_path / "nope.env")}, tmp_path)
    assert result.returncode != 0
    assert "ENV_FILE is" in result.stderr and "which is not a file" in result.stderr


def test_an_invalid_boolean_is_an_error_that_names_the_variable(tmp_path):
    result = _check({"DEBUG": "ture"}, tmp_path)
    assert result.returncode != 0
    assert "DEBUG is 'ture', which is not a boolean. Set DEBUG=true or DEBUG=false." in result.stderr
    result = _check({"DEBUG": "true", "TASKS_INLINE": "maybe"}, tmp_path)
    assert "TASKS_INLINE is 'maybe', which is not a boolean" in result.stderr


def test_an_invalid_number_is_an_error_that_names_the_variable(tmp_path):
    result = _check({"DEBUG": "true", "Q_WORKERS": "two"}, tmp_path)
    assert result.returncode != 0
    assert "Q_WORKERS is 'two', which is not a whole number" in result.stderr
    assert "Traceback" not in result.stderr.split("ImproperlyConfigured")[-1]


def test_database_and_redis_addresses_can_come_from_files(tmp_path):
    (tmp_path / "db").write_text("postgres://exalate:s3cret@db.internal:5432/exalate\n")
    (tmp_path / "redis").write_text("redis://cache.internal:6379/3\n")
    shown = _settings(
        tmp_path,
        {
            "DEBUG": "true",
            "DATABASE_URL_FILE": str(tmp_path / "db"),
            "REDIS_URL_FILE": str(tmp_path / "redis"),
        },
    )
    assert shown["engine"] == "django.db.backends.postgresql" and shown["db"] == "exalate"
    assert shown["redis"] == "redis://cache.internal:6379/3"


def test_an_unreadable_url_file_is_a_clear_error(tmp_path):
    result = _check({"DEBUG": "true", "DATABASE_URL_FILE": str(tmp_path / "missing")}, tmp_path)
    assert result.returncode != 0
    assert "DATABASE_URL_FILE is" in result.stderr and "cannot be read" in result.stderr


def test_a_malformed_database_url_is_a_clear_error_without_its_password(tmp_path):
    result = _check({"DEBUG": "true", "DATABASE_URL": "nosuchdb://u:hunter2@h/x"}, tmp_path)
    assert result.returncode != 0
    assert "DATABASE_URL is not a database address" in result.stderr
    assert "hunter2" not in result.stderr


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
            "NODE_URL": "https://sync.example.com",
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


def test_runnode_starts_the_web_server_without_persistent_connections(monkeypatch, settings):
    from exalate_node.management.commands import runnode

    settings.DEBUG = True  # runserver, which starts a thread per request (gunicorn's threads are a pool)
    monkeypatch.delenv("DB_CONN_MAX_AGE", raising=False)
    # The commands and environments runnode's supervisor starts (exalate_node/supervisor.py passes both to
    # Popen as they are; None: the worker inherits runnode's environment).
    started = {
        child.argv[2]: child.env or dict(os.environ) for child in runnode.children("127.0.0.1:0", worker=True)
    }
    assert started["runserver"]["DB_CONN_MAX_AGE"] == "0"
    assert "DB_CONN_MAX_AGE" not in started["qcluster"]


def test_runnode_serves_production_with_gunicorn_threads_and_development_with_runserver(settings):
    from exalate_node.management.commands import runnode

    settings.DEBUG = False
    web = runnode.children("127.0.0.1:0", worker=False, grace=10)[0]
    assert web.argv[1:4] == ["-m", "gunicorn", "exalate_node.wsgi:application"]
    args = dict(zip(web.argv[4::2], web.argv[5::2], strict=False))
    assert args["--worker-class"] == "gthread" and args["--bind"] == "127.0.0.1:0"
    # Requests in flight get most of runnode's grace period; the supervisor SIGKILLs after all of it.
    assert float(args["--graceful-timeout"]) == 9
    settings.DEBUG = True
    assert runnode.children("127.0.0.1:0", worker=False)[0].argv[2] == "runserver"


def test_runnode_collects_static_files_once_and_again_when_they_change(settings, tmp_path):
    """A restart does not spend seconds compressing unchanged files; a changed file is collected anew,
    under a new hashed name (so browsers holding the old one for a year never see stale CSS)."""
    from django.contrib.staticfiles.storage import staticfiles_storage

    from exalate_node.management.commands.runnode import collect_static

    source = tmp_path / "src"
    (source / "ui").mkdir(parents=True)
    (source / "ui" / "site.css").write_text("body { color: #123456; }\n" * 50)
    settings.STATICFILES_DIRS = [source]
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    said: list[str] = []
    collect_static(said.append)
    first = staticfiles_storage.url("ui/site.css")
    assert re.fullmatch(r"/static/ui/site\.[0-9a-f]{12}\.css", first)
    hashed = tmp_path / "static" / first.removeprefix("/static/")
    assert hashed.exists() and hashed.with_name(hashed.name + ".br").exists()
    assert hashed.with_name(hashed.name + ".gz").exists()
    collect_static(said.append)
    assert len(said) == 1  # the second start found nothing to do

    (source / "ui" / "site.css").write_text("body { color: #654321; }\n" * 50)
    collect_static(said.append)
    assert len(said) == 2
    assert staticfiles_storage.url("ui/site.css") != first
