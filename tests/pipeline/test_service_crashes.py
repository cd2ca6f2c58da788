"""An unexpected exception never freezes a partition.

A crash while decoding, planning, executing or answering a command answers it ``failed`` with a
dead letter naming the stage and the exception class, and the partition's commit point moves on.
A crash in the outbox itself (nothing can answer the command) stops the replica, and the command
is redelivered to the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.errors import InternalError
from bridge.local.emulator import Emulator
from bridge.pipeline import replica
from bridge.pipeline.executor import Executor
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.service import Bridge
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    Topics,
    bridge_settings,
    make_topics,
    running_bridge,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker

POISON = "poison"


def _poisoned(value: Any) -> bool:
    """Whether the argument of a patched stage belongs to the poison command."""
    text = value if isinstance(value, bytes) else repr(value).encode()
    return POISON.encode() in text


def _crash_in(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``stage`` raise RuntimeError for the poison command only."""
    if stage == "decode":
        real_decode = replica.decode_command  # type: ignore[attr-defined]

        def decode(value: bytes | None) -> Any:
            if _poisoned(value):
                raise RuntimeError("decoder bug")
            return real_decode(value)

        monkeypatch.setattr(replica, "decode_command", decode)
    elif stage == "plan":
        real_plan = replica.plan  # type: ignore[attr-defined]

        def plan(command: Any, origin: Any, *rest: Any) -> Any:
            if _poisoned(command):
                raise RuntimeError("planner bug")
            return real_plan(command, origin, *rest)

        monkeypatch.setattr(replica, "plan", plan)
    elif stage == "execute":
        real_run = Executor.run

        async def run(self: Executor, job: Any) -> Any:
            if _poisoned(job):
                raise RuntimeError("executor bug")
            return await real_run(self, job)

        monkeypatch.setattr(Executor, "run", run)
    else:
        real_records = replica.records_for_job  # type: ignore[attr-defined]

        def records(job: Any, done: Any, origin: Any) -> Any:
            if _poisoned(job):
                raise RuntimeError("answer bug")
            return real_records(job, done, origin)

        monkeypatch.setattr(replica, "records_for_job", records)


async def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


def _commands(wf: str) -> list[dict[str, Any]]:
    return [
        {"action": "create", "workflow": wf, "instance_id": POISON, "command_id": "bad"},
        {"action": "create", "workflow": wf, "instance_id": "fine", "command_id": "good"},
    ]


@pytest.mark.parametrize("stage", ["decode", "plan", "execute", "answer"])
async def test_a_crash_in_any_stage_answers_the_command_and_moves_on(
    stage: str,
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics: Topics = await make_topics(new_topic, partitions=1)
    group = unique_name("g")
    _crash_in(stage, monkeypatch)
    async with (
        Emulator() as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=group)
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, _commands("wf"))
            await reader.until(results=2, dead_letters=1)
        results = reader.by_command()
        assert results["good"][0]["outcome"] == "ok"
        [bad] = results["bad"]
        assert bad["outcome"] == "failed"
        assert bad["instance_id"] == POISON
        assert bad["error"]["type"] == "RuntimeError"
        assert stage in bad["error"]["message"]
        [letter] = reader.dead_letters
        headers = dict(letter.headers)
        assert headers["workflows_bridge.errors.stage"] == stage.encode()
        assert headers["workflows_bridge.errors.class_name"] == b"RuntimeError"
        assert headers["workflows_bridge.errors.outcome"] == b"failed"
    # the partition was not frozen: both commands are behind the commit point
    assert await _committed(kafka_broker.bootstrap_servers, group, topics.commands) == 2


async def test_a_crash_in_the_outbox_stops_the_replica_and_the_command_is_redelivered(
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = await make_topics(new_topic, partitions=1)
    group = unique_name("g")
    real_job_done = Outbox.job_done

    async def job_done(self: Outbox, command: Any, records: Any) -> None:
        if _poisoned(command.origin.value):
            raise RuntimeError("outbox bug")
        await real_job_done(self, command, records)

    async with (
        Emulator() as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=group)
        with monkeypatch.context() as patch:
            patch.setattr(Outbox, "job_done", job_done)
            bridge = Bridge(settings)
            run = asyncio.create_task(bridge.run(asyncio.Event()))
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, _commands("wf"))
            with pytest.raises(InternalError, match="outbox bug"):
                await asyncio.wait_for(run, 120)
        assert not [r for r in reader.results if r["command_id"] == "bad"]
        committed = await _committed(kafka_broker.bootstrap_servers, group, topics.commands)
        assert committed is None or committed == 0  # never past the unanswered command
        # a fresh replica (the bug fixed) gets it again and answers it
        async with running_bridge(settings), asyncio.timeout(120):
            while not any(r["command_id"] == "bad" for r in reader.results):
                await reader.until(results=len(reader.results) + 1)
        # the first replica had created the instance before its outbox failed
        assert reader.by_command()["bad"][0]["outcome"] == "already_exists"
        assert emulator.stats.created["wf"] == 2  # no duplicate instance
