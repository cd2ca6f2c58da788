"""The instance state machine: steps, pause/resume/terminate/restart, events, concurrency."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bridge.local.emulator import (
    DoStep,
    Emulator,
    EmulatorConfig,
    InstanceView,
    SleepStep,
    WaitForEventStep,
    WorkflowBehaviour,
)
from bridge.local.emulator.testing import ClientFactory, error_of, result_of

BEHAVIOURS = {
    "sleepy": WorkflowBehaviour(
        steps=(
            DoStep(name="a", duration_ms=10),
            SleepStep(name="snooze", duration_ms=300),
            DoStep(name="b", duration_ms=10),
        )
    ),
    "slow": WorkflowBehaviour(
        steps=(DoStep(name="long", duration_ms=250), DoStep(name="after", duration_ms=10))
    ),
    "approval": WorkflowBehaviour(
        steps=(
            DoStep(name="prep", duration_ms=10),
            WaitForEventStep(name="first", event_type="approve"),
            WaitForEventStep(name="second", event_type="approve"),
        ),
        output="approved",
    ),
    "deadline": WorkflowBehaviour(
        steps=(WaitForEventStep(name="w", event_type="never", timeout_ms=150),)
    ),
    "flaky": WorkflowBehaviour(
        steps=(DoStep(name="flaky", duration_ms=5, transient_failures=2, retry_delay_ms=30),)
    ),
    "exhausted": WorkflowBehaviour(
        steps=(
            DoStep(
                name="x",
                duration_ms=5,
                transient_failures=3,
                retry_limit=1,
                retry_delay_ms=10,
                error_message="flaky boom",
            ),
        )
    ),
    "fatal": WorkflowBehaviour(steps=(DoStep(name="x", duration_ms=5, fail=True),)),
    "limited": WorkflowBehaviour(steps=(SleepStep(name="s", duration_ms=150),), concurrency=2),
}


@pytest.fixture
async def flows(client_for: ClientFactory) -> AsyncIterator[tuple[Emulator, httpx.AsyncClient]]:
    async with (
        Emulator(EmulatorConfig(workflows=dict(BEHAVIOURS))) as emu,
        client_for(emu) as api,
    ):
        yield emu, api


async def create(api: httpx.AsyncClient, workflow: str, instance_id: str) -> None:
    result_of(
        await api.post(f"{workflow}/instances", json={"instance_id": instance_id, "params": {}})
    )


async def edit(api: httpx.AsyncClient, workflow: str, instance_id: str, **body: Any) -> str:
    result = result_of(await api.patch(f"{workflow}/instances/{instance_id}/status", json=body))
    status: str = result["status"]
    return status


async def reach(emu: Emulator, workflow: str, instance_id: str, *statuses: str) -> InstanceView:
    async with asyncio.timeout(3):
        return await emu.wait_for_status(workflow, instance_id, *statuses)


def view(emu: Emulator, workflow: str, instance_id: str) -> InstanceView:
    found = emu.instance(workflow, instance_id)
    assert found is not None
    return found


async def test_pause_during_a_sleep_stops_progress_until_resume(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "sleepy", "p")
    await reach(emu, "sleepy", "p", "waiting")
    assert await edit(api, "sleepy", "p", status="pause") == "paused"
    await asyncio.sleep(0.45)  # longer than the whole sleep: nothing may move meanwhile
    paused = view(emu, "sleepy", "p")
    assert paused.status == "paused"
    assert paused.steps_reached == 2
    assert await edit(api, "sleepy", "p", status="resume") == "waiting"
    await reach(emu, "sleepy", "p", "complete")
    steps = result_of(await api.get("sleepy/instances/p"))["steps"]
    assert steps[1]["type"] == "sleep"
    assert steps[1]["finished"] is True


async def test_pause_during_a_step_waits_for_it_then_stops(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "slow", "w")
    await reach(emu, "slow", "w", "running")
    assert await edit(api, "slow", "w", status="pause") == "waitingForPause"
    assert await edit(api, "slow", "w", status="pause") == "waitingForPause"  # no-op
    await reach(emu, "slow", "w", "paused")
    await asyncio.sleep(0.1)
    stopped = view(emu, "slow", "w")
    assert stopped.status == "paused"
    assert stopped.steps_reached == 1
    assert await edit(api, "slow", "w", status="resume") == "running"
    await reach(emu, "slow", "w", "complete")


async def test_resume_while_waiting_for_pause_cancels_the_pause(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "slow", "c")
    await reach(emu, "slow", "c", "running")
    assert await edit(api, "slow", "c", status="pause") == "waitingForPause"
    assert await edit(api, "slow", "c", status="resume") == "running"
    assert (await reach(emu, "slow", "c", "complete", "paused")).status == "complete"


async def test_pause_and_resume_are_no_ops_where_they_do_not_apply(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "slow", "n")
    await reach(emu, "slow", "n", "running")
    assert await edit(api, "slow", "n", status="resume") == "running"
    await reach(emu, "slow", "n", "complete")
    assert await edit(api, "slow", "n", status="pause") == "complete"
    assert await edit(api, "slow", "n", status="resume") == "complete"


async def test_terminate_stops_and_a_final_instance_cannot_be_terminated(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "sleepy", "t")
    await reach(emu, "sleepy", "t", "waiting")
    # Rollbacks are not emulated: refused as such, and the instance is left as it was.
    refused = await api.patch(
        "sleepy/instances/t/status", json={"status": "terminate", "rollback": True}
    )
    status, code, message = error_of(refused)
    assert (status, code) == (501, 7501)
    assert message.startswith("not emulated: terminate with rollback: true")
    assert view(emu, "sleepy", "t").status == "waiting"
    assert await edit(api, "sleepy", "t", status="terminate", rollback=False) == "terminated"
    await asyncio.sleep(0.35)
    assert view(emu, "sleepy", "t").status == "terminated"
    got = result_of(await api.get("sleepy/instances/t"))
    assert got["end"] is not None
    assert got["steps"][-1] == {"type": "termination", "trigger": {"source": "api"}}
    assert got["steps"][1]["finished"] is False

    again = await api.patch("sleepy/instances/t/status", json={"status": "terminate"})
    assert error_of(again) == (409, 10409, "Instance not in a restartable state.")
    await create(api, "fatal", "done")
    await reach(emu, "fatal", "done", "errored")
    late = await api.patch("fatal/instances/done/status", json={"status": "terminate"})
    assert error_of(late)[0] == 409


async def test_restart_runs_a_finished_instance_again(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "fatal", "r")
    first = await reach(emu, "fatal", "r", "errored")
    assert await edit(api, "fatal", "r", status="restart") == "queued"
    assert view(emu, "fatal", "r").error is None
    second = await reach(emu, "fatal", "r", "errored")
    assert second.restarts == 1
    assert second.created_at > first.created_at
    assert emu.stats.restarts["fatal"] == 1
    assert emu.stats.created["fatal"] == 1

    await create(api, "sleepy", "mid")
    await reach(emu, "sleepy", "mid", "waiting")
    assert await edit(api, "sleepy", "mid", status="restart") == "queued"
    restarted = view(emu, "sleepy", "mid")
    assert restarted.status in ("queued", "running")
    assert restarted.steps_reached <= 1
    await reach(emu, "sleepy", "mid", "complete")
    assert len(result_of(await api.get("sleepy/instances/mid"))["steps"]) == 3


async def test_events_are_buffered_fifo_before_the_wait_is_reached(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "approval", "e")
    result_of(await api.post("approval/instances/e/events/approve", json={"n": 1}))
    result_of(await api.post("approval/instances/e/events/other", json={"n": 0}))
    result_of(await api.post("approval/instances/e/events/approve", json={"n": 2}))
    done = await reach(emu, "approval", "e", "complete")
    assert done.output == "approved"
    steps = result_of(await api.get("approval/instances/e"))["steps"]
    assert [s["output"]["payload"] for s in steps[1:]] == [{"n": 1}, {"n": 2}]
    assert {s["output"]["type"] for s in steps[1:]} == {"approve"}
    assert [e[0] for e in done.events] == ["approve", "other", "approve"]


async def test_an_event_sent_while_paused_waits_for_the_resume(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "approval", "pz")
    await reach(emu, "approval", "pz", "waiting")
    result_of(await api.post("approval/instances/pz/events/unrelated", json={}))
    await asyncio.sleep(0.05)
    assert view(emu, "approval", "pz").steps_reached == 2  # still at "first"
    assert await edit(api, "approval", "pz", status="pause") == "paused"
    result_of(await api.post("approval/instances/pz/events/approve", json={"n": 1}))
    await asyncio.sleep(0.1)
    assert view(emu, "approval", "pz").steps_reached == 2
    assert view(emu, "approval", "pz").status == "paused"
    assert await edit(api, "approval", "pz", status="resume") == "waiting"
    assert view(emu, "approval", "pz").steps_reached == 3  # took the event, now at "second"
    result_of(await api.post("approval/instances/pz/events/approve", json={"n": 2}))
    await reach(emu, "approval", "pz", "complete")


async def test_restart_from_a_step_keeps_the_history_before_it(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "approval", "rf")
    for n in (1, 2):
        result_of(await api.post("approval/instances/rf/events/approve", json={"n": n}))
    await reach(emu, "approval", "rf", "complete")

    unknown = {"status": "restart", "from": {"name": "nope"}}
    response = await api.patch("approval/instances/rf/status", json=unknown)
    assert error_of(response) == (400, 10002, 'Step "nope" not found in execution history')
    assert view(emu, "approval", "rf").status == "complete"

    body = {"name": "second", "type": "waitForEvent"}
    assert await edit(api, "approval", "rf", status="restart", **{"from": body}) == "queued"
    await reach(emu, "approval", "rf", "waiting")
    assert view(emu, "approval", "rf").steps_reached == 3
    result_of(await api.post("approval/instances/rf/events/approve", json={"n": 3}))
    await reach(emu, "approval", "rf", "complete")
    outputs = [
        s["output"]["payload"]
        for s in result_of(await api.get("approval/instances/rf"))["steps"][1:]
    ]
    assert outputs == [{"n": 1}, {"n": 3}]


async def test_wait_for_event_times_out_into_errored(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "deadline", "d")
    errored = await reach(emu, "deadline", "d", "errored")
    message = "WorkflowTimeoutError: Execution timed out after 150ms"
    assert errored.error == ("Error", message)
    got = result_of(await api.get("deadline/instances/d"))
    assert got["success"] is False
    assert got["error"] == {"name": "Error", "message": message}
    assert got["steps"][0]["finished"] is False
    assert got["steps"][0]["error"] == {"name": "Error", "message": message}


async def test_step_retries_then_succeeds_or_runs_out(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "flaky", "f")
    await reach(emu, "flaky", "f", "waiting")  # retry back-off
    await reach(emu, "flaky", "f", "complete")
    attempts = result_of(await api.get("flaky/instances/f"))["steps"][0]["attempts"]
    assert [a["success"] for a in attempts] == [False, False, True]
    assert attempts[0]["error"] == {"name": "Error", "message": "emulated step failure"}

    await create(api, "exhausted", "x")
    failed = await reach(emu, "exhausted", "x", "errored")
    assert failed.error == ("Error", "flaky boom")
    step = result_of(await api.get("exhausted/instances/x"))["steps"][0]
    assert len(step["attempts"]) == 2
    assert step["success"] is False


async def test_non_retryable_failure_ends_errored(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "fatal", "nf")
    failed = await reach(emu, "fatal", "nf", "errored")
    assert failed.error is not None
    assert failed.error[0] == "WorkflowFatalError"
    assert "NonRetryableError" in failed.error[1]


async def test_concurrency_bound_queues_the_rest(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    ids = [f"q{n}" for n in range(5)]
    result_of(await api.post("limited/instances/batch", json=[{"instance_id": i} for i in ids]))
    await reach(emu, "limited", "q1", "waiting")
    statuses = [view(emu, "limited", i).status for i in ids]
    assert statuses == ["waiting", "waiting", "queued", "queued", "queued"]

    assert await edit(api, "limited", "q0", status="pause") == "paused"  # frees its slot
    await reach(emu, "limited", "q2", "waiting")
    assert await edit(api, "limited", "q0", status="resume") == "queued"  # no slot left
    for instance_id in ids:
        await reach(emu, "limited", instance_id, "complete")
    assert sum(v.status == "complete" for v in emu.instances("limited")) == 5


async def test_events_to_a_finished_instance_are_accepted_and_ignored(
    flows: tuple[Emulator, httpx.AsyncClient],
) -> None:
    emu, api = flows
    await create(api, "fatal", "fin")
    await reach(emu, "fatal", "fin", "errored")
    result_of(await api.post("fatal/instances/fin/events/late", json={"x": 1}))
    after = view(emu, "fatal", "fin")
    assert after.status == "errored"
    assert after.events == (("late", {"x": 1}),)


async def test_finished_instances_stay_small_and_hold_no_tasks() -> None:
    behaviour = WorkflowBehaviour(
        steps=(
            DoStep(name="a", duration_ms=1),
            SleepStep(name="b", duration_ms=1),
            DoStep(name="c", duration_ms=1),
        )
    )
    count = 3000
    async with Emulator(EmulatorConfig(default_behaviour=behaviour)) as emu:
        tasks_before = len(asyncio.all_tasks())
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for n in range(count):
                emu.add_instance("bulk", f"bulk-instance-{n:06d}", trigger="api")
            assert len(asyncio.all_tasks()) == tasks_before  # timers, not tasks
            async with asyncio.timeout(10):
                await emu.wait_for_status("bulk", f"bulk-instance-{count - 1:06d}", "complete")
            await asyncio.sleep(0.05)
            gc.collect()
            per_instance = (tracemalloc.get_traced_memory()[0] - base) / count
        finally:
            tracemalloc.stop()
        assert all(v.status == "complete" for v in emu.instances("bulk"))
        assert per_instance < 900, per_instance
