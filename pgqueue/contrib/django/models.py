"""Read-only views of pgqueue's tables for the admin and for queries: ``Job``, ``JobEvent``,
``Runner``.

The tables belong to pgqueue's schema (``PGQUEUE_SCHEMA``) and to its SQL migrations: these
models are unmanaged (``managed = False``), and they refuse writes. Every change of a job goes
through pgqueue (``task.enqueue``, ``job.cancel()``, the admin's actions, ``manage.py pgqueue
retry``), whose statements also write the job's history; a plain ``UPDATE`` would not.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from . import app

SCHEMA = app.settings.schema
READ_ONLY = (
    "pgqueue's tables are read-only through Django's models: change jobs through pgqueue "
    "(task.enqueue(), app.job(id).cancel(), the admin's actions, manage.py pgqueue retry), "
    "so that each change is written to the job's history"
)


def table(name: str) -> str:
    """A schema-qualified table name, quoted as Django leaves it."""
    return f'"{SCHEMA}"."{name}"'


class ReadOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise TypeError(READ_ONLY)

    def delete(self) -> Any:
        raise TypeError(READ_ONLY)

    def bulk_create(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(READ_ONLY)

    def bulk_update(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(READ_ONLY)

    def create(self, **kwargs: Any) -> Any:
        raise TypeError(READ_ONLY)

    def get_or_create(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(READ_ONLY)

    def update_or_create(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(READ_ONLY)


class ReadOnlyModel(models.Model):
    objects = ReadOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(READ_ONLY)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(READ_ONLY)


class TextArrayField(models.Field):
    """A ``text[]`` column, read as a list (without needing ``django.contrib.postgres``)."""

    def db_type(self, connection: Any) -> str:
        return "text[]"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return value if value is None else list(value)


STATUSES = [(s, s) for s in ("queued", "running", "succeeded", "failed", "cancelled")]
RUNNER_STATES = [(s, s) for s in ("running", "stopped", "dead")]


class Runner(ReadOnlyModel):
    """One worker process start (``<schema>.runners``)."""

    id = models.BigIntegerField(primary_key=True)
    host = models.TextField()
    pid = models.IntegerField()
    queues = TextArrayField(null=True)  # NULL: every queue
    concurrency = models.IntegerField()
    version = models.TextField()
    heartbeat_interval = models.FloatField()
    dead_after = models.FloatField()
    state = models.TextField(choices=RUNNER_STATES)
    waiting = models.BooleanField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True)
    reason = models.TextField(null=True)
    liveness = models.BooleanField()
    lost_reason = models.TextField(null=True)
    max_crashes = models.IntegerField(null=True)

    class Meta:
        managed = False
        db_table = table("runners")
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"runner {self.id} ({self.host}, pid {self.pid}, {self.state})"


class Job(ReadOnlyModel):
    """One requested execution of a task (``<schema>.jobs``)."""

    id = models.BigIntegerField(primary_key=True)
    queue = models.TextField()
    task = models.TextField()
    args = models.JSONField()
    kwargs = models.JSONField()
    priority = models.IntegerField()
    run_at = models.DateTimeField()
    status = models.TextField(choices=STATUSES)
    due = models.BooleanField()
    attempts = models.IntegerField()
    failures = models.IntegerField()
    crashes = models.IntegerField()
    max_attempts = models.IntegerField()
    key = models.TextField(null=True)
    runner_id = models.BigIntegerField(null=True)
    result = models.JSONField(null=True)
    error = models.JSONField(null=True)
    cancel_requested = models.BooleanField()
    enqueued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    meta = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = table("jobs")
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"job {self.id} ({self.task}, {self.status})"


class JobEvent(ReadOnlyModel):
    """One step of a job's history (``<schema>.job_events``)."""

    id = models.BigIntegerField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.DO_NOTHING, db_constraint=False,
                            related_name="events")
    at = models.DateTimeField()
    kind = models.TextField(null=True)
    from_status = models.TextField(null=True)
    to_status = models.TextField()
    attempt = models.IntegerField()
    runner_id = models.BigIntegerField(null=True)
    reason = models.TextField()
    error = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = table("job_events")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"event {self.id} of job {self.job_id}: {self.kind or self.to_status}"
