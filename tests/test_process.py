"""The bridge process killed, stopped and scaled: what a deployment does to it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.local.emulator import Emulator, EmulatorConfig, WorkflowBehaviour
from bridge.local.emulator.config import Latency, WaitForEventStep
from tests.support.bridge_harness import NewTopic, OutputReader, make_topics, send_commands
from tests.support.kafka_harness import KafkaBroker
from tests.support.process_harness import BridgeProcess

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
                while len(reader.answered()) < 400:
                    await reader.until(results=len(reader.results) + 1, within=60)
            assert await second.terminate() == 0
        assert len(reader.answered()) == 400  # every command answered at least once
        assert emulator.stats.created["wf"] == 400  # and no instance created twice
        assert len(emulator.instances("wf")) == 400
        redone = [r for r in reader.results if r["outcome"] == "already_exists"]
        assert len(reader.results) - 400 == sum(n - 1 for n in reader.answered().values())
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
        assert b'"bridge_drained"' in (tmp_path / "a.log").read_bytes()
        committed = await _committed(kafka_broker.bootstrap_servers, group, topics.commands)
        assert 0 < sum(committed.values()) < 300, committed
        await reader.until(results=sum(committed.values()), within=10)
        answered = reader.answered()
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
        answered = reader.answered()
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
                    while len(reader.answered()) < 500:
                        await reader.until(results=len(reader.results) + 1, within=60)
                assert await second.terminate() == 0
        assert b'"partitions_revoked"' in (tmp_path / "a.log").read_bytes()
        assert len(reader.answered()) == 500
        assert emulator.stats.created["wf"] == 500


async def test_run_answers_thousands_of_mixed_commands_once_each_in_order(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    topics = await make_topics(new_topic, 3)
    rnd = random.Random(3)
    singles = [f"m-{n}" for n in range(200)]
    batches = [[f"mb-{b}-{n}" for n in range(10)] for b in range(10)]
    instances = singles + [i for batch in batches for i in batch]
    creates: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": "wf", "instance_id": i, "params": {"i": i}}
        for i in singles
    ]
    creates += [
        {
            "action": "create_batch",
            "workflow": "wf",
            "instances": [{"instance_id": i} for i in batch],
        }
        for batch in batches
    ]
    # Per instance: events numbered 0..6 with a pause and a resume in between, all interleaved.
    plans = {
        i: [
            ("event", 0),
            ("event", 1),
            ("pause", None),
            ("event", 2),
            ("event", 3),
            ("resume", None),
            ("event", 4),
            ("event", 5),
            ("event", 6),
        ]
        for i in instances
    }
    mixed: list[dict[str, Any] | bytes] = []
    while plans:
        instance = rnd.choice(sorted(plans))
        kind, seq = plans[instance].pop(0)
        if not plans[instance]:
            del plans[instance]
        if kind == "event":
            mixed.append(
                {
                    "action": "send_event",
                    "workflow": "wf",
                    "instance_id": instance,
                    "event_type": "tick",
                    "payload": {"seq": seq},
                }
            )
        else:
            mixed.append({"action": kind, "workflow": "wf", "instance_id": instance})
    listening = WorkflowBehaviour(steps=(WaitForEventStep(name="never", event_type="never"),))
    config = EmulatorConfig(workflows={"wf": listening}, latency=Latency(fixed_ms=2, jitter_ms=8))
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            log_path=tmp_path / "run.log",
            # The default budget (1,100 per 5 min) would rightly pace 2,700 events over 15 min.
            extra_env={"BRIDGE_CLOUDFLARE__BUDGET_REQUESTS": "1000000"},
        ) as bridge:
            await bridge.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, creates)
            await reader.until(results=300, within=60)
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, mixed)
            await reader.until(results=300 + len(mixed), within=180)
            assert await bridge.terminate() == 0
        assert len(mixed) == 2700
        assert len(reader.results) == 3000  # one per command (one per batch item), not more
        assert Counter(r["outcome"] for r in reader.results) == {"ok": 3000}
        assert emulator.stats.created["wf"] == 300
        for instance in instances:
            view = emulator.instance("wf", instance)
            assert view is not None
            assert [p["seq"] for _, p in view.events] == list(range(7)), instance


@pytest.mark.parametrize(
    "transactional", [False, pytest.param(True, marks=pytest.mark.full_kafka)], ids=["plain", "txn"]
)
async def test_a_drain_longer_than_the_session_keeps_the_partitions_until_it_ends(
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Namer,
    tmp_path: Path,
    transactional: bool,
) -> None:
    """A replica rejoins a rebalance only once it has drained its revoked partitions. Here each
    call takes 4 s and the session timeout is 2 s: if the group waited only the session timeout
    (aiokafka's default rebalance timeout), it would expel the draining replica and give its
    partitions to the newcomer while the replica still wrote answers: commands answered twice,
    events delivered twice (with transactions: the expelled replica's commit is not fenced)."""
    topics = await make_topics(new_topic, 2)
    instances = [f"d-{n}" for n in range(12)]
    group = unique_name("g")

    def env(name: str) -> dict[str, str]:
        slow = {"BRIDGE_PIPELINE__MAX_CONCURRENCY": "4"}  # in flight all along, 4 at a time
        if transactional:
            slow["BRIDGE_KAFKA__TRANSACTIONAL_ID"] = f"{group}-{name}"
        return slow

    isolation = "read_committed" if transactional else "read_uncommitted"
    async with (
        Emulator(EmulatorConfig()) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics, isolation_level=isolation) as reader,
    ):
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "a.log",
            extra_env=env("a"),
        ) as first:
            await first.wait_running()
            creates: list[dict[str, Any] | bytes] = [
                {"action": "create", "workflow": "wf", "instance_id": i} for i in instances
            ]
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, creates)
            await reader.until(results=len(creates), within=60)
            emulator.config.latency = Latency(fixed_ms=4000)
            events: list[dict[str, Any] | bytes] = [
                {
                    "action": "send_event",
                    "workflow": "wf",
                    "instance_id": i,
                    "event_type": "tick",
                    "payload": {"n": n},
                }
                for n in range(3)
                for i in instances
            ]
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, events)
            async with BridgeProcess(
                kafka_broker,
                emulator,
                topics,
                group=group,
                log_path=tmp_path / "b.log",
                extra_env=env("b"),
            ) as second:
                await second.wait_running(within=60)
                await reader.until(results=len(creates) + len(events), within=180)
                assert await second.terminate() == 0
            assert await first.terminate() == 0
        log = (tmp_path / "a.log").read_bytes()
        assert b'"partitions_revoked"' in log  # the first replica did drain for the newcomer
        answered = reader.answered()
        assert len(answered) == len(creates) + len(events)
        assert max(answered.values()) == 1, [k for k, n in answered.items() if n > 1]
        assert sum(emulator.stats.events_repeated.values()) == 0
        assert b"member_id was not recognized" not in log  # it was never expelled
