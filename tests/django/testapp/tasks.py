"""Tasks of both kinds, found by autodiscovery (this is the app's tasks.py)."""

from __future__ import annotations

import asyncio
import os
import time

import pgqueue
from pgqueue.contrib.django import app
from pgqueue.contrib.django.compat import task

from .models import Note, Seen


def seen(what: str, detail: object = None) -> None:
    job = pgqueue.current_job()
    Seen.objects.create(what=what, job_id=job.id if job else None,
                        attempt=job.attempt if job else None, detail=detail, pid=os.getpid())


# ------------------------------------------------------------------ classic App

@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(max_attempts=1)
def count_notes(prefix: str) -> int:
    """Uses the ORM (with DEBUG=True every query would be logged)."""
    return Note.objects.filter(text__startswith=prefix).count()


@app.task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@app.task(max_attempts=5)
def sleep_unless_retried(seconds: float) -> str:
    """Sleeps on its first attempt (a worker gets killed meanwhile); returns on the next."""
    seen("running")
    if pgqueue.current_job().attempt == 1:
        time.sleep(seconds)
    return "done"


# ---------------------------------------------------------------- django.tasks

@task
def dj_add(a: int, b: int) -> int:
    return a + b


@task(priority=5, queue_name="other")
def dj_other(x: str) -> str:
    return x.upper()


@task(takes_context=True)
def dj_context(context, value: str) -> dict:
    return {"attempt": context.attempt, "id": context.task_result.id,
            "status": str(context.task_result.status), "value": value}


@task
async def dj_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    count = await Note.objects.acount()  # the ORM from an async task
    return a + b + count * 0


@task(takes_context=True)
def dj_flaky(context, failures: int) -> int:
    """Fails its first `failures` attempts."""
    if context.attempt <= failures:
        raise ValueError(f"attempt {context.attempt} fails")
    return context.attempt


dj_flaky = dj_flaky.using_pgqueue(max_attempts=3)


@task
def dj_fail() -> None:
    raise LookupError("always")


dj_fail = dj_fail.using_pgqueue(max_attempts=1)


@task
def dj_bad_result() -> object:
    return {1, 2}


dj_bad_result = dj_bad_result.using_pgqueue(max_attempts=1)


@task(takes_context=True)
def dj_crash_once(context, seconds: float) -> str:
    """Sleeps on its first attempt (its worker gets SIGKILLed meanwhile); returns after."""
    seen("dj_crash_once", {"attempt": context.attempt})
    if context.attempt == 1:
        time.sleep(seconds)
    return f"finished on attempt {context.attempt}"


dj_crash_once = dj_crash_once.using_pgqueue(max_attempts=5)


@task
def dj_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def queries_logged() -> int:
    """How many queries Django's query log holds on this worker thread (DEBUG=True)."""
    from django.db import connection

    Note.objects.count()
    return len(connection.queries)
