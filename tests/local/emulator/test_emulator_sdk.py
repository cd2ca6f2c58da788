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


async def test_sdk_client_and_emulator_agree_on_the_rest_of_the_api() -> None:
    """Endpoints the SDK has no method for are reached as its README says, with ``cast_to=object``;
    every answer must equal what the project's client parsed from the same emulator."""
    from bridge.cloudflare.client import WorkflowsClient

    # No sleep: "waiting" then means waiting for the event.
    waits = WorkflowBehaviour(
        steps=(
            DoStep(name="prepare", duration_ms=5, output="ready"),
            WaitForEventStep(name="approval", event_type="approve"),
        )
    )
    config = EmulatorConfig(workflows={"orders": waits}, terminate_all_seconds=0.05)
    async with (
        Emulator(config) as emu,
        AsyncCloudflare(api_token=emu.token, base_url=emu.base_url, max_retries=0) as sdk,
        WorkflowsClient(
            account_id=emu.account_id, api_token=emu.token, base_url=emu.base_url
        ) as ours,
    ):
        account = emu.account_id
        instances = sdk.workflows.instances
        root = f"/accounts/{account}/workflows/orders/instances"
        await instances.bulk(
            "orders", account_id=account, body=[{"instance_id": f"i{n}"} for n in range(8)]
        )
        async with asyncio.timeout(5):
            for n in range(8):
                await emu.wait_for_status("orders", f"i{n}", "waiting")

        # GET …/step, with the counter-suffixed name the step log shows
        names = [
            step.name  # type: ignore[union-attr]
            for step in (
                await instances.get("i0", account_id=account, workflow_name="orders")
            ).steps
        ]
        assert names == ["prepare-1", "approval-1"]
        by_sdk = await instances.step(
            "i0", account_id=account, workflow_name="orders", name="prepare-1", type="step"
        )
        by_us = await ours.step("orders", "i0", "prepare-1")
        assert by_sdk.status == by_us.result.status == "complete"
        assert by_sdk.output == by_us.result.output == "ready"
        waiting_sdk = await instances.step(
            "i0", account_id=account, workflow_name="orders", name="approval-1", type="waitForEvent"
        )
        waiting_us = await ours.step("orders", "i0", "approval-1", step_type="waitForEvent")
        assert waiting_sdk.status == waiting_us.result.status == "waiting"
        assert waiting_sdk.event_type == waiting_us.result.event_type == "approve"
        with pytest.raises(cloudflare.NotFoundError):
            await instances.step(
                "i0", account_id=account, workflow_name="orders", name="prepare", type="step"
            )

        # GET …/{id}?order=desc
        newest_first = await instances.get(
            "i0", account_id=account, workflow_name="orders", order="desc"
        )
        ours_desc = await ours.get("orders", "i0", simple=False, order="desc")
        assert [s.type for s in newest_first.steps] == [s.type for s in ours_desc.result.steps]
        assert [s.type for s in ours_desc.result.steps] == ["waitForEvent", "step"]

        # GET /instances with every filter: direction (cursor pagination), dates, status
        asc_sdk = await instances.list(
            "orders", account_id=account, per_page=3, direction="asc", status="waiting"
        )
        asc_us, cursor = await ours.list_page(
            "orders", per_page=3, direction="asc", status="waiting"
        )
        assert [i.id for i in asc_sdk.result] == [i.id for i in asc_us.result]
        assert [i.id for i in asc_us.result] == ["i0", "i1", "i2"]
        assert cursor is not None
        created = asc_us.result[0].created_on
        assert created is not None
        dated_sdk = await instances.list(
            "orders", account_id=account, date_start=created, date_end=created, per_page=100
        )
        dated_us = [
            i.id async for i in ours.list_instances("orders", date_start=created, date_end=created)
        ]
        assert sorted(i.id for i in dated_sdk.result) == sorted(dated_us)
        assert "i0" in dated_us

        # DELETE …/{id}
        deleted_sdk = await sdk.delete(f"{root}/i1", cast_to=object)
        deleted_us = await ours.delete("orders", "i2")
        assert deleted_sdk["result"]["instanceId"] == "i1"  # type: ignore[index]
        assert deleted_us.result.instance_id == "i2"
        assert set(deleted_sdk["result"]) == {"instanceId", "timestamp"}  # type: ignore[index]

        # POST …/batch/delete
        batch_sdk = await sdk.post(
            f"{root}/batch/delete", cast_to=object, body={"instances": ["i3", "gone"]}
        )
        batch_us = await ours.delete_batch("orders", ["i4", "gone"])
        assert batch_sdk["result"] == {  # type: ignore[index]
            "deleted": [{"id": "i3"}],
            "errors": [
                {"id": "gone", "code": 10400, "message": "workflows.api.error.instance.not_found"}
            ],
        }
        assert [d.id for d in batch_us.result.deleted] == ["i4"]
        assert [(e.id, e.code) for e in batch_us.result.errors] == [("gone", 10400)]

        # POST …/batch/terminate
        term_sdk = await sdk.post(f"{root}/batch/terminate", cast_to=object, body=["i5", "gone"])
        term_us = await ours.terminate_batch("orders", ["i6", "gone"])
        assert term_sdk["result"] == {"instancesTerminated": 1, "status": "ok"}  # type: ignore[index]
        assert (term_us.result.instances_terminated, term_us.result.status) == (1, "ok")

        # PUT …/terminate and GET …/terminate (the job, never an instance called "terminate")
        started = await sdk.put(f"{root}/terminate", cast_to=object)
        assert started["result"] == {"status": "ok"}  # type: ignore[index]
        assert (await ours.terminate_all("orders")).result.status == "already_running"
        assert (await ours.terminate_all_status("orders")).result.status == "running"
        async with asyncio.timeout(5):
            await emu.wait_for_status("orders", "i7", "terminated")
        job = await sdk.get(f"{root}/terminate", cast_to=object)
        assert job["result"] == {"status": "not_running"}  # type: ignore[index]
        assert (await ours.terminate_all_status("orders")).result.status == "not_running"
