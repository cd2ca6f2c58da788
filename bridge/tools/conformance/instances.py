"""Scenarios on single instances: create, duplicates, batch skips, params, the error answers,
finished instances, step names and the step endpoint, rollback."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from bridge.contract.rules import FINAL_STATUSES
from bridge.tools.conformance.judging import (
    DUPLICATE,
    FINAL_STATE,
    INVALID_ID,
    NO_SETTING,
    NO_STEP,
    NOT_EMULATED,
    NOT_FOUND,
    WORKFLOW_NOT_FOUND,
    Aborted,
    Row,
    Run,
    Verdict,
    judge,
    judge_error,
    local_only,
)

#: The local engine has no ``/step``: the shim reads it from the engine's step log.
SHIM_STEP = "the local engine has no /step: the shim looks the name up in the engine's step log"


async def create_and_duplicate(run: Run) -> None:
    a = run.iid("a")
    api = run.probe.client
    created = await run.probe.call(lambda: api.create(run.workflow, instance_id=a, params={"k": 1}))
    if not created.ok:
        raise Aborted(f"creating {a} in workflow {run.workflow!r} failed: {created.describe()}")
    run.created.append(a)
    status = created.result.status if created.result else "?"
    run.add(
        judge(
            "create answers a live status",
            f"HTTP 200 status {status}",
            "HTTP 200 with a live status (queued)",
            status not in FINAL_STATUSES,
        )
    )
    again = await run.probe.call(lambda: api.create(run.workflow, instance_id=a))
    setting = NO_SETTING
    if again.status == 400 and DUPLICATE.text.search(again.text):
        setting = "duplicate_status = 400"
    run.add(
        judge_error(
            run,
            again,
            DUPLICATE,
            behaviour="create with a taken id",
            words="instance.already_exists",
            setting=setting,
        )
    )


async def batch_skips(run: Run) -> None:
    a, b, c = run.iid("a"), run.iid("b"), run.iid("c")
    api = run.probe.client
    taken = await run.probe.call(
        lambda: api.create_batch(run.workflow, [{"instance_id": a}, {"instance_id": b}])
    )
    ids = [i.id for i in taken.result or []]
    if b in ids:
        run.created.append(b)
    run.add(
        judge(
            "/batch with a taken id",
            f"HTTP 200 ids {ids}" if taken.ok else taken.describe(),
            f"HTTP 200 ids {[b]}: the taken id left out, no error",
            taken.ok and ids == [b],
            "none: the emulator always leaves taken ids out of a batch",
        )
    )
    twice = await run.probe.call(
        lambda: api.create_batch(run.workflow, [{"instance_id": c}, {"instance_id": c}])
    )
    ids = [i.id for i in twice.result or []]
    if c in ids:
        run.created.append(c)
    run.add(
        judge(
            "/batch with an id repeated in it",
            f"HTTP 200 ids {ids}" if twice.ok else twice.describe(),
            f"HTTP 200 ids {[c]}: the repeat left out",
            twice.ok and ids == [c],
            "none: the emulator always leaves repeats out of a batch",
        )
    )


async def params_as_text(run: Run) -> None:
    d = run.iid("d")
    api = run.probe.client
    created = await run.probe.call(
        lambda: api.create(run.workflow, instance_id=d, params='{"k": 1}')
    )
    if not created.ok:
        run.add(
            judge(
                "params given as a JSON string",
                created.describe(),
                "HTTP 200; stored as given (a string)",
                False,
            )
        )
        return
    run.created.append(d)
    got = await run.probe.call(lambda: api.get(run.workflow, d))
    params = got.result.params if got.result else None
    shown = (
        f"a string {params!r}" if isinstance(params, str) else f"{type(params).__name__} {params!r}"
    )
    run.add(
        judge(
            "params given as a JSON string",
            f"HTTP 200; GET shows {shown}" if got.ok else got.describe(),
            "HTTP 200; GET shows the string as given (not parsed)",
            got.ok and params == '{"k": 1}',
            "none: the emulator stores params as given",
        )
    )


async def errors(run: Run) -> None:
    api = run.probe.client
    invalid = await run.probe.call(lambda: api.create(run.workflow, instance_id="not valid!"))
    run.add(
        judge_error(
            run,
            invalid,
            INVALID_ID,
            behaviour="create with an invalid id",
            words='"Provided Workflow ID is not valid."',
        )
    )
    ghost = run.iid("ghost")
    missing = await run.probe.call(lambda: api.get(run.workflow, ghost))
    run.add(
        judge_error(
            run, missing, NOT_FOUND, behaviour="get an unknown instance", words="instance.not_found"
        )
    )
    absent = f"{run.prefix}-absent-workflow"
    undeployed = await run.probe.call(lambda: api.get(absent, ghost))
    behaviour = "an undeployed workflow"
    assumed = WORKFLOW_NOT_FOUND.describe("workflow.not_found, with [workflows.*] declared")
    if not local_only(run, behaviour, undeployed, assumed, "the shim's routing, not the engine's"):
        run.add(
            judge_error(
                run,
                undeployed,
                WORKFLOW_NOT_FOUND,
                behaviour=behaviour,
                words="workflow.not_found, with [workflows.*] declared",
                setting="declare the workflows ([workflows.NAME] tables): others get 404 10200",
            )
        )


async def finished_instances(run: Run) -> None:
    b = run.iid("b")
    api = run.probe.client
    if b not in run.created:
        run.add(
            Row(
                "terminate and a finished instance",
                "",
                "",
                Verdict.INCONCLUSIVE,
                note=f"{b} was not created",
            )
        )
        return
    first = await run.probe.call(lambda: api.edit_status(run.workflow, b, "terminate"))
    if not first.ok and FINAL_STATE.text.search(first.text):
        run.add(
            Row(
                "terminate a live instance",
                first.describe(),
                "HTTP 200 status terminated",
                Verdict.INCONCLUSIVE,
                note="the instance had already finished: use a workflow whose instances wait",
            )
        )
    else:
        status = first.result.status if first.result else None
        run.add(
            judge(
                "terminate a live instance",
                f"HTTP 200 status {status}" if first.ok else first.describe(),
                "HTTP 200 status terminated",
                status == "terminated",
            )
        )
    again = await run.probe.call(lambda: api.edit_status(run.workflow, b, "terminate"))
    run.add(
        judge_error(
            run,
            again,
            FINAL_STATE,
            behaviour="terminate a finished instance",
            words='"Instance not in a restartable state."',
        )
    )
    paused = await run.probe.call(lambda: api.edit_status(run.workflow, b, "pause"))
    status = paused.result.status if paused.result else None
    run.add(
        judge(
            "pause a finished instance",
            f"HTTP 200 status {status}" if paused.ok else paused.describe(),
            "HTTP 200, a no-op: status terminated",
            paused.ok and status == "terminated",
        )
    )
    event = await run.probe.call(lambda: api.send_event(run.workflow, b, "probe", {"late": True}))
    run.add(
        judge(
            "an event to a finished instance",
            event.describe(),
            "HTTP 200: accepted and ignored",
            event.ok,
        )
    )


async def steps(run: Run) -> None:
    a = run.iid("a")
    api = run.probe.client
    found: list[dict[str, Any]] = []
    for attempt in range(3):  # the workflow may not have reached a step yet
        got = await run.probe.call(lambda: api.get(run.workflow, a, simple=False))
        if got.result is not None:
            found = [s.model_dump(by_alias=True) for s in got.result.steps]
            if any(s.get("type") in ("step", "waitForEvent") for s in found):
                break
        if attempt < 2:
            await asyncio.sleep(1.0)
    names = [str(s.get("name")) for s in found if s.get("type") != "termination"]
    queryable = next((s for s in found if s.get("type") in ("step", "waitForEvent")), None)
    if queryable is None:
        run.add(
            Row(
                "step names carry a counter suffix",
                f"steps {names}",
                "names like prepare-1",
                Verdict.INCONCLUSIVE,
                note="no step.do or waitForEvent had run yet",
            )
        )
        return
    suffixed = all(re.search(r"-\d+$", name) for name in names)
    run.add(
        judge(
            "step names carry a counter suffix",
            f"steps {names[:4]}",
            "every name ends in -<n> (prepare-1)",
            suffixed,
            "none: the emulator always numbers steps",
        )
    )
    name, kind = str(queryable["name"]), str(queryable["type"])
    step = await run.probe.call(lambda: api.step(run.workflow, a, name, step_type=kind))
    row = judge(
        "GET /step with the suffixed name",
        f"HTTP 200 status {step.result.status}" if step.result else step.describe(),
        "HTTP 200 with the step's status",
        step.ok,
    )
    if run.probe.local_engine and step.ok:
        row = Row(row.behaviour, row.observed, row.assumed, row.verdict, note=SHIM_STEP)
    run.add(row)
    bare = re.sub(r"-\d+$", "", name)
    unsuffixed = await run.probe.call(lambda: api.step(run.workflow, a, bare, step_type=kind))
    behaviour = "GET /step with the bare name"
    assumed = NO_STEP.describe("step.not_found")
    if not local_only(run, behaviour, unsuffixed, assumed, SHIM_STEP):
        run.add(judge_error(run, unsuffixed, NO_STEP, behaviour=behaviour, words="step.not_found"))


async def rollback(run: Run) -> None:
    e = run.iid("e")
    api = run.probe.client
    created = await run.probe.call(lambda: api.create(run.workflow, instance_id=e))
    if created.ok:
        run.created.append(e)
    answer = await run.probe.call(
        lambda: api.edit_status(run.workflow, e, "terminate", rollback=True)
    )
    assumed = NOT_EMULATED.describe("not emulated: no rollingBack, no rollback steps")
    status = answer.result.status if answer.result else None
    observed = f"HTTP 200 status {status}" if answer.ok else answer.describe()
    if not answer.ok and NOT_EMULATED.text.search(answer.text):
        run.add(Row("terminate with rollback: true", observed, assumed, Verdict.MATCH))
    else:
        run.add(
            Row(
                "terminate with rollback: true",
                observed,
                assumed,
                Verdict.NOT_EMULATED,
                note="a documented gap of the emulator",
            )
        )
