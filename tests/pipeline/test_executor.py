"""The executor's error taxonomy, against scripted API answers (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bridge.cloudflare.client import WorkflowsClient
from bridge.config import PipelineSettings
from bridge.contract.results import Outcome
from bridge.errors import Conflict, Rejected, ServerError
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.coalesce import CreateCoalescer
from bridge.pipeline.executor import Executor
from bridge.pipeline.translate import CreateOp, Job, StatusOp

Handler = Callable[[httpx.Request], httpx.Response]


def ok(result: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, json={"success": True, "errors": [], "messages": [], "result": result}
    )


def fail(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return httpx.Response(status, json=body, headers=headers)


@asynccontextmanager
async def executor(handler: Handler, **pipeline: Any) -> AsyncIterator[Executor]:
    settings = PipelineSettings(backoff_initial_seconds=0.01, backoff_max_seconds=0.05, **pipeline)
    budget = RequestBudget(
        requests=10_000, window_seconds=1, creations_per_workflow=1000, creations_per_account=1000
    )
    async with (
        WorkflowsClient(
            account_id="a",
            api_token="t",
            base_url="http://api.test",
            transport=httpx.MockTransport(handler),
            on_response=budget.observe,
        ) as client,
        CreateCoalescer(client, budget, linger_seconds=0.01) as coalescer,
    ):

        async def probe() -> object:
            return await client.list_page("wf", per_page=1)

        gate = AuthGate(probe, interval=0.05)
        try:
            yield Executor(client, budget, coalescer, gate, settings)
        finally:
            await gate.aclose()


def create_job(instance_id: str) -> Job:
    return Job("c", "create", "wf", instance_id, CreateOp({"x": 1}))


def edit_job(status: str) -> Job:
    return Job("c", status, "wf", "i", StatusOp(status))


async def test_transient_errors_until_the_deadline_fail_the_job() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return fail(503, 10001, "workflows.api.error.internal_server")

    async with executor(handler, retry_deadline_seconds=0.3) as run:
        done = await run.run(edit_job("pause"))
    assert done.outcome is Outcome.FAILED
    assert isinstance(done.error, ServerError)
    assert done.attempts == calls
    assert calls >= 3


async def test_429_is_waited_out_and_never_fails() -> None:
    answers = [
        fail(429, 971, "More than 1200 requests per 300 seconds reached", **{"retry-after": "1"})
    ] * 2

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop() if answers else ok({"status": "paused", "timestamp": None})

    async with executor(handler, retry_deadline_seconds=0.2) as run:
        done = await run.run(edit_job("pause"))
    assert done.outcome is Outcome.OK  # even though the block outlasted the deadline
    assert done.status == "paused"
    assert done.attempts == 3


async def test_redelivered_terminate_is_ok_but_terminating_a_complete_instance_is_rejected() -> (
    None
):
    state = {"status": "terminated"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            return fail(409, 10409, "Instance not in a restartable state.")
        return ok({"status": state["status"]})

    async with executor(handler) as run:
        again = await run.run(edit_job("terminate"))
        state["status"] = "complete"
        refused = await run.run(edit_job("terminate"))
    assert (again.outcome, again.status, again.attempts) == (Outcome.OK, "terminated", 2)
    assert refused.outcome is Outcome.REJECTED
    assert isinstance(refused.error, Conflict)


async def test_a_batch_refused_as_a_whole_is_resolved_item_by_item() -> None:
    singles: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch"):
            return fail(400, 10002, "Provided Workflow ID is not valid.")
        if request.method == "POST":
            instance_id = json.loads(request.content)["instance_id"]
            singles.append(instance_id)
            if instance_id == "bad":
                return fail(400, 10002, "Provided Workflow ID is not valid.")
            return ok({"id": instance_id, "status": "queued"})
        return ok({"status": "running"})

    async with executor(handler) as run:
        good, bad, other = await asyncio.gather(
            run.run(create_job("good")), run.run(create_job("bad")), run.run(create_job("other"))
        )
    assert sorted(singles) == ["bad", "good", "other"]
    assert (good.outcome, other.outcome) == (Outcome.OK, Outcome.OK)
    assert bad.outcome is Outcome.REJECTED
    assert isinstance(bad.error, Rejected)


async def test_skipped_batch_item_reports_already_exists_with_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch"):
            return ok([])  # the id existed: /batch leaves it out
        return ok({"status": "complete"})

    async with executor(handler) as run:
        done = await run.run(create_job("old"))
    assert (done.outcome, done.status, done.attempts) == (Outcome.ALREADY_EXISTS, "complete", 2)


async def test_refused_token_parks_until_the_probe_succeeds() -> None:
    token_ok = False
    probes = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal probes
        if request.method == "GET":
            probes += 1
            if probes >= 3:
                nonlocal token_ok
                token_ok = True
        if not token_ok:
            return fail(403, 10000, "Authentication error")
        if request.method == "GET":
            return ok([])
        return ok({"status": "paused", "timestamp": None})

    async with executor(handler, retry_deadline_seconds=0.05) as run:
        done = await run.run(edit_job("pause"))
    assert done.outcome is Outcome.OK  # parked, not failed, although it outlasted the deadline
    assert probes >= 3
