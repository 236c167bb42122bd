"""Django's ``PGQUEUE_*`` settings, mapped onto the one :class:`pgqueue.settings.Settings`.

Every core setting has a Django name, ``PGQUEUE_<FIELD>`` (``PGQUEUE_CONCURRENCY``,
``PGQUEUE_SCHEMA``, ``PGQUEUE_QUEUES``, ...). A value in ``settings.py`` counts as an argument:
it wins over the ``PGQUEUE_*`` environment variables and ``[tool.pgqueue]`` in
pyproject.toml, which still fill in what ``settings.py`` leaves out. Three settings exist
only here:

``PGQUEUE_DATABASE_ALIAS`` (``"default"``)
    The Django database that holds pgqueue's tables. The DSN comes from its
    ``DATABASES`` entry; jobs are enqueued on its connection, inside its transactions.
``PGQUEUE_AUTODISCOVER_MODULE`` (``"tasks"``)
    The module imported from every installed app when Django starts (None: none).
``PGQUEUE_IMPORT_PATHS`` (``[]``)
    More modules to import at start, for tasks that live elsewhere.

``PGQUEUE_DSN``, ``PGQUEUE_APP`` and ``PGQUEUE_EMBEDDED_DIR`` are refused: Django's
``DATABASES`` and ``INSTALLED_APPS`` say those things. A bad value raises
``ImproperlyConfigured`` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from ... import errors
from ...settings import Settings, _coerce, _kinds, setting_names

PREFIX = "PGQUEUE_"
#: Core settings Django says in its own way.
REFUSED = {
    "PGQUEUE_DSN": "the database comes from settings.DATABASES: name its alias in "
                   "PGQUEUE_DATABASE_ALIAS (default 'default')",
    "PGQUEUE_APP": "the App is pgqueue.contrib.django.app, with the tasks of every installed "
                   "app's tasks.py (PGQUEUE_AUTODISCOVER_MODULE) and of PGQUEUE_IMPORT_PATHS",
    "PGQUEUE_EMBEDDED_DIR": "a Django project uses the PostgreSQL server of its DATABASES, "
                            "never an embedded one",
}
DJANGO_ONLY = {
    "PGQUEUE_DATABASE_ALIAS": "default",
    "PGQUEUE_AUTODISCOVER_MODULE": "tasks",
    "PGQUEUE_IMPORT_PATHS": (),
}
#: Not settings (the test suites' servers).
IGNORED = {"PGQUEUE_TEST_DSN", "PGQUEUE_BENCH_DSN"}


def core_keys() -> dict[str, str]:
    """Django setting name -> core field, for every core setting Django may set."""
    return {PREFIX + name.upper(): name for name in setting_names()
            if PREFIX + name.upper() not in REFUSED}


@dataclass(frozen=True)
class DjangoConfig:
    """What the Django settings say: the core Settings, and the Django-only ones."""

    settings: Settings
    database_alias: str
    autodiscover_module: str | None
    import_paths: tuple[str, ...]


def _user_keys() -> list[str]:
    return sorted(k for k in dir(django_settings) if k.startswith(PREFIX) and k not in IGNORED)


def _fail(key: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"settings.{key}: {message}")


def load() -> DjangoConfig:
    """Read and check every ``PGQUEUE_*`` Django setting (ImproperlyConfigured names the key)."""
    cores = core_keys()
    known = set(cores) | set(DJANGO_ONLY)
    overrides: dict[str, Any] = {}
    fields_to_keys: dict[str, str] = {}
    for key in _user_keys():
        value = getattr(django_settings, key)
        if key in REFUSED:
            raise _fail(key, f"not a setting in a Django project: {REFUSED[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else f"pgqueue's settings are: {', '.join(sorted(known))}"
            raise _fail(key, f"not a pgqueue setting; {hint}")
        if key in cores:
            name = cores[key]
            if value is None and _kinds().get(name) != "retention":
                continue  # None: not set here (for a retention: keep forever)
            try:  # its type first, so that the error names this key
                _coerce(name, value, key)
            except errors.ConfigurationError as exc:
                raise _fail(key, _plain(str(exc)).split(": ", 1)[-1]) from None
            overrides[name] = value
            fields_to_keys[name] = key
    try:
        settings = Settings.load(overrides)
    except errors.ConfigurationError as exc:
        involved = [key for name, key in fields_to_keys.items() if name in str(exc)]
        where = ", ".join(f"settings.{k}" for k in involved) or "the PGQUEUE_* settings"
        raise ImproperlyConfigured(f"{where}: {_plain(str(exc))}") from None
    # Where each value came from, in Django's words.
    sources = dict(settings.sources)
    for name, key in fields_to_keys.items():
        sources[name] = f"settings.{key}"
    settings = dataclasses.replace(settings, sources=sources)

    alias = getattr(django_settings, "PGQUEUE_DATABASE_ALIAS", DJANGO_ONLY["PGQUEUE_DATABASE_ALIAS"])
    if not isinstance(alias, str) or not alias:
        raise _fail("PGQUEUE_DATABASE_ALIAS", f"must be the name of an entry of DATABASES, not {alias!r}")
    module = getattr(django_settings, "PGQUEUE_AUTODISCOVER_MODULE", DJANGO_ONLY["PGQUEUE_AUTODISCOVER_MODULE"])
    if module is not None and (not isinstance(module, str) or not module.isidentifier()):
        raise _fail("PGQUEUE_AUTODISCOVER_MODULE",
                    f"must be a module name such as 'tasks' (or None for none), not {module!r}")
    paths = getattr(django_settings, "PGQUEUE_IMPORT_PATHS", DJANGO_ONLY["PGQUEUE_IMPORT_PATHS"])
    if isinstance(paths, str) or not isinstance(paths, (list, tuple)) \
            or not all(isinstance(p, str) and p for p in paths):
        raise _fail("PGQUEUE_IMPORT_PATHS",
                    f"must be a list of dotted module paths (e.g. ['myproject.jobs']), not {paths!r}")
    return DjangoConfig(settings, alias, module, tuple(paths))


def _plain(message: str) -> str:
    """A core message, in Django's words ("argument x" is a settings.py value here)."""
    return message.replace("(from argument)", "(from settings.py)").replace("argument ", "")
