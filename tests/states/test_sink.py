"""The sink is bounded: when its ``get``s cannot keep up, sources wait for room instead of piling
observations up in memory."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from bridge.cloudflare.models import InstanceGetResponse
from bridge.errors import BridgeError
from bridge.states.background import BackgroundApi
from bridge.states.sink import StateSink
from bridge.states.tracker import Observation, Tracker

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class SlowApi:
    """A ``get`` that answers only once the test opens the gate (the budget's lane, full)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked = 0

    async def get(self, workflow: str, instance_id: str) -> InstanceGetResponse:
        self.asked += 1
        await self.gate.wait()
        return InstanceGetResponse(status="complete", output={"id": instance_id})


class Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent.append(value)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _failed(error: BridgeError) -> None:
    raise AssertionError(f"the sink failed: {error}")


async def test_sources_wait_for_room_while_outputs_cannot_be_fetched() -> None:
    api, producer = SlowApi(), Producer()
    stop = asyncio.Event()
    sink = StateSink(
        Tracker(),
        cast(Any, producer),
        "states",
        cast(BackgroundApi, api),
        fetch_output=True,
        workers=2,
        on_fatal=_failed,
        max_pending=10,
    )
    async with sink:
        for n in range(10):
            sink.submit(Observation("wf", f"i{n}", "complete", "poll", at=NOW, event_at=NOW))
        assert sink.backlog == 10
        assert await sink.room(stop, within=0.05) is False  # full: a source must not fetch more
        stopped = asyncio.Event()
        stopped.set()
        assert await sink.room(stopped) is True  # a stopping source is never held
        api.gate.set()  # the budget catches up
        assert await sink.room(stop, within=30.0) is True
        assert await sink.wait_idle(30.0)
    assert len(producer.sent) == 10  # nothing was dropped: every end published, with its output
    assert api.asked == 10
