"""``workflows-bridge watch``: every result and state of the output topic, per instance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from bridge.cli import main
from bridge.tools.watch import Timelines, describe
from tests.support.hermetic import without_bridge_variables

NewTopic = Callable[..., Awaitable[str]]


def _state(instance: str, previous: str | None, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "state",
        "workflow": "wf",
        "instance_id": instance,
        "status": status,
        "previous_status": previous,
        "at": "2026-11-30T10:00:01Z",
        "event_at": "2026-11-30T10:00:00.5Z",
        "source": "event",
        "version_id": None,
        "output": None,
        "error": None,
        "inferred": False,
        **extra,
    }


def _result(instance: str, workflow: str = "wf") -> dict[str, Any]:
    return {
        "kind": "result",
        "command_id": f"c-{instance}",
        "action": "create",
        "workflow": workflow,
        "instance_id": instance,
        "outcome": "ok",
        "status": "queued",
        "at": "2026-11-30T10:00:00Z",
    }


RECORDS: list[dict[str, Any]] = [
    _result("i-1"),
    _result("i-2"),
    _result("x-1", workflow="other"),
    _state("i-1", None, "queued", source="command"),
    _state("i-1", "queued", "running"),
    _state("i-2", None, "queued", source="command"),
    _state("i-1", "running", "complete", output={"ok": True}),
    _state("i-2", "queued", "errored", error={"name": "Error", "message": "boom"}),
]


async def _publish(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not json")
        for record in records:
            await producer.send_and_wait(
                topic, json.dumps(record).encode(), key=record["instance_id"].encode()
            )
    finally:
        await producer.stop()


def test_timelines_and_lines_say_what_became_of_each_instance() -> None:
    timelines = Timelines(workflows=["wf"])
    for record in RECORDS:
        timelines.add(record)
    one, two = timelines.by_instance[("wf", "i-1")], timelines.by_instance[("wf", "i-2")]
    assert (one.status, one.steps(), one.output) == (
        "complete",
        "queued → running → complete",
        {"ok": True},
    )
    assert (two.status, two.error) == ("errored", {"name": "Error", "message": "boom"})
    assert ("other", "x-1") not in timelines.by_instance
    assert one.results == ["create → ok"]
    line = describe(RECORDS[4])
    assert "wf/i-1" in line
    assert "queued → running" in line
    assert "[event]" in line
    assert "result create → ok (queued)" in describe(RECORDS[0])


@pytest.mark.usefixtures("operator_env")
async def test_watch_prints_the_records_of_one_instance_as_json(
    kafka_bootstrap: str, new_topic: NewTopic, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await new_topic("out", partitions=2)
    await _publish(kafka_bootstrap, topic, RECORDS)
    os.environ["BRIDGE_TOPICS__OUTPUT"] = topic
    try:
        argv = ["watch", "--bootstrap", kafka_bootstrap, "--no-follow", "--json"]
        code = await asyncio.to_thread(main, [*argv, "--instance", "i-1"])
        out = capsys.readouterr().out
        assert code == 0
        lines = [json.loads(line) for line in out.splitlines()]
        assert [r.get("status") for r in lines if r["kind"] == "state"] == [
            "queued",
            "running",
            "complete",
        ]
        assert {r["instance_id"] for r in lines} == {"i-1"}
        code = await asyncio.to_thread(
            main, ["watch", "--bootstrap", kafka_bootstrap, "--no-follow", "--workflow", "wf"]
        )
        out = capsys.readouterr().out
        assert code == 0
        assert "queued → errored" in out
        assert "other/x-1" not in out
        assert "queued → running → complete" in out  # the timeline in the table
    finally:
        del os.environ["BRIDGE_TOPICS__OUTPUT"]


async def test_watch_follows_until_interrupted(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = await new_topic("out", partitions=1)
    env = {
        **without_bridge_variables(),
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "BRIDGE_TOPICS__OUTPUT": topic,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "watch",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        await _publish(kafka_bootstrap, topic, RECORDS[:4])
        assert process.stdout is not None
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while len(seen) < 4:
                seen.append(json.loads(await process.stdout.readline()))
        assert seen[-1]["kind"] == "state"
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
