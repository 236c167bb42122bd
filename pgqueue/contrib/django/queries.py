"""The Django integration's own statements (``sql/django.sql`` beside this file), rendered
per schema like the core's ``sql/queries``, and loaded once."""

from __future__ import annotations

import functools
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ... import sqlfiles

_FILE = Path(__file__).resolve().parent / "sql" / "django.sql"


@functools.cache
def _parsed() -> Mapping[str, str]:
    return MappingProxyType(sqlfiles._parse_queries(_FILE))


@functools.cache
def for_schema(schema: str) -> Mapping[str, str]:
    """name -> statement rendered for ``schema``."""
    return MappingProxyType({name: sqlfiles.render(body, schema) for name, body in _parsed().items()})
