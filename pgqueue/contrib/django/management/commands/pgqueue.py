"""``manage.py pgqueue work | status | healthcheck`` (and ``jobs | job | retry | cancel |
prune``), the ``pgqueue`` commands for a Django project.

``work`` runs a worker for ``pgqueue.contrib.django.app``: the tasks of every app's
``tasks.py`` and the ``django.tasks`` tasks of ``PgQueueBackend``. It opens its own
connections (a psycopg 3 pool, a LISTEN connection) with the credentials of
``DATABASES[PGQUEUE_DATABASE_ALIAS]``; tasks use Django's connections as usual, refreshed
around every task. The options are ``pgqueue work``'s (``-v`` is Django's verbosity; the
log level is ``PGQUEUE_LOG_LEVEL``).

``healthcheck`` exits non-zero when the database cannot be reached, when pgqueue's Django
migrations are not all applied, when the schema is not at the revision this pgqueue needs,
or when the worker could not connect; it prints one line per check.

The other commands are ``pgqueue``'s own, run on this project's database and schema.
Schema changes go through ``manage.py migrate``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

PASSTHROUGH = ("status", "jobs", "job", "retry", "cancel", "prune")


class Command(BaseCommand):
    help = "Run a pgqueue worker (work), or inspect and operate the queue (status, healthcheck, ...)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        work = commands.add_parser("work", help="Run a worker until SIGTERM/SIGINT.")
        work.add_argument("--queues", "-q", metavar="A,B", help="Queues to serve (default: all). "
                          "[PGQUEUE_QUEUES]")
        work.add_argument("--concurrency", "-c", type=int, metavar="N",
                          help="Jobs run at once per process. [PGQUEUE_CONCURRENCY]")
        work.add_argument("--processes", "-p", type=int, metavar="P",
                          help="Worker processes under one supervisor. [PGQUEUE_PROCESSES]")
        work.add_argument("--poll-interval", type=float, metavar="S",
                          help="Seconds between polls without notification. [PGQUEUE_POLL_INTERVAL]")
        work.add_argument("--listen", action=argparse.BooleanOptionalAction, default=None,
                          help="Wake on LISTEN/NOTIFY, or poll only. [PGQUEUE_LISTEN]")
        work.add_argument("--shutdown-timeout", type=float, metavar="S",
                          help="Seconds running jobs get to finish on SIGTERM. [PGQUEUE_SHUTDOWN_TIMEOUT]")
        work.add_argument("--heartbeat-interval", type=float, metavar="S",
                          help="Seconds between heartbeats. [PGQUEUE_HEARTBEAT_INTERVAL]")
        work.add_argument("--runner-dead-after", type=float, metavar="S",
                          help="Seconds of silence before a runner is declared dead. "
                               "[PGQUEUE_RUNNER_DEAD_AFTER]")
        commands.add_parser("healthcheck", help="Check the database, migrations, schema and the "
                                                "worker's connection; exit 1 if one fails.")
        for name in PASSTHROUGH:
            commands.add_parser(name, add_help=False,
                                help=f"`pgqueue {name}` on this project's queue "
                                     f"(manage.py pgqueue {name} --help).")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse = parser.parse_args

        def parse_args(args: Any = None, namespace: Any = None) -> Any:
            # The CLI's own commands take the CLI's options, parsed by the CLI itself.
            args = list(sys.argv[2:] if args is None else args)
            if args and args[0] in PASSTHROUGH:
                options = parse([args[0]], namespace)
                options.rest = _without_django_options(args[1:])
                return options
            return parse(args, namespace)

        parser.parse_args = parse_args
        return parser

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options["subcommand"]
        if subcommand == "work":
            self._work(options)
        elif subcommand == "healthcheck":
            self._healthcheck()
        else:
            self._passthrough(subcommand, options.get("rest") or [])

    # ---------------------------------------------------------------- work

    def _work(self, options: dict[str, Any]) -> None:
        from pgqueue import errors
        from pgqueue.worker import Runner
        from pgqueue.contrib.django import app

        overrides = {name: options.get(name) for name in (
            "queues", "concurrency", "processes", "poll_interval", "listen", "shutdown_timeout",
            "heartbeat_interval", "runner_dead_after")}
        try:
            app.configure(**overrides)
            _setup_logging(app.settings.log_level)
            description = app.database_description
        except errors.PgQueueError as exc:
            raise CommandError(_in_django_words(str(exc))) from None
        self.stderr.write(f"pgqueue: database {description}, schema {app.settings.schema!r}")
        if app.settings.processes > 1:
            code = self._supervise(app, options)
        else:
            try:
                code = Runner(app).run()
            except errors.PgQueueError as exc:
                raise CommandError(_in_django_words(str(exc))) from None
            finally:
                app.finished_signals.drain(timeout=5.0)
        if code:
            raise CommandError(f"the worker stopped with exit status {code}", returncode=code)

    def _supervise(self, app: Any, options: dict[str, Any]) -> int:
        from django.conf import settings

        from pgqueue.worker.supervisor import Supervisor

        # The way this process was started: `manage.py ...`, or `python -m django ...`.
        main = sys.argv[0]
        start = ["-m", "django"] if main.endswith("__main__.py") else [main]
        child = [sys.executable, *start, "pgqueue", "work", "--processes", "1"]
        for flag, name in (("--queues", "queues"), ("--concurrency", "concurrency"),
                           ("--poll-interval", "poll_interval"),
                           ("--shutdown-timeout", "shutdown_timeout"),
                           ("--heartbeat-interval", "heartbeat_interval"),
                           ("--runner-dead-after", "runner_dead_after")):
            if options.get(name) is not None:
                child += [flag, str(options[name])]
        if options.get("listen") is not None:
            child.append("--listen" if options["listen"] else "--no-listen")
        env = dict(os.environ, DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE)
        return Supervisor(child, app.settings.processes, env=env).run()

    # --------------------------------------------------------- healthcheck

    def _healthcheck(self) -> None:
        failures: list[str] = []

        def report(ok: bool, what: str) -> None:
            self.stdout.write(f"{'ok  ' if ok else 'FAIL'}  {what}")
            if not ok:
                failures.append(what)

        for ok, what in health(self):
            report(ok, what)
        if failures:
            raise CommandError(f"{len(failures)} check(s) failed", returncode=1)

    # --------------------------------------------------------- passthrough

    def _passthrough(self, name: str, rest: list[str]) -> None:
        import click

        from pgqueue.cli import cli

        try:
            cli.main(args=["--app", "pgqueue.contrib.django:app", name, *rest],
                     prog_name="manage.py pgqueue", standalone_mode=False)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                raise CommandError(f"exit status {exc.exit_code}", returncode=exc.exit_code) from None
        except click.ClickException as exc:
            raise CommandError(_in_django_words(exc.format_message()),
                               returncode=exc.exit_code) from None
        except click.exceptions.Abort:
            raise CommandError("aborted") from None


def _without_django_options(args: list[str]) -> list[str]:
    """The CLI's arguments, without ``--settings``/``--pythonpath`` (manage.py took them)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--settings", "--pythonpath"):
            skip = True
        elif not arg.startswith(("--settings=", "--pythonpath=")):
            kept.append(arg)
    return kept


def _setup_logging(level: str) -> None:
    """pgqueue's worker log: on the project's own handlers when its LOGGING gives the root
    logger some (each record then carries ``job_id``, ``job_task``, ``job_attempt``), else on
    stderr in pgqueue's format."""
    import logging

    from pgqueue.context import JobLogFilter, install_job_logging

    root = logging.getLogger()
    if not root.handlers:
        install_job_logging(level)
        return
    for handler in root.handlers:
        if not any(isinstance(f, JobLogFilter) for f in handler.filters):
            handler.addFilter(JobLogFilter())
    logging.getLogger("pgqueue").setLevel(level)


def _in_django_words(message: str) -> str:
    """A core message, for a Django project (its schema comes from `manage.py migrate`, its
    DSN from DATABASES)."""
    for core, django in ((" (or App.migrate())", ""), ("`pgqueue migrate`", "`manage.py migrate`"),
                         ("in the DSN", "in settings.DATABASES"), ("to the DSN", "to settings.DATABASES")):
        message = message.replace(core, django)
    return re.sub(r"`pgqueue --schema \w+ migrate`", "`manage.py migrate`", message)


def health(command: Any) -> list[tuple[bool, str]]:
    """(ok, line) per check, in order; a failed check skips those that need it."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    from pgqueue import db, sqlfiles
    from pgqueue.contrib.django import app, dbconn

    results: list[tuple[bool, str]] = []
    try:
        alias = app.database_alias
        schema = app.settings.schema
        connection = dbconn.connection_for(alias)
    except Exception as exc:
        return [(False, f"configuration: {exc}")]
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        results.append((True, f"database {alias!r} reachable"))
    except Exception as exc:
        return [(False, f"database {alias!r} unreachable: {db._one_line(exc)}")]
    finally:
        connections[alias].close()

    executor = MigrationExecutor(connections[alias])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "pgqueue"]
    pending = [migration.name for migration, _ in executor.migration_plan(targets)
               if migration.app_label == "pgqueue"]
    if pending:
        results.append((False, f"pgqueue's Django migrations not applied: {', '.join(pending)} "
                               f"(run `manage.py migrate pgqueue`)"))
    else:
        results.append((True, "pgqueue's Django migrations applied"))
    on_disk = {name for app_label, name in executor.loader.disk_migrations if app_label == "pgqueue"}
    missing = [f"{m.revision}_{m.slug}" for m in sqlfiles.migrations()
               if f"{m.revision}_{m.slug}" not in on_disk]
    if missing:
        results.append((False, f"this pgqueue has schema migrations without Django migration "
                               f"wrappers: {', '.join(missing)} (reinstall pgqueue)"))
    connections[alias].close()

    try:
        dsn = dbconn.worker_dsn(alias)
        conn = db.connect(dsn, connect_timeout=app.settings.connect_timeout)
    except Exception as exc:
        results.append((False, f"worker connection (psycopg 3) failed: {db._one_line(exc)}"))
        return results
    try:
        from pgqueue import migrations as schema_migrations

        try:
            revision = schema_migrations.check_revision(conn, schema)
            results.append((True, f"schema {schema!r} at revision {revision}, as this pgqueue "
                                  "needs"))
        except Exception as exc:
            results.append((False, _in_django_words(str(exc))))
        results.append((True, f"worker connection (psycopg 3) to {db.mask_dsn(dsn)} ok"))
    finally:
        conn.close()
    return results
