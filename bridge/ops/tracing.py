"""OpenTelemetry traces, when the ``otel`` extra is installed; nothing at all otherwise.

A command continues the trace of its record's ``traceparent`` header (W3C Trace Context): the
bridge opens one span per command (per batch item) and one per API call made for it, and the
result and dead-letter records carry the command span's ``traceparent``, so a consumer of the
results continues the same trace. Spans are exported over OTLP when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bridge.pipeline.translate import Job, Origin, OutRecord

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the 'otel' extra is not installed: tracing is off
    trace = None  # type: ignore[assignment]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACER_NAME = "workflows_bridge"


class Tracing:
    """Spans for commands and API calls; a no-op without OpenTelemetry."""

    def __init__(self, tracer_provider: Any = None) -> None:
        if trace is None:
            self._tracer: Any = None
            return
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        self._propagator = TraceContextTextMapPropagator()

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def command(self, origin: Origin, job: Job | None) -> Iterator[None]:
        """The span of one command (or batch item), continuing the record's trace."""
        if self._tracer is None:
            yield
            return
        carrier = {
            name: value.decode("latin-1")
            for name, value in origin.headers
            if name in (TRACEPARENT, TRACESTATE)
        }
        parent = self._propagator.extract(carrier)
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.destination.name": origin.topic,
            "messaging.destination.partition.id": str(origin.partition),
            "messaging.kafka.offset": origin.offset,
        }
        if job is not None:
            attributes.update(
                {
                    "workflows_bridge.command_id": job.command_id,
                    "workflows_bridge.action": job.action,
                    "workflows_bridge.workflow": job.workflow,
                    "workflows_bridge.instance_id": job.instance_id,
                }
            )
        with self._tracer.start_as_current_span(
            "workflows_bridge.command",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ):
            yield

    def api_call(self, endpoint: str, status: int | None, seconds: float) -> None:
        """A span for an API call that just finished, in the current command's trace."""
        if self._tracer is None:
            return
        end = time.time_ns()
        span = self._tracer.start_span(
            f"workflows_bridge.api {endpoint}",
            kind=SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes={
                "workflows_bridge.endpoint": endpoint,
                "http.response.status_code": status if status is not None else 0,
            },
        )
        if status is None or status >= 400:
            span.set_status(trace.StatusCode.ERROR)
        span.end(end_time=end)

    def stamp(self, records: Sequence[OutRecord]) -> list[OutRecord]:
        """``records`` with the current span's ``traceparent`` (and ``tracestate``)."""
        if self._tracer is None:
            return list(records)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        if TRACEPARENT not in carrier:
            return list(records)
        fresh = [(name, value.encode()) for name, value in carrier.items()]
        stamped = []
        for record in records:
            kept = [(k, v) for k, v in record.headers if k not in (TRACEPARENT, TRACESTATE)]
            stamped.append(dataclasses.replace(record, headers=(*kept, *fresh)))
        return stamped


def configure_export() -> Callable[[], None]:
    """Export spans over OTLP when the standard variables ask for it; returns the shutdown."""
    wanted = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if trace is None or not wanted:
        return lambda: None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        return lambda: None
    name = os.environ.get("OTEL_SERVICE_NAME", "workflows-bridge")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown
