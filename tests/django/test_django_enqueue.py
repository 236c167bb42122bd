"""Enqueue on Django's connection: the job commits or rolls back with the caller's data, both
ways (the classic App and django.tasks), savepoints and ATOMIC_REQUESTS included; a key
conflict never breaks the caller's transaction; a TestCase sees its own jobs."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection, transaction
from django.test import Client, TestCase

from pgqueue.contrib.django import app
from pgqueue.contrib.django.compat import TaskResultStatus
from testapp.models import Note
from testapp.tasks import add, dj_add


def enqueue_classic(value: int) -> int:
    return add.enqueue(value, 1).id


def enqueue_django(value: int) -> int:
    return int(dj_add.enqueue(value, 1).id)


WAYS = [pytest.param(enqueue_classic, id="app.task"), pytest.param(enqueue_django, id="django.tasks")]


def job_ids(pg: psycopg.Connection) -> list[int]:
    return [r[0] for r in pg.execute('SELECT id FROM pgqueue.jobs ORDER BY id').fetchall()]


def test_django_uses_the_driver_asked_for() -> None:
    import os

    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    assert is_psycopg3 == (os.environ.get("PGQ_DJANGO_DRIVER", "psycopg") == "psycopg")


@pytest.mark.parametrize("enqueue", WAYS)
def test_rollback_leaves_no_job(enqueue, pg) -> None:
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Note.objects.create(text="rolled back")
            job_id = enqueue(1)
            assert job_ids(pg) == []  # not visible to others before the commit
            raise RuntimeError("roll back")
    assert job_ids(pg) == []
    assert not Note.objects.exists()
    from pgqueue.errors import JobNotFound

    with pytest.raises(JobNotFound):
        app.job(job_id).status()


@pytest.mark.parametrize("enqueue", WAYS)
def test_savepoint_rollback_drops_only_its_job(enqueue, pg) -> None:
    with transaction.atomic():
        kept = enqueue(1)
        try:
            with transaction.atomic():  # a savepoint
                enqueue(2)
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
        sid = getattr(transaction, "savepoint_create", None) or transaction.savepoint
        sid = sid()
        enqueue(3)
        transaction.savepoint_rollback(sid)
        Note.objects.create(text="kept")
    assert job_ids(pg) == [kept]


@pytest.mark.parametrize("enqueue", WAYS)
def test_commit_makes_the_job_visible_and_outside_atomic_it_commits_at_once(enqueue, pg) -> None:
    with transaction.atomic():
        first = enqueue(1)
    assert job_ids(pg) == [first]
    second = enqueue(2)  # autocommit
    assert job_ids(pg) == [first, second]


def test_the_job_reads_its_own_uncommitted_job_and_its_status() -> None:
    with transaction.atomic():
        job = add.enqueue(1, 2)
        assert job.status() == "queued"
        assert job.info()["args"] == [1, 2]
        result = dj_add.enqueue(3, 4)
        assert dj_add.get_result(result.id).status == TaskResultStatus.READY
        transaction.set_rollback(True)


def test_key_conflict_in_the_same_transaction_returns_the_holder() -> None:
    with transaction.atomic():
        first = add.options(key="k1").enqueue(1, 1)
        second = add.options(key="k1").enqueue(2, 2)
        assert (second.id, second.created) == (first.id, False)
        keyed = dj_add.using_pgqueue(key="k2")
        one = keyed.enqueue(1, 1)
        two = keyed.enqueue(2, 2)
        assert two.id == one.id
        Note.objects.create(text="after the conflicts")  # the transaction is fine
    assert Note.objects.count() == 1


def test_key_conflict_under_repeatable_read_does_not_break_the_callers_transaction(pg) -> None:
    """The holder commits after our snapshot: PostgreSQL refuses the insert (serialization
    failure); the savepoint around a keyed enqueue keeps our transaction usable."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT 1")  # the snapshot is taken

        def elsewhere() -> None:
            add.options(key="rr").enqueue(0, 0)  # commits at once (autocommit, its own thread)
            connection.close()

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(30)
        with pytest.raises(Exception) as raised:
            add.options(key="rr").enqueue(1, 1)
        assert "serializ" in str(raised.value).lower()
        Note.objects.create(text="still usable")
    assert Note.objects.filter(text="still usable").exists()
    assert len(job_ids(pg)) == 1


@pytest.mark.parametrize("atomic_requests", [True, False], ids=["ATOMIC_REQUESTS", "autocommit"])
def test_a_failing_view_and_atomic_requests(atomic_requests, pg) -> None:
    connection.settings_dict["ATOMIC_REQUESTS"] = atomic_requests
    try:
        response = Client(raise_request_exception=False).post("/fail/")
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    assert response.status_code == 500
    if atomic_requests:  # the request's transaction rolled back: the note and both jobs
        assert job_ids(pg) == [] and not Note.objects.exists()
    else:  # each statement committed on its own
        assert len(job_ids(pg)) == 2 and Note.objects.count() == 1


@pytest.mark.parametrize("atomic_requests", [True, False], ids=["ATOMIC_REQUESTS", "autocommit"])
def test_a_view_that_fails_inside_its_atomic_block(atomic_requests, pg) -> None:
    connection.settings_dict["ATOMIC_REQUESTS"] = atomic_requests
    try:
        client = Client(raise_request_exception=False)
        failed = client.post("/note/", {"fail": True}, content_type="application/json")
        ok = client.post("/note/", {"text": "hi"}, content_type="application/json")
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    assert failed.status_code == 500 and ok.status_code == 200
    body = ok.json()
    assert job_ids(pg) == sorted([body["job"], int(body["result"])])
    assert list(Note.objects.values_list("id", flat=True)) == [body["note"]]


def test_conn_may_name_an_alias_or_pass_a_connection(pg) -> None:
    with transaction.atomic():
        a = add.options(conn="default").enqueue(1, 1)
        b = add.options(conn=connection).enqueue(2, 2)
        transaction.set_rollback(True)
    assert job_ids(pg) == []
    with psycopg.connect(pg.info.dsn) as own:  # a connection of the caller's: its transaction
        c = add.options(conn=own).enqueue(3, 3)
    assert job_ids(pg) == [c.id]
    assert a.id != b.id


class TestCaseSeesItsOwnJobs(TestCase):
    """Django's TestCase wraps each test in a transaction that is never committed."""

    def test_enqueue_and_read_back(self) -> None:
        from pgqueue.contrib.django.models import Job

        job = add.enqueue(1, 2)
        result = dj_add.enqueue(3, 4)
        self.assertEqual(job.status(), "queued")
        self.assertEqual(dj_add.get_result(result.id).args, [3, 4])
        self.assertEqual(sorted(Job.objects.values_list("id", flat=True)),
                         sorted([job.id, int(result.id)]))

    def test_task_enqueued_is_sent_on_commit(self) -> None:
        from pgqueue.contrib.django.compat import task_enqueued

        sent = []

        def receiver(sender, task_result, **kwargs):
            sent.append(task_result.id)

        task_enqueued.connect(receiver)
        try:
            with self.captureOnCommitCallbacks(execute=False) as callbacks:
                result = dj_add.enqueue(1, 1)
            self.assertEqual(sent, [])
            for callback in callbacks:
                callback()
            self.assertEqual(sent, [result.id])
        finally:
            task_enqueued.disconnect(receiver)
