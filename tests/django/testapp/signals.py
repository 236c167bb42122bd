"""Receivers that record every django.tasks signal (in whichever process sends it)."""

from __future__ import annotations

import os

from pgqueue.contrib.django.compat import task_enqueued, task_finished, task_started

from .models import Seen


def _record(name: str):
    def receiver(sender, task_result, **kwargs):
        Seen.objects.create(what=name, job_id=int(task_result.id), pid=os.getpid(),
                            detail={"status": str(task_result.status),
                                    "sender": sender.__name__,
                                    "attempts": task_result.attempts,
                                    "errors": [e.exception_class_path for e in task_result.errors]})
    receiver.__name__ = f"record_{name}"
    return receiver


record_enqueued = _record("task_enqueued")
record_started = _record("task_started")
record_finished = _record("task_finished")


def connect() -> None:
    task_enqueued.connect(record_enqueued, dispatch_uid="testapp-enqueued")
    task_started.connect(record_started, dispatch_uid="testapp-started")
    task_finished.connect(record_finished, dispatch_uid="testapp-finished")
