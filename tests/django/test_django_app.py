"""The app itself: settings, imports without a database, migrations (one to one with
sql/migrations, alembic's bookkeeping kept), healthcheck, status, the admin."""

from __future__ import annotations

import re
import textwrap
import uuid

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client, override_settings
from psycopg import conninfo

from djhelpers import django_env, manage
from pgqueue import sqlfiles
from pgqueue.contrib.django import app
from testapp import tasks

# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("key, value, message", [
    ("PGQUEUE_CONCURRENCY", "many", "settings.PGQUEUE_CONCURRENCY"),
    ("PGQUEUE_CONCURRENCY", 0, "settings.PGQUEUE_CONCURRENCY"),
    ("PGQUEUE_SCHEMA", "Bad-Name", "settings.PGQUEUE_SCHEMA"),
    ("PGQUEUE_LISTEN", "perhaps", "settings.PGQUEUE_LISTEN"),
    ("PGQUEUE_CONCURENCY", 4, "did you mean PGQUEUE_CONCURRENCY"),
    ("PGQUEUE_DSN", "postgresql://x/y", "DATABASES"),
    ("PGQUEUE_DATABASE_ALIAS", 3, "settings.PGQUEUE_DATABASE_ALIAS"),
    ("PGQUEUE_IMPORT_PATHS", "one.module", "settings.PGQUEUE_IMPORT_PATHS"),
    ("PGQUEUE_AUTODISCOVER_MODULE", "not a module", "settings.PGQUEUE_AUTODISCOVER_MODULE"),
    ("PGQUEUE_HEARTBEAT_INTERVAL", 5.0, "settings.PGQUEUE_HEARTBEAT_INTERVAL"),
])
def test_a_bad_setting_raises_improperly_configured_naming_the_key(key, value, message) -> None:
    with override_settings(**{key: value}):
        with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
            app.config  # noqa: B018
    assert app.settings.concurrency == 20  # read again once the override is gone


def test_settings_map_onto_the_core_settings() -> None:
    with override_settings(PGQUEUE_CONCURRENCY=7, PGQUEUE_QUEUES=["a", "b"], PGQUEUE_LISTEN=False):
        assert (app.settings.concurrency, app.settings.queues, app.settings.listen) == (7, ("a", "b"), False)
        assert app.settings.source("concurrency") == "settings.PGQUEUE_CONCURRENCY"
    assert app.settings.heartbeat_interval == 0.5  # from the test project's settings.py
    assert app.database_alias == "default"


def test_importing_and_decorating_touches_no_database() -> None:
    """Django set up, every task module imported and more tasks decorated, with DATABASES
    pointing at a port where nothing listens."""
    code = textwrap.dedent("""
        import django
        django.setup()
        import testapp.tasks
        from pgqueue.contrib.django import app
        from pgqueue.contrib.django.compat import task

        @app.task
        def later(x): return x

        def module_level(x): return x
        module_level.__module__ = "testapp.tasks"
        t = task(module_level)
        print("ok", len(app.settings.schema))
    """)
    env = django_env(PGQ_DJANGO_DSN="postgresql://nobody@127.0.0.1:1/none")
    done = manage_python(code, env)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr


def manage_python(code: str, env: dict[str, str]):
    import subprocess
    import sys

    from djhelpers import HERE

    return subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True,
                          text=True, timeout=60)


def test_using_the_app_before_django_is_ready_says_what_to_do() -> None:
    code = textwrap.dedent("""
        from pgqueue.contrib.django import app
        @app.task
        def early(x): return x
        try:
            early.enqueue(1)
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    done = manage_python(code, django_env())
    assert "DjangoNotReady" in done.stdout and "INSTALLED_APPS" in done.stdout, (done.stdout, done.stderr)


# ---------------------------------------------------------------- migrations


def test_django_migrations_wrap_sql_migrations_one_to_one() -> None:
    from pathlib import Path

    import pgqueue.contrib.django.migrations as package

    folder = Path(package.__file__).parent
    wrappers = sorted(p.stem for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py"))
    wanted = [f"{m.revision}_{m.slug}" for m in sqlfiles.migrations()]
    missing = [name for name in wanted if name not in wrappers]
    extra = [name for name in wrappers if name not in wanted]
    how = "\n".join(
        f"  create {folder / (name + '.py')} with these two lines:\n"
        "      from pgqueue.contrib.django.migration_ops import sql_migration\n"
        "      Migration = sql_migration(__name__)" for name in missing)
    assert not missing, (f"sql/migrations has {', '.join(missing)} without a Django migration "
                         f"wrapper (manage.py migrate would never apply it):\n{how}")
    assert not extra, (f"Django migrations {', '.join(extra)} match no file in sql/migrations: "
                       "rename each to its SQL file's name, or remove it")
    for name in wrappers[1:]:
        text = (folder / f"{name}.py").read_text()
        assert "Migration = sql_migration(__name__)" in text, f"{name}.py is not a plain wrapper"


def test_makemigrations_check_is_clean() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_django_migrate_keeps_alembic_version_and_pgqueue_migrate_continues(pg, dsn) -> None:
    head = sqlfiles.head_revision()
    assert pg.execute("SELECT version_num FROM pgqueue.alembic_version").fetchall() == [(head,)]
    from pgqueue import migrations

    assert migrations.migrate(dsn, "pgqueue") == (head, head)  # nothing left for alembic


def test_a_schema_made_by_pgqueue_migrate_is_not_applied_again(database_dsn, tmp_path) -> None:
    """`pgqueue migrate` first, then `manage.py migrate`: Django records its migrations, and
    applies nothing (the job written before is still there); then the reverse order, and
    `migrate pgqueue zero` / back up."""
    from pgqueue import migrations

    name = f"pgqdj_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = conninfo.make_conninfo(database_dsn, dbname=name)
        env = django_env(PGQ_DJANGO_DB=name)
        migrations.migrate(dsn, "pgqueue")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO pgqueue.jobs (task) VALUES ('kept')")
        done = manage("migrate", env=env)
        assert done.returncode == 0, done.stderr
        done = manage("showmigrations", "pgqueue", env=env)
        assert done.stdout.count("[X]") == len(sqlfiles.migrations()), done.stdout
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT task FROM pgqueue.jobs").fetchall() == [("kept",)]
        done = manage("migrate", "pgqueue", "0001", env=env)
        assert done.returncode == 0, done.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT version_num FROM pgqueue.alembic_version").fetchall() == [("0001",)]
        assert migrations.migrate(dsn, "pgqueue")[0] == "0001"  # alembic continues from it
        done = manage("migrate", "pgqueue", env=env)  # Django finds it done
        assert done.returncode == 0, done.stderr
        done = manage("migrate", "pgqueue", "zero", env=env)
        assert done.returncode == 0, done.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('pgqueue.jobs')").fetchone() == (None,)
        done = manage("migrate", "pgqueue", env=env)
        assert done.returncode == 0, done.stderr
        assert migrations.migrate(dsn, "pgqueue") == (sqlfiles.head_revision(),) * 2
    finally:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


# --------------------------------------------------------- healthcheck, status


def test_healthcheck_passes_and_fails_when_it_should(database_dsn) -> None:
    done = manage("pgqueue", "healthcheck")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.count("ok  ") == 4, done.stdout

    unreachable = manage("pgqueue", "healthcheck",
                         env=django_env(PGQ_DJANGO_DSN="postgresql://postgres@127.0.0.1:1/x"))
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stdout, unreachable.stdout

    name = f"pgqdj_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = django_env(PGQ_DJANGO_DB=name)
        unmigrated = manage("pgqueue", "healthcheck", env=env)
        assert unmigrated.returncode == 1, unmigrated.stdout
        assert "not applied" in unmigrated.stdout and "manage.py migrate" in unmigrated.stdout
        assert manage("migrate", env=env).returncode == 0
        with psycopg.connect(conninfo.make_conninfo(database_dsn, dbname=name),
                             autocommit=True) as conn:
            conn.execute("UPDATE pgqueue.alembic_version SET version_num = '0002'")
        behind = manage("pgqueue", "healthcheck", env=env)
        assert behind.returncode == 1 and "revision 0002" in behind.stdout, behind.stdout
    finally:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_status_and_jobs_commands() -> None:
    tasks.add.enqueue(1, 2)
    status = manage("pgqueue", "status")
    assert status.returncode == 0, status.stderr
    assert "default" in status.stdout and "Runners" in status.stdout
    jobs = manage("pgqueue", "jobs", "--status", "queued")
    assert "testapp.tasks.add" in jobs.stdout, jobs.stdout
    wrong = manage("pgqueue", "jobs", "--status", "nope")
    assert wrong.returncode != 0 and "not a job status" in wrong.stderr


# --------------------------------------------------------------------- admin


@pytest.fixture
def admin_client(db_user) -> Client:
    client = Client()
    client.force_login(db_user)
    return client


@pytest.fixture
def db_user():
    from django.contrib.auth.models import User

    user = User.objects.create_superuser(f"admin-{uuid.uuid4().hex[:6]}", "a@example.com", "pw")
    yield user
    user.delete()


def test_admin_lists_filters_and_shows_a_job(admin_client, pg) -> None:
    from pgqueue.contrib.django.models import Job

    job = tasks.add.enqueue(1, 2)
    pg.execute("UPDATE pgqueue.jobs SET status = 'failed', finished_at = now(), "
               """error = '{"type": "ValueError", "message": "boom", "traceback": "Traceback: <here>"}' """
               "WHERE id = %s", (job.id,))
    for query in ("", "?status__exact=failed", "?queue__exact=default", "?task__exact=testapp.tasks.add"):
        page = admin_client.get(f"/admin/pgqueue/job/{query}")
        assert page.status_code == 200 and f">{job.id}<" in page.content.decode(), query
    detail = admin_client.get(f"/admin/pgqueue/job/{job.id}/change/").content.decode()
    assert "ValueError: boom" in detail and "Traceback: &lt;here&gt;" in detail and "<pre" in detail
    assert "enqueued" in detail  # the history, inline
    pg.execute("INSERT INTO pgqueue.runners (host, pid, concurrency, version, heartbeat_at) "
               "VALUES ('web-1', 4242, 8, 'x', now() - interval '90 seconds')")
    runners = admin_client.get("/admin/pgqueue/runner/").content.decode()
    assert "web-1" in runners and "Heartbeat age" in runners and ">90." in runners
    assert admin_client.get("/admin/pgqueue/jobevent/").status_code == 200
    with pytest.raises(TypeError, match="read-only"):
        Job.objects.filter(id=job.id).update(status="queued")


def test_admin_actions_retry_and_cancel_through_the_cli_code(admin_client, pg) -> None:
    failed = tasks.add.enqueue(1, 2)
    queued = tasks.add.enqueue(3, 4)
    pg.execute("UPDATE pgqueue.jobs SET status = 'failed', finished_at = now() WHERE id = %s",
               (failed.id,))
    response = admin_client.post("/admin/pgqueue/job/", {
        "action": "retry_jobs", "_selected_action": [failed.id]}, follow=True)
    assert response.status_code == 200 and "queued again" in response.content.decode()
    assert failed.status() == "queued"
    events = [r[0] for r in pg.execute("SELECT kind FROM pgqueue.job_events WHERE job_id = %s "
                                       "ORDER BY id", (failed.id,))]
    assert events == ["enqueued", "retried"]
    response = admin_client.post("/admin/pgqueue/job/", {
        "action": "cancel_jobs", "_selected_action": [queued.id]}, follow=True)
    assert "is cancelled" in response.content.decode()
    assert queued.status() == "cancelled"
    response = admin_client.post("/admin/pgqueue/job/", {
        "action": "retry_jobs", "_selected_action": [queued.id]}, follow=True)
    assert "only failed jobs can be retried" in response.content.decode()
