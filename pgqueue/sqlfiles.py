"""The SQL that pgqueue runs: every statement lives in ``sql/``; this module loads it.

``sql/queries/*.sql`` hold named statements::

    -- name: job_claim
    -- One line saying what the statement guarantees.
    SELECT ...

A query may come in variants, one statement each (``job_claim_all``, ``job_claim_one``, ...),
written once with ``-- variants:`` and ``-- variant:`` lines (see ``_variant_lines``).

``sql/migrations/NNNN_slug.sql`` hold the schema, one file per migration.

Both are written against the placeholder ``/* schema */`` (rendered as the quoted
schema name and a dot), ``/* channel */`` (the schema's NOTIFY channel prefix,
used inside string literals), ``/* runner_lock_class */`` (the first key of the
schema's runner liveness locks, an integer) and the first keys of its other advisory locks,
integers too: ``/* lock_class */`` (per-key serial execution: one per lock key),
``/* claim_class */`` (the claim guard a pause takes) and ``/* queue_class */`` (the claims of
one limited queue). Queries are parsed once at import; a duplicate or
malformed name fails at import, not at the first call.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from . import errors

_PACKAGE_DIR = Path(__file__).resolve().parent

SCHEMA_PLACEHOLDER = "/* schema */"
CHANNEL_PLACEHOLDER = "/* channel */"
LOCK_CLASS_PLACEHOLDER = "/* runner_lock_class */"
# Placeholders of the other advisory lock classes, and the purpose each class id is made from.
_CLASS_PLACEHOLDERS = {"/* lock_class */": "lock", "/* claim_class */": "claims",
                       "/* queue_class */": "queue"}

# Lowercase identifiers only: the name is used unquoted in NOTIFY channels and
# psql users should not have to quote it. Short enough that "<schema>.jobs"
# fits Postgres' 63-byte identifier limit.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$")
_VARIANTS_LINE = re.compile(r"^\s*--\s*variants:\s*([a-z0-9_ ]+?)\s*$")
_VARIANT_LINE = re.compile(r"^\s*--\s*variant:\s*([a-z0-9_ ]*?)\s*$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def data_dir(name: str) -> Path:
    """Find ``sql`` or ``alembic``: inside the installed wheel, or at the top of a checkout."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise errors.ConfigurationError(
        f"pgqueue's {name}/ directory is missing from the installation "
        f"(looked in {_PACKAGE_DIR / '_data'} and {_PACKAGE_DIR.parent}); reinstall pgqueue"
    )


def validate_schema_name(schema: str) -> str:
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise errors.ConfigurationError(
            f"schema name {schema!r} is not valid: use lowercase letters, digits and "
            "underscores, starting with a letter or underscore, at most 48 characters"
        )
    return schema


def channel(schema: str, kind: str) -> str:
    """The NOTIFY channel of a schema: ``<schema>.jobs`` (new work) or ``<schema>.done``."""
    return f"{schema}.{kind}"


def render(text: str, schema: str) -> str:
    validate_schema_name(schema)
    text = (text.replace(SCHEMA_PLACEHOLDER, f'"{schema}".')
            .replace(CHANNEL_PLACEHOLDER, f"{schema}.")
            .replace(LOCK_CLASS_PLACEHOLDER, str(runner_lock_class(schema))))
    for placeholder, purpose in _CLASS_PLACEHOLDERS.items():
        if placeholder in text:
            text = text.replace(placeholder, str(lock_class(schema, purpose)))
    return text


def _variant_lines(path: Path, name: str, lines: list[str]) -> dict[str | None, list[str]]:
    """The lines of each variant of a query (``{None: lines}`` for a query without variants).

    ``-- variants: a b`` (in the query's opening comment) makes the query ``name`` into the
    statements ``name_a`` and ``name_b``; a ``-- variant: a`` line starts lines that only
    ``name_a`` has, ``-- variant: a b`` lines both have, ``-- variant: end`` the lines of all.
    """
    declared: list[str] | None = None
    for line in lines:
        match = _VARIANTS_LINE.match(line)
        if match:
            if declared is not None:
                raise errors.ConfigurationError(f"{path}: query {name!r} declares its variants twice")
            declared = match.group(1).split()
    if declared is None:
        if any(_VARIANT_LINE.match(line) for line in lines):
            raise errors.ConfigurationError(
                f"{path}: query {name!r} marks variant lines but declares no '-- variants:'")
        return {None: lines}
    out: dict[str | None, list[str]] = {v: [] for v in declared}
    current = set(declared)
    for number, line in enumerate(lines, 1):
        match = _VARIANT_LINE.match(line)
        if match:
            listed = match.group(1).split()
            unknown = [v for v in listed if v not in declared and listed != ["end"]]
            if unknown or not listed:
                raise errors.ConfigurationError(
                    f"{path}: query {name!r}, line {number} of its body: variant "
                    f"{' '.join(unknown) or '(none)'} is not declared in '-- variants:'")
            current = set(declared) if listed == ["end"] else set(listed)
            continue
        for variant in current:
            out[variant].append(line)
    if current != set(declared):
        raise errors.ConfigurationError(f"{path}: query {name!r} ends inside a '-- variant:' block "
                                        "(close it with '-- variant: end')")
    return out


def _parse_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if name is None:
            return
        for variant, variant_lines in _variant_lines(path, name, lines).items():
            # Comment lines and indentation are for readers of the file, not for the server:
            # without them the text stays short enough for psycopg to cache its parsing
            # (statements under 4 KiB). No statement continues a string literal across lines.
            body = "\n".join(line.strip() for line in variant_lines
                             if line.strip() and not line.lstrip().startswith("--")).strip()
            full_name = name if variant is None else f"{name}_{variant}"
            if not body:
                raise errors.ConfigurationError(f"{path}: query {full_name!r} is empty")
            if full_name in queries:
                raise errors.ConfigurationError(f"{path}: query {full_name!r} is defined twice")
            queries[full_name] = body

    for raw in path.read_text(encoding="utf-8").splitlines():
        match = _NAME_LINE.match(raw)
        if match:
            flush()
            name, lines = match.group(1), []
            if name in queries:
                raise errors.ConfigurationError(f"{path}: query {name!r} is defined twice")
            continue
        if name is not None:
            lines.append(raw)
    flush()
    return queries


@functools.cache
def _all_queries() -> Mapping[str, str]:
    merged: dict[str, str] = {}
    for path in sorted((data_dir("sql") / "queries").glob("*.sql")):
        for name, body in _parse_queries(path).items():
            if name in merged:
                raise errors.ConfigurationError(f"query {name!r} is defined in two files")
            merged[name] = body
    return MappingProxyType(merged)


_NAMED_PARAM = re.compile(r"%\((\w+)\)s|%%")


@dataclass(frozen=True)
class RawStatement:
    """A statement with PostgreSQL's own ``$n`` placeholders (for ``psycopg.RawCursor``): the
    hot path sends it without psycopg parsing the text at every call, which it does for any
    statement over 4 KiB. ``params(mapping)`` orders the values."""

    text: str
    names: tuple[str, ...]

    def params(self, values: Mapping[str, object]) -> list[object]:
        return [values[name] for name in self.names]


def to_raw(text: str) -> RawStatement:
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return RawStatement(_NAMED_PARAM.sub(replace, text), tuple(names))


class Queries:
    """The named statements rendered for one schema; ``queries.job_get`` or ``queries["job_get"]``."""

    def __init__(self, schema: str) -> None:
        self.schema = validate_schema_name(schema)
        self._rendered = {name: render(body, schema) for name, body in _all_queries().items()}
        self._raw: dict[str, RawStatement] = {}

    def raw(self, name: str) -> RawStatement:
        """The statement ``name`` with ``$n`` placeholders, converted once."""
        statement = self._raw.get(name)
        if statement is None:
            statement = self._raw[name] = to_raw(self[name])
        return statement

    def __getitem__(self, name: str) -> str:
        try:
            return self._rendered[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in sql/queries") from None

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._rendered[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in sql/queries") from None

    def names(self) -> list[str]:
        return sorted(self._rendered)


@functools.cache
def queries_for(schema: str) -> Queries:
    return Queries(schema)


@dataclass(frozen=True)
class Migration:
    number: int
    slug: str
    path: Path

    @property
    def revision(self) -> str:
        """The alembic revision id of this migration."""
        return f"{self.number:04d}"

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def render(self, schema: str) -> str:
        return render(self.text, schema)


@functools.cache
def migrations() -> tuple[Migration, ...]:
    found = []
    for path in sorted((data_dir("sql") / "migrations").iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    numbers = [m.number for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise errors.ConfigurationError(
            f"sql/migrations must be numbered 0001, 0002, ... without gaps; found {numbers}"
        )
    return tuple(found)


def migration(revision: str) -> Migration:
    for m in migrations():
        if m.revision == revision:
            return m
    raise errors.ConfigurationError(f"no migration file for revision {revision!r} in sql/migrations")


def head_revision() -> str:
    return migrations()[-1].revision


# Advisory lock keys: (class id, object id), both int4. The class id spells "pgqu";
# the object id is a CRC-32 of "<schema>:<purpose>", so each schema's migrate and
# reaper locks are distinct. A runner's liveness lock is (CRC-32 of "<schema>:runner",
# runner id modulo 2^31); a lock key's is (CRC-32 of "<schema>:lock", hashtext(key)), a limited
# queue's claims (CRC-32 of "<schema>:queue", hashtext(queue)) and the claim guard (CRC-32 of
# "<schema>:claims", 0). Listed in the README; changing them is a breaking change.
ADVISORY_CLASS_ID = 0x70677175


def _int4_crc(text: str) -> int:
    import zlib

    crc = zlib.crc32(text.encode())
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def advisory_key(schema: str, purpose: str) -> tuple[int, int]:
    return ADVISORY_CLASS_ID, _int4_crc(f"{schema}:{purpose}")


def runner_lock_class(schema: str) -> int:
    """First key of the schema's runner liveness locks (the second is the runner id)."""
    return _int4_crc(f"{schema}:runner")


def lock_class(schema: str, purpose: str) -> int:
    """First key of one of the schema's two-key advisory locks: ``lock`` (the second key is
    ``hashtext(lock key)``), ``claims`` (0) or ``queue`` (``hashtext(queue name)``)."""
    return _int4_crc(f"{schema}:{purpose}")
