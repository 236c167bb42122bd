"""Least-privilege roles: ``pgqueue roles`` prints them, ``pgqueue grant`` applies them.

Three group roles per schema (``<schema>_producer``, ``<schema>_worker``, ``<schema>_reader``,
without LOGIN), defined in ``sql/roles/roles.sql``:

* producer: enqueue, cancel and read its jobs (through the SQL API's functions, which run
  with their owner's rights: it has no right to change a table itself);
* worker: what ``pgqueue work`` needs, and no DDL;
* reader: reads every table and view.

Migrations run as the schema's owner; web apps log in as a member of the producer role,
workers as a member of the worker role, dashboards as a member of the reader role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import errors, sqlfiles

KINDS = ("producer", "worker", "reader")
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class RoleNames:
    producer: str
    worker: str
    reader: str

    @classmethod
    def for_schema(cls, schema: str) -> "RoleNames":
        sqlfiles.validate_schema_name(schema)
        return cls(f"{schema}_producer", f"{schema}_worker", f"{schema}_reader")

    def of(self, kind: str) -> str:
        if kind not in KINDS:
            raise errors.ConfigurationError(f"role kind must be one of {', '.join(KINDS)}, not {kind!r}")
        return getattr(self, kind)


def validate_role_name(name: str) -> str:
    if not isinstance(name, str) or not _ROLE_NAME.match(name):
        raise errors.ConfigurationError(
            f"role name {name!r} is not valid here: use lowercase letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters")
    return name


def script(schema: str, names: RoleNames | None = None) -> str:
    """The SQL that creates the roles and grants them their rights (idempotent)."""
    names = names or RoleNames.for_schema(schema)
    text = (sqlfiles.data_dir("sql") / "roles" / "roles.sql").read_text(encoding="utf-8")
    for kind in KINDS:
        role = validate_role_name(names.of(kind))
        text = text.replace(f"/* {kind}_literal */", f"'{role}'").replace(f"/* {kind} */", f'"{role}"')
    text = text.replace("/* schema_name */", f'"{schema}"').replace("/* schema_literal_text */", schema)
    return sqlfiles.render(text, schema)


def membership(names: RoleNames, grants: dict[str, list[str]]) -> str:
    """``GRANT <role> TO <login>`` for each (kind -> logins)."""
    lines = []
    for kind, logins in grants.items():
        for login in logins:
            lines.append(f'GRANT "{names.of(kind)}" TO "{validate_role_name(login)}";')
    return "\n".join(lines)
