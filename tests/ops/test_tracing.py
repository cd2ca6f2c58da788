"""OpenTelemetry: a command continues its record's trace; spans per command and API call; the
result and the dead letter carry the command span's ``traceparent``. In-memory exporter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bridge.local.emulator import Emulator
from bridge.pipeline.service import Bridge
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    bridge_settings,
    make_topics,
)
from tests.support.kafka_harness import KafkaBroker

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_commands_continue_the_record_trace(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    topics = await make_topics(new_topic, 1)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
    async with Emulator() as emulator, OutputReader(kafka_broker.bootstrap_servers, topics) as out:
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        bridge = Bridge(settings, tracer_provider=provider)
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
            await producer.start()
            try:
                for value in (
                    {"action": "pause", "workflow": "wf", "instance_id": "absent"},
                    {"action": "create", "workflow": "wf", "instance_id": "t-1"},
                ):
                    await producer.send_and_wait(
                        topics.commands,
                        json.dumps(value).encode(),
                        key=value["instance_id"].encode(),
                        headers=[("traceparent", traceparent)],
                    )
            finally:
                await producer.stop()
            await out.until(results=2, dead_letters=1)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    spans = exporter.get_finished_spans()
    commands = [s for s in spans if s.name == "workflows_bridge.command"]
    calls = [s for s in spans if s.name.startswith("workflows_bridge.api ")]
    assert len(commands) == 2
    for span in commands:
        assert span.kind is SpanKind.CONSUMER
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None
        assert format(span.parent.span_id, "016x") == PARENT_ID
    by_instance = {dict(s.attributes or {})["workflows_bridge.instance_id"]: s for s in commands}
    pause = by_instance["absent"]
    [pause_call] = [c for c in calls if c.parent and c.parent.span_id == pause.context.span_id]
    assert pause_call.name == "workflows_bridge.api edit_status"
    assert dict(pause_call.attributes or {})["http.response.status_code"] == 404
    dead_letter = dict(out.dead_letters[0].headers)["traceparent"].decode()
    assert dead_letter == f"00-{TRACE_ID}-{pause.context.span_id:016x}-01"
    # Results carry the traceparent of their command span (checked on the raw records).
    raw = await _result_headers(kafka_broker.bootstrap_servers, topics.output)
    for instance, headers in raw.items():
        header = headers["traceparent"].decode()
        assert header == f"00-{TRACE_ID}-{by_instance[instance].context.span_id:016x}-01"


async def _result_headers(bootstrap: str, topic: str) -> dict[str, dict[str, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: dict[str, dict[str, bytes]] = {}
        while len(found) < 2:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    found[(record.key or b"").decode()] = dict(record.headers)
        return found
    finally:
        await consumer.stop()
