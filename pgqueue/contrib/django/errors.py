"""Errors of the Django integration, and exception classes that stand for the error types
pgqueue records without a Python class of their own.

``TaskResult.errors`` holds one ``TaskError`` per failed attempt whose
``exception_class_path`` must be importable (``TaskError.exception_class`` imports it).
pgqueue records an attempt's error type as ``module.Qualname`` (``Qualname`` for
builtins); the few types pgqueue writes itself (a result that is not JSON, arguments that
cannot be decoded, ...) map onto the classes below, a crashed worker onto
``pgqueue.errors.RunnerDied`` and a cancelled job onto ``pgqueue.errors.JobCancelled``.
"""

from __future__ import annotations

from ...errors import ConfigurationError, PgQueueError


class DjangoNotReady(ConfigurationError):
    """pgqueue's Django app is not ready: the database was used before Django finished
    loading its apps."""


class TaskNotImportable(PgQueueError):
    """The worker could not import the ``django.tasks`` task a job names (its module path)."""


class ResultNotSerializable(PgQueueError):
    """The task returned a value that cannot be stored as JSON."""


class ResultTooLarge(PgQueueError):
    """The task returned a value larger than ``PGQUEUE_MAX_RESULT_BYTES``."""


class ArgumentsTooLarge(PgQueueError):
    """The job's arguments are larger than ``PGQUEUE_MAX_ARGS_BYTES``."""


class ArgumentsNotDecodable(PgQueueError):
    """The job's stored arguments cannot be decoded by the worker."""


class OutcomeNotStored(PgQueueError):
    """The database refused to store the attempt's outcome."""


class UnknownError(PgQueueError):
    """The attempt failed with an exception whose class cannot be imported here (defined in
    ``__main__``, nested, or gone since): the traceback names it."""


#: pgqueue's own error types (no module part) -> the class path that stands for each.
RECORDED_TYPES = {
    "ResultNotSerializable": f"{__name__}.ResultNotSerializable",
    "ResultTooLarge": f"{__name__}.ResultTooLarge",
    "ArgumentsTooLarge": f"{__name__}.ArgumentsTooLarge",
    "ArgumentsNotDecodable": f"{__name__}.ArgumentsNotDecodable",
    "OutcomeNotStored": f"{__name__}.OutcomeNotStored",
    "RunnerDied": "pgqueue.errors.RunnerDied",
    "UnknownTask": "pgqueue.errors.UnknownTask",
}
UNKNOWN_ERROR = f"{__name__}.UnknownError"
