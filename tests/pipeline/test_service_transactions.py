"""Exactly-once results: with a transactional id, results and offsets commit together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.local.emulator.config import Latency
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    bridge_settings,
    make_topics,
    running_bridge,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker
from tests.support.process_harness import BridgeProcess

Namer = Callable[[str], str]

pytestmark = pytest.mark.full_kafka


async def test_transactional_results_are_committed_with_offsets(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 3)
    commands: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": "wf", "instance_id": f"x-{n}"} for n in range(100)
    ]
    commands.append(b"not a command")
    async with (
        Emulator(EmulatorConfig()) as emulator,
        OutputReader(
            kafka_broker.bootstrap_servers, topics, isolation_level="read_committed"
        ) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"transactional_id": unique_name("tx")})
            }
        )
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=101, dead_letters=1, within=60)
        assert max(reader.answered().values()) == 1
        assert emulator.stats.created["wf"] == 100


@pytest.mark.slow
async def test_sigkill_with_transactions_gives_each_command_one_visible_result(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    topics = await make_topics(new_topic, 3)
    commands: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": "wf", "instance_id": f"k-{n}"} for n in range(400)
    ]
    group, txid = unique_name("g"), unique_name("tx")
    env = {"BRIDGE_KAFKA__TRANSACTIONAL_ID": txid, "BRIDGE_PIPELINE__MAX_CONCURRENCY": "16"}
    async with (
        Emulator(EmulatorConfig(latency=Latency(fixed_ms=5, jitter_ms=10))) as emulator,
        OutputReader(
            kafka_broker.bootstrap_servers, topics, isolation_level="read_committed"
        ) as reader,
    ):
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "a.log", extra_env=env
        ) as first:
            await first.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=50, within=60)
            await first.kill()
        assert len(reader.results) < 400
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "b.log", extra_env=env
        ) as second:
            await second.wait_running()
            await reader.until(results=400, within=120)
            assert await second.terminate() == 0
        sources = reader.answered()
        assert len(sources) == 400
        assert max(sources.values()) == 1  # read_committed: no command answered twice
        assert emulator.stats.created["wf"] == 400
