"""The Django app config: label ``pgqueue`` (fixed: migrations and permissions hang on it)."""

from __future__ import annotations

import importlib

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class PgQueueConfig(AppConfig):
    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed
        from django.utils.module_loading import autodiscover_modules

        from . import app, checks  # noqa: F401 - registers the system checks

        config = app.config  # reads and checks the PGQUEUE_* settings now: errors at start
        setting_changed.connect(_settings_changed, dispatch_uid="pgqueue-settings-changed")
        if config.autodiscover_module:
            autodiscover_modules(config.autodiscover_module)
        for path in config.import_paths:
            try:
                importlib.import_module(path)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"settings.PGQUEUE_IMPORT_PATHS: cannot import {path!r}: {exc}") from exc


def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("PGQUEUE_") or setting == "DATABASES":
        from . import app

        app.reload_settings()
