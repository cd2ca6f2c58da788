"""The state stream end to end: a real broker, the emulator over HTTP, the real service.

With the queue and without: every instance created through the bridge, and one created directly
on the emulator (as a Worker binding would), gets its whole chain of state records to a final
state with its output or error, each change once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bridge.config import StateSettings
from bridge.local.emulator import Emulator, EmulatorConfig, QueueBehaviour, WorkflowBehaviour
from bridge.local.emulator.config import DoStep, Faults, SleepStep
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    bridge_settings,
    make_topics,
    running_bridge,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker
from tests.support.state_harness import StateReader, chain_problems, fast_states

pytestmark = pytest.mark.slow

QUEUE = "workflow-states"
#: A budget that lets tests move: 100 requests/s, 10 of them for state tracking.
BUDGET: dict[str, Any] = {"budget_requests": 6000, "budget_window_seconds": 60}


def workflows() -> dict[str, WorkflowBehaviour]:
    return {
        "orders": WorkflowBehaviour(
            steps=(
                DoStep(name="reserve", duration_ms=30),
                SleepStep(name="cool", duration_ms=200),
                DoStep(name="ship", duration_ms=30),
            )
        ),
        # one at a time, so an instance created behind another stays queued for a while
        "imports": WorkflowBehaviour(
            steps=(SleepStep(name="load", duration_ms=1500),), concurrency=1
        ),
        # one retried step error (an instance.errored event that is not the end), then it fails
        "refunds": WorkflowBehaviour(
            steps=(
                DoStep(name="check", duration_ms=20, transient_failures=1, retry_delay_ms=50),
                DoStep(name="pay", duration_ms=20, fail=True, error_message="card declined"),
            )
        ),
    }


def commands() -> list[dict[str, Any]]:
    return [
        {"action": "create", "workflow": "orders", "instance_id": f"o-{n}", "params": {"n": n}}
        for n in range(6)
    ] + [
        {
            "action": "create_batch",
            "workflow": "refunds",
            "instances": [{"instance_id": f"r-{n}"} for n in range(3)],
        }
    ]


IDS = [f"o-{n}" for n in range(6)] + [f"r-{n}" for n in range(3)]


def check(reader: StateReader, emulator: Emulator, *, direct: str) -> None:
    chains = reader.chains()
    for instance_id in [*IDS, direct]:
        problems = chain_problems(chains[instance_id])
        assert not problems, (instance_id, problems)
    for n in range(6):
        end = reader.final(f"o-{n}")
        assert end is not None
        assert end.status == "complete"
        assert end.output == {"params": {"n": n}}
        view = emulator.instance("orders", f"o-{n}")
        assert view is not None
        assert end.version_id is not None
    end = reader.final(direct)
    assert end is not None
    assert end.status == "complete"
    assert end.output == {"params": None}
    for n in range(3):
        end = reader.final(f"r-{n}")
        assert end is not None
        assert end.status == "errored"
        assert end.error is not None
        assert end.error.name == "WorkflowFatalError"
    born = chains["o-0"][0]
    assert born.source in ("command", "event", "poll")


@pytest.mark.parametrize("queue", [True, False], ids=["queue", "poll-only"])
async def test_every_instance_gets_its_whole_chain_once(
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
    queue: bool,
) -> None:
    topics = await make_topics(new_topic, 3)
    config = EmulatorConfig(workflows=workflows(), event_queue=QUEUE if queue else None)
    # "imports" gets no command: it is followed because BRIDGE_STATES__WORKFLOWS names it
    states: StateSettings = fast_states(queue_id=QUEUE if queue else None, workflows=["imports"])
    async with (
        Emulator(config) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
        OutputReader(kafka_broker.bootstrap_servers, topics) as output,
    ):
        settings = bridge_settings(
            kafka_broker, emulator, topics, group=unique_name("g"), states=states, **BUDGET
        )
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands())
            # created elsewhere (a Worker binding): the second waits queued behind the first
            emulator.add_instance("imports", "direct-0", trigger="binding")
            emulator.add_instance("imports", "direct-1", trigger="binding")
            await reader.until_final([*IDS, "direct-0", "direct-1"])
            await reader.settle()
        await output.until(results=len(IDS))
        check(reader, emulator, direct="direct-1")
        if queue:
            assert emulator.queue(QUEUE).counters.acked >= len(IDS) * 2
    sources = {r.source for r in reader.records}
    if queue:
        assert "event" in sources
    else:
        assert "event" not in sources
        assert "poll" in sources
    assert len(output.results) == len(IDS)  # the results, beside the states


async def test_duplicates_reordering_and_lost_acks_change_nothing(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 3)
    config = EmulatorConfig(
        workflows=workflows(),
        event_queue=QUEUE,
        queue=QueueBehaviour(
            duplicate_ratio=0.4,
            duplicate_delay_ms=100,
            reorder_ratio=0.4,
            reorder_delay_ms=150,
            lost_ack_ratio=0.3,
            lease_ms=4000,
        ),
        seed=7,
    )
    # a reorder window far wider than the injected reordering: the chains stay whole
    states = fast_states(queue_id=QUEUE, reorder_window_seconds=3.0, workflows=["imports"])
    async with (
        Emulator(config) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
    ):
        settings = bridge_settings(
            kafka_broker, emulator, topics, group=unique_name("g"), states=states, **BUDGET
        )
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands())
            emulator.add_instance("imports", "direct-0", trigger="binding")
            emulator.add_instance("imports", "direct-1", trigger="binding")
            await reader.until_final([*IDS, "direct-0", "direct-1"])
            queue = emulator.queue(QUEUE)
            # let redeliveries of lost acks come back and be dropped
            while queue.counters.redelivered == 0 or len(queue):
                await reader.poll(0.3)
            await reader.settle(1.5)
        counters = emulator.queue(QUEUE).counters
        assert counters.duplicates_injected > 0
        assert counters.reordered > 0
        assert counters.acks_lost > 0
        assert counters.redelivered > 0
        check(reader, emulator, direct="direct-1")
    transitions = [(r.instance_id, r.previous_status, r.status) for r in reader.records]
    assert len(transitions) == len(set(transitions))  # no change published twice


async def test_the_executor_takes_statuses_from_the_stream(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    """A create whose id is taken is answered with the status the stream knows, without a
    request: here every ``list`` fails, so a lookup could not have found it."""
    topics = await make_topics(new_topic, 1)
    config = EmulatorConfig(workflows=workflows(), event_queue=QUEUE)
    async with (
        Emulator(config) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
        OutputReader(kafka_broker.bootstrap_servers, topics) as output,
    ):
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            states=fast_states(queue_id=QUEUE),
            **BUDGET,
        )
        async with running_bridge(settings):
            create = {"action": "create", "workflow": "orders", "instance_id": "o-1"}
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, [create])
            await reader.until_final(["o-1"])
            emulator.config.faults = Faults(error_ratio=1.0, routes=frozenset({"list"}))
            again = {**create, "command_id": "again"}
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, [again])
            await output.until(results=2)
    [answer] = [r for r in output.results if r["command_id"] == "again"]
    assert answer["outcome"] == "already_exists"
    assert answer["status"] == "complete"


@pytest.mark.full_kafka
async def test_with_transactional_results_the_states_are_whole_too(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    """Results written in transactions are read back ``read_committed``; the states, written
    outside them by the follower's own producer, form whole chains once all the same."""
    topics = await make_topics(new_topic, 3)
    config = EmulatorConfig(workflows=workflows(), event_queue=QUEUE)
    async with (
        Emulator(config) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
    ):
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            states=fast_states(queue_id=QUEUE),
            **BUDGET,
        )
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"transactional_id": unique_name("tx")})
            }
        )
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands())
            await reader.until_final(IDS)
            await reader.settle()
    chains = reader.chains()
    for instance_id in IDS:
        assert not chain_problems(chains[instance_id]), (instance_id, chains[instance_id])
    transitions = [(r.instance_id, r.previous_status, r.status) for r in reader.records]
    assert len(transitions) == len(set(transitions))
