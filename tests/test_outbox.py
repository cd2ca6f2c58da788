"""The outbox never finishes an offset whose records did not all reach the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from bridge.config import CloudflareSettings, KafkaSettings, Settings
from bridge.errors import KafkaUnavailable
from bridge.outbox import Outbox, PendingCommand
from bridge.translate import Origin, OutRecord

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


def _command(offset: int) -> PendingCommand:
    return PendingCommand(Origin("cmd", 0, offset, None, b"{}"), TP, remaining=1)


RECORD = OutRecord(b"k", b"{}", ())


async def test_offset_finishes_only_after_every_ack() -> None:
    producer = FakeProducer()
    outbox = Outbox(_settings(), producer)
    outbox.consumed(TP, 0)
    command = _command(0)
    await outbox.add(command, [RECORD, RECORD])
    outbox.finish(command)
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
    outbox.consumed(TP, 0)
    command = _command(0)
    await outbox.add(command, [RECORD])
    outbox.finish(command)
    producer.futures[0].set_exception(KafkaTimeoutError("no leader"))
    await asyncio.sleep(0)
    assert isinstance(outbox.fatal, KafkaUnavailable)
    assert outbox.pending == 1  # not finished: it will be redelivered
    assert await outbox.wait_settled(None, 1.0)  # but settled, so a drain does not hang


async def test_a_refused_send_stops_the_bridge_without_finishing() -> None:
    producer = FakeProducer(fail_send=True)
    outbox = Outbox(_settings(), producer)
    outbox.consumed(TP, 0)
    command = _command(0)
    await outbox.add(command, [RECORD])
    outbox.finish(command)
    assert isinstance(outbox.fatal, KafkaUnavailable)
    assert outbox.pending == 1
    assert await outbox.wait_settled(None, 1.0)
