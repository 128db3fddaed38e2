"""Settings for exalate-node: one module, configured from the environment (see .env.example).

``.env`` (or the file ENV_FILE names) is read before anything else. Every variable is read by the small
helpers below (env_str, env_bool, ...): an empty value counts as unset everywhere (a copied .env.example is
full of them), and a value that is not what the variable holds (DEBUG=ture) is an error that names the
variable, not a silent default. Development (DEBUG=true) generates the secret key and the at-rest encryption
key once into ``var/``; production (DEBUG unset or false) requires both, and NODE_URL, and refuses to start
without them.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

BASE_DIR = Path(__file__).resolve().parent.parent

# .env first, before any variable is read (VAR_DIR in .env counts). ENV_FILE names another file (tests, or
# several nodes from one checkout). A variable set in the environment wins over .env, unless it is empty.
_ENV_FILE = Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")
if os.environ.get("ENV_FILE") and not _ENV_FILE.is_file():
    raise ImproperlyConfigured(
        f"ENV_FILE is {str(_ENV_FILE)!r}, which is not a file. Fix the path or unset it."
    )
if _ENV_FILE.is_file():
    _empty = {k: os.environ.pop(k) for k, v in list(os.environ.items()) if not v.strip()}
    environ.Env.read_env(str(_ENV_FILE))
    for _name, _value in _empty.items():
        os.environ.setdefault(_name, _value)

env = environ.Env()

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _raw(var: str) -> str | None:
    """The variable's value, or None when it is unset or empty (an empty line in a copied .env.example
    means "use the default", everywhere)."""
    value = os.environ.get(var, "").strip()
    return value or None


def env_str(var: str, default: str) -> str:
    value = _raw(var)
    return default if value is None else value


def env_bool(var: str, default: bool) -> bool:
    """true/false (also 1/0, yes/no, on/off); anything else is an error, not a silent false."""
    value = _raw(var)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{var} is {value!r}, which is not a boolean. Set {var}=true or {var}=false.")


def _number(var: str, default: Any, cast: Callable[[str], Any], kind: str, example: str) -> Any:
    value = _raw(var)
    if value is None:
        return default
    try:
        return cast(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{var} is {value!r}, which is not {kind}. Set it to {kind}, e.g. {var}={example}, or leave it "
            "empty for the default."
        ) from None


def env_int(var: str, default: int) -> int:
    return int(_number(var, default, int, "a whole number", "10"))


def env_float(var: str, default: float) -> float:
    return float(_number(var, default, float, "a number", "2.5"))


def env_list(var: str, default: list[str]) -> list[str]:
    """Comma-separated; empty items are dropped (``a,,b`` and a trailing comma are fine)."""
    value = _raw(var)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(var: str, example: str) -> list[str]:
    """Comma-separated networks (CIDRs); one that is not a network is an error naming it."""
    networks = env_list(var, [])
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{var} holds {network!r}, which is not a network. Write networks as CIDRs, comma-separated, "
                f"e.g. {example}."
            ) from None
    return networks


def env_or_file(var: str) -> str | None:
    """VAR, or the contents of the file named by VAR_FILE (Docker/systemd secrets), or None."""
    value = _raw(var)
    if value is not None:
        return value
    path = _raw(f"{var}_FILE")
    if path is None:
        return None
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{var}_FILE is {path!r}, which cannot be read ({exc.strerror or exc}). Fix the path or its "
            f"permissions, or set {var} instead."
        ) from None
    if not value:
        raise ImproperlyConfigured(f"{var}_FILE is {path!r}, which is empty. Put the value in it.")
    return value


VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
DEBUG: bool = env_bool("DEBUG", False)


def _dev_secret(name: str, make: Callable[[], str]) -> str:
    """Read a development secret from var/, creating it the first time."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def _required_secret(var: str, make: Callable[[], str]) -> str:
    """A secret from VAR or VAR_FILE; generated into var/ on a DEBUG node; an error in production."""
    value = env_or_file(var)
    if value:
        return value
    if DEBUG:
        return _dev_secret(var.lower(), make)
    raise ImproperlyConfigured(
        f"{var} is not set. In production (DEBUG=false) set {var} in the environment or in .env "
        f"(see .env.example); for a development node set DEBUG=true and one is generated under var/."
    )


def _node_url() -> str:
    """The address peers reach this node at (put in invitation codes): required in production, where a
    loopback default would hand out codes no peer can use."""
    value = _raw("NODE_URL")
    if value is None:
        if DEBUG:
            return "http://127.0.0.1:8000"
        raise ImproperlyConfigured(
            "NODE_URL is not set. In production (DEBUG=false) set NODE_URL to the address other nodes and "
            "browsers reach this node at, e.g. NODE_URL=https://sync.example.com (it goes into invitation "
            "codes)."
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(
            f"NODE_URL is {value!r}, which is not an http(s) address. Set it like "
            "NODE_URL=https://sync.example.com."
        )
    return value.rstrip("/")


SECRET_KEY = _required_secret("SECRET_KEY", lambda: secrets.token_urlsafe(50))
# Rotating SECRET_KEY: put the old one here (comma-separated) until sessions and tokens signed with it expire.
SECRET_KEY_FALLBACKS: list[str] = env_list("SECRET_KEY_FALLBACKS", [])
# Keys for secrets at rest, comma-separated: the first encrypts, all decrypt (rotation).
SECRETS_KEYS: list[str] = [
    k.strip()
    for k in _required_secret("SECRETS_KEYS", lambda: secrets.token_urlsafe(32)).split(",")
    if k.strip()
]

ALLOWED_HOSTS: list[str] = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
NODE_URL: str = _node_url()
NODE_NAME: str = env_str("NODE_NAME", socket.gethostname())
CSRF_TRUSTED_ORIGINS: list[str] = env_list("CSRF_TRUSTED_ORIGINS", [NODE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "exalate_node",
    "instances",
    "connections",
    "syncrules",
    "replicas",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exalate_node.urls"
WSGI_APPLICATION = "exalate_node.wsgi.application"
ASGI_APPLICATION = "exalate_node.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "exalate_node.context.node",
                "exalate_node.context.outages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
# DATABASE_URL or DATABASE_URL_FILE (its password stays out of the environment); default SQLite under VAR_DIR.
_DATABASE_URL = env_or_file("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'node.sqlite3'}"
try:
    if urlsplit(_DATABASE_URL).scheme not in environ.Env.DB_SCHEMES:
        raise ValueError("unknown scheme")
    DATABASES = {"default": env.db_url_config(_DATABASE_URL)}
except Exception as exc:  # the message could hold the password: name only the kind of problem
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a database address ({type(exc).__name__}). Write it like "
        "postgres://user:password@host:5432/dbname, or leave it empty for SQLite under VAR_DIR."
    ) from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web and worker processes read while one writes; IMMEDIATE transactions take the write
    # lock up front so concurrent writers wait (busy timeout) instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(VAR_DIR / "test-node.sqlite3")
else:
    # Persistent connections for the worker; runnode starts the web server (runserver: a thread per
    # request, so a persistent connection would outlive its thread) with DB_CONN_MAX_AGE=0.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env_int("DB_CONN_MAX_AGE", 60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A process whose host drops off the network in the middle of a transaction must not keep its row
    # locks (a twin's, a bulk job's) for good: PostgreSQL ends a session idle inside a transaction this
    # long, and the work is taken over elsewhere. Longer than a tracker call made inside one
    # (OUTBOUND_TRACKER_DEADLINE).
    _idle_s = env_int("DB_IDLE_IN_TRANSACTION_TIMEOUT_S", 120)
    if _idle_s > 0:
        _options = DATABASES["default"].setdefault("OPTIONS", {})
        _options["options"] = (
            f"{_options.get('options', '')} -c idle_in_transaction_session_timeout={_idle_s * 1000}".strip()
        )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Task queue (django-q2) -------------------------------------------------------------------------------
REDIS_URL: str = env_or_file("REDIS_URL") or ""  # or REDIS_URL_FILE
Q_CLUSTER: dict = {
    "name": env_str("Q_CLUSTER_NAME", "exalate-node"),
    "workers": env_int("Q_WORKERS", 2),
    "timeout": 60,
    "retry": 90,
    "max_attempts": 1,  # the pipeline retries from its own rows; the sweeper re-nudges lost tasks
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 200,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = env_float("Q_POLL", 0.05)
# --- Node-to-node protocol ------------------------------------------------------------------------------
INVITATION_TTL_HOURS: float = env_float("INVITATION_TTL_HOURS", 72)
NODE_MAX_BODY_BYTES: int = env_int("NODE_MAX_BODY_BYTES", 10 * 1024 * 1024)
NODE_RETRY_MAX_SECONDS: int = env_int("NODE_RETRY_MAX_SECONDS", 300)  # delivery backoff cap

# --- Outgoing HTTP to peer nodes and trackers (exalate_node/outbound.py) ------------------------------------
# The most one request may take, connect to last byte of the answer (a tracker request's retries share a
# 90 s deadline on top). Attachment downloads get this plus one second per OUTBOUND_MIN_DOWNLOAD_RATE bytes.
OUTBOUND_PEER_DEADLINE: float = env_float("OUTBOUND_PEER_DEADLINE", 30.0)
OUTBOUND_TRACKER_DEADLINE: float = env_float("OUTBOUND_TRACKER_DEADLINE", 60.0)
OUTBOUND_MIN_DOWNLOAD_RATE: float = env_float("OUTBOUND_MIN_DOWNLOAD_RATE", 32 * 1024)
# The largest answer read from a peer or a tracker (attachments have ATTACHMENT_MAX_BYTES).
OUTBOUND_MAX_ANSWER_BYTES: int = env_int("OUTBOUND_MAX_ANSWER_BYTES", 32 * 1024 * 1024)
# Refuse peers and trackers at private, loopback, link-local and reserved addresses (checked on every
# resolved address, at connect time). Off by default so local demos work; networks listed in
# OUTBOUND_ALLOWED_NETWORKS (CIDRs, comma-separated) stay reachable.
OUTBOUND_REFUSE_PRIVATE_ADDRESSES: bool = env_bool("OUTBOUND_REFUSE_PRIVATE_ADDRESSES", False)
OUTBOUND_ALLOWED_NETWORKS: list[str] = env_networks("OUTBOUND_ALLOWED_NETWORKS", "10.1.2.0/24,fd00::/8")

# /metrics (Prometheus text format) is off unless one of these is set: a bearer token scrapers send
# (METRICS_TOKEN or METRICS_TOKEN_FILE), and/or the networks (CIDRs) allowed to scrape without one.
METRICS_TOKEN: str = env_or_file("METRICS_TOKEN") or ""
METRICS_ALLOWED_NETWORKS: list[str] = env_networks("METRICS_ALLOWED_NETWORKS", "10.1.2.0/24,127.0.0.1/32")

# Alerts (connections/alerts.py): errors opened and cleared, as digests, by e-mail and/or an incoming webhook.
# Per connection these can be overridden (Connection.alert_emails / alert_webhook_url).
ALERT_EMAILS: list[str] = env_list("ALERT_EMAILS", [])
ALERT_WEBHOOK_URL: str = env_or_file("ALERT_WEBHOOK_URL") or ""
ALERT_WEBHOOK_SECRET: str = env_or_file("ALERT_WEBHOOK_SECRET") or ""
# A burst is gathered for this long into one message; then at most one message per destination per digest.
ALERT_GATHER_SECONDS: float = env_float("ALERT_GATHER_SECONDS", 10)
ALERT_DIGEST_SECONDS: float = env_float("ALERT_DIGEST_SECONDS", 300)
# Where e-mail goes: smtp://user:password@host:25, smtp+tls://...:587, smtp+ssl://...:465, or consolemail://
# (printed; the default). DEFAULT_FROM_EMAIL is the sender.
_email_url = env_or_file("EMAIL_URL")
if ALERT_EMAILS and not _email_url and not DEBUG:
    raise ImproperlyConfigured(
        "ALERT_EMAILS is set but EMAIL_URL is not: set EMAIL_URL to your mail server, e.g. "
        "smtp+tls://user:password@mail.example.com:587, or clear ALERT_EMAILS."
    )
vars().update(environ.Env.email_url_config(_email_url or "consolemail://"))
DEFAULT_FROM_EMAIL: str = env_str("DEFAULT_FROM_EMAIL", f"exalate-node@{socket.gethostname()}")
EMAIL_TIMEOUT = 15

# How long a worker may hold a twin before another may take it over: a crashed worker's work resumes then.
# A worker renews the leases it holds every third of this (a heartbeat): a long tracker call keeps its twin.
PIPELINE_LEASE_SECONDS: float = env_float("PIPELINE_LEASE_SECONDS", 15)
# How long one poll of a tracker holds the instance (renewed before each page of results): the longest a
# worker killed mid-poll delays the next poll. A page that takes longer (a slow tracker, retries) lets a
# second poll start meanwhile, which is harmless: a change recorded twice is sent once.
POLL_LEASE_SECONDS: int = env_int("POLL_LEASE_SECONDS", 30)
# A tracker that fails this many times in a row (connection refused, timeout, 429, 5xx) is marked
# unreachable: its work waits, and one probe at a time tries it with a backoff that doubles up to
# OUTAGE_MAX_BACKOFF_SECONDS; when it answers, the work resumes on its own. A retryable failure never gives
# up on an event.
OUTAGE_AFTER_FAILURES: int = env_int("OUTAGE_AFTER_FAILURES", 3)
OUTAGE_MAX_BACKOFF_SECONDS: int = env_int("OUTAGE_MAX_BACKOFF_SECONDS", 300)
# Polling cadence (instances/polling.py, poll_plan): trackers without webhooks every POLL_INTERVAL_S when
# idle and every POLL_BUSY_INTERVAL_S for POLL_BUSY_WINDOW_S after activity; trackers with webhooks set up
# every POLL_BACKSTOP_INTERVAL_S. An instance's settings poll_interval_s / poll_busy_interval_s override.
POLL_INTERVAL_S: float = env_float("POLL_INTERVAL_S", 10.0)
POLL_BUSY_INTERVAL_S: float = env_float("POLL_BUSY_INTERVAL_S", 2.0)
POLL_BUSY_WINDOW_S: float = env_float("POLL_BUSY_WINDOW_S", 60.0)
POLL_BACKSTOP_INTERVAL_S: float = env_float("POLL_BACKSTOP_INTERVAL_S", 60.0)
# The production web server (gunicorn, started by runnode when DEBUG=false): processes, and threads in each.
WEB_WORKERS: int = env_int("WEB_WORKERS", 2)
WEB_THREADS: int = env_int("WEB_THREADS", 8)
for _var, _count in (("WEB_WORKERS", WEB_WORKERS), ("WEB_THREADS", WEB_THREADS)):
    if _count < 1:
        raise ImproperlyConfigured(f"{_var} is {_count}; it must be at least 1.")
# /readyz answers 503 when no worker has run a task for this many seconds (the sweeper asks for a heartbeat
# every 10 s; exalate_node/health.py).
READY_WORKER_MAX_AGE: float = env_float("READY_WORKER_MAX_AGE", 60.0)
# Run pipeline tasks in the calling process (unit tests, demos without a worker).
TASKS_INLINE: bool = env_bool("TASKS_INLINE", False)

# --- Sync-rule sandbox (syncrules/sandbox.py; docs/security.md, "Sync-rule sandbox") ---------------------
# Every script run happens in a child process with OS limits. Each process of the node that runs scripts (the
# web server, each worker) starts up to this many, on first use, and reuses them run after run.
SCRIPT_SANDBOX_PROCESSES: int = env_int("SCRIPT_SANDBOX_PROCESSES", 2)
# Address space of one sandbox process, in MB (RLIMIT_AS). An idle one uses about 20 MB.
SCRIPT_SANDBOX_MEMORY_MB: int = env_int("SCRIPT_SANDBOX_MEMORY_MB", 512)
# Seconds a run may take beyond the script's time limit (1 s) before its process is killed.
SCRIPT_SANDBOX_GRACE_SECONDS: float = env_float("SCRIPT_SANDBOX_GRACE_SECONDS", 0.5)
# The user sandbox processes run as when the node runs as root; empty keeps root (not recommended).
SCRIPT_SANDBOX_USER: str = env_str("SCRIPT_SANDBOX_USER", "nobody")

# --- Auth, i18n, static, media ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves what `runnode` collects into STATIC_ROOT at start (collectstatic): names carry a content
# hash, gzip and Brotli copies are made once, and WhiteNoise answers hashed names with a ten-year
# Cache-Control. That storage refuses to render a page before collectstatic has run (it needs the manifest),
# so a development node (the demo, the test suite) keeps Django's plain storage, served from the app
# directories by runserver (and the test suite's live server).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
if not DEBUG:
    # Static files straight from the web process, right after the security headers are set.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
# Compressing is most of collectstatic's time: source maps (only a browser's developer tools load them) and
# already-compressed formats are not; only the hashed copies are kept (templates only link those).
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = [*Compressor.SKIP_COMPRESS_EXTENSIONS, "map"]
WHITENOISE_KEEP_ONLY_HASHED_FILES = True
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
LOGIN_URL = "admin:login"
# Failed logins per client address in 5 minutes before the login page answers 429 (exalate_node.views).
LOGIN_FAILURE_LIMIT: int = env_int("LOGIN_FAILURE_LIMIT", 10)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
ATTACHMENT_MAX_BYTES: int = env_int("ATTACHMENT_MAX_BYTES", 25 * 1024 * 1024)

# API tokens (exalate_node.tokens): lifetime of new tokens in days, 0 for none.
API_TOKEN_TTL_DAYS: int = env_int("API_TOKEN_TTL_DAYS", 90)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "exalate_node.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    # DRF's defaults, refusing (400, not 500) JSON nested deeper than 64 levels and text that is not valid
    # Unicode (lone surrogates), also inside form values that JSON fields decode.
    "DEFAULT_PARSER_CLASSES": [
        "exalate_node.parsers.JSONParser",
        "exalate_node.parsers.FormParser",
        "exalate_node.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "EXCEPTION_HANDLER": "exalate_node.api.exception_handler",
    # Password guessing at /api/v1/auth/token/: attempts per client address (the view's throttle scope).
    "DEFAULT_THROTTLE_RATES": {"token": env_str("API_TOKEN_RATE", "10/minute")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "exalate-node integration API",
    "DESCRIPTION": "Everything an admin can do in the UI: instances, connections, rules, sync status, "
    "events, errors and the built-in tracker. Staff users only; token or session auth.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page are for the API's users: staff, like the API itself.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "exalate_node.api.add_error_responses",
    ],
    # Swagger UI served from this node (drf-spectacular-sidecar), not from a CDN: works offline, no CSP hole.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ConnectionStatusEnum": "connections.models.Connection.Status",
        "EventStatusEnum": "replicas.models.SyncEvent.Status",
        "EventDirectionEnum": "replicas.models.SyncEvent.Direction",
        "EventKindEnum": "replicas.models.SyncEvent.Kind",
        "InstanceKindEnum": "instances.models.Instance.Kind",
        "DryRunDirectionEnum": [("outgoing", "outgoing"), ("incoming", "incoming")],
    },
}

# --- Security headers -----------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True


if not DEBUG:
    _HTTPS = NODE_URL.startswith("https://")
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _HTTPS)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # A production node served over https redirects http to https (except /healthz and /readyz, which load
    # balancers probe over plain http) and tells browsers to stay on https (HSTS, one year by default).
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if _HTTPS else 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Preloading is the domain owner's decision (it is hard to undo), so it is off unless asked for and
    # Django's reminder about it is silenced.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (otherwise the redirect would loop).
    if env_bool("TRUST_X_FORWARDED_PROTO", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# plain: one line of text per record; json: one JSON object per line (exalate_node/logs.py). Either way a
# record made while the pipeline works on a change carries its trace id, connection and item key.
LOG_FORMAT: str = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT is {LOG_FORMAT!r}; write plain (the default) or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"},
        "json": {"()": "exalate_node.logs.JsonFormatter"},
    },
    # Secret values are redacted from every record when it is made (exalate_node.apps); this filter also
    # covers records made by another record factory. Give any handler added here the same filters.
    "filters": {
        "redact_secrets": {"()": "exalate_node.redaction.RedactingFilter"},
        "sync_context": {"()": "exalate_node.logs.ContextFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact_secrets", "sync_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
