"""Metrics of one worker process, from the App's hooks (``app.hooks``): nothing is read from
the database to make them, and they cost a few dictionary lookups per job.

===========================================================  ========================================
metric                                                        from
===========================================================  ========================================
``pgqueue_jobs_started_total{queue,task}``                    around_job (entered)
``pgqueue_jobs_finished_total{queue,task,outcome}``           on_job_end; outcome: succeeded, retried,
                                                              failed, cancelled
``pgqueue_job_duration_seconds{queue,task,outcome}``          on_job_end (histogram)
``pgqueue_job_wait_seconds{queue,task}``                      around_job: runnable to started (histogram)
``pgqueue_jobs_running{queue}``                               around_job (in, out)
``pgqueue_worker_slots``                                      the concurrency setting
``pgqueue_claim_duration_seconds``                            worker event ``claim`` (histogram)
``pgqueue_claim_batch_size``                                  worker event ``claim``: jobs per claim
``pgqueue_heartbeat_failures_total``                          worker event ``heartbeat`` (ok false)
``pgqueue_heartbeat_last_success_timestamp_seconds``          worker event ``heartbeat`` (ok true)
``pgqueue_runners_declared_dead_total{cause}``                worker event ``runner_dead``; cause:
                                                              process_gone, no_heartbeat
``pgqueue_recovery_delay_seconds``                            ``runner_dead``: the dead runner's last
                                                              heartbeat to its jobs' re-queue
``pgqueue_jobs_recovered_total{outcome}``                     worker event ``jobs_recovered``;
                                                              outcome: requeued, failed
``pgqueue_build_info{version}``                               always 1
===========================================================  ========================================

The reaping metrics (declared dead, recovered, recovery delay) count once for the cluster: only
the process that ran the maintenance pass emits them, so sum them over processes. Task and
queue names become labels; a name that is not a task of this App is counted as
``unregistered``, and past 200 distinct queue names further ones count as ``other``, so a
stray row cannot blow up the series count. Standard ``process_*`` and ``python_*`` metrics of
prometheus-client come along.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import errors
from ..version import __version__

if TYPE_CHECKING:
    from ..app import App
    from ..context import JobContext
    from ..hooks import JobEnd, WorkerEvent

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0, 1800.0, 3600.0)
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
RECOVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
OUTCOMES = {"succeeded": "succeeded", "retry": "retried", "failed": "failed", "cancelled": "cancelled"}
MAX_QUEUE_LABELS = 200


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise errors.ConfigurationError(
            "metrics need prometheus-client: pip install 'pgqueue[metrics]'") from None
    return prometheus_client


class WorkerMetrics:
    """The worker metrics of ``app``, in their own registry (``self.registry``)."""

    def __init__(self, app: "App", registry: Any = None, *, process_metrics: bool = True) -> None:
        prom = _prometheus()
        self.app = app
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        if process_metrics and registry is None:
            prom.ProcessCollector(registry=self.registry)
            prom.PlatformCollector(registry=self.registry)
            prom.GCCollector(registry=self.registry)
        r = self.registry
        self.started = prom.Counter("pgqueue_jobs_started", "Attempts started, by queue and task.",
                                    ["queue", "task"], registry=r)
        self.finished = prom.Counter("pgqueue_jobs_finished",
                                     "Attempts ended, by queue, task and outcome (succeeded, retried, "
                                     "failed, cancelled).", ["queue", "task", "outcome"], registry=r)
        self.duration = prom.Histogram("pgqueue_job_duration_seconds", "How long attempts ran.",
                                       ["queue", "task", "outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.wait = prom.Histogram("pgqueue_job_wait_seconds",
                                   "How long jobs waited between becoming runnable and starting.",
                                   ["queue", "task"], buckets=WAIT_BUCKETS, registry=r)
        self.running = prom.Gauge("pgqueue_jobs_running", "Attempts running in this process.",
                                  ["queue"], registry=r)
        self.slots = prom.Gauge("pgqueue_worker_slots", "Jobs this process runs at once at most "
                                "(the concurrency setting).", registry=r)
        self.claim_duration = prom.Histogram("pgqueue_claim_duration_seconds",
                                             "Round trip of one claim statement.",
                                             buckets=CLAIM_BUCKETS, registry=r)
        self.claim_batch = prom.Histogram("pgqueue_claim_batch_size", "Jobs claimed per claim statement.",
                                          buckets=BATCH_BUCKETS, registry=r)
        self.heartbeat_failures = prom.Counter("pgqueue_heartbeat_failures",
                                               "Heartbeats that did not get through, or found this "
                                               "runner declared dead.", registry=r)
        self.heartbeat_last = prom.Gauge("pgqueue_heartbeat_last_success_timestamp_seconds",
                                         "When this process's last heartbeat got through (Unix time).",
                                         registry=r)
        self.declared_dead = prom.Counter("pgqueue_runners_declared_dead",
                                          "Runners this process's maintenance passes declared dead, by "
                                          "cause (process_gone, no_heartbeat).", ["cause"], registry=r)
        self.recovery_delay = prom.Histogram("pgqueue_recovery_delay_seconds",
                                             "From a dead runner's last heartbeat to the re-queue of its "
                                             "jobs.", buckets=RECOVERY_BUCKETS, registry=r)
        self.recovered = prom.Counter("pgqueue_jobs_recovered",
                                      "Running jobs of dead runners that this process's maintenance "
                                      "passes re-queued or failed (crash budget spent).", ["outcome"],
                                      registry=r)
        info = prom.Gauge("pgqueue_build_info", "pgqueue's version (always 1).", ["version"], registry=r)
        info.labels(__version__).set(1)
        self.slots.set(app.settings.concurrency)
        for outcome in ("requeued", "failed"):
            self.recovered.labels(outcome)
        for cause in ("process_gone", "no_heartbeat"):
            self.declared_dead.labels(cause)
        self._queues: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------- labels

    def _queue(self, queue: str) -> str:
        if queue in self._queues:
            return queue
        with self._lock:
            if len(self._queues) < MAX_QUEUE_LABELS:
                self._queues.add(queue)
                return queue
        return "other"

    def _task(self, task: str) -> str:
        return task if task in self.app.tasks else "unregistered"

    # -------------------------------------------------------------- hooks

    def install(self) -> "WorkerMetrics":
        """Register the hooks on the App (once)."""
        hooks = self.app.hooks
        hooks.around_job(self._around_job)
        hooks.on_job_end(self._job_end)
        hooks.on_worker_event(self._worker_event)
        return self

    def _around_job(self, job: "JobContext") -> "_Running":
        queue, task = self._queue(job.queue), self._task(job.task)
        self.started.labels(queue, task).inc()
        waited = getattr(job, "waited", None)
        if waited is not None:
            self.wait.labels(queue, task).observe(max(waited, 0.0))
        return _Running(self.running.labels(queue))

    def _job_end(self, end: "JobEnd") -> None:
        outcome = OUTCOMES.get(end.status, "failed")
        queue, task = self._queue(end.job.queue), self._task(end.job.task)
        self.finished.labels(queue, task, outcome).inc()
        self.duration.labels(queue, task, outcome).observe(max(end.seconds, 0.0))

    def _worker_event(self, event: "WorkerEvent") -> None:
        fields = event.fields
        if event.name == "claim":
            self.claim_duration.observe(fields.get("seconds", 0.0))
            self.claim_batch.observe(fields.get("jobs", 0))
        elif event.name == "heartbeat":
            if fields.get("ok"):
                self.heartbeat_last.set(time.time())
            else:
                self.heartbeat_failures.inc()
        elif event.name == "runner_dead":
            self.declared_dead.labels("process_gone" if fields.get("process_gone") else "no_heartbeat").inc()
            silent = fields.get("silent_for")
            if silent is not None:
                self.recovery_delay.observe(max(float(silent), 0.0))
        elif event.name == "jobs_recovered":
            if fields.get("requeued"):
                self.recovered.labels("requeued").inc(fields["requeued"])
            if fields.get("failed"):
                self.recovered.labels("failed").inc(fields["failed"])


class _Running:
    """The running gauge around one attempt (a plain class: cheaper than a generator)."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, *exc: Any) -> None:
        self._gauge.dec()


def instrument_worker(app: "App") -> WorkerMetrics:
    """Worker metrics for ``app``, hooks installed; serve ``.registry`` however you like."""
    return WorkerMetrics(app).install()


def serve_worker_metrics(app: "App", port: int, host: str = "127.0.0.1") -> WorkerMetrics:
    """Install the worker metrics and serve them on http://host:port/metrics (a daemon thread),
    as ``pgqueue work --metrics-port`` does."""
    prom = _prometheus()
    metrics = instrument_worker(app)
    try:
        prom.start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise errors.ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (another process uses the "
            "port? with --processes, process i takes metrics_port + i)") from exc
    logger.info("serving Prometheus metrics on http://%s:%s/metrics", host, port)
    return metrics
