"""OpenTelemetry tracing (and, optionally, metrics) for pgqueue, built on the App's hooks
(``pip install 'pgqueue[otel]'``).

::

    from pgqueue.contrib.otel import instrument
    instrument(app)                         # the global tracer provider; instrument(app, metrics=True)

* Enqueue: a ``send {queue}`` span (kind PRODUCER) around the insert, and the trace context
  (W3C ``traceparent``, ``tracestate``) stored in the job's ``meta``: it travels with the job
  in the database.
* Each attempt: a ``process {queue}`` span (kind CONSUMER) on the thread that runs the task,
  a child of the enqueuing span, so the request that enqueued and the job that ran are one
  trace (``link_only=True``: a new trace with a link to it, for fan-outs where one request
  enqueues thousands of jobs). An exception the task raises is recorded on the span, whose
  status is then ERROR.
* Attributes follow the (experimental) messaging conventions: ``messaging.system`` =
  ``pgqueue``, ``messaging.operation.name`` (send, process), ``messaging.destination.name``
  (the queue), ``messaging.message.id`` (the job id), ``messaging.batch.message_count``; and
  ``pgqueue.task``, ``pgqueue.job.attempt``.
* ``metrics=True``: ``messaging.client.sent.messages``, ``messaging.client.consumed.messages``
  (counters) and ``messaging.process.duration`` (histogram, seconds), labelled with the
  system, operation and queue (and ``error.type`` on failures), never with ids.

Nothing here runs unless ``instrument`` is called: an App without it pays nothing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

from .. import errors
from ..version import __version__

if TYPE_CHECKING:
    from ..app import App
    from ..context import JobContext
    from ..hooks import EnqueueCall, JobEnd

SYSTEM = "pgqueue"


def instrument(app: "App", *, tracer_provider: Any = None, meter_provider: Any = None,
               metrics: bool = False, link_only: bool = False) -> None:
    """Trace ``app``'s enqueues and job runs (see the module docstring)."""
    try:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    except ImportError:
        raise errors.ConfigurationError(
            "tracing needs OpenTelemetry: pip install 'pgqueue[otel]'") from None

    tracer = trace.get_tracer("pgqueue", __version__, tracer_provider=tracer_provider)
    sent = consumed = duration = None
    if metrics:
        from opentelemetry import metrics as otel_metrics

        meter = otel_metrics.get_meter("pgqueue", __version__, meter_provider=meter_provider)
        sent = meter.create_counter("messaging.client.sent.messages", unit="{message}",
                                    description="Jobs enqueued.")
        consumed = meter.create_counter("messaging.client.consumed.messages", unit="{message}",
                                        description="Attempts started.")
        duration = meter.create_histogram("messaging.process.duration", unit="s",
                                          description="How long attempts ran.")

    @contextlib.contextmanager
    def around_enqueue(call: "EnqueueCall") -> Iterator[None]:
        attributes = {"messaging.system": SYSTEM, "messaging.operation.name": "send",
                      "messaging.operation.type": "send", "messaging.destination.name": call.queue,
                      "pgqueue.task": call.task}
        if call.count != 1:
            attributes["messaging.batch.message_count"] = call.count
        with tracer.start_as_current_span(f"send {call.queue}", kind=SpanKind.PRODUCER,
                                          attributes=attributes) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            call.meta.update(carrier)
            yield
            if len(call.job_ids) == 1:
                span.set_attribute("messaging.message.id", str(call.job_ids[0]))
            if sent is not None:
                sent.add(call.count, {"messaging.system": SYSTEM, "messaging.operation.name": "send",
                                      "messaging.destination.name": call.queue})

    @contextlib.contextmanager
    def around_job(job: "JobContext") -> Iterator[None]:
        carrier = {k: v for k, v in (job.meta or {}).items() if isinstance(v, str)}
        parent = propagate.extract(carrier)
        producer = trace.get_current_span(parent).get_span_context()
        links = [Link(producer)] if producer.is_valid else []
        attributes = {"messaging.system": SYSTEM, "messaging.operation.name": "process",
                      "messaging.operation.type": "process", "messaging.destination.name": job.queue,
                      "messaging.message.id": str(job.id), "pgqueue.task": job.task,
                      "pgqueue.job.attempt": job.attempt}
        if consumed is not None:
            consumed.add(1, {"messaging.system": SYSTEM, "messaging.operation.name": "process",
                             "messaging.destination.name": job.queue})
        context = None if (link_only or not producer.is_valid) else parent
        with tracer.start_as_current_span(f"process {job.queue}", context=context, kind=SpanKind.CONSUMER,
                                          links=links, attributes=attributes,
                                          record_exception=False, set_status_on_exception=False) as span:
            try:
                yield
            except BaseException as exc:
                span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                raise

    def job_end(end: "JobEnd") -> None:
        if duration is None:
            return
        attributes = {"messaging.system": SYSTEM, "messaging.operation.name": "process",
                      "messaging.destination.name": end.job.queue}
        if end.status != "succeeded":
            attributes["error.type"] = end.error_type or end.status
        duration.record(end.seconds, attributes)

    app.hooks.around_enqueue(around_enqueue)
    app.hooks.around_job(around_job)
    if metrics:
        app.hooks.on_job_end(job_end)
