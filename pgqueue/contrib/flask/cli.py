"""``flask pgqueue work | migrate | status | jobs | job | retry | cancel | prune``.

``work`` runs a worker for the app's queue (the app found by ``flask --app`` / ``FLASK_APP``,
a factory included): every task inside ``app.app_context()``. Its options are ``pgqueue
work``'s, except ``--processes`` (run several ``flask pgqueue work``). The other commands
are ``pgqueue``'s own, run on the app's pgqueue App, with their own options
(``flask pgqueue status --json``, ``flask pgqueue jobs --help``).
"""

from __future__ import annotations

from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

PASSTHROUGH = ("migrate", "status", "jobs", "job", "retry", "cancel", "prune")

pgqueue_group = AppGroup("pgqueue", help="pgqueue's worker and commands, on this app's queue.")


def _queue_app() -> Any:
    state = current_app.extensions.get("pgqueue")
    if state is None:  # pragma: no cover - the group is only added by init_app
        raise click.ClickException("pgqueue is not initialised on this app (pgq.init_app(app))")
    return state.app


@pgqueue_group.command("work")
@click.option("--queues", "-q", metavar="A,B", help="Queues to serve (default: all). [PGQUEUE_QUEUES]")
@click.option("--concurrency", "-c", type=int, metavar="N", help="Jobs run at once. [PGQUEUE_CONCURRENCY]")
@click.option("--poll-interval", type=float, metavar="S",
              help="Seconds between polls without notification. [PGQUEUE_POLL_INTERVAL]")
@click.option("--listen/--no-listen", default=None,
              help="Wake on LISTEN/NOTIFY, or poll only (transaction-mode poolers). [PGQUEUE_LISTEN]")
@click.option("--shutdown-timeout", type=float, metavar="S",
              help="Seconds running jobs get to finish on SIGTERM. [PGQUEUE_SHUTDOWN_TIMEOUT]")
@click.option("--heartbeat-interval", type=float, metavar="S",
              help="Seconds between heartbeats. [PGQUEUE_HEARTBEAT_INTERVAL]")
@click.option("--runner-dead-after", type=float, metavar="S",
              help="Seconds of silence before a runner is declared dead. [PGQUEUE_RUNNER_DEAD_AFTER]")
def work(**options: Any) -> None:
    """Run a worker: claim jobs, run them in this app's context, until SIGTERM/SIGINT."""
    from ... import errors
    from ...cli import _setup_logging
    from ...worker import Runner

    app = _queue_app()
    if current_app.config.get("PGQUEUE_EAGER"):
        raise click.ClickException(
            "PGQUEUE_EAGER is on for this app: its jobs run where they are enqueued (a test "
            "setting); turn it off to run a worker")
    try:
        if any(value is not None for value in options.values()):
            app.close()  # the factory may have used the database: this process now works
        app.configure(**options)
        _setup_logging(app.settings.log_level)
        if not app.tasks:
            raise errors.ConfigurationError(
                "this app's PgQueue has no tasks: a worker would have nothing to run (define "
                "tasks with @pgq.task in a module the app imports)")
        click.echo(f"pgqueue: database {app.database_description}, schema {app.settings.schema!r}",
                   err=True)
        code = Runner(app).run()
    except errors.PgQueueError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise click.exceptions.Exit(code)


def _passthrough(name: str) -> None:
    @pgqueue_group.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []},
                   help=f"`pgqueue {name}` on this app's queue (flask pgqueue {name} --help).")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        from ...cli import cli

        try:
            cli.main(args=[name, *args], prog_name="flask pgqueue", obj={"app_object": _queue_app()},
                     standalone_mode=False)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                raise


for _name in PASSTHROUGH:
    _passthrough(_name)
