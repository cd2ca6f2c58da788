"""A polling sweep's cost in requests, and what it makes of instances no list shows any more.

The API here is an in-memory table behind the two calls the poller makes (``list_page`` and
``get``): the sweep's arithmetic is the subject, not HTTP (``test_stream`` runs the poller against
the emulator over real sockets)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog

from bridge.cloudflare.models import InstanceGetResponse, InstanceListResponse
from bridge.contract.rules import FINAL_STATUSES, MAX_PER_PAGE
from bridge.errors import BridgeError
from bridge.states.background import BackgroundApi
from bridge.states.poller import Poller
from bridge.states.sink import StateSink
from bridge.states.tracker import LIVE_STATUSES, Observation, Tracker

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
STATUS_LISTS = len(LIVE_STATUSES) + len(FINAL_STATUSES)


class TableApi:
    """Instances by id, listed by status (created-since filter, 100 a page) and got by id."""

    def __init__(self) -> None:
        self.rows: dict[str, InstanceListResponse] = {}
        self.requests: dict[str, int] = {"list": 0, "get": 0}
        self.got: list[str] = []

    def put(self, instance_id: str, status: str, created: datetime) -> None:
        self.rows[instance_id] = InstanceListResponse(
            id=instance_id, status=status, created_on=created, modified_on=created
        )

    async def list_page(
        self, workflow: str, *, status: str, cursor: str | None, date_start: datetime | None
    ) -> tuple[list[InstanceListResponse], str | None]:
        self.requests["list"] += 1
        rows = [
            row
            for row in sorted(self.rows.values(), key=lambda r: r.id)
            if row.status == status
            and (
                date_start is None or (row.created_on is not None and row.created_on >= date_start)
            )
        ]
        first = int(cursor or 0)
        following = first + MAX_PER_PAGE
        return rows[first:following], str(following) if following < len(rows) else None

    async def get(self, workflow: str, instance_id: str) -> InstanceGetResponse | None:
        self.requests["get"] += 1
        self.got.append(instance_id)
        row = self.rows.get(instance_id)
        return None if row is None else InstanceGetResponse(status=row.status)


class Producer:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent += 1
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _failed(error: BridgeError) -> None:
    raise AssertionError(f"the sink failed: {error}")


def _sink(api: TableApi, tracker: Tracker) -> StateSink:
    return StateSink(
        tracker,
        cast(Any, Producer()),
        "states",
        cast(BackgroundApi, api),
        fetch_output=False,
        workers=2,
        on_fatal=_failed,
    )


def _poller(api: TableApi, sink: StateSink, workflows: Any = lambda: ["wf"]) -> Poller:
    return Poller(cast(BackgroundApi, api), sink, workflows=workflows, interval=0.0, since=START)


async def test_a_sweep_costs_a_list_per_status_and_a_page_per_hundred_more() -> None:
    api, tracker = TableApi(), Tracker()
    for n in range(250):
        api.put(f"r{n:03}", "running", START)
    async with _sink(api, tracker) as sink:
        await _poller(api, sink).sweep("wf")
        assert await sink.wait_idle(30.0)
    # 9 status lists, and two more pages for the 250 running ones (100 + 100 + 50)
    assert api.requests == {"list": STATUS_LISTS + 2, "get": 0}
    assert len(tracker.live("wf")) == 250


async def test_an_instance_that_ended_unseen_costs_one_get_and_a_gone_one_is_forgotten() -> None:
    api, tracker = TableApi(), Tracker()
    long_ago = START - timedelta(days=1)
    for n in range(5):
        api.put(f"i{n}", "running", long_ago)
    async with _sink(api, tracker) as sink:
        poller = _poller(api, sink)
        await poller.sweep("wf")
        assert await sink.wait_idle(30.0)
        assert tracker.live("wf") == {f"i{n}" for n in range(5)}
        assert api.requests["get"] == 0

        # i0 and i1 end; created before the sweep's window, no final-status list shows them
        api.put("i0", "errored", long_ago)
        api.put("i1", "terminated", long_ago)
        del api.rows["i2"]  # deleted (or past retention): the API no longer knows it
        await poller.sweep("wf")
        assert await sink.wait_idle(30.0)
    assert sorted(api.got) == ["i0", "i1", "i2"]  # one get each, none for the listed ones
    assert tracker.known("wf", "i0") == "errored"
    assert tracker.known("wf", "i1") == "terminated"
    assert tracker.known("wf", "i2") is None
    assert tracker.live("wf") == {"i3", "i4"}
    assert (poller.stats.ended_unseen, poller.stats.gone) == (2, 1)


async def test_each_sweep_logs_its_requests_by_kind_and_the_instances_followed() -> None:
    api, tracker = TableApi(), Tracker()
    for n in range(3):
        api.put(f"r{n}", "running", START)
    tracker.apply(Observation("wf", "old", "running", "poll", at=START, event_at=START))
    stop, calls = asyncio.Event(), 0

    def workflows() -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            stop.set()  # one sweep of "wf", then an empty one that ends the run
            return []
        return ["wf"]

    async with _sink(api, tracker) as sink:
        with structlog.testing.capture_logs() as logs:
            await _poller(api, sink, workflows).run(stop)
        assert await sink.wait_idle(30.0)
    sweeps = [entry for entry in logs if entry["event"] == "state_sweep"]
    assert sweeps[0]["workflows"] == 1
    # "old" was live and no list showed it: a get, which finds nothing
    assert (sweeps[0]["lists"], sweeps[0]["gets"]) == (STATUS_LISTS, 1)
    assert sweeps[0]["requests"] == STATUS_LISTS + 1
    assert sweeps[0]["live"] == 3  # r0..r2 listed running; "old" is gone
