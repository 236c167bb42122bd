"""The SQL files: loading, naming, migration numbering and the alembic wrappers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgqueue import errors, sqlfiles

ROOT = Path(__file__).resolve().parent.parent

# Released migrations never change: a new change is a new file. If you must edit an
# unreleased migration, update its hash here in the same commit.
MIGRATION_SHA256 = {
    "0001": "fe3a3003ff61436d174693c6e6b2f89b68aaa8591c7e1cdfcd7047ec456cac73",
    "0002": "53fc1c2db46267c60805c9724d73c0d2fc2fbee988ce495ce8bb2e92b1aaee73",
    "0003": "c2f82df409bc1d98e5e181e6cac3c2a374173ff44c2f6d8d608e3a1a06e64464",
    "0004": "b36b2ea2bcfc04a26b48b221fde726efae3c3c9d92b47f69d1959ce4b2231b1c",
    "0005": "0efd02ae5403921b4d9f4534f354e9a8fd73eeac3e99f04db7640053cd4e6d81",
}


def test_queries_load_and_render_for_a_schema() -> None:
    queries = sqlfiles.Queries("my_schema")
    assert '"my_schema".enqueue_job(' in queries.job_enqueue
    assert '"my_schema".jobs' in queries.job_claim_all
    assert "/* schema */" not in queries.job_enqueue
    assert queries["job_get"] == queries.job_get


def test_every_query_opens_with_a_one_line_description() -> None:
    for path in sorted((ROOT / "sql" / "queries").glob("*.sql")):
        text = path.read_text()
        for match in re.finditer(r"^-- name: (\w+)\n(.*)$", text, flags=re.MULTILINE):
            assert match.group(2).startswith("-- "), (
                f"{path.name}: query {match.group(1)} needs a comment line saying what it guarantees"
            )


def test_queries_use_named_placeholders_only() -> None:
    for name in sqlfiles.Queries("x").names():
        body = sqlfiles.Queries("x")[name]
        stray = re.findall(r"%(?!\(\w+\)s)", body.replace("%%", ""))
        assert not stray, f"query {name} has a bare %: write %% or a named %(param)s placeholder"
        assert "$1" not in body, f"query {name} uses positional parameters: use %(name)s"


def test_unknown_query_name_fails_clearly() -> None:
    with pytest.raises(AttributeError, match="no query named 'job_nothing'"):
        sqlfiles.Queries("x").job_nothing  # noqa: B018


def test_duplicate_query_name_fails_at_load(tmp_path: Path) -> None:
    path = tmp_path / "dup.sql"
    path.write_text("-- name: a\n-- x\nSELECT 1\n-- name: a\n-- y\nSELECT 2\n")
    with pytest.raises(errors.ConfigurationError, match="defined twice"):
        sqlfiles._parse_queries(path)


def test_a_query_with_variants_becomes_one_statement_per_variant(tmp_path: Path) -> None:
    path = tmp_path / "variants.sql"
    path.write_text("-- name: pick\n-- variants: red blue\n-- Picks.\nSELECT 1\n"
                    "-- variant: red\n, 'red'\n-- variant: blue\n, 'blue'\n-- variant: red blue\n, 'both'\n"
                    "-- variant: end\nFROM t\n")
    assert sqlfiles._parse_queries(path) == {"pick_red": "SELECT 1\n, 'red'\n, 'both'\nFROM t",
                                             "pick_blue": "SELECT 1\n, 'blue'\n, 'both'\nFROM t"}


@pytest.mark.parametrize("body, message", [
    ("-- variants: a b\nSELECT 1\n-- variant: c\n, 2\n-- variant: end\n", "variant c is not declared"),
    ("-- variants: a b\nSELECT 1\n-- variant: a\n, 2\n", "ends inside a '-- variant:' block"),
    ("SELECT 1\n-- variant: a\n, 2\n-- variant: end\n", "declares no '-- variants:'"),
    ("-- variants: a\n-- variants: b\nSELECT 1\n", "declares its variants twice"),
])
def test_malformed_variants_fail_at_load(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.sql"
    path.write_text("-- name: pick\n" + body)
    with pytest.raises(errors.ConfigurationError, match=re.escape(message)):
        sqlfiles._parse_queries(path)


def test_each_claim_statement_holds_only_its_modes_scans() -> None:
    queries = sqlfiles.Queries("pgqueue")
    with pytest.raises(KeyError):  # only the variants exist
        queries["job_claim"]  # noqa: B018
    owned = {"all": ["claim_all AS", "gate_all AS"], "one": ["claim_one AS"],
             "limited": ["claim_one AS", "allowance AS", "started AS", "queue_allowance("],
             "many": ["claim_many AS", "candidates AS", "any_queue AS", "served AS"]}
    for mode, parts in owned.items():
        text = queries[f"job_claim_{mode}"]
        for other, other_parts in owned.items():
            for part in other_parts:
                assert (part in text) == (part in parts), f"job_claim_{mode}: {part!r}"
        # What every mode shares: the fenced runner check, the update, the history, the state row.
        for shared in ("me AS MATERIALIZED", "claim_guard()", "claimed AS", "job_events", "waiting AS"):
            assert shared in text, f"job_claim_{mode} lacks {shared!r}"


def test_schema_names_are_validated() -> None:
    for bad in ("", "Upper", "has space", "1digit", 'quo"te', "x" * 49):
        with pytest.raises(errors.ConfigurationError):
            sqlfiles.validate_schema_name(bad)
    assert sqlfiles.validate_schema_name("tenant_42") == "tenant_42"


def test_alembic_revisions_match_migration_files() -> None:
    migrations = {m.revision: m.slug for m in sqlfiles.migrations()}
    wrappers = {}
    for path in (ROOT / "alembic" / "versions").glob("*.py"):
        text = path.read_text()
        revision = re.search(r'^revision = "(\d{4})"', text, flags=re.MULTILINE)
        assert revision, f"{path.name} has no revision = \"NNNN\" line"
        wrappers[revision.group(1)] = path.stem.split("_", 1)[1]
        assert "apply_up(revision)" in text, f"{path.name} must run its SQL file through apply_up"
    assert wrappers == migrations, (
        "every sql/migrations/NNNN_slug.sql needs alembic/versions/NNNN_slug.py (copy "
        "alembic/script.py.mako, set revision and down_revision), and vice versa"
    )


def test_released_migrations_do_not_change() -> None:
    for migration in sqlfiles.migrations():
        pinned = MIGRATION_SHA256.get(migration.revision)
        if pinned is None:
            continue  # not released yet
        assert migration.sha256 == pinned, (
            f"{migration.path.name} changed after release: put the change in a new migration file"
        )


def test_advisory_keys_are_distinct_int4_pairs() -> None:
    keys = {sqlfiles.advisory_key(s, p) for s in ("pgqueue", "other") for p in ("migrate", "reaper")}
    assert len(keys) == 4
    for class_id, object_id in keys:
        assert class_id == sqlfiles.ADVISORY_CLASS_ID
        assert -(2**31) <= object_id < 2**31
