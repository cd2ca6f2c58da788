"""The bridge process killed, stopped and scaled: what a deployment does to it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.emulator import Emulator, EmulatorConfig
from bridge.emulator.config import Latency
from tests.bridge_harness import NewTopic, OutputReader, make_topics, send_commands
from tests.kafka_harness import KafkaBroker
from tests.process_harness import BridgeProcess

Namer = Callable[[str], str]

pytestmark = pytest.mark.slow


def _creates(count: int, prefix: str) -> list[dict[str, Any] | bytes]:
    # Half with ids, half without: those get ids derived from their command ids.
    commands: list[dict[str, Any] | bytes] = []
    for n in range(count):
        if n % 2:
            commands.append({"action": "create", "workflow": "wf", "instance_id": f"{prefix}-{n}"})
        else:
            commands.append(
                {"action": "create", "workflow": "wf", "command_id": f"{prefix}-cmd-{n}"}
            )
    return commands


def _answered(reader: OutputReader) -> Counter[tuple[str, int, int]]:
    return Counter(
        (r["source"]["topic"], r["source"]["partition"], r["source"]["offset"])
        for r in reader.results
    )


async def test_sigkill_mid_stream_loses_nothing_and_duplicates_no_instance(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    topics = await make_topics(new_topic, 3)
    commands = _creates(400, "k")
    config = EmulatorConfig(latency=Latency(fixed_ms=5, jitter_ms=10))
    group = unique_name("g")
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "a.log"
        ) as first:
            await first.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=60, within=60)
            await first.kill()
        killed_at = len(reader.results)
        assert killed_at < 400, "the kill came too late to interrupt anything"
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "b.log"
        ) as second:
            await second.wait_running()
            async with asyncio.timeout(120):
                while len(_answered(reader)) < 400:
                    await reader.until(results=len(reader.results) + 1, within=60)
            assert await second.terminate() == 0
        assert len(_answered(reader)) == 400  # every command answered at least once
        assert emulator.stats.created["wf"] == 400  # and no instance created twice
        assert len(emulator.instances("wf")) == 400
        redone = [r for r in reader.results if r["outcome"] == "already_exists"]
        assert len(reader.results) - 400 == sum(n - 1 for n in _answered(reader).values())
        assert all(r["status"] for r in redone)


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result = {}
        for partition in range(3):
            offset = await consumer.committed(TopicPartition(topic, partition))
            result[partition] = offset or 0
        return result
    finally:
        await consumer.stop()


async def test_sigterm_drains_in_flight_work_and_commits(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    topics = await make_topics(new_topic, 3)
    commands = _creates(300, "t")
    config = EmulatorConfig(latency=Latency(fixed_ms=20, jitter_ms=20))
    group = unique_name("g")
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "a.log",
            extra_env={
                "BRIDGE_PIPELINE__MAX_CONCURRENCY": "8",
                "BRIDGE_PIPELINE__MAX_PENDING": "20",
                "BRIDGE_PIPELINE__BATCH_LINGER_MS": "0",
            },
        ) as bridge:
            await bridge.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=30, within=60)
            assert await bridge.terminate() == 0
        assert b"bridge drained" in (tmp_path / "a.log").read_bytes()
        committed = await _committed(kafka_broker.bootstrap_servers, group, topics.commands)
        assert 0 < sum(committed.values()) < 300, committed
        await reader.until(results=sum(committed.values()), within=10)
        answered = _answered(reader)
        for partition, offset in committed.items():
            for below in range(offset):  # everything before the commit point was answered once
                assert answered[(topics.commands, partition, below)] == 1
        # a second run answers the rest, and nothing before the commit point again
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "b.log"
        ) as again:
            await again.wait_running()
            await reader.until(results=300, within=90)
            assert await again.terminate() == 0
        answered = _answered(reader)
        assert len(answered) == 300
        assert max(answered.values()) == 1
        assert emulator.stats.created["wf"] == 300


async def test_two_processes_through_a_rebalance(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    topics = await make_topics(new_topic, 3)
    config = EmulatorConfig(latency=Latency(fixed_ms=10, jitter_ms=10))
    group = unique_name("g")
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "a.log"
        ) as first:
            await first.wait_running()
            await send_commands(
                kafka_broker.bootstrap_servers, topics.commands, _creates(300, "r1")
            )
            async with BridgeProcess(
                kafka_broker, emulator, topics, group=group, log_path=tmp_path / "b.log"
            ) as second:
                await second.wait_running()
                await reader.until(results=300, within=90)
                assert await first.terminate() == 0  # hand everything to the second
                await send_commands(
                    kafka_broker.bootstrap_servers, topics.commands, _creates(200, "r2")
                )
                async with asyncio.timeout(90):
                    while len(_answered(reader)) < 500:
                        await reader.until(results=len(reader.results) + 1, within=60)
                assert await second.terminate() == 0
        assert b"partitions revoked" in (tmp_path / "a.log").read_bytes()
        assert len(_answered(reader)) == 500
        assert emulator.stats.created["wf"] == 500
