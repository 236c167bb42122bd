"""The admin: read-only jobs (with their history inline), events and runners.

Jobs are filtered by status, queue and task; arguments, result and error (with its
traceback) are shown as formatted JSON. Two actions change jobs, through the very functions
the ``pgqueue`` CLI uses: *Retry* (``pgqueue retry``: failed jobs back to the queue with a
fresh attempt budget) and *Cancel* (``pgqueue cancel``: a queued job at once, a running one by
asking it to stop). They need the ``pgqueue.change_job`` permission.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils.html import format_html

from .models import Job, JobEvent, Runner


def _pre(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False,
                                                           sort_keys=True)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class JobEventInline(admin.TabularInline):
    model = JobEvent
    fk_name = "job"
    extra = 0
    can_delete = False
    ordering = ["id"]
    fields = ["at", "kind", "from_status", "to_status", "attempt", "runner_id", "reason",
              "error_type"]
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="error")
    def error_type(self, event: JobEvent) -> str:
        error = event.error if isinstance(event.error, dict) else None
        return f"{error.get('type')}: {error.get('message', '')}" if error else "-"


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "queue", "status", "attempts", "priority", "enqueued_at",
                    "finished_at"]
    list_filter = ["status", "queue", "task"]
    search_fields = ["=id", "task", "key"]
    ordering = ["-id"]
    show_full_result_count = False  # no count(*) over a big table on every page
    inlines = [JobEventInline]
    actions = ["retry_jobs", "cancel_jobs"]
    fields = ["id", "task", "queue", "status", "priority", "attempts", "failures", "crashes",
              "max_attempts", "key", "runner_id", "run_at", "enqueued_at", "started_at",
              "finished_at", "cancel_requested", "arguments", "keyword_arguments",
              "return_value", "error_message", "traceback", "metadata"]
    readonly_fields = fields

    @admin.display(description="args")
    def arguments(self, job: Job) -> str:
        return _pre(job.args)

    @admin.display(description="kwargs")
    def keyword_arguments(self, job: Job) -> str:
        return _pre(job.kwargs)

    @admin.display(description="result")
    def return_value(self, job: Job) -> str:
        return _pre(job.result) if job.status == "succeeded" else "-"

    @admin.display(description="error")
    def error_message(self, job: Job) -> str:
        error = job.error if isinstance(job.error, dict) else None
        return f"{error.get('type')}: {error.get('message', '')}" if error else "-"

    @admin.display(description="traceback")
    def traceback(self, job: Job) -> str:
        error = job.error if isinstance(job.error, dict) else None
        return _pre(error.get("traceback") or None) if error else "-"

    @admin.display(description="meta")
    def metadata(self, job: Job) -> str:
        return _pre(job.meta)

    def has_action_permission(self, request: Any) -> bool:
        return request.user.has_perm("pgqueue.change_job")

    @admin.action(description="Retry the selected failed jobs", permissions=["action"])
    def retry_jobs(self, request: Any, queryset: Any) -> None:
        from pgqueue import admin as operations, errors

        from . import app

        done, refused = [], []
        for job_id in queryset.values_list("id", flat=True):
            try:
                operations.retry_job(app, job_id)
                done.append(job_id)
            except errors.PgQueueError as exc:
                refused.append(str(exc))
        if done:
            self.message_user(request, f"{len(done)} job(s) queued again: "
                              f"{', '.join(map(str, done))}", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Cancel the selected jobs", permissions=["action"])
    def cancel_jobs(self, request: Any, queryset: Any) -> None:
        from pgqueue import errors

        from . import app

        for job_id in queryset.values_list("id", flat=True):
            try:
                status = app.job(job_id).cancel("cancelled from the admin")
            except errors.PgQueueError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            if status == "cancelled":
                self.message_user(request, f"job {job_id} is cancelled", messages.SUCCESS)
            else:
                self.message_user(request, f"job {job_id} is running: cancellation requested",
                                  messages.INFO)


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "job_id", "at", "kind", "from_status", "to_status", "attempt",
                    "runner_id", "reason"]
    list_filter = ["kind"]
    search_fields = ["=job__id"]
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(Runner)
class RunnerAdmin(ReadOnlyAdmin):
    list_display = ["id", "host", "pid", "state", "heartbeat_age", "concurrency", "queues",
                    "version", "started_at", "stopped_at", "reason"]
    list_filter = ["state"]
    ordering = ["-id"]

    def get_queryset(self, request: Any) -> Any:
        # The database's clock: the heartbeat was written with it.
        age = ExpressionWrapper(Now() - F("heartbeat_at"), output_field=DurationField())
        return super().get_queryset(request).annotate(heartbeat_age_value=age)

    @admin.display(description="heartbeat age", ordering="heartbeat_age_value")
    def heartbeat_age(self, runner: Runner) -> str:
        from pgqueue.display import duration

        age = getattr(runner, "heartbeat_age_value", None)
        return duration(age.total_seconds()) if age is not None else "-"
