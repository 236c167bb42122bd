"""The worker app of the schedule tests: tests/workerapp.py's tasks, plus the schedules named in
the CRONAPP_SCHEDULES environment variable (a JSON list of App.schedule keyword arguments with
the task's name under "task"), so a test can "deploy" code whose schedules differ.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pgqueue
from workerapp import _record, app


@app.task(name="tick")
def tick() -> str:
    """Records the tick it runs for and whether it is late."""
    job = pgqueue.current_job()
    assert job is not None
    _record(json.dumps({"schedule": job.schedule, "scheduled_for": job.scheduled_for.isoformat()
                        if job.scheduled_for else None, "late": job.late}))
    return "ticked"


def declare(target: pgqueue.App, specs: list[dict[str, Any]]) -> None:
    for spec in specs:
        options = dict(spec)
        task = target.get_task(options.pop("task"))
        target.schedule(task, **options)


declare(app, json.loads(os.environ.get("CRONAPP_SCHEDULES", "[]")))
