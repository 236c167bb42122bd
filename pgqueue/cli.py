"""The ``pgqueue`` command. Each command parses its options, calls one library function
and prints; policy lives in the library.

Errors are one line on stderr and a non-zero exit status, never a traceback.
Every command that touches the database says once, on stderr, which one it uses.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from typing import Any, Callable

import click

from . import errors
from .app import App
from .context import install_job_logging
from .settings import env_name

logger = logging.getLogger(__name__)



class _UsageError(click.UsageError):
    """A bad command line as one line on stderr (click prints usage, a hint and the error
    on three), naming the help to read."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message().rstrip('.')}{hint}", file=file, err=file is None)


def _one_line(exc: click.UsageError) -> _UsageError:
    return exc if isinstance(exc, _UsageError) else _UsageError(exc.format_message(), exc.ctx)


class _Group(click.Group):
    """Turns pgqueue errors and bad command lines into one-line CLI errors."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.PgQueueError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _env_help(name: str) -> str:
    return f"[env: {env_name(name)}]"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", metavar="DSN", help=f"PostgreSQL connection string. {_env_help('dsn')}, then DATABASE_URL, "
              "else the embedded server")
@click.option("--app", "app_path", metavar="MODULE:ATTR", help=f"The App to load, e.g. myproject.tasks:app. {_env_help('app')}")
@click.option("--schema", metavar="NAME", help=f"Schema of pgqueue's tables (default pgqueue). {_env_help('schema')}")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                              case_sensitive=False),
              help=f"Logging level (default INFO). {_env_help('log_level')}")
@click.version_option(package_name="pgqueue", prog_name="pgqueue")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, app_path: str | None, schema: str | None,
        log_level: str | None) -> None:
    """pgqueue: a durable job queue whose whole state lives in PostgreSQL."""
    ctx.ensure_object(dict)
    ctx.obj.update(dsn=dsn, app=app_path, schema=schema, log_level=log_level.upper() if log_level else None)


# ------------------------------------------------------------------ helpers

def load_app(ctx: click.Context, *, require_app: bool = False, announce: bool = True,
             read_only: bool = False, **command_options: Any) -> App:
    """The App named by --app / PGQUEUE_APP (or a bare one), with the CLI's options applied.
    ``read_only`` commands never create the embedded server (they may start it)."""
    options = ctx.find_root().obj
    overrides = {k: options[k] for k in ("dsn", "schema", "log_level") if options.get(k)}
    overrides.update({k: v for k, v in command_options.items() if v is not None})
    from .settings import Settings

    app_settings = Settings.load({"app": options.get("app")})
    app_path = app_settings.app
    if options.get("app_object") is not None:
        # A framework integration runs these commands on an App it made (``flask pgqueue``):
        # cli.main(args, obj={"app_object": app}).
        app = options["app_object"]
        app.configure(**overrides)
    elif app_path:
        source = app_settings.source("app")
        app = import_app(app_path, source="--app" if source == "argument" else source)
        app.configure(**overrides)
    elif require_app:
        raise errors.ConfigurationError(
            "this command needs your App: pass --app module:attribute (e.g. --app myproject.tasks:app) "
            "or set PGQUEUE_APP"
        )
    else:
        app = App(**overrides)
    if read_only:
        app.never_create_embedded()
    _setup_logging(app.settings.log_level)
    if announce:
        click.echo(f"pgqueue: database {app.database_description}, schema {app.settings.schema!r}", err=True)
    return app


def import_app(path: str, source: str = "--app") -> App:
    """Import ``module:attribute`` (or ``path/to/file.py:attribute``) and return the App it
    names (``source`` says where the path came from, for messages)."""
    module_name, _, attribute = path.rpartition(":")
    where = f"{source} {path}"
    if not module_name or not attribute:
        raise errors.ConfigurationError(f"the app must look like module:attribute (e.g. myproject.tasks:app) "
                                        f"or path/to/tasks.py:app, not {path!r} (from {source})")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module_name = _module_of_file(module_name, where)
    # Like `python -m`: modules of the current directory are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name or module_name.startswith(f"{exc.name}."):
            raise errors.ConfigurationError(
                f"cannot import module {module_name!r} (from {where}): {exc}; run pgqueue from "
                "your project's folder, put it on PYTHONPATH, or give the file's path "
                "(path/to/tasks.py:app)"
            ) from exc
        raise errors.ConfigurationError(_import_failure(module_name, where, exc)) from exc
    except errors.PgQueueError:
        raise
    except Exception as exc:
        raise errors.ConfigurationError(_import_failure(module_name, where, exc)) from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            apps = [name for name, value in vars(module).items() if isinstance(value, App)]
            hint = f"; it defines {', '.join(apps)}" if apps else ""
            raise errors.ConfigurationError(
                f"module {module_name!r} has no attribute {attribute!r} (from {where}){hint}") from None
    if not isinstance(obj, App):
        raise errors.ConfigurationError(f"{path} (from {source}) is of type {type(obj).__name__}, "
                                        "not a pgqueue.App")
    return obj


def _module_of_file(text: str, where: str) -> str:
    """The importable name of a Python file (its folder goes on sys.path; a file inside a
    package is imported as part of it, so task names match what workers elsewhere use)."""
    from pathlib import Path

    file = Path(text).expanduser()
    if file.suffix != ".py":
        file = file.with_suffix(".py")
    if not file.is_file():
        raise errors.ConfigurationError(f"there is no file {str(file)!r} (from {where})")
    file = file.resolve()
    parts = [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return ".".join(parts)


def _import_failure(module_name: str, where: str, exc: BaseException) -> str:
    """One line for an error raised while importing the user's module, naming where."""
    import traceback

    location = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        location = f" at {exc.filename}:{exc.lineno}"
    elif frames:
        last = frames[-1]
        location = f" at {last.filename}:{last.lineno}"
    message = " ".join(str(exc).split()) or type(exc).__name__
    return (f"importing {module_name!r} (from {where}) raised {type(exc).__name__}{location}: "
            f"{message} (python -c 'import {module_name}' shows the whole traceback)")


def _setup_logging(level: str) -> None:
    install_job_logging(level)
    # Alembic is chatty at INFO about its plugins.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def command(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    return cli.command(*args, **kwargs)


# ----------------------------------------------------------------- commands

@command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the pgqueue schema (safe to run from several processes at once)."""
    app = load_app(ctx)
    before, after = app.migrate()
    if before == after:
        click.echo(f"schema {app.settings.schema!r} is up to date (revision {after})")
    else:
        click.echo(f"schema {app.settings.schema!r} migrated from {before or 'nothing'} to {after}")


@command()
@click.option("--since", metavar="REVISION", help="Only the migrations after this revision (for upgrades).")
@click.pass_context
def schema(ctx: click.Context, since: str | None) -> None:
    """Print the schema's DDL, for teams who apply it with their own migration tool.

    Does not connect to the database.
    """
    from .migrations import schema_ddl
    from .settings import Settings

    options = ctx.find_root().obj
    name = options.get("schema") or Settings.load().schema
    click.echo(schema_ddl(name, since=since), nl=False)


@command()
@click.option("--queues", "-q", metavar="A,B", help=f"Queues to serve (default: all). {_env_help('queues')}")
@click.option("--concurrency", "-c", type=int, metavar="N", help=f"Jobs run at once per process (default 20). {_env_help('concurrency')}")
@click.option("--processes", "-p", type=int, metavar="P", help=f"Worker processes under one supervisor (default 1). {_env_help('processes')}")
@click.option("--poll-interval", type=float, metavar="S", help=f"Seconds between polls without notification. {_env_help('poll_interval')}")
@click.option("--listen/--no-listen", default=None, help=f"Wake on LISTEN/NOTIFY, or poll only (for transaction-mode poolers). {_env_help('listen')}")
@click.option("--shutdown-timeout", type=float, metavar="S", help=f"Seconds running jobs get to finish on SIGTERM. {_env_help('shutdown_timeout')}")
@click.option("--heartbeat-interval", type=float, metavar="S", help=f"Seconds between heartbeats. {_env_help('heartbeat_interval')}")
@click.option("--runner-dead-after", type=float, metavar="S", help=f"Seconds of silence before a runner is declared dead. {_env_help('runner_dead_after')}")
@click.option("--metrics-port", type=int, metavar="N", help=f"Serve Prometheus metrics on this port (process i of --processes on N+i). {_env_help('metrics_port')}")
@click.option("--metrics-host", metavar="ADDR", help=f"Address of the metrics server (default 127.0.0.1). {_env_help('metrics_host')}")
@click.pass_context
def work(ctx: click.Context, queues: str | None, concurrency: int | None, processes: int | None,
         poll_interval: float | None, listen: bool | None, shutdown_timeout: float | None,
         heartbeat_interval: float | None, runner_dead_after: float | None,
         metrics_port: int | None = None, metrics_host: str | None = None) -> None:
    """Run a worker: claim jobs, run them, write their outcomes, until SIGTERM/SIGINT."""
    from .worker import Runner
    from .worker.supervisor import EXIT_RESTART, SUPERVISED_ENV, Supervisor, child_command

    app = load_app(ctx, require_app=True, queues=queues, concurrency=concurrency,
                   processes=processes, poll_interval=poll_interval, listen=listen,
                   shutdown_timeout=shutdown_timeout, heartbeat_interval=heartbeat_interval,
                   runner_dead_after=runner_dead_after, metrics_port=metrics_port,
                   metrics_host=metrics_host)
    if not app.tasks:
        raise errors.ConfigurationError(
            f"the App {ctx.find_root().obj.get('app') or app.settings.app} has no tasks: a worker would "
            "have nothing to run (define tasks with @app.task in that module)")
    if app.settings.processes > 1:
        root = ctx.find_root().obj
        # The DSN goes to the children in their environment, not in argv, where every local
        # user can read it (/proc/<pid>/cmdline).
        global_args = [a for k, flag in (("app", "--app"), ("schema", "--schema"),
                                         ("log_level", "--log-level")) if root.get(k)
                       for a in (flag, root[k])]
        work_args = [a for flag, value in (("--queues", queues), ("--concurrency", concurrency),
                                           ("--poll-interval", poll_interval),
                                           ("--shutdown-timeout", shutdown_timeout),
                                           ("--heartbeat-interval", heartbeat_interval),
                                           ("--runner-dead-after", runner_dead_after))
                     if value is not None for a in (flag, str(value))]
        if listen is not None:
            work_args.append("--listen" if listen else "--no-listen")
        child_env = dict(os.environ, PGQUEUE_DSN=app.database.dsn)
        port, host = app.settings.metrics_port, app.settings.metrics_host
        if port is not None:
            # One metrics server per process: process i on port + i.
            def argv(slot: int) -> list[str]:
                return child_command(global_args, [*work_args, "--metrics-port", str(port + slot),
                                                   "--metrics-host", host])
        else:
            def argv(slot: int) -> list[str]:
                return child_command(global_args, work_args)
        code = Supervisor(argv, app.settings.processes, env=child_env).run()
    else:
        if app.settings.metrics_port is not None:
            from .metrics.worker import serve_worker_metrics

            serve_worker_metrics(app, app.settings.metrics_port, app.settings.metrics_host)
        code = Runner(app).run()
        if code == EXIT_RESTART and not os.environ.get(SUPERVISED_ENV):
            # Stuck task threads: start afresh in this very process (same pid, same command).
            logging.getLogger("pgqueue").warning("restarting this worker process")
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, sys.orig_argv)
    ctx.exit(code)


@command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Watch a worker get SIGKILLed mid-task and another one finish its jobs (about 20 s).

    Uses its own schema, pgqueue_demo, in the database pgqueue would use.
    """
    from . import demo as demo_module

    app = load_app(ctx, announce=False)
    ctx.exit(demo_module.run(app.database.dsn, app.database_description))


# ------------------------------------------------------------ inspection

def _echo_json(data: Any) -> None:
    from .display import to_json

    click.echo(to_json(data))


@command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Queues (counts by state, lag, last minute) and runners (alive or not)."""
    from . import admin
    from .display import duration, table

    app = load_app(ctx, read_only=True)
    app.check_schema()
    report = admin.status_report(app)
    if as_json:
        _echo_json(report)
        return
    click.echo("Queues")
    click.echo(table(
        [(q["queue"], q["queued"], q["scheduled"], q["running"], q["succeeded"], q["failed"],
          q["cancelled"], q["oldest_queued_age"], q["succeeded_last_minute"], q["failed_last_minute"])
         for q in report["queues"]],
        ["queue", "queued", "scheduled", "running", "succeeded", "failed", "cancelled", "lag",
         "done/min", "failed/min"], empty="(no jobs)"))
    alive = [r for r in report["runners"] if r["alive"]]
    click.echo(f"\nRunners: {len(alive)} alive, {len(report['runners']) - len(alive)} stopped or dead "
               "(last hour)")
    click.echo(table(
        [(r["id"], r["host"], r["pid"], r["state"], "yes" if r["alive"] else "NO",
          r["queues"] or "all", f"{r['running_jobs']}/{r['concurrency']}",
          duration(r["heartbeat_age"].total_seconds()) + " ago", r["reason"])
         for r in report["runners"]],
        ["id", "host", "pid", "state", "alive", "queues", "running", "heartbeat", "reason"],
        empty="(no runners)"))
    for warning in report["warnings"]:
        click.echo(f"\nWarning: {warning}")


@command()
@click.option("--queue", help="Only this queue.")
@click.option("--status", "status_", metavar="STATUS",
              help="Only this status: queued, running, succeeded, failed, cancelled.")
@click.option("--task", help="Only this task name.")
@click.option("--since", metavar="WHEN", help="Enqueued since: a duration ago (30m, 2h, 7d) or an ISO time.")
@click.option("--limit", default=50, show_default=True, help="At most this many jobs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def jobs(ctx: click.Context, queue: str | None, status_: str | None, task: str | None,
         since: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    from . import admin
    from .display import table

    app = load_app(ctx, read_only=True)
    rows = admin.list_jobs(app, queue=queue, status=status_, task=task, since=since, limit=limit)
    if as_json:
        _echo_json(rows)
        return
    click.echo(table(
        [(r["id"], r["task"], r["queue"], r["status"], r["attempts"], r["priority"], r["enqueued_at"],
          r["finished_at"]) for r in rows],
        ["id", "task", "queue", "status", "attempts", "priority", "enqueued", "finished"],
        empty="(no jobs match)"))


@command("job")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def job_command(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """One job: its row, arguments, result or error (with traceback), and its timeline."""
    from . import admin
    from .display import compact_json, human, table

    app = load_app(ctx, read_only=True)
    detail = admin.job_detail(app, job_id)
    if as_json:
        _echo_json(detail)
        return
    timeline = detail.pop("timeline")
    click.echo(f"Job {detail['id']}: {detail['task']} on queue {detail['queue']!r} - {detail['status']}")
    for name in ("priority", "attempts", "failures", "crashes", "max_attempts", "key", "runner_id",
                 "run_at", "enqueued_at", "started_at", "finished_at", "cancel_requested"):
        click.echo(f"  {name:<17}{human(detail[name])}")
    click.echo(f"  {'args':<17}{compact_json(detail['args'])}")
    click.echo(f"  {'kwargs':<17}{compact_json(detail['kwargs'])}")
    if detail["status"] == "succeeded":
        click.echo(f"  {'result':<17}{compact_json(detail['result'])}")
    error = detail["error"]
    if error:
        click.echo(f"  {'error':<17}{error.get('type')}: {error.get('message')}")
        if error.get("traceback"):
            click.echo("\n  " + error["traceback"].rstrip().replace("\n", "\n  "))
    click.echo("\nTimeline")
    click.echo(table(
        [(e["at"], e["from_status"] or "", e["to_status"], e["attempt"],
          _runner_label(e),
          e["reason"]) for e in timeline],
        ["at", "from", "to", "attempt", "runner", "reason"]))


def _runner_label(event: dict[str, Any]) -> str:
    if not event["runner_id"]:
        return ""
    if event["runner_host"] is None:
        return str(event["runner_id"])
    return f"{event['runner_id']} ({event['runner_host']}, pid {event['runner_pid']})"


@command()
@click.argument("job_id", type=int, required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job (filter with --task, --queue).")
@click.option("--task", help="With --failed: only this task.")
@click.option("--queue", help="With --failed: only this queue.")
@click.pass_context
def retry(ctx: click.Context, job_id: int | None, all_failed: bool, task: str | None, queue: str | None) -> None:
    """Send a failed job (or every failed one) back to the queue, with a fresh attempt budget."""
    from . import admin

    if job_id is None and not all_failed:
        raise errors.ConfigurationError("give the id of a failed job, or --failed (optionally with --task / --queue)")
    if job_id is not None and all_failed:
        raise errors.ConfigurationError("give a job id or --failed, not both")
    if job_id is not None and (task or queue):
        raise errors.ConfigurationError("--task and --queue go with --failed, not with a job id")
    app = load_app(ctx, read_only=True)
    if job_id is not None:
        admin.retry_job(app, job_id)
        click.echo(f"job {job_id} is queued again")
        return
    result = admin.retry_failed(app, task=task, queue=queue,
                                progress=lambda n: click.echo(f"  {n} retried...", err=True))
    click.echo(f"{result.retried} failed job{'s' if result.retried != 1 else ''} queued again")
    if result.kept:
        shown = ", ".join(f"{k['id']} (key {k['key']!r})" for k in result.kept[:10])
        more = f" and {len(result.kept) - 10} more" if len(result.kept) > 10 else ""
        click.echo(f"{len(result.kept)} left failed: another job holds its key: {shown}{more}")


@command()
@click.argument("job_id", type=int)
@click.pass_context
def cancel(ctx: click.Context, job_id: int) -> None:
    """Cancel a job: a queued one at once, a running one by asking it to stop."""
    app = load_app(ctx, read_only=True)
    status = app.job(job_id).cancel()
    if status == "cancelled":
        click.echo(f"job {job_id} is cancelled")
    else:
        click.echo(f"job {job_id} is running: cancellation requested (async tasks stop at once; "
                   "sync tasks when they check pgqueue.current_job().cancel_requested)")


# ----------------------------------------------------------------- queues

@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """List queues with their counts and controls; pause, resume or limit one."""
    if ctx.invoked_subcommand is not None:
        return
    app = load_app(ctx, read_only=True)
    rows = app.queues.list()
    if as_json:
        _echo_json([{**row.__dict__, "paused": row.paused} for row in rows])
        return
    if not rows:
        click.echo("no queues yet: none holds jobs or has controls")
        return
    header = f"{'QUEUE':<24} {'QUEUED':>8} {'SCHED':>7} {'RUNNING':>8} {'BLOCKED':>8}  CONTROLS"
    click.echo(header)
    for row in rows:
        controls = []
        if row.paused:
            controls.append(f"paused by {row.paused_by or '?'}"
                            + (f": {row.pause_reason}" if row.pause_reason else ""))
        if row.concurrency_limit is not None:
            controls.append(f"concurrency {row.concurrency_limit}")
        if row.rate_limit is not None:
            controls.append(f"rate {row.rate_limit}/{_format_period(row.rate_period or 0)}")
        click.echo(f"{row.name:<24} {row.queued:>8} {row.scheduled:>7} {row.running:>8} "
                   f"{row.blocked:>8}  {', '.join(controls) or '-'}")


def _format_period(period: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if period >= size and period % size == 0:
            return f"{int(period // size)}{unit}"
    return f"{period:g}s"


@queues.command("pause")
@click.argument("name")
@click.option("--reason", help="Why (kept in the queue's history and shown by `pgqueue queues`).")
@click.pass_context
def queues_pause(ctx: click.Context, name: str, reason: str | None) -> None:
    """Pause queue NAME: no runner claims its jobs until it is resumed (running jobs finish)."""
    app = load_app(ctx, read_only=True)
    app.queues.pause(name, reason=reason)
    click.echo(f"queue {name!r} is paused: no new job of it starts (running ones finish; enqueues are kept)")


@queues.command("resume")
@click.argument("name")
@click.pass_context
def queues_resume(ctx: click.Context, name: str) -> None:
    """Resume queue NAME."""
    app = load_app(ctx, read_only=True)
    app.queues.resume(name)
    click.echo(f"queue {name!r} is resumed")


@queues.command("limit")
@click.argument("name")
@click.option("--concurrency", type=int, metavar="N", help="At most N of its jobs running at once, over every runner.")
@click.option("--rate", type=int, metavar="N", help="At most N of its jobs started per --per.")
@click.option("--per", metavar="PERIOD", help="The rate's window: 1s, 1m, 1h, or a number of seconds.")
@click.option("--clear", is_flag=True, help="Remove every limit of the queue.")
@click.pass_context
def queues_limit(ctx: click.Context, name: str, concurrency: int | None, rate: int | None,
                 per: str | None, clear: bool) -> None:
    """Limit queue NAME cluster wide (a limit not given is removed)."""
    from . import admin

    if clear and (concurrency is not None or rate is not None or per is not None):
        raise errors.ConfigurationError("--clear removes every limit: give it alone")
    if not clear and concurrency is None and rate is None:
        raise errors.ConfigurationError("give --concurrency N and/or --rate N --per PERIOD (or --clear)")
    if (rate is None) != (per is None):
        raise errors.ConfigurationError("give --rate and --per together, e.g. --rate 100 --per 1m")
    period = admin.parse_duration(per) if per is not None else None
    app = load_app(ctx, read_only=True)
    app.queues.limit(name, concurrency=concurrency, rate=rate, per=period)
    if clear:
        click.echo(f"queue {name!r} has no limits")
        return
    parts = []
    if concurrency is not None:
        parts.append(f"at most {concurrency} running at once")
    if rate is not None:
        parts.append(f"at most {rate} started per {per}")
    click.echo(f"queue {name!r}: {' and '.join(parts)}")


# ------------------------------------------------------------------ roles

@command()
@click.pass_context
def roles(ctx: click.Context) -> None:
    """Print the SQL of the producer, worker and reader roles of the schema (see `grant`)."""
    from . import roles as role_sql

    schema = ctx.find_root().obj.get("schema") or load_app(ctx, announce=False, read_only=True).settings.schema
    click.echo(role_sql.script(schema))


@command()
@click.option("--to", "members", multiple=True, metavar="KIND=LOGIN",
              help="Also grant a role to a login, e.g. --to producer=webapp (repeatable).")
@click.pass_context
def grant(ctx: click.Context, members: tuple[str, ...]) -> None:
    """Create the producer, worker and reader roles of the schema and grant their rights
    (idempotent: run it again after each upgrade). Needs CREATEROLE and the schema's owner."""
    from . import roles as role_sql

    app = load_app(ctx, read_only=True)
    names = role_sql.RoleNames.for_schema(app.settings.schema)
    grants: dict[str, list[str]] = {}
    for member in members:
        kind, sep, login = member.partition("=")
        if not sep or not login:
            raise errors.ConfigurationError(f"--to takes KIND=LOGIN (e.g. producer=webapp), not {member!r}")
        names.of(kind)
        grants.setdefault(kind, []).append(role_sql.validate_role_name(login))
    sql = role_sql.script(app.settings.schema, names) + "\n" + role_sql.membership(names, grants)
    with app.database.connection() as conn:
        with conn.transaction():
            conn.execute(sql)
    click.echo(f"roles {names.producer}, {names.worker} and {names.reader} are ready")
    for kind, logins in grants.items():
        click.echo(f"  {names.of(kind)} granted to {', '.join(logins)}")
    if not grants:
        click.echo(f"grant them to your logins, e.g. GRANT {names.producer} TO webapp;")


@command()
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete jobs that finished longer ago than this (e.g. 7d, 12h).")
@click.option("--batch", default=1000, show_default=True, help="Jobs deleted per transaction.")
@click.pass_context
def prune(ctx: click.Context, older_than: str, batch: int) -> None:
    """Delete finished jobs (and their history) older than AGE, in small transactions."""
    from . import admin

    seconds = admin.parse_duration(older_than)
    if batch < 1:
        raise errors.ConfigurationError(f"--batch must be at least 1, not {batch}")
    app = load_app(ctx, read_only=True)
    last = [time.monotonic()]

    def progress(total: int) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            click.echo(f"  {total} jobs deleted so far...", err=True)

    result = admin.prune(app, older_than=seconds, batch=batch, progress=progress)
    click.echo(f"deleted {result.jobs} finished job{'s' if result.jobs != 1 else ''} older than "
               f"{older_than} and their events, {result.runners} old runner row(s) and "
               f"{result.waiters} stale waiter(s) in {result.seconds:.1f} s")


# ------------------------------------------------------------ schedules

@cli.group(cls=_Group, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def schedules(ctx: click.Context, as_json: bool) -> None:
    """Cron schedules: id, task, cron, time zone, next run, last run and its job's status,
    paused or orphaned. Subcommands act on one schedule."""
    if ctx.invoked_subcommand is not None:
        return
    app = load_app(ctx, read_only=True)
    rows = app.schedules.list()
    if as_json:
        _echo_json(rows)
        return
    from .display import table

    click.echo(table(
        [(r["id"], r["task"], r["cron"], r["timezone"],
          None if r["paused"] or r["orphaned"] else r["next_run_at"], r["last_run_for"],
          _last_status(r), _schedule_state(r)) for r in rows],
        ["id", "task", "cron", "timezone", "next run", "last run", "last status", "state"],
        empty="(no schedules: declare them with @app.periodic; a worker's start writes them)"))


def _last_status(row: dict[str, Any]) -> str:
    if row["last_job_id"] is None:
        return "-"
    return f"{row['last_job_status'] or 'pruned'} (job {row['last_job_id']})"


def _schedule_state(row: dict[str, Any]) -> str:
    states = []
    if row["paused"]:
        states.append("paused" + (f" ({row['pause_reason']})" if row["pause_reason"] else ""))
    if row["orphaned"]:
        states.append("orphaned (no live runner declares it)")
    return ", ".join(states) or "active"


@schedules.command("pause")
@click.argument("schedule_id")
@click.option("--reason", help="Why (shown with the schedule).")
@click.pass_context
def schedules_pause(ctx: click.Context, schedule_id: str, reason: str | None) -> None:
    """Stop firing a schedule (its ticks are recorded as missed) until resumed."""
    app = load_app(ctx, read_only=True)
    changed = app.schedules.pause(schedule_id, reason=reason)
    click.echo(f"schedule {schedule_id!r} is paused" if changed else f"schedule {schedule_id!r} was paused already")


@schedules.command("resume")
@click.argument("schedule_id")
@click.pass_context
def schedules_resume(ctx: click.Context, schedule_id: str) -> None:
    """Fire a paused schedule again, from its next tick (ticks while paused are not caught up)."""
    app = load_app(ctx, read_only=True)
    changed = app.schedules.resume(schedule_id)
    click.echo(f"schedule {schedule_id!r} is resumed" if changed else f"schedule {schedule_id!r} was not paused")


@schedules.command("trigger")
@click.argument("schedule_id")
@click.pass_context
def schedules_trigger(ctx: click.Context, schedule_id: str) -> None:
    """Enqueue one job of a schedule now, as a tick would (its next tick does not move)."""
    app = load_app(ctx, read_only=True)
    job = app.schedules.trigger(schedule_id)
    if job.created:
        click.echo(f"schedule {schedule_id!r}: job {job.id} enqueued")
    else:
        click.echo(f"schedule {schedule_id!r}: nothing enqueued, job {job.id} of an earlier run is still "
                   "queued or running (overlap skip)")


@schedules.command("remove")
@click.argument("schedule_id")
@click.pass_context
def schedules_remove(ctx: click.Context, schedule_id: str) -> None:
    """Delete a schedule no live runner declares (an orphaned one); its history stays."""
    app = load_app(ctx, read_only=True)
    app.schedules.remove(schedule_id)
    click.echo(f"schedule {schedule_id!r} removed")


@schedules.command("history")
@click.argument("schedule_id")
@click.option("--limit", default=30, show_default=True, help="At most this many events, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def schedules_history(ctx: click.Context, schedule_id: str, limit: int, as_json: bool) -> None:
    """A schedule's latest events: each tick fired, missed or skipped, with the reason."""
    from .display import table

    app = load_app(ctx, read_only=True)
    rows = app.schedules.history(schedule_id, limit=limit)
    if as_json:
        _echo_json(rows)
        return
    click.echo(table([(r["at"], r["kind"], r["tick"], r["job_id"], r["reason"]) for r in rows],
                     ["at", "kind", "tick", "job", "reason"], empty="(no events)"))


# ------------------------------------------------------------ monitoring

@command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Beyond loopback it needs PGQUEUE_DASHBOARD_USER and "
                   "PGQUEUE_DASHBOARD_PASSWORD, or --no-auth.")
@click.option("--port", default=8089, show_default=True, type=int, help="Port to listen on (0: any free one).")
@click.option("--allow-actions", is_flag=True, help="Offer retry, cancel and delete of jobs, and the queue and schedule controls (off: read only).")
@click.option("--no-auth", is_flag=True, help="Listen beyond loopback without credentials (an "
                                              "authenticating proxy is in front).")
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int, allow_actions: bool, no_auth: bool) -> None:
    """Serve the web dashboard: queues, jobs, runners, the cross-runner timeline, health."""
    from .dashboard.server import run

    app = load_app(ctx, read_only=True)
    app.check_schema()
    ctx.exit(run(app, host=host, port=port, actions=allow_actions, no_auth=no_auth,
                 announce=lambda line: click.echo(line, err=True)))


@command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9188, show_default=True, type=int, help="Port to listen on (0: any free one).")
@click.option("--once", is_flag=True, help="Print the gauges once and exit.")
@click.pass_context
def metrics(ctx: click.Context, host: str, port: int, once: bool) -> None:
    """Serve the cluster gauges (queue depth, lag, runners, dead rows) for Prometheus."""
    from .dashboard.reader import Reader
    from .metrics.cluster import ClusterCollector, exposition, serve

    app = load_app(ctx, read_only=True)
    app.check_schema()
    reader = Reader(app.database.dsn, app.settings.schema, pool_size=1,
                    connect_timeout=app.settings.connect_timeout)
    try:
        if once:
            click.echo(exposition(ClusterCollector(reader))[0].decode(), nl=False)
            return
        server = serve(reader, host, port)
        click.echo(f"pgqueue cluster metrics on http://{host}:{server.server_address[1]}/metrics; "
                   "Ctrl-C stops it", err=True)
        try:
            server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        reader.close()


@cli.group(cls=_Group)
def embedded() -> None:
    """Manage the embedded PostgreSQL server (used when no DSN is configured)."""


def _embedded_server() -> Any:
    from .embedded import EmbeddedServer
    from .settings import Settings, project_root

    return EmbeddedServer(project_root() / Settings.load().embedded_dir)


@embedded.command("start")
def embedded_start() -> None:
    """Start the embedded server (it starts by itself on first use too)."""
    _setup_logging("WARNING")
    from .db import mask_dsn

    server = _embedded_server()
    dsn = server.ensure_running()
    click.echo(f"embedded PostgreSQL running in {server.directory}: {mask_dsn(dsn)} "
               f"(password in {server.password_file})")


@embedded.command("stop")
def embedded_stop() -> None:
    """Stop the embedded server; its data stays for the next start."""
    _setup_logging("WARNING")
    server = _embedded_server()
    if server.stop():
        click.echo(f"stopped the embedded PostgreSQL server in {server.directory}")
    else:
        click.echo(f"the embedded PostgreSQL server in {server.directory} was not running")


@embedded.command("status")
def embedded_status() -> None:
    """Say whether the embedded server runs, and where."""
    from .db import mask_dsn

    status = _embedded_server().status()
    if status["running"]:
        click.echo(f"running in {status['directory']}: {mask_dsn(status['dsn'])}")
    elif status["initialised"]:
        click.echo(f"stopped; data in {status['directory']}")
    else:
        click.echo(f"not created yet (it would live in {status['directory']})")


def main() -> None:
    cli(prog_name="pgqueue")


if __name__ == "__main__":
    main()
