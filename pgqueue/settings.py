"""Every pgqueue setting, in one frozen dataclass, and where each value comes from.

Sources, first match wins:

1. arguments (``App(...)`` keywords, command-line options);
2. environment variables ``PGQUEUE_<NAME>`` (for ``dsn``, also ``DATABASE_URL``);
3. ``[tool.pgqueue]`` in the nearest ``pyproject.toml`` (searching upwards from the
   current directory);
4. the defaults below.

Each field's metadata carries its help text: the README's configuration table and
the CLI help are checked against it, so there is one description per setting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import errors
from .sqlfiles import validate_schema_name

logger = logging.getLogger(__name__)

ENV_PREFIX = "PGQUEUE_"
# PGQUEUE_* variables that are not settings: the test suite's and the benchmarks' servers.
_OTHER_ENV = frozenset({"PGQUEUE_TEST_DSN", "PGQUEUE_BENCH_DSN"})

DEFAULT_SCHEMA = "pgqueue"
DEFAULT_CONCURRENCY = 20
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_RUNNER_DEAD_AFTER = 10.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_BACKOFF = 1.0
DEFAULT_RETRY_BACKOFF_MAX = 3600.0
DEFAULT_MAX_CRASHES = 3
DEFAULT_MAX_STUCK_THREADS = 10
DEFAULT_POOL_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_EMBEDDED_DIR = ".pgqueue"
DEFAULT_MAINTENANCE_INTERVAL = 0.25
DEFAULT_MAX_PAYLOAD = 1024 * 1024
DAY = 86_400.0
DEFAULT_RETAIN_SUCCEEDED = 7 * DAY
DEFAULT_RETAIN_CANCELLED = 7 * DAY
DEFAULT_RETAIN_FAILED = 30 * DAY
PREPARED_CHOICES = ("auto", "on", "off")

# Recovery bounds: a heartbeat faster than this loads the database for nothing; a
# lease shorter than this declares busy-but-healthy runners dead on a slow network.
MIN_HEARTBEAT_INTERVAL = 0.5
MIN_RUNNER_DEAD_AFTER = 2.0

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _retention(default: float, help: str) -> Any:
    """A retention: seconds (or a duration such as "7d", or a timedelta); None keeps forever."""
    return field(default=default, metadata={"help": help, "kind": "retention"})


@dataclass(frozen=True)
class Settings:
    dsn: str | None = _setting(
        None,
        "PostgreSQL connection string (URL or key=value). When unset anywhere, DATABASE_URL is "
        "tried, then pgqueue runs its own embedded server under embedded_dir.",
    )
    schema: str = _setting(
        DEFAULT_SCHEMA,
        "Schema holding pgqueue's tables. Two schemas in one database are independent queues.",
    )
    app: str | None = _setting(
        None, "The App the worker and CLI load, as module:attribute (e.g. myproject.tasks:app)."
    )
    queues: tuple[str, ...] | None = _setting(
        None, "Queues a worker serves, comma-separated; unset means every queue."
    )
    concurrency: int = _setting(
        DEFAULT_CONCURRENCY, "Jobs one worker process runs at once (threads and async tasks together)."
    )
    processes: int = _setting(1, "Worker processes started by `pgqueue work` under one supervisor.")
    poll_interval: float = _setting(
        DEFAULT_POLL_INTERVAL,
        "Seconds between claims when no notification arrives (covers lost notifications and jobs "
        "scheduled for later).",
    )
    listen: bool = _setting(
        True,
        "Wake workers with LISTEN/NOTIFY. Set false behind a transaction-mode pooler: workers "
        "then poll every poll_interval.",
    )
    heartbeat_interval: float = _setting(
        DEFAULT_HEARTBEAT_INTERVAL, "Seconds between a runner's heartbeats (at least 0.5)."
    )
    runner_dead_after: float = _setting(
        DEFAULT_RUNNER_DEAD_AFTER,
        "Seconds without a heartbeat after which a runner is declared dead and its jobs re-queued "
        "(at least 2, and at least twice heartbeat_interval).",
    )
    maintenance_interval: float = _setting(
        DEFAULT_MAINTENANCE_INTERVAL,
        "Seconds between maintenance passes (reaping dead runners, promoting jobs scheduled for "
        "later), elected: one pass per interval for the whole cluster.",
    )
    instant_recovery: bool = _setting(
        True,
        "Detect a worker process that died from its closed database sessions and re-run its jobs "
        "at once. Off by itself behind a connection pooler, where the lease alone decides.",
    )
    synchronous_claims: bool = _setting(
        False,
        "Make each claim wait for its commit to reach disk (and synchronous standbys). Off: claims "
        "commit asynchronously, like heartbeats; an outcome, and any write a task commits to this "
        "database, makes its claim durable first, so only a server crash right after a claim can "
        "forget it, and that job runs again under the same attempt number.",
    )
    shutdown_timeout: float = _setting(
        DEFAULT_SHUTDOWN_TIMEOUT,
        "Seconds a stopping worker lets running jobs finish before handing them back to the queue.",
    )
    max_attempts: int = _setting(
        DEFAULT_MAX_ATTEMPTS, "Default number of failed attempts before a job is failed for good."
    )
    retry_backoff: float = _setting(
        DEFAULT_RETRY_BACKOFF,
        "Base delay in seconds before a retry; doubles with each failure, with jitter.",
    )
    retry_backoff_max: float = _setting(
        DEFAULT_RETRY_BACKOFF_MAX, "Longest delay in seconds between two attempts."
    )
    max_crashes: int = _setting(
        DEFAULT_MAX_CRASHES,
        "Times a job's runner may die under it before the job is failed (stops poison-pill jobs).",
    )
    max_stuck_threads: int = _setting(
        DEFAULT_MAX_STUCK_THREADS,
        "Sync tasks still running past their timeout that a worker process tolerates; beyond it "
        "the process drains and restarts in place (a fresh one under --processes).",
    )
    pool_size: int = _setting(DEFAULT_POOL_SIZE, "Largest number of connections in the App's pool.")
    connect_timeout: float = _setting(
        DEFAULT_CONNECT_TIMEOUT, "Seconds to wait for the server when connecting (libpq waits at least 2)."
    )
    max_args_bytes: int = _setting(
        DEFAULT_MAX_PAYLOAD, "Largest size in bytes of a job's arguments (as JSON), checked at enqueue."
    )
    max_result_bytes: int = _setting(
        DEFAULT_MAX_PAYLOAD,
        "Largest size in bytes of a job's return value (as JSON); a larger one fails the job.",
    )
    prepared_statements: str = _setting(
        "auto",
        "Prepared statements on pgqueue's connections: auto (on for direct connections, off behind "
        "a pooler such as PgBouncer), on, or off.",
    )
    log_level: str = _setting("INFO", "Logging level of the worker and the CLI.")
    embedded_dir: str = _setting(
        DEFAULT_EMBEDDED_DIR,
        "Directory of the embedded server's data, relative to the project root (the folder of the "
        "nearest pyproject.toml, else the current directory).",
    )
    metrics_port: int | None = _setting(
        None,
        "Port on which `pgqueue work` serves Prometheus metrics (one per worker process: with "
        "processes > 1, process i uses metrics_port + i); unset: no metrics server.",
    )
    metrics_host: str = _setting(
        "127.0.0.1",
        "Address the worker's metrics server listens on (0.0.0.0 for a Prometheus on another host).",
    )
    dashboard_user: str | None = _setting(
        None,
        "User name of the dashboard's HTTP basic authentication (with dashboard_password); "
        "needed to serve `pgqueue dashboard` beyond loopback.",
    )
    dashboard_password: str | None = _setting(
        None, "Password of the dashboard's basic authentication (set it in the environment)."
    )
    retain_succeeded: float | None = _retention(
        DEFAULT_RETAIN_SUCCEEDED,
        "How long succeeded jobs (and their events) are kept before the maintenance pass deletes "
        "them: seconds or a duration (7d, 12h); none keeps them.",
    )
    retain_cancelled: float | None = _retention(
        DEFAULT_RETAIN_CANCELLED, "How long cancelled jobs are kept (as retain_succeeded); none keeps them.",
    )
    retain_failed: float | None = _retention(
        DEFAULT_RETAIN_FAILED,
        "How long failed jobs are kept (as retain_succeeded); none keeps them. Schedule events are "
        "kept as long.",
    )
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    # ----------------------------------------------------------------- loading

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> "Settings":
        """Build the settings from arguments, environment and pyproject.toml."""
        # None means "unset", except for a retention, where it means "keep forever".
        overrides = {k: v for k, v in (overrides or {}).items()
                     if v is not None or _kinds().get(k) == "retention"}
        environ = os.environ if environ is None else environ
        names = setting_names()
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            hint = _did_you_mean(unknown[0], names)
            raise errors.ConfigurationError(
                f"unknown setting {unknown[0]!r}"
                + (hint if hint.startswith(";") else f"; settings are: {', '.join(names)}")
            )
        pyproject_path, table = _pyproject_table(cwd or Path.cwd())

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in names:
            variable = ENV_PREFIX + name.upper()
            if name in overrides:
                values[name] = _coerce(name, overrides[name], "argument " + name)
                sources[name] = "argument"
            elif environ.get(variable, "") != "":
                values[name] = _coerce(name, environ[variable], variable)
                sources[name] = variable
            elif name == "dsn" and environ.get("DATABASE_URL", "") != "":
                values[name] = _coerce(name, environ["DATABASE_URL"], "DATABASE_URL")
                sources[name] = "DATABASE_URL"
            elif name in table:
                where = f"{pyproject_path} [tool.pgqueue] {name}"
                values[name] = _coerce(name, table[name], where)
                sources[name] = str(pyproject_path)
        unknown_env = sorted(k for k in environ if k.startswith(ENV_PREFIX)
                             and k[len(ENV_PREFIX):].lower() not in names and k not in _OTHER_ENV)
        for variable in unknown_env:
            logger.warning("ignoring %s: not a pgqueue setting%s", variable,
                           _did_you_mean(variable, [env_name(n) for n in names]))
        settings = cls(**values, sources=sources)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some values changed (as arguments), validated."""
        coerced = {k: _coerce(k, v, "argument " + k) for k, v in changes.items()}
        sources = dict(self.sources)
        sources.update({k: "argument" for k in changes})
        new = dataclasses.replace(self, **coerced, sources=sources)
        new.validate()
        return new

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def validate(self) -> None:
        validate_schema_name(self.schema)

        def fail(name: str, rule: str) -> None:
            raise errors.ConfigurationError(
                f"{name} must be {rule}, not {getattr(self, name)!r} (from {self.source(name)})"
            )

        for name, (low, high, inclusive_low) in _BOUNDS.items():
            value = getattr(self, name)
            # NaN fails every comparison: test for the good range, not for the bad one.
            if not (math.isfinite(value) and (value >= low if inclusive_low else value > low)
                    and value <= high):
                fail(name, f"a finite number {'>=' if inclusive_low else '>'} {low:g} and <= {high:g}")
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL:
            fail("heartbeat_interval", f"at least {MIN_HEARTBEAT_INTERVAL} s")
        if self.runner_dead_after < max(MIN_RUNNER_DEAD_AFTER, 2 * self.heartbeat_interval):
            raise errors.ConfigurationError(
                f"runner_dead_after ({self.runner_dead_after!r} s, from "
                f"{self.source('runner_dead_after')}) must be at least {MIN_RUNNER_DEAD_AFTER} s and "
                f"at least twice heartbeat_interval ({self.heartbeat_interval!r} s)"
            )
        if self.maintenance_interval * 2 > self.runner_dead_after:
            fail("maintenance_interval", f"at most half of runner_dead_after ({self.runner_dead_after:g} s)")
        if self.log_level not in LOG_LEVELS:
            fail("log_level", f"one of {', '.join(LOG_LEVELS)}")
        if self.prepared_statements not in PREPARED_CHOICES:
            fail("prepared_statements", f"one of {', '.join(PREPARED_CHOICES)}")
        if self.app is not None and ":" not in self.app:
            raise errors.ConfigurationError(
                f"app must look like module:attribute (e.g. myproject.tasks:app) or "
                f"path/to/file.py:attribute, not {self.app!r} (from {self.source('app')})"
            )
        for name in RETENTION_SETTINGS:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 < value <= MAX_RETENTION):
                fail(name, "a duration longer than 0 and at most 100 years (seconds, or e.g. 7d), or none")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            fail("metrics_port", "a port number from 1 to 65535")
        if self.queues is not None:
            if not self.queues or any(not q for q in self.queues):
                raise errors.ConfigurationError(
                    f"queues must be a comma-separated list of non-empty names, not "
                    f"{','.join(self.queues)!r} (from {self.source('queues')})"
                )
            too_long = [q for q in self.queues if len(q) > MAX_QUEUE_LENGTH]
            if too_long:
                raise errors.ConfigurationError(
                    f"queue names are at most {MAX_QUEUE_LENGTH} characters; {too_long[0][:40]!r}... "
                    f"is {len(too_long[0])} (from {self.source('queues')})"
                )


# Every number setting, with its range: (lowest, highest, lowest allowed itself). The upper
# bounds are far beyond any real use; they keep values the database cannot turn into an
# interval (1e300 seconds) out.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "concurrency": (0, 10_000, False),
    "processes": (0, 1_000, False),
    "poll_interval": (0, 3600, False),
    "heartbeat_interval": (0, 3600, False),
    "runner_dead_after": (0, 86_400, False),
    "maintenance_interval": (0.05, 60, True),
    "shutdown_timeout": (0, 86_400, True),
    "max_attempts": (0, 1_000_000_000, False),
    "retry_backoff": (0, 86_400 * 365, True),
    "retry_backoff_max": (0, 86_400 * 365, False),
    "max_crashes": (0, 1_000_000, False),
    "max_stuck_threads": (1, 10_000, True),
    "pool_size": (0, 10_000, False),
    "connect_timeout": (0, 3600, False),
    "max_args_bytes": (1024, 256 * 1024 * 1024, True),
    "max_result_bytes": (1024, 256 * 1024 * 1024, True),
}
MAX_QUEUE_LENGTH = 128
RETENTION_SETTINGS = ("retain_succeeded", "retain_cancelled", "retain_failed")
MAX_RETENTION = 100 * 365 * DAY


def _did_you_mean(name: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    return f" (settings are: {', '.join(choices)})"


def setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if f.name != "sources"]


def setting_help(name: str) -> str:
    for f in dataclasses.fields(Settings):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(name)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


# ------------------------------------------------------------------ coercion

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|weeks?)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_KEEP = {"none", "never", "forever", "off", "keep"}


def parse_duration(text: str) -> float:
    """Seconds in '90', '30s', '15m', '2h', '7d', '1w'."""
    match = _DURATION.match(text or "")
    if not match:
        raise errors.ConfigurationError(
            f"{text!r} is not a duration: write a number of seconds, or a number with a unit "
            "(s, m, h, d, w), e.g. 30s, 15m, 2h, 7d or 1w"
        )
    unit = (match.group(2) or "s")[0]
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def _retention_value(value: Any) -> float | None:
    if value is None or value is False:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if value.strip().lower() in _KEEP:
            return None
        try:
            return parse_duration(value)
        except errors.ConfigurationError:
            raise ValueError from None
    raise ValueError


def _coerce(name: str, value: Any, where: str) -> Any:
    kind = _kinds()[name]
    try:
        if kind == "retention":
            return _retention_value(value)
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is tuple:
            if isinstance(value, str):
                items = [part.strip() for part in value.split(",")]
            elif isinstance(value, (list, tuple)):
                items = [str(part).strip() for part in value]
            else:
                raise ValueError
            return tuple(items)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            if name == "log_level":
                return value.strip().upper()
            return value
    except (TypeError, ValueError):
        pass
    expected = {bool: "true or false", int: "a whole number", float: "a number of seconds",
                tuple: "a comma-separated list", str: "a string",
                "retention": "a duration (seconds, or e.g. 7d, 12h) or none"}[kind]
    raise errors.ConfigurationError(f"{where}={value!r}: {name} must be {expected}")


@functools.cache
def _kinds() -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        annotation = str(f.type)
        if f.metadata.get("kind") == "retention":
            kinds[f.name] = "retention"
        elif annotation.startswith("bool"):
            kinds[f.name] = bool
        elif annotation.startswith("int"):
            kinds[f.name] = int
        elif annotation.startswith("float"):
            kinds[f.name] = float
        elif annotation.startswith("tuple"):
            kinds[f.name] = tuple
        else:
            kinds[f.name] = str
    return kinds


# ------------------------------------------------------------- pyproject.toml

def find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def project_root(start: Path | None = None) -> Path:
    """The folder of the nearest pyproject.toml, else the current directory."""
    start = (start or Path.cwd()).resolve()
    found = find_pyproject(start)
    return found.parent if found else start


def _pyproject_table(start: Path) -> tuple[Path | None, dict[str, Any]]:
    path = find_pyproject(start.resolve())
    if path is None:
        return None, {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise errors.ConfigurationError(f"cannot read {path}: {exc}") from exc
    table = document.get("tool", {}).get("pgqueue", {})
    if not isinstance(table, dict):
        raise errors.ConfigurationError(f"{path}: [tool.pgqueue] must be a table")
    unknown = sorted(set(table) - set(setting_names()))
    if unknown:
        hint = _did_you_mean(unknown[0], setting_names())
        raise errors.ConfigurationError(
            f"{path}: unknown key {unknown[0]!r} in [tool.pgqueue]"
            + (hint if hint.startswith(";") else f"; settings are: {', '.join(setting_names())}")
        )
    return path, table
