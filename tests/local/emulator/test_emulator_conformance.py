"""One scenario suite, run against Cloudflare's own local Workflows engine and against our emulator.

Targets (the ``target`` fixture):

- ``cf_engine``: ``wrangler dev`` 4.164.0 (miniflare 5.20261117.0-beta, workerd 1.20261117.1,
  Node >= 22.12) running ``tests/support/cf_engine/src/index.js``, reached through its REST shim,
  which serves production paths in the Cloudflare envelope (see
  ``tests/support/cf_engine_harness.py``).
- ``emulator``: ``bridge.local.emulator`` configured with the same workflow shape.

Both run the same workflows:

- ``conformance-wf``: ``echo-params`` (step) -> ``nap`` (1 s sleep) -> ``approval``
  (``waitForEvent("approval")``), output ``{"params": <params>}``;
- ``conformance-fatal-wf``: ``echo-params`` -> ``boom`` (a step throwing ``NonRetryableError``).

Each test speaks plain httpx to ``{base_url}/accounts/{acct}/workflows/{name}/instances…`` and
asserts the same expectations on both targets, so a test that fails only for ``emulator`` is a
disagreement with Cloudflare's engine. Instance ids are unique per test.

Where the local engine legitimately differs from production, the comparison goes through a
normaliser rather than exact equality:

1. **Statuses.** The local engine never reports ``queued`` or ``waiting`` (an instance sleeping or
   blocked in ``waitForEvent`` reports ``running``); production and the emulator do. So
   :func:`norm_status` maps ``queued`` and ``waiting`` to ``running``, and ``waitingForPause``
   (a pause accepted while a step is in flight) to ``paused``. Where a test needs a settled
   ``paused`` it polls for the raw value. A create, batch or restart answer is only required to
   be "not final" (production: normally ``queued``; the engine: ``running``).
2. **Where the instance is.** Since "running" says nothing about the step, tests find out that an
   instance sleeps or waits for its event from the ``steps`` of ``GET /instances/{id}``
   (``type`` ``sleep`` / ``waitForEvent``). Step names are compared verbatim, counter suffix
   included (``echo-params-1``): that is the name production's ``/step`` endpoint takes.
3. **Wire details the local engine does not define are not compared.** The engine is reached
   through its binding, which throws errors without HTTP statuses or numeric codes; the shim
   passes every one on as HTTP 400, code 0 and the engine's slug, and invents nothing. So no test
   here compares an error's HTTP status or code (the emulator's own are checked by its route
   tests, and the ``workflows-bridge conformance`` run compares them with production): errors are
   compared by class, matched on the text (``errors[].message`` and ``messages``) with a pattern
   that accepts the engine's slug and production's wording ("Provided Workflow ID is not valid.",
   409 "Instance not in a restartable state."). The one numeric code compared is the ``10400`` in
   the per-id results of ``batch/delete``, which the engine itself produces.
4. **What the local engine lacks is not compared:** batch terminate and the "terminate all" job
   (the shim answers ``shim.not_available_locally``), cursor listing, and an undeployed
   workflow's answer (the shim's routing, not the engine's). The emulator's versions are tested
   in ``test_emulator_bulk.py`` and by the conformance run against production.
5. **Event to a finished instance.** The local engine accepts and ignores it; the binding docs say
   it throws and production's REST answer is unverified. The suite asserts the engine's behaviour
   (200, nothing changes). Likewise pause/resume of a ``complete`` instance are 200 no-ops.
6. **waitForEvent step output.** The engine records the event it consumed,
   ``{"type", "payload", "timestamp"}``, which is what ``step.waitForEvent`` returns to the
   workflow. The scenario tests read the payload through :func:`event_payload`, which also accepts
   a bare payload, so one shape question fails one test only:
   ``test_wait_for_event_step_output_is_the_event``.
7. **Checked by neither side here, because the engine's binding does not do it:** reserved ids
   (``terminate``, ``batch``, ``cf_<64 hex>``) are accepted by the engine's single create but
   refused by the emulator, and event types are not validated by the engine (the emulator answers
   400 for ``bad type``). Production documents both rules, so the emulator is right there.
8. **Not compared:** ``version_id``/``workflow_id`` (the shim returns placeholders), timestamps,
   step configs, attempts and ``step.do`` outputs (the emulator's are configured constants, the
   engine's are real), rate limits, auth failures, the ``termination`` pseudo-step, and
   ``terminate`` with ``rollback: true`` (the engine runs rollbacks; the emulator refuses it as
   not emulated).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.cf_engine_harness import CfEngineUnavailable, cf_engine, skip_or_fail

pytestmark = pytest.mark.cf_engine

ACCOUNT = "conformance-acct"
WORKFLOW = "conformance-wf"
FATAL_WORKFLOW = "conformance-fatal-wf"
TOKEN = "emulator-token"
SLEEP_SECONDS = 1.0
#: The engine's error for a NonRetryableError (without the compatibility flag that keeps the
#: thrown message).
FATAL_MESSAGE = (
    "The execution of the Workflow instance was terminated, as a step threw an "
    "NonRetryableError and it was not handled"
)

FINAL = frozenset({"complete", "errored", "terminated"})
NOT_FINAL = frozenset({"queued", "running", "waiting", "waitingForPause", "paused"})
#: Generous: the sleep is 1 s, and a 2-core machine may be busy.
SETTLE_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


def norm_status(status: str) -> str:
    """Fold the statuses the local engine never reports into the ones it does (docstring, 1)."""
    return {"queued": "running", "waiting": "running", "waitingForPause": "paused"}.get(
        status, status
    )


@dataclass
class Target:
    """One REST endpoint under test: the engine's shim or the emulator."""

    name: str
    client: httpx.AsyncClient

    def path(self, instance_id: str | None = None, *tail: str, workflow: str = WORKFLOW) -> str:
        path = f"/accounts/{ACCOUNT}/workflows/{workflow}/instances"
        if instance_id is not None:
            path += "/" + quote(instance_id, safe="")
        for part in tail:
            path += "/" + quote(part, safe="")
        return path

    async def create(
        self, instance_id: str, params: Any = None, *, workflow: str = WORKFLOW
    ) -> httpx.Response:
        body: dict[str, Any] = {"instance_id": instance_id}
        if params is not None:
            body["params"] = params
        return await self.client.post(self.path(workflow=workflow), json=body)

    async def batch(self, items: list[dict[str, Any]]) -> httpx.Response:
        return await self.client.post(self.path("batch"), json=items)

    async def get(self, instance_id: str, *, workflow: str = WORKFLOW) -> httpx.Response:
        return await self.client.get(self.path(instance_id, workflow=workflow))

    async def action(
        self, instance_id: str, status: str, *, workflow: str = WORKFLOW
    ) -> httpx.Response:
        path = self.path(instance_id, "status", workflow=workflow)
        return await self.client.patch(path, json={"status": status})

    async def event(
        self, instance_id: str, payload: Any, event_type: str = "approval"
    ) -> httpx.Response:
        return await self.client.post(self.path(instance_id, "events", event_type), json=payload)

    async def delete(self, instance_id: str) -> httpx.Response:
        return await self.client.delete(self.path(instance_id))

    async def delete_batch(self, ids: list[str]) -> httpx.Response:
        return await self.client.post(self.path("batch", "delete"), json={"instances": ids})

    async def step(self, instance_id: str, name: str, step_type: str = "step") -> httpx.Response:
        params = {"name": name, "type": step_type}
        return await self.client.get(self.path(instance_id, "step"), params=params)

    # -- checked helpers -----------------------------------------------------------------------

    async def instance(self, instance_id: str, *, workflow: str = WORKFLOW) -> dict[str, Any]:
        """``GET`` that must succeed; the ``result``."""
        result = ok(await self.get(instance_id, workflow=workflow), self.name)
        assert isinstance(result, dict), (self.name, result)
        return result

    async def poll(
        self,
        instance_id: str,
        condition: Callable[[dict[str, Any]], bool],
        what: str,
        *,
        workflow: str = WORKFLOW,
        within: float = SETTLE_TIMEOUT,
    ) -> dict[str, Any]:
        """GET until ``condition(result)`` holds; fail with the last result after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            result = await self.instance(instance_id, workflow=workflow)
            if condition(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"[{self.name}] {instance_id}: {what} not seen in {within}s: {result}")
            await asyncio.sleep(POLL_INTERVAL)

    async def settled(self, instance_id: str, *, workflow: str = WORKFLOW) -> dict[str, Any]:
        """Poll until the instance is final."""
        return await self.poll(
            instance_id, lambda r: r["status"] in FINAL, "a final status", workflow=workflow
        )

    async def run_to_completion(self, instance_id: str, params: Any, payload: Any) -> None:
        """Create, send the approval right away (it is buffered), and wait for ``complete``."""
        ok(await self.create(instance_id, params), self.name)
        ok(await self.event(instance_id, payload), self.name)
        result = await self.settled(instance_id)
        assert result["status"] == "complete", (self.name, result)


def ok(response: httpx.Response, target: str) -> Any:
    """Assert a 200 in the success envelope; return ``result``."""
    body = response.json()
    assert response.status_code == 200, (target, response.status_code, body)
    assert body["success"] is True, (target, body)
    assert body["errors"] == [], (target, body)
    return body["result"]


#: Error classes, matched on the error text (docstring, 4): the engine's slug or production's text.
INVALID_ID = re.compile(r"invalid[_ ]id|ID is not valid", re.IGNORECASE)
ALREADY_EXISTS = re.compile(r"instance\.already_exists")
NOT_FOUND = re.compile(r"instance\.not_found")
FINAL_STATE = re.compile(r"instance\.cannot_terminate|not in a restartable state", re.IGNORECASE)
ANY_ERROR = re.compile(r"\S")


def failure(response: httpx.Response, target: str, kind: re.Pattern[str]) -> dict[str, Any]:
    """Assert an error envelope whose text matches ``kind`` (its HTTP status and code are not
    compared: the local engine defines neither, docstring 3)."""
    body = response.json()
    assert response.status_code >= 400, (target, response.status_code, body)
    assert body["success"] is False, (target, body)
    assert body["result"] is None, (target, body)
    errors = body["errors"]
    assert errors, (target, body)
    assert all(isinstance(e.get("code"), int) and isinstance(e.get("message"), str) for e in errors)
    text = " ".join([*(e["message"] for e in errors), *(str(m) for m in body.get("messages", []))])
    assert kind.search(text), (target, kind.pattern, body)
    return dict(body)


def steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    value = result.get("steps")
    assert isinstance(value, list), result
    return value


def step_name(step: dict[str, Any]) -> str:
    """A step's name as the step log shows it, counter suffix included."""
    return str(step.get("name", ""))


def step_of_type(result: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((s for s in steps(result) if s.get("type") == kind), None)


def event_output(step: dict[str, Any] | None) -> Any:
    """A ``waitForEvent`` step's output, decoded when it came as a JSON string."""
    assert step is not None
    return as_json(step.get("output"))


def event_payload(step: dict[str, Any] | None) -> Any:
    """The payload a ``waitForEvent`` step consumed, whether its output is the event object
    (the engine's ``{"type", "payload", "timestamp"}``) or the bare payload (docstring, 6)."""
    output = event_output(step)
    if isinstance(output, dict) and {"type", "payload"} <= output.keys():
        return output["payload"]
    return output


def as_json(value: Any) -> Any:
    """Outputs may come back JSON-encoded (production's schema says ``str``); decode them."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sleeping(result: dict[str, Any]) -> bool:
    nap = step_of_type(result, "sleep")
    in_sleep = nap is not None and not nap.get("finished")
    return in_sleep and step_of_type(result, "waitForEvent") is None


def waiting_for_event(result: dict[str, Any]) -> bool:
    return step_of_type(result, "waitForEvent") is not None


# -- targets ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def cf_engine_target() -> AsyncIterator[Target]:
    async with contextlib.AsyncExitStack() as stack:
        try:
            engine = await stack.enter_async_context(cf_engine(token=TOKEN))
        except CfEngineUnavailable as exc:
            skip_or_fail(str(exc))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=engine.base_url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10.0,
            )
        )
        yield Target("cf_engine", client)


@pytest.fixture(scope="module")
async def emulator_target() -> AsyncIterator[Target]:
    from bridge.local.emulator import (
        DoStep,
        Emulator,
        EmulatorConfig,
        SleepStep,
        WaitForEventStep,
        WorkflowBehaviour,
    )

    approval_flow = WorkflowBehaviour(
        steps=(
            DoStep(name="echo-params", duration_ms=5),
            SleepStep(name="nap", duration_ms=SLEEP_SECONDS * 1000),
            WaitForEventStep(name="approval", event_type="approval"),
        )
    )
    fatal_flow = WorkflowBehaviour(
        steps=(DoStep(name="echo-params", duration_ms=5), DoStep(name="boom", fail=True))
    )
    config = EmulatorConfig(
        token=TOKEN,
        workflows={WORKFLOW: approval_flow, FATAL_WORKFLOW: fatal_flow},
    )
    async with (
        Emulator(config, host="127.0.0.1", port=0) as emu,
        httpx.AsyncClient(
            base_url=emu.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10.0
        ) as client,
    ):
        yield Target("emulator", client)


@pytest.fixture(params=["cf_engine", "emulator"])
def target(request: pytest.FixtureRequest) -> Target:
    chosen = request.getfixturevalue(f"{request.param}_target")
    assert isinstance(chosen, Target)
    return chosen


# -- scenarios ----------------------------------------------------------------------------------


async def test_lifecycle_create_wait_event_complete(target: Target) -> None:
    iid, params, payload = new_id("life"), {"order": 7, "tags": ["a", "b"]}, {"approved": True}
    created = ok(await target.create(iid, params), target.name)
    assert created["id"] == iid
    assert created["status"] in NOT_FINAL, (target.name, created)

    first = await target.instance(iid)
    assert first["status"] in NOT_FINAL, (target.name, first)
    assert as_json(first["params"]) == params, (target.name, first)

    reached = await target.poll(iid, waiting_for_event, "the waitForEvent step")
    assert norm_status(reached["status"]) == "running", (target.name, reached)
    assert [step_name(s) for s in steps(reached)] == ["echo-params-1", "nap-1", "approval-1"]
    wait_step = step_of_type(reached, "waitForEvent")
    assert wait_step is not None
    assert wait_step.get("finished") is False, (target.name, reached)

    sent = ok(await target.event(iid, payload), target.name)
    assert sent["instanceId"] == iid, (target.name, sent)

    done = await target.settled(iid)
    assert done["status"] == "complete", (target.name, done)
    assert as_json(done["output"]) == {"params": params}, (target.name, done)
    assert event_payload(step_of_type(done, "waitForEvent")) == payload, (target.name, done)
    assert [step_name(s) for s in steps(done)] == ["echo-params-1", "nap-1", "approval-1"]


async def test_duplicate_create_is_rejected(target: Target) -> None:
    iid = new_id("dup")
    ok(await target.create(iid, {"n": 1}), target.name)
    again = await target.create(iid, {"n": 2})
    failure(again, target.name, ALREADY_EXISTS)
    kept = await target.instance(iid)
    assert as_json(kept["params"]) == {"n": 1}, (target.name, kept)


async def test_batch_skips_an_existing_id(target: Target) -> None:
    old, new1, new2 = new_id("bx"), new_id("bn"), new_id("bn")
    ok(await target.create(old, {"v": "old"}), target.name)
    result = ok(
        await target.batch(
            [
                {"instance_id": old, "params": {"v": "ignored"}},
                {"instance_id": new1, "params": {"v": 1}},
                {"instance_id": new2, "params": {"v": 2}},
            ]
        ),
        target.name,
    )
    assert [item["id"] for item in result] == [new1, new2], (target.name, result)
    assert as_json((await target.instance(old))["params"]) == {"v": "old"}
    assert as_json((await target.instance(new1))["params"]) == {"v": 1}
    assert as_json((await target.instance(new2))["params"]) == {"v": 2}


async def test_batch_with_an_id_repeated_inside_it(target: Target) -> None:
    twice, once = new_id("br"), new_id("bo")
    result = ok(
        await target.batch(
            [
                {"instance_id": twice, "params": {"copy": 1}},
                {"instance_id": twice, "params": {"copy": 2}},
                {"instance_id": once},
            ]
        ),
        target.name,
    )
    assert [item["id"] for item in result] == [twice, once], (target.name, result)
    assert as_json((await target.instance(twice))["params"]) == {"copy": 1}


async def test_empty_batch_is_rejected(target: Target) -> None:
    failure(await target.batch([]), target.name, ANY_ERROR)


async def test_ids_are_generated_when_omitted(target: Target) -> None:
    created = ok(await target.client.post(target.path(), json={"params": {"g": 1}}), target.name)
    assert is_uuid(created["id"]), (target.name, created)
    assert as_json((await target.instance(created["id"]))["params"]) == {"g": 1}

    named = new_id("gen")
    batch = ok(await target.batch([{"params": {"g": 2}}, {"instance_id": named}]), target.name)
    assert len(batch) == 2, (target.name, batch)
    assert is_uuid(batch[0]["id"]), (target.name, batch)
    assert batch[1]["id"] == named, (target.name, batch)
    assert as_json((await target.instance(batch[0]["id"]))["params"]) == {"g": 2}


@pytest.mark.parametrize(
    "bad_id",
    ["bad id!", "x" * 101, "-leading-dash"],
    ids=["pattern", "101-chars", "leading-dash"],
)
async def test_invalid_ids_are_rejected(target: Target, bad_id: str) -> None:
    failure(await target.create(bad_id), target.name, INVALID_ID)
    # A valid sibling in the same batch is not created either: the batch is validated first.
    sibling = new_id("sib")
    rejected = await target.batch([{"instance_id": sibling}, {"instance_id": bad_id}])
    failure(rejected, target.name, INVALID_ID)
    failure(await target.get(sibling), target.name, NOT_FOUND)


async def test_longest_valid_id_is_accepted(target: Target) -> None:
    iid = new_id("max")
    iid += "x" * (100 - len(iid))
    assert ok(await target.create(iid), target.name)["id"] == iid
    assert (await target.instance(iid))["status"] in NOT_FINAL | FINAL


async def test_unknown_instance_is_not_found(target: Target) -> None:
    missing = new_id("ghost")
    for response in (
        await target.get(missing),
        await target.action(missing, "pause"),
        await target.event(missing, {"x": 1}),
    ):
        failure(response, target.name, NOT_FOUND)


async def test_event_sent_before_wait_for_event_is_buffered(target: Target) -> None:
    iid, payload = new_id("early"), {"early": True}
    ok(await target.create(iid, {"k": "v"}), target.name)
    before = await target.instance(iid)
    assert not waiting_for_event(before), (target.name, "already waiting", before)
    ok(await target.event(iid, payload), target.name)

    done = await target.settled(iid)
    assert done["status"] == "complete", (target.name, done)
    assert event_payload(step_of_type(done, "waitForEvent")) == payload, (target.name, done)


async def test_pause_during_sleep_buffers_events_until_resume(target: Target) -> None:
    iid, payload = new_id("pause"), {"while": "paused"}
    ok(await target.create(iid, {"p": 1}), target.name)
    await target.poll(iid, sleeping, "the sleep step")

    paused = ok(await target.action(iid, "pause"), target.name)
    assert norm_status(paused["status"]) == "paused", (target.name, paused)
    await target.poll(iid, lambda r: r["status"] == "paused", "status paused")
    ok(await target.event(iid, payload), target.name)

    # The pause holds for longer than the whole sleep: bounded observation, not a fixed sleep.
    hold_until = time.monotonic() + SLEEP_SECONDS * 1.3
    while time.monotonic() < hold_until:
        held = await target.instance(iid)
        assert held["status"] == "paused", (target.name, held)
        await asyncio.sleep(0.1)

    resumed = ok(await target.action(iid, "resume"), target.name)
    assert norm_status(resumed["status"]) == "running", (target.name, resumed)
    done = await target.settled(iid)
    assert done["status"] == "complete", (target.name, done)
    assert event_payload(step_of_type(done, "waitForEvent")) == payload, (target.name, done)


async def test_terminate_a_running_instance(target: Target) -> None:
    iid = new_id("term")
    ok(await target.create(iid), target.name)
    answer = ok(await target.action(iid, "terminate"), target.name)
    assert answer["status"] == "terminated", (target.name, answer)
    final = await target.settled(iid)
    assert final["status"] == "terminated", (target.name, final)


async def test_terminate_a_paused_instance(target: Target) -> None:
    iid = new_id("termp")
    ok(await target.create(iid), target.name)
    ok(await target.action(iid, "pause"), target.name)
    await target.poll(iid, lambda r: r["status"] == "paused", "status paused")
    answer = ok(await target.action(iid, "terminate"), target.name)
    assert answer["status"] == "terminated", (target.name, answer)
    assert (await target.instance(iid))["status"] == "terminated"


async def test_terminate_a_final_instance_conflicts(target: Target) -> None:
    iid = new_id("term2")
    ok(await target.create(iid), target.name)
    ok(await target.action(iid, "terminate"), target.name)
    await target.poll(iid, lambda r: r["status"] == "terminated", "status terminated")
    again = await target.action(iid, "terminate")
    failure(again, target.name, FINAL_STATE)
    assert (await target.instance(iid))["status"] == "terminated"


async def test_restart_a_complete_instance_runs_it_again(target: Target) -> None:
    iid, params = new_id("restart"), {"run": "once"}
    await target.run_to_completion(iid, params, {"round": 1})

    # Ids stay taken after completion: create is refused, terminate too.
    failure(await target.create(iid, params), target.name, ALREADY_EXISTS)
    failure(await target.action(iid, "terminate"), target.name, FINAL_STATE)

    restarted = ok(await target.action(iid, "restart"), target.name)
    assert restarted["status"] in NOT_FINAL, (target.name, restarted)
    again = await target.instance(iid)
    assert again["status"] in NOT_FINAL, (target.name, again)
    assert as_json(again["params"]) == params, (target.name, again)

    ok(await target.event(iid, {"round": 2}), target.name)
    done = await target.settled(iid)
    assert done["status"] == "complete", (target.name, done)
    assert as_json(done["output"]) == {"params": params}, (target.name, done)
    assert event_payload(step_of_type(done, "waitForEvent")) == {"round": 2}, (target.name, done)


async def test_event_to_a_complete_instance_is_accepted_and_ignored(target: Target) -> None:
    iid = new_id("late")
    await target.run_to_completion(iid, {"z": 0}, {"first": True})
    before = await target.instance(iid)

    accepted = ok(await target.event(iid, {"late": True}), target.name)
    assert accepted["instanceId"] == iid, (target.name, accepted)
    after = await target.instance(iid)
    assert after["status"] == "complete", (target.name, after)
    assert as_json(after["output"]) == as_json(before["output"]), (target.name, after)
    assert event_payload(step_of_type(after, "waitForEvent")) == {"first": True}

    # pause and resume are no-ops on a final instance (production: unverified, maybe 409).
    for action in ("pause", "resume"):
        answer = ok(await target.action(iid, action), target.name)
        assert answer["status"] == "complete", (target.name, action, answer)
    assert (await target.instance(iid))["status"] == "complete"


async def test_fatal_step_errors_the_instance(target: Target) -> None:
    iid = new_id("fatal")
    ok(await target.create(iid, {"f": 1}, workflow=FATAL_WORKFLOW), target.name)
    done = await target.settled(iid, workflow=FATAL_WORKFLOW)
    assert done["status"] == "errored", (target.name, done)
    assert isinstance(done["error"], dict), (target.name, done)
    assert done["error"] == {"name": "WorkflowFatalError", "message": FATAL_MESSAGE}, (
        target.name,
        done,
    )
    assert [step_name(s) for s in steps(done)] == ["echo-params-1", "boom-1"], (target.name, done)
    assert steps(done)[-1]["success"] is False, (target.name, done)
    assert done["output"] is None, (target.name, done)
    again = await target.action(iid, "terminate", workflow=FATAL_WORKFLOW)
    failure(again, target.name, FINAL_STATE)


async def test_wait_for_event_step_output_is_the_event(target: Target) -> None:
    """The engine records the consumed event, not only its payload, as the step's output."""
    iid, payload = new_id("evshape"), {"who": "reviewer", "ok": True}
    await target.run_to_completion(iid, {"s": 1}, payload)
    output = event_output(step_of_type(await target.instance(iid), "waitForEvent"))
    assert isinstance(output, dict), (target.name, output)
    assert output.get("type") == "approval", (target.name, output)
    assert output.get("payload") == payload, (target.name, output)
    assert isinstance(output.get("timestamp"), str), (target.name, output)


async def test_delete_forgets_the_instance_and_frees_its_id(target: Target) -> None:
    iid = new_id("del")
    ok(await target.create(iid, {"round": 1}), target.name)
    await target.poll(iid, sleeping, "the sleep step")
    ok(await target.delete(iid), target.name)
    failure(await target.get(iid), target.name, NOT_FOUND)
    failure(await target.delete(iid), target.name, NOT_FOUND)

    # The id is free again: a create starts a new run with the new params.
    ok(await target.create(iid, {"round": 2}), target.name)
    again = await target.instance(iid)
    assert as_json(again["params"]) == {"round": 2}, (target.name, again)
    assert again["status"] in NOT_FINAL, (target.name, again)
    ok(await target.event(iid, {"after": "delete"}), target.name)
    done = await target.settled(iid)
    assert done["status"] == "complete", (target.name, done)


async def test_batch_delete_answers_each_id(target: Target) -> None:
    """The per-id results, ``10400`` included, are the engine's own (docstring, 3)."""
    first, second, ghost = new_id("bd"), new_id("bd"), new_id("ghost")
    ok(await target.batch([{"instance_id": first}, {"instance_id": second}]), target.name)
    result = ok(await target.delete_batch([first, ghost, second]), target.name)
    assert result == {
        "deleted": [{"id": first}, {"id": second}],
        "errors": [
            {"id": ghost, "code": 10400, "message": "workflows.api.error.instance.not_found"}
        ],
    }, (target.name, result)
    for gone in (first, second):
        failure(await target.get(gone), target.name, NOT_FOUND)
    failure(await target.delete_batch([]), target.name, ANY_ERROR)


async def test_step_names_with_their_suffix_reach_the_step_endpoint(target: Target) -> None:
    """The local engine has no ``/step``: the shim looks the name up in the engine's step log and
    reads its answer from there, so only whether a name finds a step is compared, not the answer
    (docstring, 3)."""
    iid, params = new_id("step"), {"wanted": [1, 2]}
    await target.run_to_completion(iid, params, {"ok": True})
    names = [step_name(s) for s in steps(await target.instance(iid))]
    assert names == ["echo-params-1", "nap-1", "approval-1"], (target.name, names)

    ok(await target.step(iid, "echo-params-1"), target.name)
    ok(await target.step(iid, "approval-1", "waitForEvent"), target.name)
    # Without its suffix, or with the other type, the name finds nothing.
    failure(await target.step(iid, "echo-params"), target.name, ANY_ERROR)
    failure(await target.step(iid, "approval-1", "step"), target.name, ANY_ERROR)
