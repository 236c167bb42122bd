"""The built wheel carries sql/ and alembic/ and works in a fresh virtualenv outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, timeout=300)
    (found,) = out.glob("pgqueue-*.whl")
    return found


def test_wheel_contains_schema_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {p.name for p in (ROOT / "sql" / "migrations").glob("*.sql")}
    queries = {p.name for p in (ROOT / "sql" / "queries").glob("*.sql")}
    versions = {p.name for p in (ROOT / "alembic" / "versions").glob("*.py")}
    for name in migrations:
        assert f"pgqueue/_data/sql/migrations/{name}" in names
    for name in queries:
        assert f"pgqueue/_data/sql/queries/{name}" in names
    for name in versions:
        assert f"pgqueue/_data/alembic/versions/{name}" in names
    assert "pgqueue/_data/alembic/env.py" in names
    # The dashboard's templates and assets are package data too.
    for folder in ("templates", "static"):
        for path in (ROOT / "pgqueue" / "dashboard" / folder).iterdir():
            assert f"pgqueue/dashboard/{folder}/{path.name}" in names


@pytest.mark.slow
def test_wheel_migrates_and_enqueues_from_a_fresh_virtualenv(wheel: Path, tmp_path: Path,
                                                             database_dsn: str, schema_name: str) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=database_dsn, PGQUEUE_SCHEMA=schema_name, PYTHONPATH="")
    migrate = subprocess.run([str(env_dir / "bin" / "pgqueue"), "migrate"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    assert "migrated from nothing" in migrate.stdout
    script = (
        "import pgqueue, sys\n"
        "assert 'site-packages' in pgqueue.__file__, pgqueue.__file__\n"
        "app = pgqueue.App()\n"
        "@app.task(name='hello')\n"
        "def hello(who): return who\n"
        "job = hello.enqueue('world')\n"
        "print(job.status(), job.info()['args'])\n"
    )
    result = subprocess.run([str(python), "-c", script], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "queued ['world']"
