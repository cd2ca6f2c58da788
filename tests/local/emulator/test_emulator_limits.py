"""Production's pressure on a client: the global budget and its block, creation rates, latency.

The limits run on a clock the tests advance themselves: nothing here sleeps to let time pass.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.local.emulator import (
    CreationLimits,
    Emulator,
    EmulatorConfig,
    Faults,
    Latency,
    RequestBudget,
)
from bridge.local.emulator.limits import FaultInjector
from bridge.local.emulator.testing import api_client, error_of, result_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def emu(clock: FakeClock) -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=1), limits_clock=clock) as running:
        yield running


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(emu) as client:
        yield client


async def test_budget_admits_exactly_n_then_blocks_every_call(
    emu: Emulator, api: httpx.AsyncClient, clock: FakeClock
) -> None:
    emu.config.budget = RequestBudget(requests=5, window_seconds=1, block_seconds=1)
    for n in range(5):
        response = await api.get("orders/instances")
        result_of(response)
        assert response.headers["Ratelimit"] == f'"default";r={4 - n};t=1'
        assert response.headers["Ratelimit-Policy"] == '"default";q=5;w=1'
        assert "Retry-After" not in response.headers

    over = await api.post("orders/instances", json={"instance_id": "over"})
    assert error_of(over) == (
        429,
        971,
        "More than 5 requests per 1 seconds reached. "
        "Please wait and consider throttling your request speed",
    )
    assert over.headers["Retry-After"] == "1"
    assert over.headers["Ratelimit"].startswith('"default";r=0;')

    blocked = 0
    for _ in range(10):  # every route is refused until the block ends, then a fresh window opens
        response = await api.get("orders/instances/anything")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        blocked += 1
        clock.now += 0.099
    clock.now += 0.02  # 1.01 s after the refusal: the block is over
    response = await api.get("orders/instances/anything")
    assert error_of(response)[0] == 404  # the request went through to the route
    assert emu.stats.throttled == {"budget": 1, "blocked": blocked}
    assert emu.stats.rate_limited == blocked + 1
    assert emu.instance("orders", "over") is None


async def test_budget_window_slides_and_can_be_switched_off(
    emu: Emulator, api: httpx.AsyncClient, clock: FakeClock
) -> None:
    emu.config.budget = RequestBudget(requests=2, window_seconds=0.4, block_seconds=0)
    result_of(await api.get("orders/instances"))
    clock.now += 0.3
    result_of(await api.get("orders/instances"))
    clock.now += 0.15  # the first request has left the window: room for exactly one more
    result_of(await api.get("orders/instances"))
    assert (await api.get("orders/instances")).status_code == 429
    clock.now += 0.05  # block_seconds=0: the next request meets a fresh window
    result_of(await api.get("orders/instances"))

    emu.config.budget = None
    response = await api.get("orders/instances")
    result_of(response)
    assert "Ratelimit" not in response.headers


async def test_creation_rate_per_workflow_refuses_whole_batches(
    emu: Emulator, api: httpx.AsyncClient, clock: FakeClock
) -> None:
    emu.config.creation = CreationLimits(per_workflow=3)
    for n in range(2):
        result_of(await api.post("orders/instances", json={"instance_id": f"c{n}"}))
    batch = [{"instance_id": "b1"}, {"instance_id": "b2"}]
    refused = await api.post("orders/instances/batch", json=batch)
    status, code, message = error_of(refused)
    assert (status, code) == (429, 10429)
    assert "per workflow" in message
    assert refused.headers["Retry-After"] == "1"
    assert emu.instance("orders", "b1") is None
    assert emu.instance("orders", "b2") is None

    result_of(await api.post("other/instances", json={"instance_id": "elsewhere"}))  # own budget
    result_of(await api.post("orders/instances", json={"instance_id": "c2"}))
    assert error_of(await api.post("orders/instances", json={"instance_id": "c3"}))[0] == 429
    # duplicates and skipped items create nothing, so they are not charged
    assert error_of(await api.post("orders/instances", json={"instance_id": "c0"}))[0] == 409
    assert result_of(await api.post("orders/instances/batch", json=[{"instance_id": "c1"}])) == []

    clock.now += 1.0
    assert len(result_of(await api.post("orders/instances/batch", json=batch))) == 2
    assert emu.stats.throttled == {"creation": 2}
    assert len(emu.instances("orders")) == 5


async def test_creation_rate_per_account_and_restarts(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    emu.config.creation = CreationLimits(per_account=3, retry_after=False)
    result_of(await api.post("one/instances", json={"instance_id": "a"}))
    result_of(await api.post("two/instances", json={"instance_id": "b"}))
    result_of(await api.patch("one/instances/a/status", json={"status": "restart"}))
    refused = await api.post("two/instances", json={"instance_id": "c"})
    status, _, message = error_of(refused)
    assert status == 429
    assert "per account" in message
    assert "Retry-After" not in refused.headers
    again = await api.patch("two/instances/b/status", json={"status": "restart"})
    assert error_of(again)[0] == 429
    assert emu.instance("two", "b").restarts == 0  # type: ignore[union-attr]
    assert emu.stats.restarts == {"one": 1}


def test_latency_draws_stay_within_fixed_plus_jitter() -> None:
    injector = FaultInjector(seed=3)
    draws = [injector.delay(Latency(fixed_ms=150, jitter_ms=50)) for _ in range(500)]
    assert all(0.15 <= d <= 0.2 for d in draws)
    assert max(draws) - min(draws) > 0.04  # the jitter is used, not a constant
    assert injector.delay(Latency(fixed_ms=0, jitter_ms=0)) == 0.0
    again = FaultInjector(seed=3)  # seeded: the same draws for the same request sequence
    assert [again.delay(Latency(fixed_ms=150, jitter_ms=50)) for _ in range(500)] == draws


async def test_latency_holds_every_answer(emu: Emulator, api: httpx.AsyncClient) -> None:
    emu.config.latency = Latency(fixed_ms=150, jitter_ms=50)
    started = time.monotonic()
    result_of(await api.get("orders/instances"))
    assert time.monotonic() - started >= 0.15  # a floor only: a busy machine may add more


async def test_stats_tell_repeated_events_whose_429_and_which_route_failed(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    result_of(await api.post("orders/instances", json={"instance_id": "r"}))
    for payload in ({"n": 1}, {"n": 2}, {"n": 1}):
        result_of(await api.post("orders/instances/r/events/go", json=payload))
    result_of(await api.post("orders/instances/r/events/other", json={"n": 1}))
    assert emu.stats.events["orders"] == 4
    assert emu.stats.events_repeated["orders"] == 1  # only the second {"n": 1} of type go

    emu.config.budget = RequestBudget(requests=1, window_seconds=60, block_seconds=60)
    result_of(await api.get("orders/instances"))
    probe = await api.get("orders/instances", headers={"User-Agent": "probe/1"})
    assert probe.status_code == 429
    assert (await api.get("orders/instances")).status_code == 429
    assert emu.stats.throttled_agents["budget:probe"] == 1
    assert emu.stats.throttled_agents.total() == 2
    emu.config.budget = None

    emu.config.faults = Faults(apply_then_error_ratio=1.0, routes=frozenset({"event"}))
    assert (await api.post("orders/instances/r/events/go", json={"n": 3})).status_code == 500
    assert emu.stats.faults_by_route == {"apply_then_error:event": 1}
    assert emu.stats.events["orders"] == 5  # applied before the error
