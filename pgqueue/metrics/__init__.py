"""Prometheus metrics (``pip install 'pgqueue[metrics]'``, prometheus-client).

Two kinds, from two places:

* **Worker metrics** (:mod:`pgqueue.metrics.worker`): what one worker process did, counted
  from the App's hooks as it happens; served by ``pgqueue work --metrics-port N`` (each worker
  process on its own port: process *i* of ``--processes`` on N + i). Throughput is
  ``rate(pgqueue_jobs_finished_total[5m])`` summed over processes.
* **Cluster gauges** (:mod:`pgqueue.metrics.cluster`): what the database says about every
  queue and runner, read with the dashboard's bounded queries and cached for 10 s; served by
  the dashboard at ``/metrics`` and by ``pgqueue metrics``.

Labels are queue and task names, outcomes and states: never ids, arguments or error text.
"""

from __future__ import annotations

__all__ = ["WorkerMetrics", "instrument_worker", "serve_worker_metrics"]


def __getattr__(name: str):  # lazy: importing pgqueue.metrics does not need prometheus-client
    if name in __all__:
        from . import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'pgqueue.metrics' has no attribute {name!r}")
