"""The state stream across a SIGKILL and restart of the bridge process, and a two-replica
rebalance: what was published is recovered from Kafka, nothing is published twice, nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.local.emulator import Emulator, EmulatorConfig, QueueBehaviour, WorkflowBehaviour
from bridge.local.emulator.config import DoStep, SleepStep
from bridge.pipeline.service import Bridge
from tests.support.bridge_harness import (
    NewTopic,
    bridge_settings,
    make_topics,
    running_bridge,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker
from tests.support.process_harness import BridgeProcess
from tests.support.state_harness import StateReader, chain_problems, fast_states

pytestmark = pytest.mark.slow

QUEUE = "workflow-states"
COUNT = 40


def _config(queue: bool) -> EmulatorConfig:
    # Each instance lives about two seconds: a kill or a rebalance finds many of them mid-way.
    behaviour = WorkflowBehaviour(
        steps=(
            DoStep(name="a", duration_ms=50),
            SleepStep(name="b", duration_ms=2000),
            DoStep(name="c", duration_ms=50),
        )
    )
    return EmulatorConfig(
        workflows={"wf": behaviour},
        event_queue=QUEUE if queue else None,
        # leases short enough that a killed follower's messages come back within the test
        queue=QueueBehaviour(lease_ms=3000),
    )


def _creates(prefix: str, count: int = COUNT) -> list[dict[str, Any] | bytes]:
    return [
        {"action": "create", "workflow": "wf", "instance_id": f"{prefix}-{n}"} for n in range(count)
    ]


def _assert_exactly_once(reader: StateReader, ids: list[str]) -> None:
    chains = reader.chains()
    for instance_id in ids:
        problems = chain_problems(chains.get(instance_id, []))
        assert not problems, (instance_id, problems)
    transitions = [(r.instance_id, r.previous_status, r.status) for r in reader.records]
    assert len(transitions) == len(set(transitions)), "a change was published twice"


def _following(bridge: Bridge) -> bool:
    return bool(bridge.readiness()[1].get("states", {}).get("following"))


def _env(queue: bool) -> dict[str, str]:
    env = {
        "BRIDGE_STATES__ENABLED": "true",
        "BRIDGE_STATES__POLL_INTERVAL_SECONDS": "0.3",
        "BRIDGE_STATES__RECONCILE_INTERVAL_SECONDS": "2",
        "BRIDGE_STATES__REORDER_WINDOW_SECONDS": "0.5",
        "BRIDGE_CLOUDFLARE__BUDGET_REQUESTS": "6000",
        "BRIDGE_CLOUDFLARE__BUDGET_WINDOW_SECONDS": "60",
    }
    if queue:
        env["BRIDGE_STATES__QUEUE_ID"] = QUEUE
    return env


@pytest.mark.parametrize("queue", [True, False], ids=["queue", "poll-only"])
async def test_sigkill_and_restart_neither_lose_nor_repeat_a_change(
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    queue: bool,
) -> None:
    topics = await make_topics(new_topic, 3)
    group = unique_name("g")
    ids = [f"k-{n}" for n in range(COUNT)]
    async with (
        Emulator(_config(queue)) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
    ):
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "a.log",
            extra_env=_env(queue),
        ) as first:
            await first.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, _creates("k"))
            async with asyncio.timeout(60):  # killed while instances are under way
                while len({r.instance_id for r in reader.records}) < COUNT // 2:
                    await reader.poll()
            await first.kill()
        finished_before = sum(1 for i in ids if reader.final(i) is not None)
        assert finished_before < COUNT, "the kill came too late to interrupt anything"
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "b.log",
            extra_env=_env(queue),
        ) as second:
            await second.wait_running()
            await reader.until_final(ids)
            await reader.settle(1.5)
            assert await second.terminate() == 0
        log = (tmp_path / "b.log").read_text()
        assert '"state_following_started"' in log
    _assert_exactly_once(reader, ids)


@pytest.mark.parametrize("queue", [True, False], ids=["queue", "poll-only"])
async def test_a_rebalance_hands_the_stream_over_without_gaps_or_duplicates(
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
    queue: bool,
) -> None:
    topics = await make_topics(new_topic, 3)
    group = unique_name("g")
    states = fast_states(queue_id=QUEUE if queue else None)
    budget: dict[str, Any] = {"budget_requests": 6000, "budget_window_seconds": 60}
    ids = [f"a-{n}" for n in range(COUNT)] + [f"b-{n}" for n in range(COUNT)]
    async with (
        Emulator(_config(queue)) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
    ):
        settings = bridge_settings(
            kafka_broker, emulator, topics, group=group, states=states, **budget
        )
        async with contextlib.AsyncExitStack() as first_stack:
            first = await first_stack.enter_async_context(running_bridge(settings))
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, _creates("a"))
            async with asyncio.timeout(60):
                while len({r.instance_id for r in reader.records}) < COUNT // 2:
                    await reader.poll()
            async with contextlib.AsyncExitStack() as second_stack:
                # the group rebalances: the role is handed over (or taken back) once
                second = await second_stack.enter_async_context(running_bridge(settings))
                await send_commands(kafka_broker.bootstrap_servers, topics.commands, _creates("b"))
                async with asyncio.timeout(60):
                    while not (following := [_following(b) for b in (first, second)]).count(True):
                        await reader.poll()
                assert following.count(True) == 1  # one follower, never two
                # the follower leaves: the other replica takes the role over
                if following[0]:
                    await first_stack.aclose()
                    remaining = second
                else:
                    await second_stack.aclose()
                    remaining = first
                await reader.until_final(ids)
                await reader.settle(1.5)
                assert _following(remaining)
    _assert_exactly_once(reader, ids)
