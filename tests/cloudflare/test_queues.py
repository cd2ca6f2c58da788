"""The queue consumer and the subscriptions client against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.queues import QueueConsumer, Subscriptions
from bridge.errors import NotFound, Rejected
from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.states.events import SUBSCRIPTION_EVENTS, decode_body, observation


async def test_pull_decode_and_ack_round_trip() -> None:
    async with (
        Emulator(EmulatorConfig(event_queue="states")) as emu,
        WorkflowsClient(account_id="a", api_token=emu.token, base_url=emu.base_url) as client,
    ):
        await client.create("orders", instance_id="o-1")
        await emu.wait_for_status("orders", "o-1", "complete")
        consumer = QueueConsumer(client, "states")
        pulled = await consumer.pull(batch_size=100, visibility_timeout_ms=30_000)
        assert pulled.message_backlog_count == 3
        seen = [observation(decode_body(m.body), at=datetime.now(UTC)) for m in pulled.messages]
        assert [o.status for o in seen] == ["queued", "running", "complete"]
        assert {o.instance_id for o in seen} == {"o-1"}
        answer = await consumer.ack(
            [m.lease_id for m in pulled.messages[:2]], [(pulled.messages[2].lease_id, 0)]
        )
        assert (answer.ack_count, answer.retry_count, answer.warnings) == (2, 1, {})
        again = await consumer.pull(batch_size=10, visibility_timeout_ms=1_000)
        assert [m.attempts for m in again.messages] == [2]
        with pytest.raises(NotFound):
            await QueueConsumer(client, "absent").pull(batch_size=1, visibility_timeout_ms=1000)
        with pytest.raises(Rejected):
            await consumer.pull(batch_size=101, visibility_timeout_ms=1000)


async def test_subscriptions_list_and_create() -> None:
    async with (
        Emulator(EmulatorConfig(queues=["q"])) as emu,
        WorkflowsClient(account_id="a", api_token=emu.token, base_url=emu.base_url) as client,
    ):
        subscriptions = Subscriptions(client)
        assert await subscriptions.list_page(1) == ([], 0)
        made = await subscriptions.create(
            name="bridge-orders", workflow="orders", queue_id="q", events=list(SUBSCRIPTION_EVENTS)
        )
        assert (made.workflow, made.queue_id, made.enabled) == ("orders", "q", True)
        listed, pages = await subscriptions.list_page(1)
        assert [s.id for s in listed] == [made.id]
        assert pages == 1
        async with asyncio.timeout(5):
            await client.create("orders", instance_id="x")
        pulled = await QueueConsumer(client, "q").pull(batch_size=10, visibility_timeout_ms=1000)
        assert pulled.messages  # the subscription feeds the queue
