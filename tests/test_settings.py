"""Settings: sources in order (arguments, environment, pyproject.toml), validation, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgqueue import errors
from pgqueue.settings import Settings, setting_names


def load(tmp_path: Path, environ: dict[str, str] | None = None, pyproject: str | None = None,
         **overrides: object) -> Settings:
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    return Settings.load(overrides, environ=environ or {}, cwd=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.dsn is None
    assert settings.schema == "pgqueue"
    assert settings.heartbeat_interval == 2.0
    assert settings.runner_dead_after == 10.0
    assert settings.source("schema") == "default"


def test_order_arguments_then_environment_then_pyproject(tmp_path: Path) -> None:
    pyproject = '[tool.pgqueue]\nschema = "from_file"\nconcurrency = 3\npoll_interval = 0.5\n'
    environ = {"PGQUEUE_SCHEMA": "from_env", "PGQUEUE_CONCURRENCY": "7"}
    settings = load(tmp_path, environ, pyproject, schema="from_arg")
    assert settings.schema == "from_arg"
    assert settings.concurrency == 7
    assert settings.poll_interval == 0.5
    assert settings.source("schema") == "argument"
    assert settings.source("concurrency") == "PGQUEUE_CONCURRENCY"
    assert settings.source("poll_interval").endswith("pyproject.toml")


def test_pyproject_is_found_in_a_parent_folder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pgqueue]\nqueues = ["a", "b"]\n')
    child = tmp_path / "src" / "pkg"
    child.mkdir(parents=True)
    assert Settings.load({}, environ={}, cwd=child).queues == ("a", "b")


def test_dsn_falls_back_to_database_url(tmp_path: Path) -> None:
    settings = load(tmp_path, {"DATABASE_URL": "postgresql://u@h/db"})
    assert settings.dsn == "postgresql://u@h/db"
    assert settings.source("dsn") == "DATABASE_URL"
    settings = load(tmp_path, {"DATABASE_URL": "postgresql://u@h/db", "PGQUEUE_DSN": "postgresql://x@y/z"})
    assert settings.dsn == "postgresql://x@y/z"


def test_environment_values_are_parsed(tmp_path: Path) -> None:
    settings = load(tmp_path, {"PGQUEUE_LISTEN": "off", "PGQUEUE_QUEUES": "a, b",
                               "PGQUEUE_HEARTBEAT_INTERVAL": "0.5", "PGQUEUE_RUNNER_DEAD_AFTER": "2",
                               "PGQUEUE_LOG_LEVEL": "debug"})
    assert settings.listen is False
    assert settings.queues == ("a", "b")
    assert (settings.heartbeat_interval, settings.runner_dead_after) == (0.5, 2.0)
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PGQUEUE_CONCURRENCY": "many"}, "PGQUEUE_CONCURRENCY='many': concurrency must be a whole number"),
        ({"PGQUEUE_CONCURRENCY": "0"}, "concurrency must be a finite number > 0"),
        ({"PGQUEUE_RUNNER_DEAD_AFTER": "nan"}, "runner_dead_after must be a finite number"),
        ({"PGQUEUE_POLL_INTERVAL": "inf"}, "poll_interval must be a finite number"),
        ({"PGQUEUE_RETRY_BACKOFF_MAX": "1e300"}, "retry_backoff_max must be a finite number > 0 and <= 3.1536e\\+07"),
        ({"PGQUEUE_MAINTENANCE_INTERVAL": "6"}, "maintenance_interval must be at most half of runner_dead_after"),
        ({"PGQUEUE_PREPARED_STATEMENTS": "sometimes"}, "prepared_statements must be one of auto, on, off"),
        ({"PGQUEUE_LISTEN": "maybe"}, "listen must be true or false"),
        ({"PGQUEUE_HEARTBEAT_INTERVAL": "0.1"}, "heartbeat_interval must be at least 0.5"),
        ({"PGQUEUE_RUNNER_DEAD_AFTER": "3", "PGQUEUE_HEARTBEAT_INTERVAL": "2"}, "at least twice heartbeat_interval"),
        ({"PGQUEUE_SCHEMA": "Bad-Name"}, "schema name 'Bad-Name' is not valid"),
        ({"PGQUEUE_APP": "nocolon"}, "app must look like module:attribute"),
        ({"PGQUEUE_QUEUES": "a,,b"}, "queues must be a comma-separated list"),
        ({"PGQUEUE_LOG_LEVEL": "LOUD"}, "log_level must be one of"),
    ],
)
def test_bad_values_name_the_setting_and_source(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, environ)


def test_unknown_pyproject_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError,
                       match="unknown key 'concurrancy' in \\[tool.pgqueue\\]; did you mean concurrency"):
        load(tmp_path, pyproject="[tool.pgqueue]\nconcurrancy = 3\n")


def test_a_misspelt_environment_variable_is_named_with_the_closest_setting(tmp_path: Path, caplog) -> None:
    with caplog.at_level("WARNING"):
        load(tmp_path, {"PGQUEUE_CONCURENCY": "3"})
    assert "ignoring PGQUEUE_CONCURENCY: not a pgqueue setting; did you mean PGQUEUE_CONCURRENCY?" in caplog.text


def test_unknown_argument_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="unknown setting 'hearbeat'"):
        load(tmp_path, hearbeat=3)


def test_broken_pyproject_is_reported(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="cannot read .*pyproject.toml"):
        load(tmp_path, pyproject="[tool.pgqueue\n")


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in setting_names():
        assert f"| `{name}` |" in readme, (
            f"setting {name!r} is missing from the README's configuration table: add a row for it"
        )
