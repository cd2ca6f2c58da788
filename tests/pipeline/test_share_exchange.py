"""The budget topic (``bridge.pipeline.share_exchange``): real exchanges on a real broker, and the
fallbacks when the topic cannot be reached or used."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from bridge.config import CloudflareSettings, KafkaSettings, Settings, TopicSettings
from bridge.local.tansu import free_port
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.share_exchange import ShareExchange
from tests.support.kafka_harness import Flavour, KafkaBroker

Namer = Callable[[str], str]


def _settings(bootstrap: str, group: str, topic: str, *, window: float = 10.0) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=group),
        topics=TopicSettings(budget=topic),
        cloudflare=CloudflareSettings(
            account_id="a", api_token="t", budget_requests=100, budget_window_seconds=window
        ),
    )


def _budget(settings: Settings) -> RequestBudget:
    cf = settings.cloudflare
    return RequestBudget(
        requests=cf.budget_requests,
        window_seconds=cf.budget_window_seconds,
        creations_per_workflow=100,
        creations_per_account=300,
    )


async def _until(condition: Callable[[], bool], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _demand(budget: RequestBudget, requests: int) -> AsyncIterator[None]:
    """``requests`` callers waiting for a slot of ``budget`` (each holds it once granted)."""
    release = asyncio.Event()

    async def one() -> None:
        async with budget.slot():
            await release.wait()

    tasks = [asyncio.create_task(one()) for _ in range(requests)]
    try:
        yield
    finally:
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_replicas_split_the_budget_by_demand(
    kafka_broker: KafkaBroker, unique_name: Namer
) -> None:
    settings = _settings(kafka_broker.bootstrap_servers, unique_name("g"), unique_name("budget"))
    busy_budget, idle_budget = _budget(settings), _budget(settings)
    async with (
        ShareExchange(settings, busy_budget, heartbeat=0.2) as busy,
        ShareExchange(settings, idle_budget, heartbeat=0.2) as idle,
    ):
        busy.set_partitions(1, 2)
        idle.set_partitions(1, 2)
        # Idle: each keeps its headroom (2 % of 100), nothing more.
        await _until(lambda: busy_budget.requests.capacity == idle_budget.requests.capacity == 2)
        async with _demand(busy_budget, 300):
            # All the demand on one replica: it gets what the other leaves.
            await _until(lambda: busy_budget.requests.capacity == 98)
            assert idle_budget.requests.capacity == 2
            assert (busy.mode, idle.mode) == ("dynamic", "dynamic")
        # The busy one let 98 through: they count until they leave its window, whatever it says
        # now; the idle one takes nothing of it meanwhile.
        assert busy_budget.requests.capacity + idle_budget.requests.capacity <= 100


async def test_an_unreachable_topic_falls_back_to_the_static_share_after_leases_and_a_window(
    unique_name: Namer,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    settings = _settings(nowhere, unique_name("g"), unique_name("budget"), window=1.0)
    budget = _budget(settings)
    started = time.monotonic()
    async with ShareExchange(settings, budget, heartbeat=0.05, lease=0.2) as exchange:
        exchange.set_partitions(1, 2)
        assert budget.requests.capacity == 0  # nothing agreed, nothing granted
        await _until(lambda: budget.requests.capacity == 50)  # 1 of 2 partitions
        assert time.monotonic() - started >= 2 * 0.2 + 1.0
        assert exchange.mode == "starting"  # it keeps trying to reach the topic


async def test_without_a_budget_topic_a_replica_takes_its_partitions_share(
    unique_name: Namer,
) -> None:
    settings = _settings("127.0.0.1:9", unique_name("g"), "")
    budget = _budget(settings)
    async with ShareExchange(settings, budget) as exchange:
        assert exchange.mode == "static"
        exchange.set_partitions(1, 4)
        assert budget.requests.capacity == 25
        assert budget.share == 0.25


@pytest.mark.full_kafka
async def test_a_topic_the_cluster_refuses_means_static_shares(
    kafka_broker: KafkaBroker, unique_name: Namer
) -> None:
    assert kafka_broker.flavour is not Flavour.TANSU  # Tansu accepts any name
    settings = _settings(kafka_broker.bootstrap_servers, unique_name("g"), "no spaces allowed")
    budget = _budget(settings)
    async with ShareExchange(settings, budget) as exchange:
        exchange.set_partitions(2, 3)
        await _until(lambda: exchange.mode == "static")
        assert budget.requests.capacity == 66
