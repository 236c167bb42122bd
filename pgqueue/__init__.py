"""pgqueue: a durable job queue for Python whose whole state lives in PostgreSQL.

    import pgqueue

    app = pgqueue.App()                # PGQUEUE_DSN, DATABASE_URL, or an embedded server

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.enqueue(1, 2)
    job.result(timeout=10)             # 3, once `pgqueue --app mymodule:app work` runs it
"""

from .app import App
from .context import JobContext, current_job
from .errors import (
    ArgumentNotSerializable,
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArguments,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobStateError,
    NoRetry,
    PgQueueError,
    ResultTimeout,
    Retry,
    RunnerDied,
    ScheduleNotFound,
    SchemaNotMigrated,
    UnknownTask,
)
from .hooks import EnqueueCall, Hooks, JobEnd, WorkerEvent
from .jobs import Job
from .settings import Settings
from .tasks import EnqueueOptions, Task
from .version import __version__

__all__ = [
    "App",
    "ArgumentNotSerializable",
    "ConfigurationError",
    "DatabaseUnavailable",
    "EnqueueCall",
    "EnqueueOptions",
    "Hooks",
    "InvalidArguments",
    "Job",
    "JobContext",
    "JobCancelled",
    "JobEnd",
    "JobFailed",
    "JobNotFound",
    "JobStateError",
    "NoRetry",
    "PgQueueError",
    "ResultTimeout",
    "Retry",
    "RunnerDied",
    "ScheduleNotFound",
    "SchemaNotMigrated",
    "Settings",
    "Task",
    "UnknownTask",
    "WorkerEvent",
    "__version__",
    "current_job",
]
