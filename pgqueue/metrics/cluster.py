"""Cluster gauges: what the database says about every queue, runner and table, read with the
dashboard's bounded queries (``sql/queries/dashboard.sql``) and kept for 10 s, so any number of
scrapers cost one set of queries per 10 s.

============================================================  =====================================
metric                                                         meaning
============================================================  =====================================
``pgqueue_up``                                                 1 when the database answered
``pgqueue_queue_jobs{queue,state}``                            queued (runnable now), scheduled,
                                                               running; counted up to 1,000,000
``pgqueue_queue_oldest_queued_age_seconds{queue}``             how long the oldest runnable job waited
``pgqueue_runners{state}``                                     alive, stale (running, heartbeat past
                                                               its lease)
``pgqueue_runners_ended{state}``                               dead, stopped, within the last hour
``pgqueue_runner_slots``                                       concurrency summed over running runners
``pgqueue_jobs_on_dead_runners``                               running jobs whose runner is not alive
``pgqueue_table_live_tuples{table}``                           pg_stat_user_tables.n_live_tup
``pgqueue_table_dead_tuples{table}``                           pg_stat_user_tables.n_dead_tup
``pgqueue_table_size_bytes{table}``                            with indexes and TOAST
``pgqueue_table_last_autovacuum_timestamp_seconds{table}``     Unix time (absent: never)
``pgqueue_oldest_transaction_age_seconds``                     oldest open transaction (vacuum horizon)
``pgqueue_maintenance_last_pass_age_seconds``                  since the elected maintenance pass ran
``pgqueue_cluster_scrape_duration_seconds``                    how long reading all this took
============================================================  =====================================

Throughput is not here: it is ``rate(pgqueue_jobs_finished_total[5m])`` over the worker
metrics, never a count over the jobs table.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

from ..dashboard.reader import Cache

if TYPE_CHECKING:
    from ..dashboard.reader import Reader

COUNT_CAP = 1_000_000
CACHE_SECONDS = 10.0


class ClusterCollector:
    """A prometheus-client collector of the cluster gauges of one schema."""

    def __init__(self, reader: "Reader", *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.reader = reader
        self._cache = Cache(cache_seconds)

    def describe(self) -> list[Any]:
        return []  # unchecked: the families depend on what the database holds

    def collect(self) -> Iterator[Any]:
        yield from self._cache.get("families", self._read)

    def _read(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        started = time.monotonic()
        with self.reader.session() as session:
            queues = session.read("dashboard_queues", {"cap": COUNT_CAP, "max_heads": 500})
            runners = session.read("dashboard_runner_summary", {"recent_seconds": 3600, "cap": COUNT_CAP}) \
                if queues.error is None else queues
            tables = session.read("dashboard_table_health", {"schema": self.reader.schema}) \
                if queues.error is None else queues
            horizon = session.read("dashboard_xmin_horizon") if queues.error is None else queues
            maintenance = session.read("dashboard_maintenance") if queues.error is None else queues
        families: list[Any] = []
        up = GaugeMetricFamily("pgqueue_up", "1 when the database answered the cluster queries.")
        up.add_metric([], 0.0 if queues.error else 1.0)
        families.append(up)
        if queues.ok:
            jobs = GaugeMetricFamily("pgqueue_queue_jobs", "Jobs per queue and state (queued: runnable "
                                     f"now; counted up to {COUNT_CAP:,}).", labels=["queue", "state"])
            age = GaugeMetricFamily("pgqueue_queue_oldest_queued_age_seconds",
                                    "How long the oldest runnable job of the queue has waited.",
                                    labels=["queue"])
            for q in queues.rows:
                jobs.add_metric([q["queue"], "queued"], q["ready"])
                jobs.add_metric([q["queue"], "scheduled"], q["scheduled"])
                jobs.add_metric([q["queue"], "running"], q["running"])
                seconds = q["oldest_ready_age"].total_seconds() if q["oldest_ready_age"] else 0.0
                age.add_metric([q["queue"]], max(seconds, 0.0))
            families += [jobs, age]
        if runners.ok and runners.first:
            r = runners.first
            states = GaugeMetricFamily("pgqueue_runners", "Runners running now: alive, or stale (heartbeat "
                                       "older than its lease).", labels=["state"])
            states.add_metric(["alive"], r["alive"])
            states.add_metric(["stale"], r["stale"])
            ended = GaugeMetricFamily("pgqueue_runners_ended", "Runners that died or stopped in the last "
                                      "hour.", labels=["state"])
            ended.add_metric(["dead"], r["dead"])
            ended.add_metric(["stopped"], r["stopped"])
            slots = GaugeMetricFamily("pgqueue_runner_slots", "Concurrency summed over running runners.")
            slots.add_metric([], r["slots"])
            orphans = GaugeMetricFamily("pgqueue_jobs_on_dead_runners",
                                        "Running jobs whose runner is not alive (the reaper will "
                                        "re-queue them).")
            orphans.add_metric([], r["orphaned_jobs"])
            families += [states, ended, slots, orphans]
        if tables.ok:
            live = GaugeMetricFamily("pgqueue_table_live_tuples", "Live rows (statistics collector).",
                                     labels=["table"])
            dead = GaugeMetricFamily("pgqueue_table_dead_tuples", "Dead rows not vacuumed yet.",
                                     labels=["table"])
            size = GaugeMetricFamily("pgqueue_table_size_bytes", "Size with indexes and TOAST.",
                                     labels=["table"])
            vacuum = GaugeMetricFamily("pgqueue_table_last_autovacuum_timestamp_seconds",
                                       "When autovacuum last processed the table (Unix time).",
                                       labels=["table"])
            for t in tables.rows:
                live.add_metric([t["table_name"]], t["live_tuples"])
                dead.add_metric([t["table_name"]], t["dead_tuples"])
                size.add_metric([t["table_name"]], t["total_bytes"])
                if t["last_autovacuum"] is not None:
                    vacuum.add_metric([t["table_name"]], t["last_autovacuum"].timestamp())
            families += [live, dead, size, vacuum]
        if horizon.ok and horizon.first:
            oldest = GaugeMetricFamily("pgqueue_oldest_transaction_age_seconds",
                                       "Age of the oldest open transaction (it holds vacuum back).")
            oldest.add_metric([], horizon.first["oldest_xact_seconds"] or 0.0)
            families.append(oldest)
        if maintenance.ok and maintenance.first and maintenance.first["last_pass_seconds"] is not None:
            passes = GaugeMetricFamily("pgqueue_maintenance_last_pass_age_seconds",
                                       "Seconds since the elected maintenance pass last ran.")
            passes.add_metric([], maintenance.first["last_pass_seconds"])
            families.append(passes)
        took = GaugeMetricFamily("pgqueue_cluster_scrape_duration_seconds",
                                 "How long reading the cluster gauges took.")
        took.add_metric([], time.monotonic() - started)
        families.append(took)
        return families


def exposition(collector: ClusterCollector) -> tuple[bytes, str]:
    """The gauges in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(reader: "Reader", host: str, port: int) -> Any:
    """Serve the gauges on http://host:port/metrics until interrupted (``pgqueue metrics``)."""
    from ..dashboard.server import make_server
    from ..dashboard.web import Response

    collector = ClusterCollector(reader)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path not in ("/", "/metrics"):
            return Response(b"not found: the metrics are at /metrics\n", 404,
                            "text/plain; charset=utf-8").finish(start_response)
        data, content_type = exposition(collector)
        return Response(data, 200, content_type).finish(start_response)

    return make_server(app, host, port)  # type: ignore[arg-type]
