"""The SQL API: enqueue, cancel, retry and the queue controls as functions of the schema, from
psql (the real client) and from a plain psycopg connection that never imports pgqueue; the
trigger recipe; the three least-privilege roles, each on its own login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import psycopg
import pytest

from helpers import wait_for
from test_cli import run as run_cli


def psql(dsn: str, sql: str, *, user: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", dsn, "-c", sql]
    if user:
        args += ["-U", user]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_enqueue_from_psql_runs_on_a_python_worker(wapp, start_worker, database_dsn) -> None:
    schema = wapp.settings.schema
    out = psql(database_dsn, f"SELECT {schema}.enqueue('add', '[2, 3]', queue => 'default')")
    assert out.returncode == 0, out.stderr
    job = wapp.job(int(out.stdout.strip()))
    start_worker()
    assert job.result(timeout=20) == 5
    # The same through named arguments: a delay, a key, and the job's id back.
    out = psql(database_dsn, f"SELECT {schema}.enqueue('add', '[1, 1]', key => 'k1', delay => interval '0 seconds')")
    assert wapp.job(int(out.stdout.strip())).result(timeout=20) == 2


def test_a_plain_psycopg_client_without_pgqueue(wapp, start_worker, database_dsn) -> None:
    """Another language's view: only SQL. (A subprocess that never imports pgqueue.)"""
    schema = wapp.settings.schema
    code = f"""
import json, sys, psycopg
with psycopg.connect({database_dsn!r}, autocommit=True) as conn:
    first = conn.execute("SELECT {schema}.enqueue('echo', %s, key => 'report', on_conflict => 'replace', delay => interval '1 hour')", (json.dumps(["v1"]),)).fetchone()[0]
    again = conn.execute("SELECT * FROM {schema}.enqueue_job('echo', %s, key => 'report', on_conflict => 'replace')", (json.dumps(["v2"]),)).fetchone()
    many = [r[0] for r in conn.execute("SELECT * FROM {schema}.enqueue_many('add', '[[1, 2], [3, 4]]')")]
    cancelled = conn.execute("SELECT {schema}.cancel(%s, 'no longer needed')", (first,)).fetchone()[0]
    assert 'pgqueue' not in sys.modules
    print(json.dumps({{"first": first, "again": list(again), "many": many, "cancelled": cancelled}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["again"] == [result["first"], False, True]  # replaced while queued
    assert result["cancelled"] == "cancelled"
    assert wapp.job(result["first"]).info()["args"] == ["v2"]
    start_worker()
    assert [wapp.job(i).result(timeout=20) for i in result["many"]] == [3, 7]


def test_keyed_enqueues_from_sql_and_python_racing_make_one_job(wapp, database_dsn, admin) -> None:
    schema = wapp.settings.schema
    barrier = threading.Barrier(40)
    ids: list[int] = []
    failures: list[BaseException] = []

    def from_python() -> None:
        try:
            barrier.wait()
            ids.append(wapp.tasks["add"].options(key="race").enqueue(1, 2).id)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    def from_sql() -> None:
        try:
            with psycopg.connect(database_dsn, autocommit=True) as conn:
                barrier.wait()
                ids.append(conn.execute(f"SELECT {schema}.enqueue('add', '[1, 2]', key => 'race')").fetchone()[0])
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=from_python if n % 2 else from_sql) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(set(ids)) == 1 and len(ids) == 40
    assert admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 1


BAD_CALLS = [
    ("enqueue(NULL)", "task must be a task name"),
    ("enqueue('')", "task must be a task name"),
    ("enqueue('t', '{}')", "args must be a JSON array"),
    ("enqueue('t', '[]', '[]')", "kwargs must be a JSON object"),
    ("enqueue('t', queue => ' mail')", "queue must be a name"),
    ("enqueue('t', queue => NULL)", "queue must be a name"),
    ("enqueue('t', priority => NULL)", "priority must be a whole number"),
    ("enqueue('t', max_attempts => 0)", "max_attempts must be at least 1"),
    ("enqueue('t', run_at => now(), delay => interval '1 minute')", "give run_at or delay, not both"),
    ("enqueue('t', delay => interval '-1 minute')", "delay must not be negative"),
    ("enqueue('t', meta => '[1]')", "meta must be a JSON object"),
    ("enqueue('t', key => 'k', key_scope => 'forever')", "key_scope must be active, queued or period"),
    ("enqueue('t', key => 'k', on_conflict => 'ignore')", "on_conflict must be return, replace or skip"),
    ("enqueue('t', key => '')", "key must be 1 to 512 characters"),
    ("enqueue('t', key_scope => 'queued')", "key_scope 'queued' needs a key"),
    ("enqueue('t', key => 'k', key_scope => 'period')", "needs a positive key_period"),
    ("enqueue('t', key => 'k', key_period => interval '1 hour')", "key_period goes with key_scope period"),
    ("enqueue('t', debounce => interval '5 seconds')", "debounce needs a key"),
    ("enqueue('t', key => 'k', debounce_max => interval '5 seconds')", "debounce_max goes with debounce"),
    ("enqueue('t', lock => '')", "lock must be 1 to 512 characters"),
    ("enqueue('t', lock => 'l', lock_limit => 0)", "lock_limit must be at least 1"),
    ("enqueue_many('t', '[[1], 2]')", "each item of args must be a JSON array"),
    ("enqueue_many('t', '[[1]]', '[{}, {}]')", "kwargs must be NULL, or a JSON array of objects as long as args"),
    ("cancel(987654321)", "there is no job 987654321"),
    ("retry(987654321)", "there is no job 987654321"),
    ("limit_queue('q', concurrency => 0)", "concurrency must be at least 1"),
    ("limit_queue('q', rate => 5)", "give rate and per together"),
    ("pause_queue('')", "queue must be a name"),
]


@pytest.mark.parametrize("call,message", BAD_CALLS, ids=[c for c, _ in BAD_CALLS])
def test_every_bad_argument_gets_its_error(app, admin, call, message) -> None:
    schema = app.settings.schema
    with pytest.raises(psycopg.Error) as caught:
        admin.execute(f"SELECT * FROM {schema}.{call}")
    assert message in str(caught.value)
    assert "pgqueue." in str(caught.value)  # names the function
    assert admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 0


def test_retry_and_cancel_from_sql_say_what_they_did(wapp, admin) -> None:
    schema = wapp.settings.schema
    job = wapp.tasks["add"].enqueue(1, 2)
    admin.execute(f"""UPDATE "{schema}".jobs SET status = 'failed', finished_at = now(), due = false WHERE id = %s""",
                  (job.id,))
    assert admin.execute(f"SELECT {schema}.retry(%s, 'from psql')", (job.id,)).fetchone()[0] == "queued"
    with pytest.raises(psycopg.Error, match="has status queued: only failed jobs can be retried|is queued: only failed"):
        admin.execute(f"SELECT {schema}.retry(%s)", (job.id,))
    assert admin.execute(f"SELECT {schema}.cancel(%s, 'from psql')", (job.id,)).fetchone()[0] == "cancelled"
    assert admin.execute(f"SELECT {schema}.cancel(%s)", (job.id,)).fetchone()[0] == "cancelled"  # twice: harmless
    reasons = [r[0] for r in admin.execute(
        f'SELECT reason FROM "{schema}".job_events WHERE job_id = %s ORDER BY id', (job.id,))]
    assert "from psql" in reasons


API_FUNCTIONS = {"enqueue", "enqueue_job", "enqueue_many", "cancel", "cancel_jobs", "retry", "retry_jobs",
                 "pause_queue", "resume_queue", "limit_queue"}


def test_every_function_has_a_comment_and_the_api_a_fixed_search_path(app, admin) -> None:
    rows = admin.execute("""
        SELECT p.proname, obj_description(p.oid, 'pg_proc'), p.proconfig, p.prosecdef,
               has_function_privilege('public', p.oid, 'EXECUTE')
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = %s""", (app.settings.schema,)).fetchall()
    assert len(rows) >= 20
    assert API_FUNCTIONS <= {r[0] for r in rows}
    for name, comment, config, definer, public in rows:
        assert comment, f"function {name} has no COMMENT"
        if definer or name in API_FUNCTIONS:
            assert definer, f"{name} should run as its owner"
            assert config and "search_path=pg_catalog, pg_temp" in config, f"{name}: no fixed search_path"
            assert not public, f"anyone may call {name}"


TRIGGER_RECIPE = """
CREATE TABLE {app_schema}.orders (id bigint PRIMARY KEY, email text NOT NULL);

CREATE FUNCTION {app_schema}.orders_enqueue_receipt() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.enqueue('echo', jsonb_build_array(NEW.email), queue => 'mail',
                             key => 'receipt:' || NEW.id);
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_enqueue_receipt AFTER INSERT ON {app_schema}.orders
FOR EACH ROW EXECUTE FUNCTION {app_schema}.orders_enqueue_receipt();
"""


def test_the_trigger_recipe_commits_and_rolls_back_with_the_row(wapp, start_worker, admin, database_dsn) -> None:
    schema = wapp.settings.schema
    app_schema = f"{schema}_app"
    admin.execute(f"CREATE SCHEMA {app_schema}")
    try:
        admin.execute(TRIGGER_RECIPE.format(schema=schema, app_schema=app_schema))
        with psycopg.connect(database_dsn) as conn:
            conn.execute(f"INSERT INTO {app_schema}.orders VALUES (1, 'ann@example.com')")
            # Not visible to anyone before the commit.
            assert admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 0
            conn.rollback()
        assert admin.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 0
        with psycopg.connect(database_dsn) as conn:
            conn.execute(f"INSERT INTO {app_schema}.orders VALUES (2, 'bob@example.com')")
            conn.commit()
        (job_id,) = admin.execute(f'SELECT id FROM "{schema}".jobs').fetchone()
        start_worker("--queues", "mail")
        assert wapp.job(job_id).result(timeout=20) == "bob@example.com"
    finally:
        admin.execute(f"DROP SCHEMA {app_schema} CASCADE")


# -------------------------------------------------------------------------- roles

@pytest.fixture
def logins(admin, schema_name):
    """Three login roles of this test, with a password (the embedded server asks for one)."""
    made = {kind: f"{schema_name}_{kind}_login" for kind in ("producer", "worker", "reader")}
    for login in made.values():
        admin.execute(f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{LOGIN_PASSWORD}'")
    yield made
    groups = [f"{schema_name}_{kind}" for kind in ("producer", "worker", "reader")]
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY (%s)",
                  (list(made.values()),))
    admin.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')
    for role in [*made.values(), *groups]:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


LOGIN_PASSWORD = "pgqueue-test-login"


def login_dsn(dsn: str, login: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=login, password=LOGIN_PASSWORD)


def as_login(dsn: str, login: str) -> psycopg.Connection:
    return psycopg.connect(login_dsn(dsn, login), autocommit=True)


def refused(conn: psycopg.Connection, sql: str) -> bool:
    try:
        conn.execute(sql)
    except psycopg.errors.InsufficientPrivilege:
        return True
    except psycopg.Error as exc:  # e.g. "must be owner of table jobs"
        return "must be owner" in str(exc) or "permission denied" in str(exc)
    return False


def test_roles_prints_the_sql(database_dsn, schema_name) -> None:
    out = run_cli("--dsn", database_dsn, "--schema", schema_name, "roles")
    assert out.returncode == 0, out.stderr
    assert f'CREATE ROLE "{schema_name}_producer" NOLOGIN' in out.stdout
    assert f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema_name}" TO "{schema_name}_reader"' in out.stdout


def test_three_roles_each_do_what_they_must_and_nothing_else(wapp, database_dsn, logins, start_worker, admin) -> None:
    schema = wapp.settings.schema
    out = run_cli("--dsn", database_dsn, "--schema", schema, "grant",
                  *[a for kind, login in logins.items() for a in ("--to", f"{kind}={login}")])
    assert out.returncode == 0, out.stderr
    again = run_cli("--dsn", database_dsn, "--schema", schema, "grant")  # idempotent
    assert again.returncode == 0, again.stderr
    wapp.tasks["add"].enqueue(0, 0)  # a job the producer did not make

    producer = as_login(database_dsn, logins["producer"])
    job_id = producer.execute(f"SELECT {schema}.enqueue('add', '[20, 22]')").fetchone()[0]
    assert producer.execute(f'SELECT status FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()[0] == "queued"
    other = producer.execute(f"SELECT {schema}.enqueue('add', '[1, 1]', delay => interval '1 hour')").fetchone()[0]
    assert producer.execute(f"SELECT {schema}.cancel(%s)", (other,)).fetchone()[0] == "cancelled"
    for sql in [f'UPDATE "{schema}".jobs SET priority = 5',
                f"""INSERT INTO "{schema}".jobs (queue, task) VALUES ('default', 'add')""",
                f'DELETE FROM "{schema}".jobs',
                f'DROP TABLE "{schema}".jobs', f'TRUNCATE "{schema}".jobs',
                f'ALTER TABLE "{schema}".jobs ADD COLUMN x int',
                f"SELECT {schema}.retry({job_id})", f"SELECT {schema}.pause_queue('default')",
                f'SELECT * FROM "{schema}".runners', f'UPDATE "{schema}".runners SET waiting = false']:
        assert refused(producer, sql), f"the producer may: {sql}"

    reader = as_login(database_dsn, logins["reader"])
    assert reader.execute(f'SELECT count(*) FROM "{schema}".queue_stats').fetchone()[0] >= 1
    assert reader.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 3
    for sql in [f"SELECT {schema}.enqueue('add', '[1, 1]')", f'UPDATE "{schema}".jobs SET priority = 1',
                f'DELETE FROM "{schema}".job_events', f'TRUNCATE "{schema}".job_events',
                f"""INSERT INTO "{schema}".queues (name) VALUES ('x')""", f"SELECT {schema}.cancel({job_id})"]:
        assert refused(reader, sql), f"the reader may: {sql}"

    # A real worker logged in as the worker role runs the producer's job; a Python App logged in
    # as the producer waits for its result.
    worker_dsn = login_dsn(database_dsn, logins["worker"])
    start_worker(dsn=worker_dsn)
    import pgqueue

    producer_app = pgqueue.App(dsn=login_dsn(database_dsn, logins["producer"]),
                               schema=schema)
    try:
        producer_app.task(name="add")(lambda a, b: a + b)
        assert producer_app.job(job_id).result(timeout=30) == 42
        made = producer_app.tasks["add"].enqueue(2, 2)
        assert made.result(timeout=30) == 4
    finally:
        producer_app.close()
    worker = as_login(database_dsn, logins["worker"])
    for sql in [f'DROP TABLE "{schema}".jobs', f'TRUNCATE "{schema}".jobs',
                f'ALTER TABLE "{schema}".jobs ADD COLUMN x int', f'DROP SCHEMA "{schema}" CASCADE',
                f'CREATE TABLE "{schema}".mine (x int)', f'DROP FUNCTION {schema}.enqueue_job']:
        assert refused(worker, sql), f"the worker may: {sql}"
    for conn in (producer, reader, worker):
        conn.close()


def test_grant_says_what_is_wrong(database_dsn, schema_name, app) -> None:
    out = run_cli("--dsn", database_dsn, "--schema", schema_name, "grant", "--to", "owner=someone")
    assert out.returncode != 0 and "role kind must be one of producer, worker, reader" in out.stderr
    out = run_cli("--dsn", database_dsn, "--schema", schema_name, "grant", "--to", "producer")
    assert out.returncode != 0 and "--to takes KIND=LOGIN" in out.stderr
    assert "Traceback" not in out.stderr
