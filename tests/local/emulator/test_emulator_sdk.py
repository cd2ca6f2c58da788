"""The official SDK (``cloudflare`` 5.9.0) against the emulator: every call and its models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from bridge.local.emulator import (
    DoStep,
    Emulator,
    EmulatorConfig,
    SleepStep,
    WaitForEventStep,
    WorkflowBehaviour,
)

BEHAVIOUR = WorkflowBehaviour(
    steps=(
        DoStep(name="prepare", duration_ms=5, output="ready"),
        SleepStep(name="nap", duration_ms=5),
        WaitForEventStep(name="approval", event_type="approve"),
    )
)


@pytest.fixture
async def sdk() -> AsyncIterator[tuple[Emulator, AsyncCloudflare]]:
    config = EmulatorConfig(workflows={"orders": BEHAVIOUR})
    async with Emulator(config) as emu:
        client = AsyncCloudflare(api_token=emu.token, base_url=emu.base_url, max_retries=0)
        async with client:
            yield emu, client


async def test_sdk_calls_parse_into_their_models(
    sdk: tuple[Emulator, AsyncCloudflare],
) -> None:
    emu, client = sdk
    account = emu.account_id
    instances = client.workflows.instances

    # SDK 5.9 types params as str, but production and wrangler take a JSON object
    params = cast(Any, {"sku": "A"})
    created = await instances.create(
        "orders", account_id=account, instance_id="sdk-1", params=params
    )
    assert created.id == "sdk-1"
    assert created.status == "queued"
    assert created.version_id
    assert created.workflow_id
    assert created.trigger_source == "api"

    bulk = await instances.bulk(
        "orders", account_id=account, body=[{"instance_id": "sdk-2"}, {"instance_id": "sdk-1"}]
    )
    assert [item.id for item in bulk.result] == ["sdk-2"]
    assert bulk.result[0].version_id == created.version_id

    event = await instances.events.create(
        "approve", account_id=account, workflow_name="orders", instance_id="sdk-1", body={"ok": 1}
    )
    assert event.instance_id == "sdk-1"
    assert isinstance(event.timestamp, datetime)

    async with asyncio.timeout(3):
        await emu.wait_for_status("orders", "sdk-1", "complete")
    got = await instances.get("sdk-1", account_id=account, workflow_name="orders")
    assert got.status == "complete"
    assert got.success is True
    assert got.version_id == created.version_id
    assert got.trigger.source == "api"
    assert got.params == {"sku": "A"}
    assert isinstance(got.queued, datetime)
    assert isinstance(got.end, datetime)
    assert got.step_count == 3
    assert [step.type for step in got.steps] == ["step", "sleep", "waitForEvent"]
    assert got.steps[0].output == "ready"  # type: ignore[union-attr]
    assert got.steps[0].attempts[0].success is True  # type: ignore[union-attr]
    assert got.steps[2].event_type == "approve"  # type: ignore[union-attr]

    simple = await instances.get("sdk-1", account_id=account, workflow_name="orders", simple="true")
    assert simple.step_count == 3

    edited = await instances.status.edit(
        "sdk-2", account_id=account, workflow_name="orders", status="terminate"
    )
    assert edited.status == "terminated"
    assert isinstance(edited.timestamp, datetime)
    restarted = await instances.status.edit(
        "sdk-1",
        account_id=account,
        workflow_name="orders",
        status="restart",
        from_={"name": "approval", "type": "waitForEvent"},
    )
    assert restarted.status == "queued"

    page = await instances.list("orders", account_id=account, per_page=1)
    assert len(page.result) == 1
    assert page.result[0].version_id
    assert isinstance(page.result[0].created_on, datetime)
    listed = [item.id async for item in instances.list("orders", account_id=account, per_page=1)]
    assert sorted(listed) == ["sdk-1", "sdk-2"]


async def test_sdk_raises_its_exceptions_for_emulated_errors(
    sdk: tuple[Emulator, AsyncCloudflare],
) -> None:
    emu, client = sdk
    account = emu.account_id
    instances = client.workflows.instances
    await instances.create("orders", account_id=account, instance_id="x")

    with pytest.raises(cloudflare.ConflictError) as conflict:
        await instances.create("orders", account_id=account, instance_id="x")
    assert conflict.value.status_code == 409
    with pytest.raises(cloudflare.BadRequestError):
        await instances.create("orders", account_id=account, instance_id="not valid")
    with pytest.raises(cloudflare.NotFoundError):
        await instances.get("missing", account_id=account, workflow_name="orders")
    with pytest.raises(cloudflare.NotFoundError):
        await instances.create("unconfigured", account_id=account)

    emu.config.faults.error_ratio = 1.0
    with pytest.raises(cloudflare.InternalServerError):
        await instances.get("x", account_id=account, workflow_name="orders")
    emu.config.faults.error_ratio = 0.0

    emu.config.revoked = True
    with pytest.raises(cloudflare.PermissionDeniedError):
        await instances.get("x", account_id=account, workflow_name="orders")
    emu.config.revoked = False

    async with AsyncCloudflare(api_token="wrong", base_url=emu.base_url, max_retries=0) as stranger:
        with pytest.raises(cloudflare.AuthenticationError):
            await stranger.workflows.instances.get("x", account_id=account, workflow_name="orders")
