"""The routes that act on many instances or forget them: delete, batch delete, batch terminate,
"terminate all" with its job status, the step endpoint, and cursor direction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.local.emulator import (
    DoStep,
    Emulator,
    EmulatorConfig,
    SleepStep,
    WaitForEventStep,
    WorkflowBehaviour,
)
from bridge.local.emulator.testing import api_client, error_of, result_of

#: Instances wait for an event nobody sends unless a test sends it: they stay live.
WAITING = WorkflowBehaviour(
    steps=(
        DoStep(name="prepare", duration_ms=1, output={"ready": True}),
        WaitForEventStep(name="approval", event_type="approve"),
    )
)
NOT_FOUND = (404, 10400, "workflows.api.error.instance.not_found")


@pytest.fixture
async def flows() -> AsyncIterator[tuple[Emulator, httpx.AsyncClient]]:
    config = EmulatorConfig(
        workflows={"orders": WAITING, "other": WAITING}, terminate_all_seconds=0.2
    )
    async with Emulator(config) as emu, api_client(emu) as api:
        yield emu, api


async def create(api: httpx.AsyncClient, *ids: str, workflow: str = "orders") -> None:
    body = [{"instance_id": i} for i in ids]
    assert len(result_of(await api.post(f"{workflow}/instances/batch", json=body))) == len(ids)


async def test_delete_forgets_the_instance_and_frees_its_id(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "d1", "keep")
    answer = result_of(await api.delete("orders/instances/d1"))
    assert answer["instanceId"] == "d1"
    assert answer["timestamp"].endswith("Z")
    assert emu.instance("orders", "d1") is None
    assert error_of(await api.get("orders/instances/d1")) == NOT_FOUND
    assert error_of(await api.delete("orders/instances/d1")) == NOT_FOUND
    assert [i["id"] for i in result_of(await api.get("orders/instances"))] == ["keep"]

    # The id can be created again, and the new instance starts from scratch.
    again = result_of(
        await api.post("orders/instances", json={"instance_id": "d1", "params": {"v": 2}})
    )
    assert again["status"] == "queued"
    assert emu.instance("orders", "d1").params == {"v": 2}  # type: ignore[union-attr]
    listed = [i["id"] for i in result_of(await api.get("orders/instances"))]
    assert listed == ["d1", "keep"]  # newest first: the new d1 is the newest
    assert emu.stats.deleted == {"orders": 1}


async def test_batch_delete_answers_each_id(flows: tuple[Emulator, httpx.AsyncClient]) -> None:
    emu, api = flows
    await create(api, "a", "b")
    body = {"instances": ["a", "ghost", "b", "a"]}
    result = result_of(await api.post("orders/instances/batch/delete", json=body))
    assert result["deleted"] == [{"id": "a"}, {"id": "b"}, {"id": "a"}]
    assert result["errors"] == [
        {"id": "ghost", "code": 10400, "message": "workflows.api.error.instance.not_found"}
    ]
    assert emu.instances("orders") == []
    assert emu.stats.deleted == {"orders": 2}


@pytest.mark.parametrize(
    "body",
    [
        {"instances": []},
        {"instances": [f"i{n}" for n in range(101)]},
        ["a"],
        {"instances": ["fine", 7]},
        {"instances": ["fine", "not valid!"]},
    ],
)
async def test_batch_delete_refuses_bad_bodies_whole(
    flows: tuple[Emulator, httpx.AsyncClient], body: object
) -> None:
    emu, api = flows
    await create(api, "fine")
    status, code, _ = error_of(await api.post("orders/instances/batch/delete", json=body))
    assert (status, code) == (400, 10002)
    assert emu.instance("orders", "fine") is not None


async def test_batch_terminate_counts_the_live_ids_it_terminated(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "t1", "t2", "done")
    result_of(await api.patch("orders/instances/done/status", json={"status": "terminate"}))
    body = ["t1", "t2", "done", "ghost", "t1"]
    result = result_of(await api.post("orders/instances/batch/terminate", json=body))
    assert result == {"instancesTerminated": 2, "status": "ok"}
    for instance_id in ("t1", "t2", "done"):
        assert emu.instance("orders", instance_id).status == "terminated"  # type: ignore[union-attr]
    assert emu.stats.batch_terminated == {"orders": 2}


@pytest.mark.parametrize("body", [[], [f"i{n}" for n in range(101)], {"instances": ["a"]}, ["a b"]])
async def test_batch_terminate_refuses_bad_bodies_whole(
    flows: tuple[Emulator, httpx.AsyncClient], body: object
) -> None:
    emu, api = flows
    await create(api, "a")
    status, code, _ = error_of(await api.post("orders/instances/batch/terminate", json=body))
    assert (status, code) == (400, 10002)
    assert emu.instance("orders", "a").status != "terminated"  # type: ignore[union-attr]


async def test_terminate_all_runs_as_a_job_with_a_status(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "x1", "x2")
    await create(api, "y1", workflow="other")
    assert result_of(await api.get("orders/instances/terminate")) == {"status": "not_running"}

    assert result_of(await api.put("orders/instances/terminate")) == {"status": "ok"}
    assert result_of(await api.get("orders/instances/terminate")) == {"status": "running"}
    assert result_of(await api.put("orders/instances/terminate")) == {"status": "already_running"}
    # While the job runs a batch terminate does nothing and says why.
    busy = result_of(await api.post("orders/instances/batch/terminate", json=["x1"]))
    assert busy == {"instancesTerminated": 0, "status": "already_running"}

    async with asyncio.timeout(5):
        await emu.wait_for_status("orders", "x1", "terminated")
        await emu.wait_for_status("orders", "x2", "terminated")
    assert result_of(await api.get("orders/instances/terminate")) == {"status": "not_running"}
    assert emu.instance("other", "y1").status == "waiting"  # type: ignore[union-attr]


async def test_terminate_all_by_status_and_its_filter_rules(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "p", "w")
    async with asyncio.timeout(5):
        await emu.wait_for_status("orders", "p", "waiting")
    result_of(await api.patch("orders/instances/p/status", json={"status": "pause"}))
    assert error_of(await api.put("orders/instances/terminate?status=complete"))[:2] == (
        400,
        10002,
    )
    assert result_of(await api.put("orders/instances/terminate?status=paused"))["status"] == "ok"
    async with asyncio.timeout(5):
        await emu.wait_for_status("orders", "p", "terminated")
    assert emu.instance("orders", "w").status == "waiting"  # type: ignore[union-attr]


async def test_unknown_workflow_is_404_on_every_bulk_route(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    _, api = flows
    expected = (404, 10200, "workflows.api.error.workflow.not_found")
    for response in (
        await api.post("nope/instances/batch/delete", json={"instances": ["a"]}),
        await api.post("nope/instances/batch/terminate", json=["a"]),
        await api.put("nope/instances/terminate"),
        await api.get("nope/instances/terminate"),
        await api.delete("nope/instances/a"),
        await api.get("nope/instances/a/step", params={"name": "prepare-1"}),
    ):
        assert error_of(response) == expected


async def test_step_endpoint_finds_steps_by_their_suffixed_names() -> None:
    behaviour = WorkflowBehaviour(
        steps=(
            DoStep(name="charge", duration_ms=1, transient_failures=1, retry_delay_ms=1, output=1),
            DoStep(name="charge", duration_ms=1, output={"second": True}),
            SleepStep(name="nap", duration_ms=1),
            WaitForEventStep(name="approval", event_type="approve"),
        )
    )
    async with (
        Emulator(EmulatorConfig(workflows={"pay": behaviour})) as emu,
        api_client(emu) as api,
    ):
        result_of(await api.post("pay/instances", json={"instance_id": "s"}))
        async with asyncio.timeout(5):
            await emu.wait_for_status("pay", "s", "waiting")
            while (await step(api, "approval-1", "waitForEvent")).status_code != 200:
                await asyncio.sleep(0.01)
        names = [s["name"] for s in result_of(await api.get("pay/instances/s"))["steps"]]
        assert names == ["charge-1", "charge-2", "nap-1", "approval-1"]

        assert result_of(await step(api, "charge-2")) == {
            "status": "complete",
            "error": None,
            "output": {"second": True},
        }
        first = result_of(await step(api, "charge-1", attempt=1))
        assert first["status"] == "errored"
        assert first["error"] == {"name": "Error", "message": "emulated step failure"}
        assert result_of(await step(api, "charge-1", attempt=2))["output"] == 1
        waiting = result_of(await step(api, "approval-1", "waitForEvent"))
        assert waiting == {
            "status": "waiting",
            "error": None,
            "output": None,
            "event_type": "approve",
        }

        result_of(await api.post("pay/instances/s/events/approve", json={"by": "ana"}))
        async with asyncio.timeout(5):
            await emu.wait_for_status("pay", "s", "complete")
        done = result_of(await step(api, "approval-1", "waitForEvent"))
        assert (done["status"], done["output"]) == ("complete", {"by": "ana"})

        missing = (404, 10404)
        assert error_of(await step(api, "charge"))[:2] == missing  # the bare name is not it
        assert error_of(await step(api, "charge-3"))[:2] == missing
        assert error_of(await step(api, "approval-1"))[:2] == missing  # a step.do of that name
        assert error_of(await step(api, "charge-1", attempt=3))[:2] == missing
        assert error_of(await step(api, "nap-1", "sleep"))[:2] == (400, 10002)
        no_name = await api.get("pay/instances/s/step", params={"type": "step"})
        assert error_of(no_name)[:2] == (400, 10002)
        assert error_of(await step(api, "charge-1", instance="ghost")) == NOT_FOUND


async def step(
    api: httpx.AsyncClient,
    name: str,
    step_type: str = "step",
    *,
    attempt: int | None = None,
    instance: str = "s",
) -> httpx.Response:
    params = {"name": name, "type": step_type}
    if attempt is not None:
        params["attempt"] = str(attempt)
    return await api.get(f"pay/instances/{instance}/step", params=params)


async def test_direction_applies_to_cursor_pagination(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    _, api = flows
    ids = [f"n{n}" for n in range(5)]
    for instance_id in ids:  # one by one: creation order is the order of the calls
        result_of(await api.post("orders/instances", json={"instance_id": instance_id}))

    async def walk(direction: str | None) -> list[str]:
        seen: list[str] = []
        params: dict[str, str] = {"per_page": "2"}
        if direction is not None:
            params["direction"] = direction
        while True:
            response = await api.get("orders/instances", params=params)
            body = response.json()
            seen += [item["id"] for item in result_of(response)]
            cursor = body["result_info"].get("cursor")
            if cursor is None:
                return seen
            params = {"per_page": "2", "cursor": cursor}
            if direction is not None:
                params["direction"] = direction

    assert await walk("asc") == ids
    assert await walk("desc") == ids[::-1]
    assert await walk(None) == ids[::-1]

    first = (await api.get("orders/instances", params={"per_page": "2", "direction": "asc"})).json()
    cursor = first["result_info"]["cursor"]
    crossed = await api.get("orders/instances", params={"cursor": cursor, "direction": "desc"})
    assert error_of(crossed)[:2] == (400, 10002)
    both = await api.get("orders/instances", params={"cursor": cursor, "page": "1"})
    assert error_of(both)[:2] == (400, 10002)
    # Page numbers are newest first whatever the direction.
    paged = result_of(
        await api.get("orders/instances", params={"page": "1", "per_page": "2", "direction": "asc"})
    )
    assert [item["id"] for item in paged] == ["n4", "n3"]
