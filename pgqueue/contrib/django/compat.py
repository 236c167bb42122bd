"""``django.tasks`` (Django 6.0 and later) or its backport ``django_tasks`` (Django 5.2).

Both read the same ``TASKS`` setting and can run each other's backends; this module gives
one set of names whichever is installed. ``django.tasks`` is preferred when both are.
Importing it raises ImportError, with what to install, when neither is there.
"""

from __future__ import annotations

try:
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    SOURCE = "django.tasks"
except ImportError:  # Django 5.2: the backport
    try:
        from django_tasks import TaskContext, TaskResult, TaskResultStatus, task, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskError
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
    except ImportError as exc:
        raise ImportError(
            "pgqueue's django.tasks backend needs Django 6.0 or later, or on Django 5.2 the "
            f"django-tasks backport (pip install django-tasks): {exc}"
        ) from exc
    SOURCE = "django_tasks"

#: Every Task class a job's module path may name (a project on Django 6 may still use the
#: backport's decorator).
TASK_CLASSES: tuple[type, ...] = (Task,)
if SOURCE == "django.tasks":
    try:
        from django_tasks.base import Task as _BackportTask

        TASK_CLASSES = (Task, _BackportTask)
    except ImportError:
        pass

__all__ = [
    "BaseTaskBackend", "InvalidTask", "SOURCE", "TASK_CLASSES", "Task", "TaskContext", "TaskError",
    "TaskResult", "TaskResultDoesNotExist", "TaskResultStatus", "task", "task_backends", "task_enqueued",
    "task_finished", "task_started",
]
