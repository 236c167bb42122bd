"""Prometheus metrics of real worker processes (``pgqueue work --metrics-port``), the cluster
gauges of ``pgqueue metrics``, and the OpenTelemetry integration carrying a trace from the
enqueuing code to the job's span."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pgqueue
from dashboard_support import fetch, free_port
from helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("prometheus_client")


def scrape(port: int) -> dict[str, float]:
    """The samples of http://127.0.0.1:port/metrics, by name and labels as written."""
    text = fetch(f"http://127.0.0.1:{port}/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def wait_scrape(port: int, condition, message: str) -> dict[str, float]:
    def look():
        try:
            samples = scrape(port)
        except OSError:
            return None
        return samples if condition(samples) else None

    return wait_for(look, timeout=20, interval=0.1, message=message)


def assert_no_high_cardinality_labels(samples: dict[str, float]) -> None:
    for key in samples:
        if key.startswith("pgqueue_") and "{" in key:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
            assert set(labels) <= {"queue", "task", "outcome", "cause", "version", "le", "state", "table"}, key


@pytest.mark.slow
def test_a_worker_counts_what_it_runs(wapp, start_worker) -> None:
    port = free_port()
    start_worker("--concurrency", "4", "--metrics-port", str(port)).runner_id()
    assert wapp.get_task("add").enqueue(2, 3).result(timeout=20) == 5
    failing = wapp.get_task("fail").enqueue("boom")
    with pytest.raises(pgqueue.JobFailed):
        failing.result(timeout=30)
    samples = wait_scrape(port, lambda s: s.get('pgqueue_jobs_finished_total{outcome="failed",queue="default",task="fail"}') == 1
                          or s.get('pgqueue_jobs_finished_total{queue="default",task="fail",outcome="failed"}') == 1,
                          "the failed job to be counted")
    flat = {re.sub(r"\{.*\}", "", k): v for k, v in samples.items()}

    def sample(name: str, **labels: str) -> float:
        for key, value in samples.items():
            if key.split("{")[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
                return value
        raise AssertionError(f"no sample {name} {labels}")

    assert sample("pgqueue_jobs_started_total", queue="default", task="add") == 1
    assert sample("pgqueue_jobs_finished_total", task="add", outcome="succeeded") == 1
    assert sample("pgqueue_jobs_started_total", task="fail") == 3
    assert sample("pgqueue_jobs_finished_total", task="fail", outcome="retried") == 2
    assert sample("pgqueue_job_duration_seconds_count", task="fail", outcome="failed") == 1
    assert sample("pgqueue_job_wait_seconds_count", task="add") == 1
    assert sample("pgqueue_jobs_running", queue="default") == 0
    assert flat["pgqueue_worker_slots"] == 4
    assert sample("pgqueue_claim_duration_seconds_count") >= 1
    assert sample("pgqueue_claim_batch_size_sum") >= 4
    assert flat["pgqueue_heartbeat_last_success_timestamp_seconds"] > 0
    assert flat["pgqueue_heartbeat_failures_total"] == 0
    assert sample("pgqueue_build_info", version=pgqueue.__version__) == 1
    assert "process_resident_memory_bytes" in flat
    assert_no_high_cardinality_labels(samples)


@pytest.mark.slow
def test_reaping_is_counted_by_the_runner_that_reaps(wapp, admin, start_worker) -> None:
    schema = wapp.settings.schema
    victim = start_worker("--concurrency", "1")
    victim_id = victim.runner_id()
    job = wapp.get_task("sleep").enqueue(4.0)
    holder = f'SELECT runner_id FROM "{schema}".jobs WHERE id = %s'
    wait_for(lambda: admin.execute(holder, (job.id,)).fetchone()[0] == victim_id,
             message="the victim to take the job")
    port = free_port()
    start_worker("--concurrency", "2", "--metrics-port", str(port)).runner_id()
    assert admin.execute(holder, (job.id,)).fetchone()[0] == victim_id, "the job ended before the kill"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert job.result(timeout=30) == 4.0
    samples = wait_scrape(port, lambda s: s.get('pgqueue_jobs_recovered_total{outcome="requeued"}') == 1,
                          "the re-queue to be counted")
    assert samples['pgqueue_runners_declared_dead_total{cause="process_gone"}'] == 1
    assert samples['pgqueue_runners_declared_dead_total{cause="no_heartbeat"}'] == 0
    assert samples["pgqueue_recovery_delay_seconds_count"] == 1
    assert samples["pgqueue_recovery_delay_seconds_sum"] < 10


@pytest.mark.slow
def test_each_worker_process_serves_its_own_port(wapp, admin, start_worker) -> None:
    port = free_port()
    while True:  # two free ports in a row
        try:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = free_port()
    supervisor = start_worker("--processes", "2", "--concurrency", "3", "--metrics-port", str(port))
    try:
        for p in (port, port + 1):
            samples = wait_scrape(p, lambda s: s.get("pgqueue_worker_slots") == 3, f"process metrics on port {p}")
            assert samples["pgqueue_worker_slots"] == 3
        # The children run in sessions of their own: a SIGKILL of the supervisor (the fixture's
        # teardown) would leave them running. Stop it the way an operator does.
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    finally:
        children = admin.execute(f'SELECT pid FROM "{wapp.settings.schema}".runners WHERE state = %s',
                                 ("running",)).fetchall()
        for (pid,) in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_hooks_label_unknown_tasks_and_too_many_queues_as_such(make_app) -> None:
    from pgqueue.context import JobContext
    from pgqueue.hooks import JobEnd
    from pgqueue.metrics import worker

    app = make_app()

    @app.task(name="known")
    def known() -> None:
        return None

    metrics = worker.WorkerMetrics(app, process_metrics=False).install()
    for n in range(worker.MAX_QUEUE_LABELS + 5):
        job = JobContext(n, "known" if n % 2 else "stray.task", 1, f"q{n}", 1, waited=0.5)
        with app.hooks.wrapping(app.hooks.job_wrappers, job):
            pass
        app.hooks.job_ended(JobEnd(job, "retry", 0.1, 0.5, "ValueError"))
    app.hooks.emit("runner_dead", runner_id=7, reason="no heartbeat for 11 s", silent_for=11.0, process_gone=False)
    app.hooks.emit("jobs_recovered", requeued=3, failed=1)
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'task="unregistered"' in text and 'task="stray.task"' not in text
    assert 'queue="other"' in text
    assert len(set(re.findall(r'queue="([^"]+)"', text))) == worker.MAX_QUEUE_LABELS + 1
    assert 'outcome="retried"' in text
    assert 'pgqueue_runners_declared_dead_total{cause="no_heartbeat"} 1.0' in text
    assert 'pgqueue_jobs_recovered_total{outcome="requeued"} 3.0' in text
    assert "pgqueue_recovery_delay_seconds_sum 11.0" in text


def test_pgqueue_metrics_prints_the_cluster_gauges(app, admin) -> None:
    from dashboard_support import seed_world

    seed_world(admin, app.settings.schema)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=app.database.dsn, PGQUEUE_SCHEMA=app.settings.schema)
    result = subprocess.run([sys.executable, "-m", "pgqueue.cli", "metrics", "--once"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ('pgqueue_up 1.0', 'pgqueue_queue_jobs{queue="default",state="queued"} 2.0',
                     'pgqueue_queue_jobs{queue="mail",state="scheduled"} 1.0',
                     'pgqueue_queue_oldest_queued_age_seconds{queue="default"}',
                     'pgqueue_runners{state="alive"} 1.0', 'pgqueue_runners_ended{state="dead"} 1.0',
                     "pgqueue_jobs_on_dead_runners 1.0", 'pgqueue_table_dead_tuples{table="jobs"}',
                     "pgqueue_oldest_transaction_age_seconds", "pgqueue_runner_slots 4.0"):
        assert expected in out, f"{expected!r} missing from:\n{out}"


# ------------------------------------------------------------- OpenTelemetry

def test_opentelemetry_carries_the_trace_from_enqueue_to_the_job(wapp) -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from pgqueue.contrib.otel import instrument
    from pgqueue.worker import Runner

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(wapp, tracer_provider=provider)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders") as request_span:
        ok = wapp.get_task("add").enqueue(1, 2)
        bad = wapp.get_task("not_retryable").enqueue()
    assert "traceparent" in ok.info()["meta"]

    runner = Runner(wapp, install_signals=False)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        assert ok.result(timeout=20) == 3
        with pytest.raises(pgqueue.JobFailed):
            bad.result(timeout=20)
        wait_for(lambda: len([s for s in exporter.get_finished_spans() if s.name == "process default"]) == 2,
                 message="both job spans to end")
    finally:
        runner.request_stop()
        thread.join(30)
    spans = exporter.get_finished_spans()
    sends = [s for s in spans if s.name == "send default"]
    processes = {s.attributes["messaging.message.id"]: s for s in spans if s.name == "process default"}
    trace_id = request_span.get_span_context().trace_id
    assert len(sends) == 2 and all(s.kind == SpanKind.PRODUCER and s.context.trace_id == trace_id for s in sends)
    assert all(s.parent.span_id == request_span.get_span_context().span_id for s in sends)
    done, failed = processes[str(ok.id)], processes[str(bad.id)]
    send_of_ok = next(s for s in sends if s.attributes.get("messaging.message.id") == str(ok.id))
    assert done.kind == SpanKind.CONSUMER and done.context.trace_id == trace_id
    assert done.parent.span_id == send_of_ok.context.span_id
    assert done.links and done.links[0].context.span_id == send_of_ok.context.span_id
    assert done.attributes["messaging.system"] == "pgqueue" and done.attributes["pgqueue.task"] == "add"
    assert done.attributes["pgqueue.job.attempt"] == 1
    assert done.status.status_code != StatusCode.ERROR
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "KeyError"
    assert any(event.name == "exception" for event in failed.events)
