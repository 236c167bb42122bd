"""The Flask extension: app factory, two apps on two databases, config, app context in tasks,
Flask-SQLAlchemy sessions (psycopg 2 and 3 URLs), the eager mode and the CLI."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterator

import psycopg
import pytest

import pgqueue
from pgqueue.contrib.flask import PgQueue
from pgqueue.testing import run_pending

flask = pytest.importorskip("flask")
flask_sqlalchemy = pytest.importorskip("flask_sqlalchemy")
from sqlalchemy import text  # noqa: E402


@pytest.fixture(scope="session")
def second_database(database_dsn: str) -> Iterator[str]:
    """A second database on the test server, for two apps with two databases."""
    name = f"pgqueue_flask_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(database_dsn)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PGQUEUE_") and key != "PGQUEUE_TEST_DSN":
            monkeypatch.delenv(key)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def flask_apps(clean_env: None, schema_name: str) -> Iterator[list]:
    """Flask apps made by the test; their pgqueue Apps are closed at the end."""
    made: list = []
    yield made
    for app in made:
        state = app.extensions.get("pgqueue")
        if state is not None:
            state.app.close()
        sqlalchemy = app.extensions.get("sqlalchemy")
        if sqlalchemy is not None:
            with app.app_context():
                for engine in sqlalchemy.engines.values():
                    engine.dispose()


def make_flask(made: list, name: str, **config: Any) -> "flask.Flask":
    app = flask.Flask(name)
    app.config.update(config)
    made.append(app)
    return app


def test_factory_pattern_two_apps_two_databases_and_app_context_in_tasks(
        flask_apps, database_dsn, second_database, schema_name) -> None:
    pgq = PgQueue()

    @pgq.task(name="whoami")  # declared before any app exists
    def whoami(n: int) -> str:
        return f"{flask.current_app.config['WHO']}:{n}"

    @pgq.task(name="async_whoami")
    async def async_whoami() -> str:
        await asyncio.sleep(0)
        return flask.current_app.config["WHO"]

    def create_app(who: str, dsn: str) -> "flask.Flask":
        app = make_flask(flask_apps, f"app_{who}", WHO=who, PGQUEUE_DSN=dsn, PGQUEUE_SCHEMA=schema_name)
        pgq.init_app(app)
        pgq.get_app(app).migrate()
        return app

    first, second = create_app("first", database_dsn), create_app("second", second_database)

    @pgq.task(name="late")  # declared after init_app: registered on both
    def late() -> str:
        return flask.current_app.name

    with first.app_context():
        jobs_first = [whoami.enqueue(1), async_whoami.enqueue(), late.enqueue()]
    with second.app_context():
        jobs_second = [whoami.enqueue(2)]
    assert jobs_first[0].id == jobs_second[0].id == 1, "each app has its own database"
    assert run_pending(pgq.get_app(first)).succeeded == 3
    assert run_pending(pgq.get_app(second)).succeeded == 1
    assert [j.result(timeout=1) for j in jobs_first] == ["first:1", "first", "app_first"]
    assert jobs_second[0].result(timeout=1) == "second:2"
    with pytest.raises(RuntimeError, match="already initialised on this Flask app"):
        pgq.init_app(first)
    other = PgQueue()
    with pytest.raises(RuntimeError, match="already initialised"):
        other.init_app(second)
    with pytest.raises(pgqueue.ConfigurationError, match="needs an app context"):
        whoami.enqueue(1)
    assert whoami.bound(second).app is pgq.get_app(second)


def test_config_keys_map_onto_settings(flask_apps, database_dsn, schema_name, monkeypatch) -> None:
    monkeypatch.setenv("PGQUEUE_CONCURRENCY", "3")
    monkeypatch.setenv("PGQUEUE_POLL_INTERVAL", "4")
    app = make_flask(flask_apps, "configured", PGQUEUE_DSN=database_dsn, PGQUEUE_SCHEMA=schema_name,
                     PGQUEUE_CONCURRENCY=7, PGQUEUE_QUEUES=["a", "b"])
    pgq = PgQueue(app)
    settings = pgq.get_app(app).settings
    assert (settings.concurrency, settings.queues, settings.poll_interval) == (7, ("a", "b"), 4.0), \
        "app.config wins over the environment, which still applies to keys it lacks"
    assert app.config["PGQUEUE_EAGER"] is False

    with pytest.raises(pgqueue.ConfigurationError, match="concurrency"):
        PgQueue(make_flask(flask_apps, "bad", PGQUEUE_DSN=database_dsn, PGQUEUE_CONCURRENCY=0))

    via_sqlalchemy = make_flask(flask_apps, "sa", PGQUEUE_USE_SQLALCHEMY=True, PGQUEUE_SCHEMA=schema_name,
                                SQLALCHEMY_DATABASE_URI=database_dsn.replace("postgresql://",
                                                                             "postgresql+psycopg2://"))
    pgq_sa = PgQueue(via_sqlalchemy)
    assert pgq_sa.get_app(via_sqlalchemy).settings.dsn.startswith("postgresql+psycopg2://")
    pgq_sa.get_app(via_sqlalchemy).migrate()  # the driver part is dropped: psycopg 3 connects
    binds = make_flask(flask_apps, "binds", PGQUEUE_USE_SQLALCHEMY=True, PGQUEUE_SQLALCHEMY_BIND="jobs",
                       SQLALCHEMY_BINDS={"jobs": {"url": database_dsn}})
    assert PgQueue(binds).get_app(binds).settings.dsn == database_dsn
    with pytest.raises(pgqueue.ConfigurationError, match="sqlite database; pgqueue needs PostgreSQL"):
        PgQueue(make_flask(flask_apps, "lite", PGQUEUE_USE_SQLALCHEMY=True,
                           SQLALCHEMY_DATABASE_URI="sqlite://"))
    with pytest.raises(pgqueue.ConfigurationError, match="SQLALCHEMY_DATABASE_URI is not"):
        PgQueue(make_flask(flask_apps, "none", PGQUEUE_USE_SQLALCHEMY=True))


def _sqlalchemy_app(flask_apps: list, url: str, schema: str, **config: Any) -> tuple:
    app = make_flask(flask_apps, f"sa_{uuid.uuid4().hex[:6]}", SQLALCHEMY_DATABASE_URI=url,
                     PGQUEUE_USE_SQLALCHEMY=True, PGQUEUE_SCHEMA=schema, **config)
    db = flask_sqlalchemy.SQLAlchemy()
    db.init_app(app)
    pgq = PgQueue()

    @pgq.task(name="count_orders")
    def count_orders() -> int:
        return db.session.execute(text(f'SELECT count(*) FROM "{schema}".orders')).scalar_one()

    pgq.init_app(app)
    pgq.get_app(app).migrate()
    with app.app_context():
        db.session.execute(text(f'CREATE TABLE "{schema}".orders (id serial PRIMARY KEY, item text)'))
        db.session.commit()
    return app, db, pgq, count_orders


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg"], ids=["psycopg2", "psycopg3"])
def test_session_enqueue_commits_and_rolls_back_with_the_session(flask_apps, database_dsn, schema_name,
                                                                  admin, driver) -> None:
    url = database_dsn.replace("postgresql://", f"{driver}://")
    app, db, pgq, count_orders = _sqlalchemy_app(flask_apps, url, schema_name)

    @app.post("/orders/<item>")
    def create(item: str) -> dict:
        db.session.execute(text(f'INSERT INTO "{schema_name}".orders (item) VALUES (:i)'), {"i": item})
        job = count_orders.options(conn=db.session).enqueue()
        if item == "commit":
            db.session.commit()
        elif item == "rollback":
            db.session.rollback()
        return {"job": job.id}  # "teardown": neither, the app context's end removes the session

    client = app.test_client()
    ids = {item: client.post(f"/orders/{item}").get_json()["job"] for item in ("commit", "rollback", "teardown")}
    jobs = admin.execute(f'SELECT id FROM "{schema_name}".jobs ORDER BY id').fetchall()
    assert jobs == [(ids["commit"],)], f"only the committed job exists: {ids}"
    orders = admin.execute(f'SELECT item FROM "{schema_name}".orders').fetchall()
    assert orders == [("commit",)]
    with app.app_context():
        engine = db.engine
        with engine.connect() as conn:  # an SQLAlchemy Connection
            with conn.begin():
                kept = count_orders.options(conn=conn).enqueue()
            transaction = conn.begin()
            count_orders.options(conn=conn).enqueue()
            transaction.rollback()
        ran = pgq.run_pending()
        assert ran.succeeded == 2 and kept.result(timeout=1) == 1
        assert pgq.job(ids["commit"]).result(timeout=1) == 1, "the task saw the committed order"


def test_a_hundred_tasks_using_db_session_leak_no_connection(flask_apps, database_dsn, schema_name,
                                                              admin) -> None:
    appname = f"pgqueue-flask-{uuid.uuid4().hex[:8]}"
    url = database_dsn.replace("postgresql://", "postgresql+psycopg://")
    app, db, pgq, count_orders = _sqlalchemy_app(
        flask_apps, url, schema_name,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2, "max_overflow": 0, "pool_timeout": 5,
                                   "connect_args": {"application_name": appname}})
    with app.app_context():
        jobs = pgq.enqueue_many(count_orders, [() for _ in range(100)])
    # Eight at once on an engine of two connections: a session left open by one task would
    # hold a connection for good, and the third task waiting for one would fail after 5 s.
    ran = pgq.run_pending(app, concurrency=8, timeout=60)
    assert (ran.succeeded, ran.failed) == (100, 0), ran
    assert all(j.result(timeout=1) == 0 for j in jobs)
    with app.app_context():
        assert db.engine.pool.checkedout() == 0, "every task's session gave its connection back"
    (sessions,) = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                (appname,)).fetchone()
    assert sessions <= 2, f"{sessions} server sessions for an engine of pool_size 2"


def test_eager_mode_runs_tasks_when_their_job_commits(flask_apps, database_dsn, schema_name) -> None:
    url = database_dsn.replace("postgresql://", "postgresql+psycopg://")
    app, db, pgq, count_orders = _sqlalchemy_app(flask_apps, url, schema_name, PGQUEUE_EAGER=True)

    @pgq.task(name="boom", max_attempts=3, retry_backoff=30)
    def boom() -> None:
        raise ValueError("boom")

    @pgq.task(name="chain")
    def chain(n: int) -> int:
        if n:
            chain.enqueue(n - 1)
        return n

    with app.app_context():
        job = count_orders.enqueue()
        assert job.status() == "succeeded" and job.result(timeout=1) == 0, "ran inside enqueue()"
        first = chain.enqueue(3)
        assert pgq.get_app().store.info(first.id)["status"] == "succeeded"
        failing = boom.enqueue()
        with pytest.raises(pgqueue.JobFailed, match="boom"):
            failing.result(timeout=1)
        assert failing.info()["attempts"] == 3, "eager runs the retries at once"

        db.session.execute(text(f'INSERT INTO "{schema_name}".orders (item) VALUES (\'x\')'))
        in_session = count_orders.options(conn=db.session).enqueue()
        assert db.session.execute(text(f'SELECT status FROM "{schema_name}".jobs WHERE id = :i'),
                                  {"i": in_session.id}).scalar_one() == "queued"
        db.session.commit()  # the drain runs here, the order committed: the task sees it
        assert in_session.result(timeout=1) == 1

        count_orders.options(conn=db.session).enqueue()
        db.session.rollback()  # nothing to run, and no drain left due
        assert pgq.run_pending().claimed == 0

        async def aenqueue() -> Any:
            job = await count_orders.aenqueue()
            await pgq.get_app().aclose()
            return job

        assert asyncio.run(aenqueue()).result(timeout=1) == 1

    with app.app_context():
        with db.engine.connect() as conn:
            with conn.begin():
                later = count_orders.options(conn=conn).enqueue()
        assert later.status() == "queued", "the commit of a Connection is not seen: at teardown"
    assert later.result(timeout=1) == 1, "drained when the app context ended"

    app.config["PGQUEUE_EAGER"] = False
    with app.app_context():
        off = count_orders.enqueue()
        assert off.status() == "queued"


def test_cli_migrate_status_and_jobs(flask_apps, database_dsn, schema_name) -> None:
    app = make_flask(flask_apps, "cli", PGQUEUE_DSN=database_dsn, PGQUEUE_SCHEMA=schema_name)
    pgq = PgQueue(app)

    @pgq.task(name="noop")
    def noop() -> None:
        return None

    runner = app.test_cli_runner()
    result = runner.invoke(args=["pgqueue", "migrate"])
    assert result.exit_code == 0, result.output
    assert f"schema {schema_name!r} migrated from nothing to" in result.output
    with app.app_context():
        noop.enqueue()
    result = runner.invoke(args=["pgqueue", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert '"queued": 1' in result.output
    result = runner.invoke(args=["pgqueue", "jobs", "--status", "queued"])
    assert result.exit_code == 0 and "noop" in result.output, result.output
    result = runner.invoke(args=["pgqueue", "job", "999"])
    assert result.exit_code != 0 and "there is no job 999" in result.output, result.output
    result = runner.invoke(args=["pgqueue", "work", "--concurrency", "0"])
    assert result.exit_code != 0 and "concurrency" in result.output, result.output
    app.config["PGQUEUE_EAGER"] = True
    result = runner.invoke(args=["pgqueue", "work"])
    assert result.exit_code != 0 and "PGQUEUE_EAGER is on" in result.output, result.output
