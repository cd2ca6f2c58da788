"""The bridge under pressure: ordering at concurrency, API faults, a refused token, coalescing,
rate limits and a shared budget — each against the emulator behaving like production would."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog
from aiokafka import AIOKafkaProducer

from bridge.config import PipelineSettings
from bridge.local import EmbeddedTansu, ensure_topics
from bridge.local.emulator import Emulator, EmulatorConfig, WorkflowBehaviour
from bridge.local.emulator.config import Faults, RequestBudget, WaitForEventStep
from bridge.local.tansu import free_port
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
from tests.support.kafka_harness import Flavour, KafkaBroker

Namer = Callable[[str], str]


def _listening() -> WorkflowBehaviour:
    # Instances wait for an event that never comes, so every event is kept and none is consumed.
    return WorkflowBehaviour(steps=(WaitForEventStep(name="never", event_type="never"),))


async def test_per_instance_order_holds_at_concurrency(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 4)
    rnd = random.Random(11)
    instances = [f"i-{n}" for n in range(40)]
    commands: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": "wf", "instance_id": i} for i in instances
    ]
    seq: Counter[str] = Counter()
    for _ in range(600):  # interleaved events, each carrying its per-instance sequence number
        target = rnd.choice(instances)
        commands.append(
            {
                "action": "send_event",
                "workflow": "wf",
                "instance_id": target,
                "event_type": "tick",
                "payload": {"seq": seq[target]},
            }
        )
        seq[target] += 1
    async with (
        Emulator(
            EmulatorConfig(workflows={"wf": _listening()}, latency={"jitter_ms": 15})
        ) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            pipeline=PipelineSettings(max_concurrency=32),
        )
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=len(commands), within=120)
        assert all(r["outcome"] == "ok" for r in reader.results)
        for instance in instances:
            view = emulator.instance("wf", instance)
            assert view is not None
            got = [payload["seq"] for kind, payload in view.events if kind == "tick"]
            assert got == list(range(seq[instance])), instance
        assert emulator.stats.requests["event"] == 600


async def test_transient_faults_are_ridden_out_without_duplicates(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 4)
    commands: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": "wf", "instance_id": f"f-{n}"} for n in range(60)
    ]
    # Events cannot share a request: they keep the request count (and so the faults) up now that
    # creates and terminates each go out in a bulk call or two.
    commands += [
        {"action": "send_event", "workflow": "wf", "instance_id": f"f-{n}", "event_type": "ping"}
        for n in range(60)
    ]
    commands += [
        {"action": "terminate", "workflow": "wf", "instance_id": f"f-{n}"} for n in range(0, 60, 3)
    ]
    faults = Faults(
        error_ratio=0.15,
        soft_error_ratio=0.05,
        drop_ratio=0.1,
        apply_then_error_ratio=0.1,
        apply_then_drop_ratio=0.1,
    )
    config = EmulatorConfig(workflows={"wf": _listening()}, faults=faults, seed=5)
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=len(commands), within=120)
        outcomes = Counter(r["outcome"] for r in reader.results)
        assert set(outcomes) <= {"ok", "already_exists"}, outcomes
        assert sum(emulator.stats.faults.values()) > 10  # the faults really happened
        assert emulator.stats.created["wf"] == 60  # each instance once, despite retries
        assert len(emulator.instances("wf")) == 60
        terminated = {v.id for v in emulator.instances("wf") if v.status == "terminated"}
        assert terminated == {f"f-{n}" for n in range(0, 60, 3)}
        assert all(("ping", {}) in v.events for v in emulator.instances("wf"))
        assert not reader.dead_letters


async def test_creates_settle_without_confirmation_requests(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    # Every batch takes effect and then fails, until a few have: each retried item whose id the
    # retry finds taken is the command's own instance, settled without a request.
    topics = await make_topics(new_topic, 4)
    faults = Faults(
        apply_then_error_ratio=0.5,
        apply_then_drop_ratio=0.5,
        routes=frozenset({"batch", "create"}),
    )
    config = EmulatorConfig(workflows={"wf": _listening()}, faults=faults, seed=11)
    fresh: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": "wf", "instance_id": f"n-{n}"} for n in range(400)
    ]
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, fresh)
            async with asyncio.timeout(60):
                while emulator.stats.faults.total() < 3:
                    await asyncio.sleep(0.01)
            emulator.config.faults = Faults()
            await reader.until(results=len(fresh), within=120)
        assert emulator.stats.created["wf"] == 400
        assert {r["outcome"] for r in reader.results} == {"ok"}
        retried = [r for r in reader.results if r["attempts"] > 1]
        assert retried, "no result went through a retried batch"
        assert emulator.stats.requests["get"] == 0
        assert emulator.stats.requests["list"] == 1  # the token check at start, none per create
        assert not reader.dead_letters


async def test_redelivered_creates_learn_statuses_from_list_pages(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 4)
    config = EmulatorConfig(workflows={"wf": _listening()})
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        for n in range(150):
            emulator.add_instance("wf", f"old-{n}")
        commands: list[dict[str, Any] | bytes] = [
            {"action": "create", "workflow": "wf", "instance_id": f"old-{n}"} for n in range(150)
        ]
        commands += [
            {"action": "create", "workflow": "wf", "instance_id": f"new-{n}"} for n in range(150)
        ]
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=len(commands), within=120)
        by_id = {r["instance_id"]: r for r in reader.results}
        for n in range(150):
            old = by_id[f"old-{n}"]
            view = emulator.instance("wf", f"old-{n}")
            assert view is not None
            assert (old["outcome"], old["status"]) == ("already_exists", view.status), old
            assert by_id[f"new-{n}"]["outcome"] == "ok"
        assert emulator.stats.requests["get"] == 0
        # Lookups answered by one batch share a scan of pages of 100; with 300 instances in all a
        # scan reads at most 3 pages: never a request per instance.
        requests = emulator.stats.requests
        lookups = requests["list"] - 1  # besides the token check at start
        assert 1 <= lookups <= 3 * requests["batch"], requests


async def test_refused_token_parks_instead_of_dead_lettering(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 1)
    async with (
        Emulator(EmulatorConfig()) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        emulator.config.revoked = True
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            pipeline=PipelineSettings(auth_probe_seconds=0.3, backoff_initial_seconds=0.05),
        ).model_copy(update={"health_port": free_port()})
        readyz = f"http://127.0.0.1:{settings.health_port}/readyz"
        async with running_bridge(settings) as bridge, httpx.AsyncClient() as http:
            await send_commands(
                kafka_broker.bootstrap_servers,
                topics.commands,
                [
                    {"action": "create", "workflow": "wf", "instance_id": f"a-{n}"}
                    for n in range(10)
                ],
            )
            async with asyncio.timeout(30):
                while bridge.readiness()[1]["api_token_ok"]:
                    await asyncio.sleep(0.05)
            probes_before = emulator.stats.requests["list"]
            async with asyncio.timeout(30):
                while emulator.stats.requests["list"] < probes_before + 2:
                    await asyncio.sleep(0.05)
            assert not reader.results
            assert not reader.dead_letters
            assert emulator.stats.responses[403] < 20  # parked: probes, not a flood of retries
            parked = await http.get(readyz)
            assert parked.status_code == 503
            assert parked.json()["api_token_ok"] is False
            emulator.config.revoked = False
            await reader.until(results=10, within=30)
            recovered = await http.get(readyz)
            assert recovered.status_code == 200
            assert (await http.get(readyz.replace("readyz", "livez"))).status_code == 200
        assert {r["outcome"] for r in reader.results} == {"ok"}
        assert not reader.dead_letters
        assert emulator.stats.created["wf"] == 10


async def test_creates_are_coalesced_into_batches(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 1)
    async with (
        Emulator(EmulatorConfig()) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            pipeline=PipelineSettings(max_concurrency=256, batch_linger_ms=200),
        )
        # Produce first, so the bridge finds the whole backlog at once.
        await send_commands(
            kafka_broker.bootstrap_servers,
            topics.commands,
            [{"action": "create", "workflow": "wf", "instance_id": f"c-{n}"} for n in range(250)],
        )
        async with running_bridge(settings):
            await reader.until(results=250, within=60)
        assert {r["outcome"] for r in reader.results} == {"ok"}
        assert emulator.stats.created["wf"] == 250
        assert emulator.stats.requests["create"] == 0
        assert emulator.stats.requests["batch"] == 3  # ceil(250 / 100)


class _HeldClock:
    """Monotonic seconds that stand still until :meth:`run_from` lets them run again."""

    def __init__(self) -> None:
        self._held: float | None = time.monotonic()
        self._offset = 0.0

    def __call__(self) -> float:
        return self._held if self._held is not None else time.monotonic() + self._offset

    def run_from(self, later: float) -> None:
        """Run on, starting ``later`` seconds after the instant the clock was held at."""
        assert self._held is not None
        self._offset = self._held + later - time.monotonic()
        self._held = None


async def test_a_429_block_is_waited_out_without_failing_commands(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    topics = await make_topics(new_topic, 2)
    budget = RequestBudget(requests=15, window_seconds=2.0, block_seconds=2.0)
    config = EmulatorConfig(workflows={"wf": _listening()}, budget=budget)
    # The emulator's budget clock stands still until the bridge has met the block, however long
    # the bridge takes to start on a busy machine; then it runs on from the end of the block.
    clock = _HeldClock()
    async with (
        Emulator(config, limits_clock=clock) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        # The bridge believes it may send far more than the emulator allows: it will hit the limit.
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            budget_requests=1000,
            budget_window_seconds=2.0,
        )
        commands: list[dict[str, Any] | bytes] = [
            {"action": "create", "workflow": "wf", "instance_id": "target"}
        ]
        commands += [
            {
                "action": "send_event",
                "workflow": "wf",
                "instance_id": "target",
                "event_type": "e",
                "payload": {"n": n},
            }
            for n in range(40)
        ]
        # Another tool on the same token spends the whole budget: the API now blocks everyone.
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {emulator.config.token}"}
        ) as other:
            url = f"{emulator.base_url}/accounts/acct/workflows/wf/instances"
            while (await other.get(url)).status_code != 429:
                pass
        async with running_bridge(settings) as bridge:
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            async with asyncio.timeout(60):
                while bridge.budget.stats.throttled_429 == 0:
                    await asyncio.sleep(0.02)
            clock.run_from(budget.block)
            await reader.until(results=len(commands), within=90)
        assert emulator.stats.rate_limited >= 1
        assert {r["outcome"] for r in reader.results} <= {"ok", "already_exists"}
        assert not reader.dead_letters
        view = emulator.instance("wf", "target")
        assert view is not None
        assert len([e for e in view.events if e[0] == "e"]) == 40


@pytest.mark.parametrize("sharing", ["demand", "static"])
async def test_two_replicas_share_one_budget(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, sharing: str
) -> None:
    topics = await make_topics(new_topic, 4)
    budget = RequestBudget(requests=40, window_seconds=2.0, block_seconds=2.0)
    config = EmulatorConfig(workflows={"wf": _listening()}, budget=budget)
    group = unique_name("g")
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        for n in range(8):
            emulator.add_instance("wf", f"s-{n}")
        # Each replica is told the token's whole budget; together they must stay inside it.
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=group,
            budget_requests=40,
            budget_window_seconds=2.0,
        )
        if sharing == "static":
            settings.topics.budget = ""
        async with running_bridge(settings) as first, running_bridge(settings) as second:
            async with asyncio.timeout(30):
                while first.budget.share > 0.5 or second.budget.share > 0.5:
                    await asyncio.sleep(0.05)
            commands: list[dict[str, Any] | bytes] = [
                {
                    "action": "send_event",
                    "workflow": "wf",
                    "instance_id": f"s-{n % 8}",
                    "event_type": "e",
                }
                for n in range(120)
            ]
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=len(commands), within=120)
            assert first.budget.share + second.budget.share <= 1.0
            modes = {bridge.readiness()[1]["budget_sharing"] for bridge in (first, second)}
            assert modes == {"dynamic" if sharing == "demand" else "static"}
        assert emulator.stats.rate_limited == 0
        assert {r["outcome"] for r in reader.results} == {"ok"}


async def test_the_busy_replica_takes_the_budget_the_idle_one_leaves(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    # Two replicas, all the load on the partition of one of them: its capacity grows past its
    # static half as the other gives up what it does not use, and the API never says 429.
    topics = await make_topics(new_topic, 2)
    budget = RequestBudget(requests=40, window_seconds=2.0, block_seconds=2.0)
    config = EmulatorConfig(workflows={"wf": _listening()}, budget=budget)
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        for n in range(8):
            emulator.add_instance("wf", f"k-{n}")
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            budget_requests=40,
            budget_window_seconds=2.0,
        )
        async with running_bridge(settings) as first, running_bridge(settings) as second:
            replicas: dict[int, Bridge] = {}
            async with asyncio.timeout(60):
                while len(replicas) < 2:
                    await asyncio.sleep(0.05)
                    replicas = {
                        tp.partition: bridge
                        for bridge in (first, second)
                        if bridge.replica is not None
                        for tp in bridge.replica.consumer.assignment()
                    }
                    if set(replicas.values()) != {first, second}:
                        replicas = {}
            busy, idle = replicas[0], replicas[1]
            producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
            await producer.start()
            try:
                for n in range(200):
                    command = {
                        "action": "send_event",
                        "workflow": "wf",
                        "instance_id": f"k-{n % 8}",
                        "event_type": "e",
                    }
                    await producer.send(topics.commands, json.dumps(command).encode(), partition=0)
                await producer.flush()
            finally:
                await producer.stop()
            most = 0
            async with asyncio.timeout(120):
                while len(reader.results) < 200:
                    await reader.until(results=min(len(reader.results) + 1, 200), within=120)
                    capacities = busy.budget.requests.capacity, idle.budget.requests.capacity
                    assert sum(capacities) <= 40, capacities
                    most = max(most, capacities[0])
        assert most > 20, most  # more than its partition's static half
        assert emulator.stats.rate_limited == 0
        assert {r["outcome"] for r in reader.results} == {"ok"}


async def test_a_bridge_started_before_its_broker_waits_for_it(unique_name: Namer) -> None:
    """A replica restarted during a broker outage must not exit: it starts once the broker
    is back (here a broker that did not exist yet when the bridge started)."""
    port = free_port()
    broker = KafkaBroker(f"127.0.0.1:{port}", Flavour.TANSU)
    topics = Topics(unique_name("cmd"), unique_name("out"), unique_name("dlq"))
    async with Emulator(EmulatorConfig()) as emulator:
        settings = bridge_settings(broker, emulator, topics, group=unique_name("g"))
        bridge = Bridge(settings)
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(bridge.run(stop))
            async with asyncio.timeout(60):
                while not any(e["event"] == "kafka_unavailable" for e in logs):
                    assert not task.done(), task
                    await asyncio.sleep(0.05)
            async with EmbeddedTansu(port=port) as tansu:
                await ensure_topics(
                    tansu.bootstrap_servers, {topics.commands: 1, topics.output: 1, topics.dlq: 1}
                )
                await asyncio.wait_for(bridge.ready.wait(), 120)
                async with OutputReader(tansu.bootstrap_servers, topics) as reader:
                    await send_commands(
                        tansu.bootstrap_servers,
                        topics.commands,
                        [{"action": "create", "workflow": "wf", "instance_id": "late"}],
                    )
                    await reader.until(results=1, within=60)
                stop.set()
                await asyncio.wait_for(task, 60)
        assert reader.results[0]["outcome"] == "ok"
        assert emulator.instance("wf", "late") is not None


async def test_a_bridge_stopped_while_waiting_for_its_broker_exits_cleanly(
    unique_name: Namer,
) -> None:
    broker = KafkaBroker(f"127.0.0.1:{free_port()}", Flavour.TANSU)
    topics = Topics(unique_name("cmd"), unique_name("out"), unique_name("dlq"))
    async with Emulator(EmulatorConfig()) as emulator:
        bridge = Bridge(bridge_settings(broker, emulator, topics, group=unique_name("g")))
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(bridge.run(stop))
            async with asyncio.timeout(60):
                while not any(e["event"] == "kafka_unavailable" for e in logs):
                    await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(task, 30)  # returns, raises nothing
        assert not bridge.ready.is_set()
