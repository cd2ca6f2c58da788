"""Answers already written are read back on assignment, so a crash does not repeat API calls."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError

from bridge.config import CloudflareSettings, KafkaSettings, PipelineSettings, Settings
from bridge.contract.deadletter import HEADER_PREFIX
from bridge.errors import KafkaUnavailable
from bridge.local.emulator import Emulator, EmulatorConfig, Faults, WorkflowBehaviour
from bridge.local.emulator.config import WaitForEventStep
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.readback import (
    Answers,
    Ledger,
    ReadBack,
    Scan,
    commit_metadata,
    metadata_time,
)
from bridge.pipeline.replica import Replica
from bridge.pipeline.translate import EventOp, Job, StatusOp
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    bridge_settings,
    make_topics,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker
from tests.support.process_harness import BridgeProcess

Namer = Callable[[str], str]
TP = TopicPartition("cmd", 2)


def _result(offset: int, instance_id: str | None, outcome: str = "ok", **extra: Any) -> bytes:
    record = {
        "kind": "result",
        "instance_id": instance_id,
        "outcome": outcome,
        "source": {"topic": "cmd", "partition": 2, "offset": offset},
        **extra,
    }
    return json.dumps(record).encode()


def _job(instance_id: str, item: int | None = None) -> Job:
    return Job("c", "send_event", "wf", instance_id, EventOp("go", {}), item)


def test_commit_metadata_round_trips_and_ignores_foreign_metadata() -> None:
    assert metadata_time(commit_metadata(1_700_000_000.25)) == 1_700_000_000.25
    assert metadata_time("") is None
    assert metadata_time(None) is None
    assert metadata_time("someone else's") is None


def test_ledger_keeps_only_answers_past_the_committed_offset_of_its_partitions() -> None:
    ledger = Ledger()
    backlog = {TP: 10}
    ledger.note_result(_result(9, "a"), backlog)  # committed already
    ledger.note_result(_result(10, "b"), backlog)
    ledger.note_result(_result(11, "c", "rejected"), backlog)
    ledger.note_result(b"\xff not json", backlog)
    ledger.note_result(json.dumps({"kind": "state", "instance_id": "x"}).encode(), backlog)
    other = _result(12, "d").replace(b'"partition": 2', b'"partition": 0')
    ledger.note_result(other, backlog)
    headers = [("topic", b"cmd"), ("partition", b"2"), ("offset", b"11")]
    ledger.note_dead_letter([(HEADER_PREFIX + k, v) for k, v in headers] + [("u", b"x")], backlog)
    ledger.note_dead_letter([(HEADER_PREFIX + "topic", b"cmd")], backlog)  # incomplete: ignored
    assert ledger.count() == 2
    assert ledger.take(TP, 9) is None
    answered = ledger.take(TP, 11)
    assert answered == Answers({"c": "rejected"}, {None})
    assert ledger.take(TP, 11) is None  # taken once


def test_only_jobs_fully_answered_are_passed_over() -> None:
    answers = Answers({"a": "ok", "b": "failed", "c": "rejected"}, {"instances[2]"})
    jobs = [_job("a", 0), _job("b", 1), _job("c", 2), _job("d", 3)]
    # b failed but its dead letter is missing: carried out again; d has no result at all
    assert [job.instance_id for job in answers.unanswered(jobs)] == ["b", "d"]
    single = Job("c", "pause", "wf", "e", StatusOp("pause"))
    assert answers.unanswered([single]) == [single]
    assert Answers({"e": "rejected"}, {None}).unanswered([single]) == []
    assert not Answers({None: "rejected"}).complete_for_invalid()
    assert Answers({None: "rejected"}, {"action"}).complete_for_invalid()


def _waiting(event_type: str) -> WorkflowBehaviour:
    return WorkflowBehaviour(steps=(WaitForEventStep(name="w", event_type=event_type),))


@pytest.mark.slow
async def test_events_answered_before_a_crash_are_not_sent_again(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    """The first replica answers everything but never commits, then dies: the second one
    finds every answer and sends no event twice."""
    topics = await make_topics(new_topic, 3)
    events = 60
    commands: list[dict[str, Any] | bytes] = [
        {
            "action": "send_event",
            "workflow": "wf",
            "instance_id": f"i-{n % 20}",
            "event_type": "go",
            "payload": {"n": n},
        }
        for n in range(events)
    ]
    commands.append(b"not json")
    group = unique_name("g")
    never = {"BRIDGE_PIPELINE__COMMIT_INTERVAL_SECONDS": "3600"}
    async with (
        Emulator(EmulatorConfig(default_behaviour=_waiting("never"))) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        for n in range(20):
            emulator.add_instance("wf", f"i-{n}")
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "a.log",
            extra_env=never,
        ) as first:
            await first.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=events + 1, dead_letters=1, within=60)
            await first.kill()
        assert emulator.stats.events["wf"] == events
        async with BridgeProcess(
            kafka_broker, emulator, topics, group=group, log_path=tmp_path / "b.log"
        ) as second:
            await second.wait_running()
            log = second.log_path
            async with asyncio.timeout(60):
                while log.read_text().count('"command_answered_before"') < events + 1:
                    await asyncio.sleep(0.1)
            assert await second.terminate() == 0
        assert emulator.stats.events["wf"] == events  # not one event sent twice
        assert max(reader.answered().values()) == 1  # nor answered twice
        sent = Counter(payload["n"] for i in emulator.instances("wf") for _, payload in i.events)
        assert sent == Counter(range(events))


@pytest.mark.full_kafka
@pytest.mark.slow
async def test_transactional_results_visible_past_a_stuck_command_are_not_redone(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer, tmp_path: Path
) -> None:
    """One partition; its first command hangs, so no offset can be committed; the events after
    it are answered and their results committed in transactions. After a SIGKILL the next
    replica carries out only the stuck command."""
    topics = await make_topics(new_topic, 1)
    events = 30
    commands: list[dict[str, Any] | bytes] = [
        {"action": "pause", "workflow": "wf", "instance_id": "stuck"},
        *(
            {"action": "send_event", "workflow": "wf", "instance_id": f"i-{n}", "event_type": "go"}
            for n in range(events)
        ),
    ]
    group = unique_name("g")
    config = EmulatorConfig(
        default_behaviour=_waiting("never"),
        faults=Faults(timeout_ratio=1.0, timeout_seconds=3600, routes=frozenset({"status"})),
    )
    env = {"BRIDGE_KAFKA__TRANSACTIONAL_ID": unique_name("tx")}
    async with (
        Emulator(config) as emulator,
        OutputReader(
            kafka_broker.bootstrap_servers, topics, isolation_level="read_committed"
        ) as reader,
    ):
        for name in ["stuck", *(f"i-{n}" for n in range(events))]:
            emulator.add_instance("wf", name)
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "a.log",
            extra_env=env,
        ) as first:
            await first.wait_running()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=events, within=60)
            await first.kill()
        assert emulator.stats.events["wf"] == events
        emulator.config.faults = Faults()
        async with BridgeProcess(
            kafka_broker,
            emulator,
            topics,
            group=group,
            log_path=tmp_path / "b.log",
            extra_env=env,
        ) as second:
            await second.wait_running()
            await reader.until(results=events + 1, within=60)
            assert await second.terminate() == 0
        assert emulator.stats.events["wf"] == events
        assert sorted(reader.answered().values()) == [1] * (events + 1)
        assert emulator.instance("wf", "stuck").status == "paused"  # type: ignore[union-attr]


@pytest.mark.full_kafka
async def test_transactional_readback_waits_for_open_transactions(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Namer
) -> None:
    """An earlier owner's transaction still open when the read-back begins hides its results;
    the read-back waits for it to be decided instead of missing them."""
    topics = await make_topics(new_topic, 1)
    await send_commands(kafka_broker.bootstrap_servers, topics.commands, [b"a command"])
    async with Emulator(EmulatorConfig()) as emulator:
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"transactional_id": "reader"})}
        )
        earlier = AIOKafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap_servers, transactional_id=unique_name("tx")
        )
        await earlier.start()
        try:
            await earlier.begin_transaction()
            answer = _result(0, None, "rejected").replace(b'"cmd"', f'"{topics.commands}"'.encode())
            answer = answer.replace(b'"partition": 2', b'"partition": 0')
            await (await earlier.send(topics.output, answer))
            async with ReadBack(settings) as readback:
                scan = asyncio.create_task(readback.scan({TopicPartition(topics.commands, 0)}))
                await asyncio.sleep(1.0)
                assert not scan.done()  # waiting for the open transaction
                await earlier.commit_transaction()
                found = await asyncio.wait_for(scan, 60)
        finally:
            await earlier.stop()
    answers = found.ledger.take(TopicPartition(topics.commands, 0), 0)
    assert answers is not None
    assert answers.results == {None: "rejected"}


class _Consumer:
    """What the replica's flow control uses of AIOKafkaConsumer, with who paused what."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self._assigned = set(assigned)
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self._assigned}


class _Budget:
    blocked_for = 0.0
    share = 1.0

    def snapshot(self) -> dict[str, Any]:
        return {}

    def set_share(self, share: float) -> None:
        self.share = share


class _SlowReadBack:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def scan(self, partitions: set[TopicPartition]) -> Scan:
        await self.release.wait()
        return Scan(Ledger(), {})


def _replica(consumer: _Consumer, budget: _Budget, outbox: Any, readback: Any) -> Replica:
    """A replica over fakes: the group callbacks and flow control are what these tests drive."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="unused:9092"),
        cloudflare=CloudflareSettings(account_id="a", api_token="t"),
    )
    return Replica(
        settings,
        budget=cast(Any, budget),
        gate=AuthGate(lambda: asyncio.sleep(0), interval=1),
        executor=cast(Any, None),
        outbox=cast(Any, outbox),
        consumer=cast(Any, consumer),
        readback=cast(Any, readback),
    )


async def test_partitions_being_read_back_stay_paused_when_a_stall_ends() -> None:
    """Found by the fault run: a 429 block ended during a read-back, flow control resumed every
    assigned partition, and commands were carried out before their answers were read back."""
    tp = TopicPartition("cmd", 3)
    consumer, budget, readback = _Consumer({tp}), _Budget(), _SlowReadBack()
    replica = _replica(consumer, budget, type("O", (), {"pending": 0})(), readback)
    budget.blocked_for = 5.0  # a 429 block: consumption paused
    replica._backpressure()
    assert consumer.paused == {tp}
    # The callback returns at once: the read-back runs beside the group protocol (found by the
    # fault run: a read-back held in the callback let the membership expire meanwhile).
    await asyncio.wait_for(replica.on_assigned({tp}), 5)
    budget.blocked_for = 0.0  # the block ends while the read-back runs
    replica._backpressure()
    assert consumer.paused == {tp}  # still paused: its answers are not read back yet
    readback.release.set()
    await asyncio.gather(*replica._readbacks)
    assert consumer.paused == set()


async def test_readback_retries_while_the_broker_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the fault run: right after the broker was resumed the group coordinator was not
    there yet; the read-back failed and the replica carried out 700 commands already answered."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="unused:9092"),
        cloudflare=CloudflareSettings(account_id="a", api_token="t"),
        pipeline=PipelineSettings(readback_timeout_seconds=3),
    )
    readback = ReadBack(settings)
    calls = 0

    async def flaky(partitions: set[TopicPartition]) -> Scan:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise GroupCoordinatorNotAvailableError()
        return Scan(Ledger(), {}, records=7)

    try:
        monkeypatch.setattr(readback, "_scan", flaky)
        assert (await readback.scan({TP})).records == 7
        assert calls == 3

        async def down(partitions: set[TopicPartition]) -> Scan:
            raise GroupCoordinatorNotAvailableError()

        monkeypatch.setattr(readback, "_scan", down)
        with pytest.raises(KafkaUnavailable, match="reading back answers failed"):
            await readback.scan({TP})  # gives up within its timeout
    finally:
        await readback.__aexit__(None, None, None)


class _Outbox:
    pending = 0

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.share_while_draining: float | None = None
        self.forgotten: set[TopicPartition] = set()
        self.abandoned = False

    def job_dropped(self, command: object) -> None:
        pass

    async def wait_settled(self, partitions: object, within: float) -> bool:
        self.share_while_draining = self.budget.share
        return True

    async def commit(self, consumer: object, partitions: object = None) -> None:
        pass

    def forget(self, tp: TopicPartition) -> None:
        self.forgotten.add(tp)

    async def abandon(self) -> None:
        self.abandoned = True


async def test_a_revocation_cancels_the_read_back_and_leaves_the_partition_alone() -> None:
    tp = TopicPartition("cmd", 0)
    consumer, budget = _Consumer({tp}), _Budget()
    outbox = _Outbox(budget)
    replica = _replica(consumer, budget, outbox, _SlowReadBack())
    await replica.on_assigned({tp})
    [reading] = list(replica._readbacks)
    await replica.on_revoked({tp})
    assert reading.cancelled()
    assert not replica._readbacks
    assert consumer.paused == {tp}  # never resumed by a read-back that no longer counts


async def test_lost_partitions_are_neither_drained_nor_committed() -> None:
    """Found by the fault run: a member expelled while the broker was away drained and committed
    partitions already given to others, and their commands were answered twice."""
    tp = TopicPartition("cmd", 0)
    consumer, budget = _Consumer({tp}), _Budget()
    outbox = _Outbox(budget)
    replica = _replica(consumer, budget, outbox, _SlowReadBack())
    consumer._coordinator = type("C", (), {"member_id": "m-1"})()  # type: ignore[attr-defined]
    await replica.on_revoked({tp})  # an ordinary rebalance: drained, then forgotten
    assert outbox.share_while_draining is not None
    assert not outbox.abandoned
    outbox.share_while_draining = None
    consumer._coordinator.member_id = ""  # type: ignore[attr-defined]  # expelled: lost
    await replica.on_revoked({tp})
    assert outbox.share_while_draining is None  # no drain
    assert outbox.abandoned
    assert outbox.forgotten == {tp}
