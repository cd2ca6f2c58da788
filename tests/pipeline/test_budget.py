"""The request budget: a true sliding window, shares, header pacing and 429 blocks."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import RateLimitInfo
from bridge.pipeline.budget import RequestBudget, SlidingWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_never_exceeds_capacity_in_any_window() -> None:
    clock = FakeClock()
    window = SlidingWindow(10, 10.0, clock=clock)
    grants: list[float] = []
    for _ in range(200):
        wait = window.wait_time()
        assert wait is not None
        clock.now += wait
        window.begin()
        window.end()
        grants.append(clock.now)
        clock.now += 0.05
    # any 10 s window (the safety margin widens it) holds at most 10 grants
    for i, start in enumerate(grants):
        inside = [g for g in grants[i:] if g < start + 10.0]
        assert len(inside) <= 10
    # and the pace is close to the budget: 200 grants need about 19 windows
    assert grants[-1] - grants[0] == pytest.approx(19 * 10.0 * 1.01, rel=0.05)


def test_burst_then_refill_is_not_allowed() -> None:
    clock = FakeClock()
    window = SlidingWindow(5, 10.0, clock=clock)
    for _ in range(5):
        assert window.wait_time() == 0
        window.begin()
        window.end()
    clock.now += 9.0
    wait = window.wait_time()
    assert wait is not None
    assert wait > 0.9  # a fixed-window counter would have reset by now


def test_share_scales_capacity() -> None:
    window = SlidingWindow(100, 1.0)
    window.set_share(0.25)
    assert window.capacity == 25
    window.set_share(0.0)
    assert window.capacity == 1


async def test_429_blocks_every_request_until_retry_after() -> None:
    budget = RequestBudget(
        requests=100, window_seconds=10, creations_per_workflow=100, creations_per_account=300
    )
    budget.observe(429, None, 0.3)
    assert budget.blocked_for > 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with budget.slot():
        pass
    assert loop.time() - started >= 0.28
    assert budget.stats.throttled_429 == 1
    assert budget.blocked_for == 0


async def test_ratelimit_header_paces_to_reset() -> None:
    budget = RequestBudget(
        requests=100, window_seconds=10, creations_per_workflow=100, creations_per_account=300
    )
    budget.observe(200, RateLimitInfo(remaining=2, reset_seconds=2.0), None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(2):
        async with budget.slot():
            pass
    # far sooner than the reset (a busy machine may take a while, but not the 2 s)
    assert loop.time() - started < 1.5
    async with budget.slot():  # the server said nothing is left until the reset
        pass
    assert loop.time() - started >= 1.95


async def test_creations_are_limited_per_workflow() -> None:
    budget = RequestBudget(
        requests=1000, window_seconds=10, creations_per_workflow=10, creations_per_account=300
    )
    assert budget.max_batch("w") == 10
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with budget.slot(creations=10, workflow="w"):
        pass
    async with budget.slot(creations=5, workflow="other"):  # another workflow is not held up
        pass
    assert loop.time() - started < 0.9  # not the second the next creation of "w" must wait
    async with budget.slot(creations=1, workflow="w"):
        pass
    assert loop.time() - started >= 0.95


def test_snapshot_reports_state() -> None:
    budget = RequestBudget(
        requests=1200, window_seconds=300, creations_per_workflow=100, creations_per_account=300
    )
    budget.set_share(0.5)
    snap = budget.snapshot()
    assert snap["capacity"] == 600
    assert snap["remaining"] == 600
    assert snap["blocked_for"] == 0


def test_a_request_is_logged_when_its_answer_arrives() -> None:
    clock = FakeClock()
    window = SlidingWindow(2, 10.0, clock=clock)
    window.begin()
    window.begin()
    assert window.wait_time() is None  # full, and only an answer can start the clock
    clock.now += 3.0  # the first burst is slow to arrive
    window.end()
    window.end()
    clock.now += 9.0
    # 12 s after the grant, but only 9 s after the answers: the server may still count them.
    wait = window.wait_time()
    assert wait is not None
    assert wait > 0.9


async def test_slot_holds_room_until_the_answer() -> None:
    budget = RequestBudget(
        requests=1, window_seconds=0.3, creations_per_workflow=10, creations_per_account=10
    )
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def first() -> None:
        async with budget.slot():
            order.append("first sent")
            await asyncio.sleep(0.2)  # slow answer
            order.append("first answered")

    async def second() -> None:
        await asyncio.sleep(0.01)
        async with budget.slot():
            order.append("second sent")

    started = loop.time()
    await asyncio.gather(first(), second())
    assert order == ["first sent", "first answered", "second sent"]
    assert loop.time() - started >= 0.2 + 0.3  # a whole window after the first answer


def _lane_budget(requests: int, window: float, share: float) -> RequestBudget:
    budget = RequestBudget(
        requests=requests,
        window_seconds=window,
        creations_per_workflow=100,
        creations_per_account=300,
    )
    budget.set_background_share(share)
    return budget


async def test_background_lane_spends_at_most_its_share() -> None:
    budget = _lane_budget(20, 0.5, 0.1)  # 2 background requests per 0.5 s
    assert budget.snapshot()["background_capacity"] == 2
    loop = asyncio.get_running_loop()
    grants: list[float] = []
    for _ in range(6):
        async with budget.background_slot():
            grants.append(loop.time())
    for i, start in enumerate(grants):
        assert len([g for g in grants[i:] if g < start + 0.5]) <= 2
    assert grants[-1] - grants[0] >= 2 * 0.5
    assert budget.stats.background_granted == 6
    assert budget.stats.granted == 6


async def test_commands_come_before_background_work() -> None:
    budget = _lane_budget(2, 0.3, 1.0)
    order: list[str] = []
    release = asyncio.Event()

    async def command(name: str, hold: bool = False) -> None:
        async with budget.slot():
            order.append(name)
            if hold:
                await release.wait()

    async def background() -> None:
        async with budget.background_slot():
            order.append("background")

    first = asyncio.create_task(command("c1", hold=True))
    second = asyncio.create_task(command("c2", hold=True))
    await asyncio.sleep(0.05)  # the window is full: both commands are in flight
    lane = asyncio.create_task(background())
    await asyncio.sleep(0.05)
    third = asyncio.create_task(command("c3"))  # arrives after the background request
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, second, third, lane)
    assert order == ["c1", "c2", "c3", "background"]


async def test_background_and_commands_together_stay_within_the_budget() -> None:
    budget = _lane_budget(4, 0.4, 0.5)
    loop = asyncio.get_running_loop()
    grants: list[float] = []

    async def command() -> None:
        async with budget.slot():
            grants.append(loop.time())

    async def background() -> None:
        async with budget.background_slot():
            grants.append(loop.time())

    await asyncio.gather(*(command() for _ in range(6)), *(background() for _ in range(4)))
    for i, start in enumerate(grants):
        assert len([g for g in grants[i:] if g < start + 0.4]) <= 4
    assert budget.stats.background_granted == 4


async def test_background_work_waits_out_a_429_block() -> None:
    budget = _lane_budget(100, 10, 0.5)
    budget.observe(429, None, 0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with budget.background_slot():
        pass
    assert loop.time() - started >= 0.28


async def test_a_capacity_of_zero_grants_nothing_until_it_is_raised() -> None:
    budget = RequestBudget(
        requests=10, window_seconds=10, creations_per_workflow=100, creations_per_account=300
    )
    budget.set_capacity(0)
    assert budget.share == 0.0
    assert budget.max_batch("wf") == 100  # creation limits keep their partitions' split

    async def one() -> None:
        async with budget.slot():
            pass

    waiting = asyncio.create_task(one())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    assert budget.stats.waiting == 1
    budget.set_capacity(3)  # the group agreed: the waiter goes at once
    await asyncio.wait_for(waiting, 30)
    assert budget.requests.capacity == 3
    assert budget.share == 0.3


async def test_a_waiter_follows_the_share_as_it_changes() -> None:
    """Found by the fault run: a batch's creations waited for room when the replica's share
    dropped during a revocation (its capacity below the batch, no request left in flight to
    wake it); when the share came back nothing woke it, and the replica stalled for good."""
    window = SlidingWindow(3, 0.2)
    for _ in range(3):
        window.begin()
    waiter = asyncio.create_task(window.acquire(3))
    await asyncio.sleep(0.01)
    window.set_share(0.0)  # capacity 1: three can never fit
    for _ in range(3):
        window.end()
    await asyncio.sleep(0.05)
    window.set_share(1.0)
    async with asyncio.timeout(5):
        assert await waiter == 3


async def test_commands_held_by_a_creation_limit_do_not_hold_background_work() -> None:
    budget = RequestBudget(
        requests=100, window_seconds=10, creations_per_workflow=1, creations_per_account=300
    )
    budget.set_background_share(0.5)
    order: list[str] = []

    async def create() -> None:
        async with budget.slot(creations=1, workflow="w"):
            order.append("create")

    await create()
    # the next create waits about a second for the creation limit ...
    waiting = asyncio.create_task(create())
    await asyncio.sleep(0.05)
    assert budget.stats.waiting == 1
    async with budget.background_slot():  # ... while background work goes at once
        order.append("background")
    await waiting
    assert order == ["create", "background", "create"]


async def test_a_larger_share_enlarges_the_ratelimit_pace_at_once() -> None:
    budget = RequestBudget(
        requests=100, window_seconds=60, creations_per_workflow=100, creations_per_account=300
    )
    budget.set_capacity(2)
    # The server says 90 are left for a minute: 2 % of that is ours, one request.
    budget.observe(200, RateLimitInfo(remaining=90, reset_seconds=60), None)
    async with budget.slot():
        pass

    async def one() -> None:
        async with budget.slot():
            pass

    waiting = asyncio.create_task(one())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()  # our part of what is left is spent: wait for the reset...
    budget.set_capacity(96)  # ...unless the group gives us more: 96 % of it is ours now
    await asyncio.wait_for(waiting, 30)
