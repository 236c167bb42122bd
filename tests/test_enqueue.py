"""Enqueueing: single, with options, unique keys, bulk, transactional; Job handles; errors."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

import pgqueue
from helpers import wait_for


@pytest.fixture
def add(app: pgqueue.App):
    @app.task(name="add")
    def add(a: int, b: int = 0) -> int:
        return a + b

    return add


def row(app: pgqueue.App, job: pgqueue.Job) -> dict:
    return job.info()


def events(admin: psycopg.Connection, schema: str, job_id: int) -> list[tuple]:
    return admin.execute(
        f'SELECT from_status, to_status, reason FROM "{schema}".job_events WHERE job_id = %s ORDER BY id',
        (job_id,),
    ).fetchall()


def test_enqueue_stores_the_call(app, add, admin) -> None:
    job = add.enqueue(1, b=2)
    info = row(app, job)
    assert (info["task"], info["args"], info["kwargs"]) == ("add", [1], {"b": 2})
    assert (info["queue"], info["priority"], info["status"], info["attempts"]) == ("default", 0, "queued", 0)
    assert info["max_attempts"] == 3
    assert job.status() == "queued"
    assert events(admin, app.settings.schema, job.id) == [(None, "queued", "enqueued")]


def test_task_is_still_callable_directly(add) -> None:
    assert add(2, 3) == 5


def test_task_decorator_without_and_with_options(app) -> None:
    @app.task
    def plain() -> None: ...

    @app.task(queue="mail", priority=5, max_attempts=7, name="send")
    def send(to: str) -> None: ...

    assert plain.name.endswith("test_task_decorator_without_and_with_options.<locals>.plain")
    info = send.enqueue("a@example.com").info()
    assert (info["task"], info["queue"], info["priority"], info["max_attempts"]) == ("send", "mail", 5, 7)


def test_options_override_and_are_immutable(app, add) -> None:
    base = add.options(priority=3)
    derived = base.options(queue="other", key="k")
    assert base.queue is None and base.key is None
    info = derived.enqueue(1).info()
    assert (info["priority"], info["queue"], info["key"]) == (3, "other", "k")


def test_delay_and_run_at_set_the_start_time(app, add) -> None:
    before = app.database.fetch("SELECT now() AS now")[0]["now"]
    delayed = add.options(delay=60).enqueue(1).info()
    assert dt.timedelta(seconds=59) < delayed["run_at"] - before < dt.timedelta(seconds=70)
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert add.options(run_at=when).enqueue(1).info()["run_at"] == when


def test_unique_key_returns_the_unfinished_holder(app, add) -> None:
    first = add.options(key="report-7").enqueue(1)
    again = add.options(key="report-7").enqueue(2)
    assert first.created and not again.created
    assert again.id == first.id
    first.cancel()
    third = add.options(key="report-7").enqueue(3)
    assert third.created and third.id != first.id


def test_enqueue_many_inserts_in_order_in_one_statement(app, add, admin) -> None:
    jobs = app.enqueue_many(add, [(i, i) for i in range(1000)] + [{"a": 5, "b": 6}], priority=2)
    assert len(jobs) == 1001
    rows = admin.execute(
        f'SELECT id, args, kwargs, priority FROM "{app.settings.schema}".jobs ORDER BY id'
    ).fetchall()
    assert [r[0] for r in rows] == [j.id for j in jobs]
    assert rows[0][1:] == ([0, 0], {}, 2)
    assert rows[999][1] == [999, 999]
    assert rows[1000][1:3] == ([], {"a": 5, "b": 6})
    count = admin.execute(f'SELECT count(*) FROM "{app.settings.schema}".job_events').fetchone()[0]
    assert count == 1001
    assert app.enqueue_many(add, []) == []


def test_transactional_enqueue_follows_the_callers_transaction(app, add, database_dsn) -> None:
    with psycopg.connect(database_dsn) as conn:
        rolled_back = add.options(conn=conn).enqueue(1)
        conn.rollback()
        committed = add.options(conn=conn).enqueue(2)
        # Not visible to others until the caller commits.
        with pytest.raises(pgqueue.JobNotFound):
            committed.status()
        conn.commit()
    with pytest.raises(pgqueue.JobNotFound):
        rolled_back.status()
    assert committed.status() == "queued"


def test_transactional_enqueue_many(app, add, database_dsn) -> None:
    with psycopg.connect(database_dsn) as conn:
        jobs = app.enqueue_many(add, [(1,), (2,)], conn=conn)
        conn.rollback()
    with pytest.raises(pgqueue.JobNotFound):
        jobs[0].status()


def test_transactional_enqueue_on_psycopg2_and_sqlalchemy(app, add, database_dsn) -> None:
    import psycopg2
    import sqlalchemy

    conn2 = psycopg2.connect(database_dsn)
    try:
        gone = add.options(conn=conn2).enqueue(1)
        conn2.rollback()
        kept = add.options(conn=conn2).enqueue(2)
        conn2.commit()
    finally:
        conn2.close()
    with pytest.raises(pgqueue.JobNotFound):
        gone.status()
    assert kept.info()["args"] == [2]

    engine = sqlalchemy.create_engine(database_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as sa_conn:
            gone = add.options(conn=sa_conn).enqueue(3)
            sa_conn.rollback()
            kept = add.options(conn=sa_conn).enqueue(4)
            sa_conn.commit()
    finally:
        engine.dispose()
    with pytest.raises(pgqueue.JobNotFound):
        gone.status()
    assert kept.info()["args"] == [4]


def test_unserialisable_argument_names_it_and_inserts_nothing(app, add, admin) -> None:
    with pytest.raises(pgqueue.ArgumentNotSerializable, match=r"argument 'b'\[0\]\['when'\] of task 'add' is a value of type datetime.datetime"):
        add.enqueue(1, [{"when": dt.datetime.now()}])
    with pytest.raises(pgqueue.ArgumentNotSerializable, match="argument 'a' .* the float nan"):
        add.enqueue(float("nan"))
    with pytest.raises(pgqueue.ArgumentNotSerializable, match="item 1: argument 'b' of task 'add' is a value of type set"):
        app.enqueue_many(add, [(1, 2), (1, {3})])
    count = admin.execute(f'SELECT count(*) FROM "{app.settings.schema}".jobs').fetchone()[0]
    assert count == 0


def test_arguments_that_do_not_fit_the_signature_are_refused(app, add) -> None:
    with pytest.raises(pgqueue.InvalidArguments, match="missing a required argument: 'a'"):
        add.enqueue()
    with pytest.raises(pgqueue.InvalidArguments, match="too many positional arguments"):
        add.enqueue(1, 2, 3)
    with pytest.raises(pgqueue.InvalidArguments, match="unexpected keyword argument 'c'"):
        app.enqueue_many(add, [{"a": 1, "c": 2}])
    with pytest.raises(pgqueue.InvalidArguments, match="item 0 .* is of type int"):
        app.enqueue_many(add, [1])
    # Positional-only bulks are checked once per number of arguments: the first item of a
    # length that does not bind is named, in tuples and in lists alike.
    with pytest.raises(pgqueue.InvalidArguments, match="item 2: .*too many positional arguments"):
        app.enqueue_many(add, [(1, 2), (3,), (5, 6, 7), (8, 9, 10)])
    with pytest.raises(pgqueue.InvalidArguments, match="item 1: .*too many positional arguments"):
        app.enqueue_many(add, [[1, 2], [3, 4, 5]])
    with pytest.raises(pgqueue.InvalidArguments, match="item 3: .*missing a required argument: 'a'"):
        app.enqueue_many(add, iter([(1, 2)] * 3 + [()]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay must be a number of seconds >= 0"),
        ({"run_at": dt.datetime(2030, 1, 1)}, "run_at must be a timezone-aware datetime"),
        ({"delay": 1, "run_at": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)}, "not both"),
        ({"priority": "high"}, "priority must be a whole number"),
        ({"queue": ""}, "queue must be a non-empty name"),
        ({"key": ""}, "key must be a non-empty string"),
        ({"max_attempts": 0}, "max_attempts must be a whole number >= 1"),
        ({"retries": 3}, "unknown enqueue option 'retries'"),
    ],
)
def test_bad_options_are_refused(add, options, message) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match=message):
        add.options(**options)


def test_task_registration_errors(app) -> None:
    @app.task(name="same")
    def one() -> None: ...

    with pytest.raises(pgqueue.ConfigurationError, match="two tasks are named 'same'"):
        app.task(name="same")(lambda: None)
    with pytest.raises(pgqueue.ConfigurationError, match="no_retry takes exception classes"):
        app.task(no_retry=("ValueError",))(lambda: None)
    with pytest.raises(pgqueue.ConfigurationError, match="timeout must be a number of seconds > 0"):
        app.task(timeout=0)(lambda: None)


def test_cancel_a_queued_job_and_a_finished_one(app, add, admin) -> None:
    job = add.enqueue(1)
    assert job.cancel() == "cancelled"
    assert job.status() == "cancelled"
    assert job.cancel() == "cancelled"  # harmless twice
    assert events(admin, app.settings.schema, job.id)[-1] == ("queued", "cancelled", "cancelled by user")
    done = add.enqueue(2)
    admin.execute(f"UPDATE \"{app.settings.schema}\".jobs SET status = 'succeeded' WHERE id = %s", (done.id,))
    with pytest.raises(pgqueue.JobStateError, match=f"job {done.id} already succeeded"):
        done.cancel()


def test_unknown_job_is_reported(app) -> None:
    with pytest.raises(pgqueue.JobNotFound, match="there is no job 424242"):
        app.job(424242).status()


def test_result_wakes_on_the_finishing_notification(app, add) -> None:
    job = add.enqueue(1)
    waiting = threading.Event()
    outcome: list[BaseException] = []

    def wait() -> None:
        waiting.set()
        try:
            job.result(timeout=30)
        except BaseException as exc:  # asserted below
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiting.wait(10)
    # Cancel once the waiter is registered: the cancelling statement then notifies it.
    wait_for(lambda: app.database.fetch(
        f'SELECT count(*) AS n FROM "{app.settings.schema}".result_waiters WHERE job_id = %(id)s',
        {"id": job.id})[0]["n"], message="the waiter to register")
    job.cancel()
    waiter.join(timeout=20)
    assert not waiter.is_alive(), "result() did not wake up on the cancellation"
    assert len(outcome) == 1 and isinstance(outcome[0], pgqueue.JobCancelled)
    waiters = app.database.fetch(f'SELECT count(*) AS n FROM "{app.settings.schema}".result_waiters')
    assert waiters[0]["n"] == 0, "a waiter that stopped waiting must leave no row behind"


def test_result_times_out_with_a_timeout_error(app, add) -> None:
    job = add.enqueue(1)
    with pytest.raises(TimeoutError, match=f"job {job.id} did not finish within 0.2 s"):
        job.result(timeout=0.2)


def test_result_of_finished_jobs(app, add, admin) -> None:
    ok, bad = add.enqueue(1), add.enqueue(2)
    schema = app.settings.schema
    admin.execute(f"""UPDATE "{schema}".jobs SET status = 'succeeded', result = '{{"x": 1}}' WHERE id = %s""", (ok.id,))
    admin.execute(f"""UPDATE "{schema}".jobs SET status = 'failed',
                      error = '{{"type": "ValueError", "message": "boom"}}' WHERE id = %s""", (bad.id,))
    assert ok.result(timeout=5) == {"x": 1}
    with pytest.raises(pgqueue.JobFailed, match=f"job {bad.id} failed: ValueError: boom") as info:
        bad.result(timeout=5)
    assert info.value.error["type"] == "ValueError"


def test_rows_inserted_by_hand_are_checked(app, admin) -> None:
    schema = app.settings.schema
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_args_is_array"):
        admin.execute(f"""INSERT INTO "{schema}".jobs (task, args) VALUES ('t', '{{"a": 1}}')""")
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_status_valid"):
        admin.execute(f"""INSERT INTO "{schema}".jobs (task, status) VALUES ('t', 'done')""")


def test_notify_only_when_a_runner_waits(app, add, database_dsn) -> None:
    schema = app.settings.schema
    with psycopg.connect(database_dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{schema}.jobs"')
        add.enqueue(1)  # nobody waits: no NOTIFY
        listener.execute(
            f"""INSERT INTO "{schema}".runners (host, pid, concurrency, version, waiting, queues)
                VALUES ('h', 1, 1, 'test', true, ARRAY['default'])""")
        add.options(queue="elsewhere").enqueue(2)  # waiting runner does not serve it: no NOTIFY
        add.options(delay=3600).enqueue(3)  # not runnable yet: no NOTIFY
        app.enqueue_many(add, [(i,) for i in range(50)])  # one NOTIFY for the whole statement
        received = list(listener.notifies(timeout=2.0))
    assert [(n.channel, n.payload) for n in received] == [(f"{schema}.jobs", "default")]


def test_bad_dsn_and_unreachable_server_give_one_clear_line(make_app) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="cannot parse DSN 'nonsense'"):
        make_app(dsn="nonsense").task(lambda: None, name="t").enqueue()
    app = make_app(dsn="postgresql://someone:secret@127.0.0.1:1/db", connect_timeout=2)
    with pytest.raises(pgqueue.DatabaseUnavailable) as info:
        app.task(lambda: None, name="t").enqueue()
    message = str(info.value)
    assert "postgresql://someone:***@127.0.0.1:1/db" in message and "secret" not in message
    assert "\n" not in message


def test_many_waiters_share_one_listening_connection(make_app) -> None:
    """Thirty callers wait on results with a pool of two connections: waiting holds none."""
    app = make_app(pool_size=2)
    app.migrate()
    task = app.task(name="t")(lambda: None)
    jobs = [task.enqueue() for _ in range(30)]
    outcomes: list[BaseException] = []

    def wait(job: pgqueue.Job) -> None:
        try:
            job.result(timeout=60)
        except BaseException as exc:  # asserted below
            outcomes.append(exc)

    threads = [threading.Thread(target=wait, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    schema = app.settings.schema
    wait_for(lambda: app.database.fetch(f'SELECT count(*) AS n FROM "{schema}".result_waiters')[0]["n"] == 30,
             timeout=30, message="all thirty waiters to register")
    for job in jobs:
        job.cancel()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 30 and all(isinstance(o, pgqueue.JobCancelled) for o in outcomes), outcomes
