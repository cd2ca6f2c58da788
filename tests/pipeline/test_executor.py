"""The executor's error taxonomy, against scripted API answers (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
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
from bridge.pipeline.lookup import StatusLookup
from bridge.pipeline.statuses import KNOWS_NOTHING, InstanceStatuses
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
async def executor(
    handler: Handler,
    *,
    statuses: InstanceStatuses = KNOWS_NOTHING,
    linger: float = 0.01,
    **pipeline: Any,
) -> AsyncIterator[Executor]:
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
        CreateCoalescer(client, budget, linger_seconds=linger) as coalescer,
        StatusLookup(client, budget, linger_seconds=linger, backoff_seconds=0.01) as lookup,
    ):

        async def probe() -> object:
            return await client.list_page("wf", per_page=1)

        gate = AuthGate(probe, interval=0.05)
        try:
            yield Executor(
                client, budget, coalescer, gate, settings, lookup=lookup, statuses=statuses
            )
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
    api = FakeApi({"old": "complete"})
    async with executor(api) as run:
        done = await run.run(create_job("old"))
    # The status came from a list page shared by the job's neighbours, not from a get of its own.
    assert (done.outcome, done.status, done.attempts) == (Outcome.ALREADY_EXISTS, "complete", 1)
    assert api.calls == Counter({"batch": 1, "list": 1})


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


# -- creates whose id turns out taken: no confirmation request per item ---------------------------


class FakeApi:
    """Instances by id; ``/batch`` skips taken ids as production does. ``spoil`` lists, per
    route, how the next calls go wrong: ``"apply"`` applies the change then answers 500,
    ``"drop"`` answers 500 without applying."""

    def __init__(self, existing: dict[str, str] | None = None) -> None:
        self.instances: dict[str, str] = dict(existing or {})
        self.spoil: dict[str, list[str]] = {"batch": [], "create": [], "list": []}
        self.calls: Counter[str] = Counter()

    def _route(self, request: httpx.Request) -> str:
        if request.method == "GET":
            return "list" if request.url.path.endswith("/instances") else "get"
        return "batch" if request.url.path.endswith("/batch") else "create"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = self._route(request)
        self.calls[route] += 1
        spoiled = self.spoil.get(route, [])
        fault = spoiled.pop(0) if spoiled else None
        if fault == "drop":
            return fail(500, 10001, "workflows.api.error.internal_server")
        answer = self._apply(route, request)
        if fault == "apply":
            return fail(500, 10001, "workflows.api.error.internal_server")
        return answer

    def _apply(self, route: str, request: httpx.Request) -> httpx.Response:
        if route == "batch":
            created = []
            for item in json.loads(request.content):
                if item["instance_id"] not in self.instances:
                    self.instances[item["instance_id"]] = "queued"
                    created.append({"id": item["instance_id"], "status": "queued"})
            return ok(created)
        if route == "create":
            instance_id = json.loads(request.content)["instance_id"]
            if instance_id in self.instances:
                return fail(409, 10405, "workflows.api.error.instance.already_exists")
            self.instances[instance_id] = "queued"
            return ok({"id": instance_id, "status": "queued"})
        if route == "list":
            # Newest first, pages of per_page, a cursor = the index to continue from.
            ids = list(reversed(self.instances))
            per_page = int(request.url.params["per_page"])
            start = int(request.url.params.get("cursor", "0"))
            page = [{"id": i, "status": self.instances[i]} for i in ids[start : start + per_page]]
            body = {"success": True, "errors": [], "messages": [], "result": page}
            if start + per_page < len(ids):
                body["result_info"] = {"cursor": str(start + per_page)}
            return httpx.Response(200, json=body)
        instance_id = request.url.path.rsplit("/", 1)[1]
        return ok({"status": self.instances[instance_id]})


async def test_a_batch_applied_then_failed_is_ok_on_retry_without_asking() -> None:
    api = FakeApi()
    api.spoil["batch"] = ["apply"]
    async with executor(api, linger=0.5) as run:
        done = await asyncio.gather(*(run.run(create_job(f"i-{n}")) for n in range(40)))
    # The retried batch skipped every id: each was sent by the job's own earlier attempt.
    assert {d.outcome for d in done} == {Outcome.OK}
    assert set(api.calls) == {"batch"}
    assert any(d.attempts == 2 for d in done)
    assert set(api.instances) == {f"i-{n}" for n in range(40)}


async def test_a_lone_create_that_met_its_own_instance_is_ok() -> None:
    api = FakeApi()
    api.spoil["create"] = ["apply"]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch"):  # a batch refused as a whole: go alone
            api.calls["batch"] += 1
            return fail(400, 10002, "Provided Workflow ID is not valid.")
        return api(request)

    async with executor(handler, linger=0.5) as run:
        done = await asyncio.gather(run.run(create_job("a")), run.run(create_job("b")))
    assert {d.outcome for d in done} == {Outcome.OK}
    assert api.calls["get"] == 0
    assert api.calls["list"] == 0


async def test_ids_that_existed_before_share_one_list_page_for_their_status() -> None:
    existing = {f"old-{n}": "complete" for n in range(30)}
    api = FakeApi(existing)
    async with executor(api, linger=0.5) as run:
        jobs = [create_job(f"old-{n}") for n in range(30)] + [create_job("new")]
        done = await asyncio.gather(*(run.run(job) for job in jobs))
    *old, new = done
    assert {(d.outcome, d.status) for d in old} == {(Outcome.ALREADY_EXISTS, "complete")}
    assert (new.outcome, new.status) == (Outcome.OK, "queued")
    # The items of one batch answer share one scan (each scan here needs one page).
    assert set(api.calls) == {"batch", "list"}
    assert api.calls["list"] <= api.calls["batch"]


async def test_own_and_foreign_ids_in_one_retried_batch_are_told_apart() -> None:
    api = FakeApi({"theirs": "running"})
    api.spoil["batch"] = ["apply"]
    async with executor(api, linger=0.5) as run:
        mine, theirs = await asyncio.gather(
            run.run(create_job("mine")), run.run(create_job("theirs"))
        )
    # Both were sent by a failed attempt: the API cannot say which existed before, so both are
    # the jobs' own (documented: an earlier attempt that may have taken effect settles it).
    assert (mine.outcome, theirs.outcome) == (Outcome.OK, Outcome.OK)
    assert api.calls["get"] == 0
    assert api.calls["list"] == 0


async def test_status_already_known_costs_no_request() -> None:
    class Known:
        def known(self, workflow: str, instance_id: str) -> str | None:
            return "paused" if instance_id == "old" else None

    api = FakeApi({"old": "paused"})
    async with executor(api, statuses=Known()) as run:
        done = await run.run(create_job("old"))
    assert (done.outcome, done.status) == (Outcome.ALREADY_EXISTS, "paused")
    assert api.calls == Counter({"batch": 1})


async def test_a_status_beyond_the_scanned_pages_stays_unknown() -> None:
    # 1,200 newer instances hide "old" from a scan of at most ten pages of 100.
    api = FakeApi({"old": "complete", **{f"n-{k}": "running" for k in range(1_200)}})
    async with executor(api) as run:
        done = await run.run(create_job("old"))
    assert (done.outcome, done.status) == (Outcome.ALREADY_EXISTS, None)
    assert api.calls == Counter({"batch": 1, "list": 10})


async def test_a_failing_list_scan_leaves_the_status_unknown() -> None:
    api = FakeApi({"old": "complete"})
    api.spoil["list"] = ["drop"] * 3
    async with executor(api) as run:
        done = await run.run(create_job("old"))
    assert (done.outcome, done.status) == (Outcome.ALREADY_EXISTS, None)
    assert api.calls == Counter({"batch": 1, "list": 3})
