"""The outbox never finishes an offset whose records did not all reach the broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from bridge.config import CloudflareSettings, KafkaSettings, Settings
from bridge.errors import KafkaUnavailable
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.readback import metadata_time
from bridge.pipeline.translate import Origin, OutRecord

TP = TopicPartition("cmd", 0)


class FakeProducer:
    """Stands in for AIOKafkaProducer.send: each call returns the next scripted future."""

    def __init__(self, *, fail_send: bool = False) -> None:
        self.fail_send = fail_send
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        if self.fail_send:
            raise KafkaTimeoutError("buffer full")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def _settings() -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="unused:9092"),
        cloudflare=CloudflareSettings(account_id="a", api_token="t"),
    )


def _origin(offset: int) -> Origin:
    return Origin("cmd", 0, offset, None, b"{}")


RECORD = OutRecord(b"k", b"{}", ())


async def test_offset_finishes_only_after_every_ack() -> None:
    producer = FakeProducer()
    outbox = Outbox(_settings(), producer)
    command = outbox.accept(TP, _origin(0), jobs=1)
    await outbox.job_done(command, [RECORD, RECORD])
    assert outbox.pending == 1
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    assert outbox.pending == 1  # one ack is still missing
    producer.futures[1].set_result(None)
    await asyncio.sleep(0)
    assert outbox.pending == 0
    assert await outbox.wait_settled(None, 1.0)
    assert outbox.fatal is None


async def test_a_failed_ack_stops_the_bridge_without_finishing() -> None:
    producer = FakeProducer()
    outbox = Outbox(_settings(), producer)
    command = outbox.accept(TP, _origin(0), jobs=1)
    await outbox.job_done(command, [RECORD])
    producer.futures[0].set_exception(KafkaTimeoutError("no leader"))
    await asyncio.sleep(0)
    assert isinstance(outbox.fatal, KafkaUnavailable)
    assert outbox.pending == 1  # not finished: it will be redelivered
    assert await outbox.wait_settled(None, 1.0)  # but settled, so a drain does not hang


async def test_a_refused_send_stops_the_bridge_without_finishing() -> None:
    producer = FakeProducer(fail_send=True)
    outbox = Outbox(_settings(), producer)
    command = outbox.accept(TP, _origin(0), jobs=1)
    await outbox.job_done(command, [RECORD])
    assert isinstance(outbox.fatal, KafkaUnavailable)
    assert outbox.pending == 1
    assert await outbox.wait_settled(None, 1.0)


async def test_a_command_settles_after_its_last_job_only() -> None:
    producer = FakeProducer()
    outbox = Outbox(_settings(), producer)
    command = outbox.accept(TP, _origin(0), jobs=3)
    await outbox.job_done(command, [RECORD])
    outbox.job_dropped(command)
    for future in producer.futures:
        future.set_result(None)
    await asyncio.sleep(0)
    assert not await outbox.wait_settled(None, 0.05)  # one job is still running
    await outbox.job_done(command, [RECORD])
    assert await outbox.wait_settled(None, 1.0)
    # a dropped job abandons the command: its offset is left for the partition's next owner
    assert outbox.pending == 1
    assert outbox.fatal is None


async def test_a_stopping_bridge_does_not_wait_for_unsettled_commands() -> None:
    outbox = Outbox(_settings(), FakeProducer())
    outbox.accept(TP, _origin(0), jobs=1)
    outbox.stop_for(KafkaUnavailable("broker gone"))
    assert await outbox.wait_settled(None, 0.0)


class FakeConsumer:
    """Stands in for AIOKafkaConsumer.commit: records what was committed."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, Any]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets)


async def test_commits_say_since_when_anything_past_them_was_written() -> None:
    producer, consumer = FakeProducer(), FakeConsumer()
    outbox = Outbox(_settings(), producer)
    before = time.time()
    first = outbox.accept(TP, _origin(0), jobs=1)
    second = outbox.accept(TP, _origin(1), jobs=1)  # still running when the commit comes
    taken = time.time()
    await outbox.job_done(first, [RECORD])
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    await outbox.commit(consumer)
    [mark] = consumer.commits[-1].values()
    assert mark.offset == 1
    since = metadata_time(mark.metadata)
    assert since is not None
    assert before - 0.01 <= since <= taken + 0.01  # when offset 1 was taken in, not now
    # A read-back found answers up to offset 5, written since long ago: commits up to offset 5
    # keep that time; past it, the commits go back to their own.
    outbox.keep_floor(TP, before - 100, 5)
    producer.futures.clear()
    await outbox.job_done(second, [RECORD])
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    await outbox.commit(consumer)
    [mark] = consumer.commits[-1].values()
    assert mark.offset == 2
    assert metadata_time(mark.metadata) == pytest.approx(before - 100, abs=0.01)
    for offset in range(2, 7):
        await outbox.job_done(outbox.accept(TP, _origin(offset), jobs=1), [])
    await outbox.commit(consumer)
    [mark] = consumer.commits[-1].values()
    assert mark.offset == 7
    assert metadata_time(mark.metadata) >= taken - 0.001  # type: ignore[operator]  # ms


async def test_a_command_of_a_partition_given_up_writes_nothing() -> None:
    """Found by the fault run: a job still running when the drain timed out wrote its result
    after the partition's new owner had read back, and the command was answered twice."""
    producer = FakeProducer()
    outbox = Outbox(_settings(), producer)
    late = outbox.accept(TP, _origin(0), jobs=1)
    outbox.forget(TP)  # revoked; the drain timed out with the job still running
    again = outbox.accept(TP, _origin(1), jobs=1)  # the partition came back meanwhile
    await outbox.job_done(late, [RECORD])
    assert producer.futures == []  # nothing written: the new owner answers it
    assert not await outbox.wait_settled({TP}, 0.05)  # offset 1 still counts, offset 0 not
    await outbox.job_done(again, [RECORD])
    producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    assert await outbox.wait_settled({TP}, 1.0)
    assert outbox.fatal is None
