"""Event Subscriptions and Queues: subscriptions CRUD, the six events with production's envelope,
pull with leases, ack and retry, redelivery, the backlog, injected trouble, and what is charged."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bridge.local.emulator import (
    Emulator,
    EmulatorConfig,
    QueueBehaviour,
    RequestBudget,
    WorkflowBehaviour,
)
from bridge.local.emulator.config import DoStep, SleepStep, WaitForEventStep
from bridge.local.emulator.testing import account_client, api_client, error_of, result_of

EVENTS = [
    "instance.queued",
    "instance.started",
    "instance.paused",
    "instance.errored",
    "instance.terminated",
    "instance.completed",
]


def _subscription(workflow: str, queue: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"bridge-{workflow}",
        "source": {"type": "workflows.workflow", "workflow_name": workflow},
        "destination": {"type": "queues.queue", "queue_id": queue},
        "events": EVENTS,
        **extra,
    }


def _decode(message: dict[str, Any]) -> dict[str, Any]:
    body = message["body"]
    if message["metadata"]["CF-Content-Type"] == "json":
        body = base64.b64decode(body).decode()
    decoded: dict[str, Any] = json.loads(body)
    return decoded


async def _pull(
    account: httpx.AsyncClient, queue: str, *, batch: int = 100, visibility_ms: float = 30_000
) -> list[dict[str, Any]]:
    result = result_of(
        await account.post(
            f"queues/{queue}/messages/pull",
            json={"batch_size": batch, "visibility_timeout_ms": visibility_ms},
        )
    )
    messages: list[dict[str, Any]] = result["messages"]
    return messages


async def _drain(
    account: httpx.AsyncClient, queue: str, until: int, *, within: float = 30.0
) -> list[dict[str, Any]]:
    """Pull (and ack) until ``until`` messages arrived; they are returned in delivery order."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(got) < until:
            batch = await _pull(account, queue)
            if batch:
                acks = [{"lease_id": m["lease_id"]} for m in batch]
                result_of(await account.post(f"queues/{queue}/messages/ack", json={"acks": acks}))
                got.extend(batch)
            else:
                await asyncio.sleep(0.02)
    return got


@pytest.fixture
async def queued_emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(event_queue="states", seed=3)
    async with Emulator(config) as running:
        yield running


async def test_subscriptions_crud_and_validation() -> None:
    async with Emulator(EmulatorConfig(queues=["q1"])) as emu, account_client(emu) as account:
        created = result_of(
            await account.post(
                "event_subscriptions/subscriptions", json=_subscription("orders", "q1")
            )
        )
        assert created["source"] == {"type": "workflows.workflow", "workflow_name": "orders"}
        assert created["destination"] == {"type": "queues.queue", "queue_id": "q1"}
        assert created["events"] == EVENTS
        assert created["enabled"] is True
        assert created["created_at"].endswith("Z")
        assert len(created["id"]) == 32
        path = f"event_subscriptions/subscriptions/{created['id']}"
        assert result_of(await account.get(path)) == created
        listed = await account.get("event_subscriptions/subscriptions")
        assert result_of(listed) == [created]
        assert listed.json()["result_info"]["total_count"] == 1

        edited = result_of(await account.patch(path, json={"enabled": False, "name": "off"}))
        assert (edited["enabled"], edited["name"]) == (False, "off")
        assert error_of(await account.patch(path, json={"source": {}}))[0] == 400
        assert result_of(await account.delete(path)) == {"id": created["id"]}
        assert error_of(await account.get(path))[:2] == (404, 11001)

        bad = [
            _subscription("orders", "q1", events=["instance.waiting"]),
            _subscription("orders", "q1", events=[]),
            {**_subscription("orders", "q1"), "source": {"type": "r2.bucket"}},
            {**_subscription("orders", "q1"), "destination": {"type": "queues.queue"}},
            {**_subscription("orders", "q1"), "name": ""},
        ]
        for body in bad:
            status, code, _ = error_of(
                await account.post("event_subscriptions/subscriptions", json=body)
            )
            assert (status, code) == (400, 10002), body
        assert error_of(await account.put("event_subscriptions/subscriptions"))[0] == 405


async def test_event_queue_subscribes_every_workflow() -> None:
    config = EmulatorConfig(
        event_queue="states", workflows={"a": WorkflowBehaviour(), "b": WorkflowBehaviour()}
    )
    async with Emulator(config) as emu:
        assert sorted(s["source"]["workflow_name"] for s in emu.subscriptions()) == ["a", "b"]
        assert {s["destination"]["queue_id"] for s in emu.subscriptions()} == {"states"}
    async with Emulator(EmulatorConfig(event_queue="states")) as emu, api_client(emu) as api:
        assert emu.subscriptions() == []  # any name exists: subscribed on first use
        result_of(await api.post("fresh/instances", json={"instance_id": "x"}))
        assert [s["source"]["workflow_name"] for s in emu.subscriptions()] == ["fresh"]


async def test_lifecycle_events_have_productions_envelope(queued_emu: Emulator) -> None:
    async with api_client(queued_emu) as api, account_client(queued_emu) as account:
        created = result_of(await api.post("orders/instances", json={"instance_id": "o-1"}))
        await queued_emu.wait_for_status("orders", "o-1", "complete")
        messages = await _drain(account, "states", 3)
    [subscription] = queued_emu.subscriptions()
    envelopes = [_decode(m) for m in messages]
    assert [e["type"] for e in envelopes] == [
        "cf.workflows.workflow.instance.queued",
        "cf.workflows.workflow.instance.started",
        "cf.workflows.workflow.instance.completed",
    ]  # the sleep's waiting and its end announce nothing
    for envelope in envelopes:
        assert set(envelope) == {"type", "source", "payload", "metadata"}
        assert envelope["source"] == {"type": "workflows.workflow", "workflowName": "orders"}
        assert envelope["payload"] == {"versionId": created["version_id"], "instanceId": "o-1"}
        metadata = envelope["metadata"]
        assert set(metadata) == {
            "accountId",
            "eventSubscriptionId",
            "eventSchemaVersion",
            "eventTimestamp",
        }
        assert metadata["eventSubscriptionId"] == subscription["id"]
        assert metadata["eventSchemaVersion"] == 1
    stamps = [e["metadata"]["eventTimestamp"] for e in envelopes]
    assert stamps == sorted(stamps)
    assert all(s.endswith("Z") for s in stamps)
    for message in messages:
        assert message["attempts"] == 1
        assert isinstance(message["timestamp_ms"], int)
        assert message["metadata"]["CF-Content-Type"] == "json"


async def test_pause_resume_terminate_and_errors_are_announced() -> None:
    behaviour = WorkflowBehaviour(
        steps=(
            DoStep(name="flaky", duration_ms=5, transient_failures=1, retry_delay_ms=5),
            WaitForEventStep(name="w", event_type="go"),
        )
    )
    failing = WorkflowBehaviour(steps=(DoStep(name="boom", duration_ms=5, fail=True),))
    config = EmulatorConfig(
        event_queue="q",
        workflows={"wf": behaviour, "bad": failing},
        queue=QueueBehaviour(body_encoding="plain"),
    )
    async with Emulator(config) as emu, api_client(emu) as api, account_client(emu) as account:
        result_of(await api.post("wf/instances", json={"instance_id": "i"}))
        async with asyncio.timeout(30):  # the flaky step is retried, then the wait is reached
            while (view := emu.instance("wf", "i")) is None or view.steps_reached < 2:
                await asyncio.sleep(0.01)
        assert view.status == "waiting"
        result_of(await api.patch("wf/instances/i/status", json={"status": "pause"}))
        result_of(await api.patch("wf/instances/i/status", json={"status": "resume"}))
        result_of(await api.patch("wf/instances/i/status", json={"status": "terminate"}))
        result_of(await api.post("bad/instances", json={"instance_id": "j"}))
        await emu.wait_for_status("bad", "j", "errored")
        messages = await _drain(account, "q", 9)
    by_instance: dict[str, list[str]] = {}
    for message in messages:
        assert message["metadata"]["CF-Content-Type"] == "text"
        envelope = json.loads(message["body"])  # plain JSON bodies
        by_instance.setdefault(envelope["payload"]["instanceId"], []).append(
            envelope["type"].rsplit(".", 1)[1]
        )
    # the retried step error is announced too (the docs' "a step throws an error")
    assert by_instance["i"] == ["queued", "started", "errored", "paused", "started", "terminated"]
    assert by_instance["j"] == ["queued", "started", "errored"]


async def test_pull_leases_ack_retry_and_redelivery(queued_emu: Emulator) -> None:
    async with api_client(queued_emu) as api, account_client(queued_emu) as account:
        for n in range(4):  # 4 queued events, the rest follow as the instances run
            result_of(await api.post("wf/instances", json={"instance_id": f"i{n}"}))
        for n in range(4):
            await queued_emu.wait_for_status("wf", f"i{n}", "complete")
        queue = queued_emu.queue("states")
        assert len(queue) == 12

        default = result_of(await account.post("queues/states/messages/pull", json={}))
        assert len(default["messages"]) == 5  # batch_size defaults to 5
        assert default["message_backlog_count"] == 12
        metrics = default["metadata"]["metrics"]
        assert metrics["backlog_count"] == 12
        assert metrics["backlog_bytes"] > 0
        assert isinstance(metrics["oldest_message_timestamp_ms"], int)
        leased = default["messages"]

        rest = await _pull(account, "states", visibility_ms=150)
        assert len(rest) == 7  # leased messages are not handed out twice
        assert await _pull(account, "states") == []  # short polling: empty at once

        # ack two of the first batch, retry one with a delay, leave the others to expire
        answer = result_of(
            await account.post(
                "queues/states/messages/ack",
                json={
                    "acks": [{"lease_id": m["lease_id"]} for m in leased[:2]]
                    + [{"lease_id": "no-such-lease"}],
                    "retries": [{"lease_id": leased[2]["lease_id"], "delay_seconds": 0}],
                },
            )
        )
        assert answer["ackCount"] == 2
        assert answer["retryCount"] == 1
        assert list(answer["warnings"]) == ["no-such-lease"]
        again = await _pull(account, "states")
        assert [m["id"] for m in again] == [leased[2]["id"]]
        assert again[0]["attempts"] == 2
        assert again[0]["lease_id"] != leased[2]["lease_id"]

        async with asyncio.timeout(30):  # the 150 ms leases expire: delivered again
            while not (expired := await _pull(account, "states")):
                await asyncio.sleep(0.05)
        assert {m["id"] for m in expired} <= {m["id"] for m in rest}
        assert all(m["attempts"] == 2 for m in expired)

        # a late ack, by the lease of the first delivery, still deletes the message
        late = result_of(
            await account.post(
                "queues/states/messages/ack", json={"acks": [{"lease_id": rest[0]["lease_id"]}]}
            )
        )
        assert late["ackCount"] == 1
        assert rest[0]["id"] not in {m["id"] for m in await _pull(account, "states")}

        bad_pulls: list[Any] = [
            {"batch_size": 101},
            {"batch_size": 0},
            {"visibility_timeout_ms": 12 * 3600 * 1000 + 1},
            [],
        ]
        for body in bad_pulls:
            assert error_of(await account.post("queues/states/messages/pull", json=body))[0] == 400
        bad_ack = {"retries": [{"lease_id": "x", "delay_seconds": -1}]}
        assert error_of(await account.post("queues/states/messages/ack", json=bad_ack))[0] == 400
        assert error_of(await account.post("queues/nope/messages/pull", json={}))[:2] == (
            404,
            11000,
        )
        assert error_of(await account.get("queues/states/messages/pull"))[0] == 405


async def test_visibility_timeout_alias_and_max_retries() -> None:
    config = EmulatorConfig(event_queue="q", queue=QueueBehaviour(max_retries=2))
    async with Emulator(config) as emu, api_client(emu) as api, account_client(emu) as account:
        result_of(await api.post("wf/instances", json={"instance_id": "i"}))
        first = result_of(
            await account.post(
                "queues/q/messages/pull", json={"batch_size": 1, "visibility_timeout": 50}
            )
        )["messages"]
        assert len(first) == 1
        seen = [first[0]["attempts"]]
        async with asyncio.timeout(30):
            while len(emu.queue("q")) and emu.queue("q").counters.deleted_unacked == 0:
                for message in await _pull(account, "q", batch=1, visibility_ms=50):
                    if message["id"] == first[0]["id"]:
                        seen.append(message["attempts"])
                await asyncio.sleep(0.02)
        # delivered max_retries times, then deleted unacknowledged
        assert seen == [1, 2]
        assert emu.queue("q").counters.deleted_unacked >= 1


async def test_pulls_and_acks_are_not_charged_subscription_calls_are() -> None:
    config = EmulatorConfig(event_queue="q", budget=RequestBudget(requests=3, window_seconds=60))
    async with Emulator(config) as emu, api_client(emu) as api, account_client(emu) as account:
        result_of(await api.post("wf/instances", json={"instance_id": "i"}))  # 1 of 3
        for _ in range(20):
            batch = await _pull(account, "q")
            if batch:
                acks = [{"lease_id": m["lease_id"]} for m in batch]
                result_of(await account.post("queues/q/messages/ack", json={"acks": acks}))
        result_of(await account.get("event_subscriptions/subscriptions"))  # 2 of 3
        result_of(
            await account.post("event_subscriptions/subscriptions", json=_subscription("wf", "q"))
        )
        over = await account.get("event_subscriptions/subscriptions")
        assert error_of(over)[0] == 429  # the fourth budgeted call
        assert emu.stats.requests["queue_pull"] == 20
        # blocked for everything else, but the queue still answers
        assert isinstance(await _pull(account, "q"), list)


async def test_injected_duplicates_reordering_and_lost_acks() -> None:
    behaviour = WorkflowBehaviour(steps=(SleepStep(name="s", duration_ms=1),))
    config = EmulatorConfig(
        event_queue="q",
        workflows={"wf": behaviour},
        queue=QueueBehaviour(duplicate_ratio=1.0, duplicate_delay_ms=0, lost_ack_ratio=1.0),
        seed=5,
    )
    async with Emulator(config) as emu, api_client(emu) as api, account_client(emu) as account:
        result_of(await api.post("wf/instances", json={"instance_id": "i"}))
        await emu.wait_for_status("wf", "i", "complete")
        first = await _pull(account, "q", visibility_ms=100)
        bodies = [_decode(m)["type"] for m in first]
        assert len(first) == 6
        assert len({m["id"] for m in first}) == 6
        assert sorted(bodies) == sorted(
            2 * [f"cf.workflows.workflow.instance.{t}" for t in ("queued", "started", "completed")]
        )
        answer = result_of(
            await account.post(
                "queues/q/messages/ack", json={"acks": [{"lease_id": m["lease_id"]} for m in first]}
            )
        )
        assert answer["ackCount"] == 6  # answered as counted ...
        async with asyncio.timeout(30):  # ... but not applied: delivered again after the lease
            while not (again := await _pull(account, "q")):
                await asyncio.sleep(0.05)
        assert {m["id"] for m in again} <= {m["id"] for m in first}
        assert emu.queue("q").counters.acks_lost == 6

    config = EmulatorConfig(
        event_queue="q",
        workflows={"wf": WorkflowBehaviour(steps=(SleepStep(name="s", duration_ms=30),))},
        queue=QueueBehaviour(reorder_ratio=0.5, reorder_delay_ms=200),
        seed=11,
    )
    async with Emulator(config) as emu, api_client(emu) as api, account_client(emu) as account:
        for n in range(8):
            result_of(await api.post("wf/instances", json={"instance_id": f"r{n}"}))
        for n in range(8):
            await emu.wait_for_status("wf", f"r{n}", "complete")
        got = await _drain(account, "q", 24)
        assert emu.queue("q").counters.reordered > 0
    stamps = [_decode(m)["metadata"]["eventTimestamp"] for m in got]
    # some event is delivered after one that happened later than it
    assert any(earlier > later for i, earlier in enumerate(stamps) for later in stamps[i + 1 :])
