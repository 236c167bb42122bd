"""Django settings of the integration tests (a real project: apps, admin, middleware, TASKS).

The database comes from the environment the test session gives (``PGQ_DJANGO_DB`` on
the server of ``PGQUEUE_TEST_DSN``); worker subprocesses load the same settings.
``PGQ_DJANGO_DRIVER=psycopg2`` makes Django itself use psycopg 2 (see ``drivers``).
"""

import os
import sys
from pathlib import Path

from psycopg import conninfo

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import drivers  # noqa: E402

drivers.select(os.environ.get("PGQ_DJANGO_DRIVER", "psycopg"))

_dsn = conninfo.conninfo_to_dict(os.environ.get("PGQ_DJANGO_DSN")
                                 or "postgresql://postgres@127.0.0.1:5432/postgres")
_db = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ.get("PGQ_DJANGO_DB", "pgqueue_django"),
    "USER": _dsn.get("user", ""),
    "PASSWORD": _dsn.get("password", ""),
    "HOST": _dsn.get("host", ""),
    "PORT": _dsn.get("port", ""),
    "ATOMIC_REQUESTS": os.environ.get("PGQ_DJANGO_ATOMIC_REQUESTS", "") == "1",
    "CONN_MAX_AGE": int(os.environ.get("PGQ_DJANGO_CONN_MAX_AGE", "0")),
    "CONN_HEALTH_CHECKS": os.environ.get("PGQ_DJANGO_CONN_MAX_AGE", "0") != "0",
}
_db["TEST"] = {"NAME": _db["NAME"]}  # the session creates and drops it
DATABASES = {"default": _db}

SECRET_KEY = "pgqueue-tests"
DEBUG = os.environ.get("PGQ_DJANGO_DEBUG", "") == "1"
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "testapp.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgqueue.contrib.django",
    "testapp",
]
try:
    import django.tasks  # noqa: F401
except ImportError:
    INSTALLED_APPS.append("django_tasks")  # Django 5.2: the backport

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.backend.PgQueueBackend",
        "QUEUES": ["default", "other"],
    },
}

PGQUEUE_SCHEMA = os.environ.get("PGQ_DJANGO_SCHEMA", "pgqueue")
# Fast recovery, so that crash tests take seconds.
PGQUEUE_HEARTBEAT_INTERVAL = 0.5
PGQUEUE_RUNNER_DEAD_AFTER = 2.0
PGQUEUE_POLL_INTERVAL = 0.5
PGQUEUE_RETRY_BACKOFF = 0.1
PGQUEUE_LOG_LEVEL = "DEBUG"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test users
