"""Settings of the orchestrator, read from environment variables (CONTRACT.md §2).

Zero configuration runs locally on SQLite and the embedded Redis that `manage.py orchestrate`
starts; `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and a Redis server.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from tasks_app.private_files import private_dir, private_file

BASE_DIR = Path(__file__).resolve().parent.parent
# var/ holds the SQLite database, the embedded Redis's password and URL, and logs: 0700, files 0600.
VAR_DIR = private_dir(Path(os.environ.get("ORCHESTRATOR_VAR_DIR", BASE_DIR / "var")))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def embedded_redis_url() -> str:
    """The URL the running embedded Redis wrote under var/, so every process finds it."""
    path = VAR_DIR / "redis.url"
    return path.read_text().strip() if path.exists() else ""


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-set-SECRET_KEY-in-production" if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_rq",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "tasks_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "orchestrator_site.urls"
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
WSGI_APPLICATION = "orchestrator_site.wsgi.application"
ASGI_APPLICATION = "orchestrator_site.asgi.application"

# Databases: SQLite under var/ by default, set up for several concurrent worker processes
# (WAL, immediate transactions, a busy timeout); PostgreSQL through DATABASE_URL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if str(DATABASES["default"]["NAME"]) not in ("", ":memory:"):
        private_file(Path(DATABASES["default"]["NAME"]))  # its -wal and -shm files take its mode
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # A file (worker processes of end-to-end tests open it too), one per test run.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: RQ queues and the Channels layer. Unset REDIS_URL means the embedded Redis.
REDIS_URL = env_str("REDIS_URL") or embedded_redis_url() or "redis://127.0.0.1:6379/0"
# Workers read the queues in this order: the task queues, then webhook deliveries (lowest priority).
ORCHESTRATOR_QUEUES = ["orchestrator-high", "orchestrator-medium", "orchestrator-low", "orchestrator-webhooks"]
# Jobs are JSON (their arguments are ids and strings): a client that can write to Redis cannot make a
# worker unpickle code. Only the orchestrator's queues exist: nothing enqueues on django-rq's "default".
RQ_SERIALIZER = "rq.serializers.JSONSerializer"
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": -1, "SERIALIZER": RQ_SERIALIZER} for name in ORCHESTRATOR_QUEUES}
RQ = {"WORKER_CLASS": "tasks_app.worker.OrchestratorWorker", "COMMIT_MODE": "auto"}
# The pub/sub layer: lower latency for many watchers, and no idle-socket read timeouts
# (redis-py 8 times out the core layer's blocking reads on idle connections). Redis pub/sub
# channels ignore the database number, so the prefix carries it: two deployments sharing a Redis
# server on different databases never see each other's live messages.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"asgi-db{urlsplit(REDIS_URL).path.strip('/') or '0'}"},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Every password check counts failures per account and per client address (tasks_app/services/login_limits.py),
# in a cache that all web processes share; the default cache stays per process.
AUTHENTICATION_BACKENDS = ["tasks_app.auth.LoginLimitsBackend"]
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "login_limits": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "orchestrator-login",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    },
}
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise serves from finders in development; collectstatic fills it
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "tasks_app.api.auth.BasicAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tasks_app.api.errors.exception_handler",
    # Rate limits per signed-in user and per anonymous client address; a 429 says when to retry.
    "DEFAULT_THROTTLE_CLASSES": [
        "tasks_app.api.throttling.UserRateThrottle",
        "tasks_app.api.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("ORCHESTRATOR_API_RATE_USER", "600/min") or None,
        "anon": env_str("ORCHESTRATOR_API_RATE_ANON", "60/min") or None,
    },
    # Proxies in front that append to X-Forwarded-For; 0 trusts only the socket address (no spoofing).
    "NUM_PROXIES": env_int("ORCHESTRATOR_NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Orchestrator API",
    "DESCRIPTION": "Signatures, chains, swarms and graphs of tasks on RQ workers.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tasks_app.api.schema.document_common_errors",
    ],
}

# Production hardening: with DEBUG off, `manage.py check --deploy` is clean.
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "orchestrator@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "tasks_app": {"handlers": ["console"], "level": env_str("ORCHESTRATOR_LOG_LEVEL", "INFO")},
        "rq.worker": {"handlers": ["console"], "level": "WARNING"},
    },
}

# Webhooks: loopback, private, link-local and other non-global destinations are refused unless allowed;
# each delivery (DNS, connect, request, answer) ends within the deadline, in seconds.
ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE = env_bool("ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE", False)
ORCHESTRATOR_WEBHOOK_DEADLINE = env_float("ORCHESTRATOR_WEBHOOK_DEADLINE", 10.0)

# The orchestrator's own knobs.
ORCHESTRATOR = {
    "DELETION_TTL": env_int("ORCHESTRATOR_DELETION_TTL", 86400),
    "AUTO_RESUME": env_bool("ORCHESTRATOR_AUTO_RESUME", True),
    "AUTO_RESUME_INCLUDE": ["*"],  # task-name glob patterns resumed automatically
    "AUTO_RESUME_EXCLUDE": [],  # task-name glob patterns never resumed automatically
    "AUTO_RESUME_STAGGER": 0.0,  # seconds between two re-enqueues of one pass
    "HEARTBEAT_TIMEOUT": env_int("ORCHESTRATOR_HEARTBEAT_TIMEOUT", 60),
    "MAX_LOST_RUNS": 3,  # an attempt whose worker died this many times in a row fails instead of re-queuing
    "PROGRESS_WRITE_INTERVAL": 0.25,  # seconds between two progress writes of one task
    # seconds a work horse goes on taking the task jobs queued behind its own (0: one job per fork)
    "HORSE_SECONDS": env_float("ORCHESTRATOR_HORSE_SECONDS", 2.0),
    "MAX_SPEC_BYTES": env_int("ORCHESTRATOR_MAX_SPEC_BYTES", 1_000_000),
    "MAX_KWARGS_BYTES": env_int("ORCHESTRATOR_MAX_KWARGS_BYTES", 256_000),
    # kwargs bytes a workflow stores once expanded (shared kwargs copied into every member; 413 past it)
    "MAX_EXPANDED_BYTES": env_int("ORCHESTRATOR_MAX_EXPANDED_BYTES", 32_000_000),
    "MAX_GRAPH_NODES": env_int("ORCHESTRATOR_MAX_GRAPH_NODES", 1_000),  # per graph (400 naming nodes past it)
    "MAX_GRAPH_EDGES": env_int("ORCHESTRATOR_MAX_GRAPH_EDGES", 5_000),  # per graph (400 naming edges past it)
    # Log lines stored per run (then one marker line counts the dropped ones), and one message's length.
    "LOG_MAX_LINES_PER_RUN": env_int("ORCHESTRATOR_LOG_MAX_LINES_PER_RUN", 100_000),
    "LOG_MAX_BYTES_PER_RUN": env_int("ORCHESTRATOR_LOG_MAX_BYTES_PER_RUN", 10_000_000),
    "LOG_MAX_LINE_CHARS": env_int("ORCHESTRATOR_LOG_MAX_LINE_CHARS", 20_000),
    "MAX_RESULT_BYTES": env_int("ORCHESTRATOR_MAX_RESULT_BYTES", 2_000_000),  # a larger result fails its task
    # Tasks in flight per worker process: async tasks on its event loop and threads=True tasks in its
    # thread pool (other sync tasks keep a forked work horse each, one at a time).
    "CONCURRENCY": env_int("ORCHESTRATOR_CONCURRENCY", 250),
    # seconds a stopping worker (SIGTERM) lets its tasks in flight end before it hands them back
    "SHUTDOWN_GRACE": env_float("ORCHESTRATOR_SHUTDOWN_GRACE", 3.0),
    # Bearer token a Prometheus server sends to scrape /metrics (staff sessions need none); unset: staff only.
    "METRICS_TOKEN": env_str("ORCHESTRATOR_METRICS_TOKEN"),
    "METRICS_MAX_TASKS": env_int("ORCHESTRATOR_METRICS_MAX_TASKS", 50),  # task names with a /metrics label of their own
    # Failed sign-ins (pages, admin, API token, HTTP Basic) before a lock-out of that many seconds; 0: no limit.
    "LOGIN_FAILURES_PER_ACCOUNT": env_int("ORCHESTRATOR_LOGIN_FAILURES_PER_ACCOUNT", 5),
    "LOGIN_FAILURES_PER_ADDRESS": env_int("ORCHESTRATOR_LOGIN_FAILURES_PER_ADDRESS", 20),
    "LOGIN_LOCKOUT_SECONDS": env_int("ORCHESTRATOR_LOGIN_LOCKOUT_SECONDS", 900),
    # Schedules: seconds between two passes of RQ's cron over due schedules, and how late a tick may
    # fire and still count as on time (older ones were missed: the schedule's catch_up decides).
    "SCHEDULE_TICK": env_int("ORCHESTRATOR_SCHEDULE_TICK", 5),
    "SCHEDULE_GRACE": env_int("ORCHESTRATOR_SCHEDULE_GRACE", 60),
}
