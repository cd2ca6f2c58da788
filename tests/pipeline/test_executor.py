"""The executor's error taxonomy, against scripted API answers (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bridge.cloudflare.client import WorkflowsClient
from bridge.config import PipelineSettings
from bridge.contract.results import Outcome
from bridge.errors import Conflict, NotFound, Rejected, ServerError
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.coalesce import Coalescer
from bridge.pipeline.executor import Executor
from bridge.pipeline.lookup import StatusLookup
from bridge.pipeline.statuses import KNOWS_NOTHING, InstanceStatuses
from bridge.pipeline.translate import CreateOp, DeleteOp, GetOp, Job, StatusOp

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
    clock: Callable[[], float] = time.monotonic,
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
        Coalescer(client, budget, linger_seconds=linger) as coalescer,
        StatusLookup(client, budget, linger_seconds=linger, backoff_seconds=0.01) as lookup,
    ):

        async def probe() -> object:
            return await client.list_page("wf", per_page=1)

        gate = AuthGate(probe, interval=0.05)
        try:
            yield Executor(
                client,
                budget,
                coalescer,
                gate,
                settings,
                lookup=lookup,
                statuses=statuses,
                clock=clock,
            )
        finally:
            await gate.aclose()


def create_job(instance_id: str) -> Job:
    return Job("c", "create", "wf", instance_id, CreateOp({"x": 1}))


def edit_job(status: str) -> Job:
    return Job("c", status, "wf", "i", StatusOp(status))


async def test_transient_errors_until_the_deadline_fail_the_job() -> None:
    calls = 0
    # The deadline is measured on a clock that only the answers move (each takes "1 s"), so the
    # number of attempts does not depend on how fast the machine is.
    now = 0.0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls, now
        calls += 1
        now += 1.0
        return fail(503, 10001, "workflows.api.error.internal_server")

    async with executor(handler, retry_deadline_seconds=4.5, clock=lambda: now) as run:
        done = await run.run(edit_job("pause"))
    assert done.outcome is Outcome.FAILED
    assert isinstance(done.error, ServerError)
    assert done.attempts == calls
    assert calls == 5  # answers at 1..4 s leave room to retry; the one at 5 s is past 4.5 s


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
        # rollback: the single PATCH, which batch/terminate has no form of
        again = await run.run(
            Job("c", "terminate", "wf", "i", StatusOp("terminate", rollback=True))
        )
        state["status"] = "complete"
        refused = await run.run(
            Job("c", "terminate", "wf", "i", StatusOp("terminate", rollback=True))
        )
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


class TerminatingApi:
    """A scripted API with batch terminate: it counts the live ids it terminated."""

    def __init__(self, statuses: dict[str, str], *, busy: bool = False) -> None:
        self.statuses = statuses
        self.busy = busy
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path.split('/instances')[1]}")
        if path.endswith("/instances"):  # one page holds every instance
            return ok([{"id": i, "status": s} for i, s in self.statuses.items()])
        if path.endswith("/batch/terminate"):
            if self.busy:
                return ok({"instancesTerminated": 0, "status": "already_running"})
            count = 0
            for instance_id in json.loads(request.content):
                if self.statuses.get(instance_id) in ("running", "waiting"):
                    self.statuses[instance_id] = "terminated"
                    count += 1
            return ok({"instancesTerminated": count, "status": "ok"})
        instance_id = path.split("/")[-2 if path.endswith("/status") else -1]
        if instance_id not in self.statuses:
            return fail(404, 10400, "workflows.api.error.instance.not_found")
        if request.method == "PATCH":
            if self.statuses[instance_id] in ("complete", "errored", "terminated"):
                return fail(409, 10409, "Instance not in a restartable state.")
            self.statuses[instance_id] = "terminated"
            return ok({"status": "terminated", "timestamp": None})
        return ok({"status": self.statuses[instance_id]})


def terminate_job(instance_id: str, rollback: bool | None = None) -> Job:
    return Job("c", "terminate", "wf", instance_id, StatusOp("terminate", rollback=rollback))


async def test_terminates_of_one_workflow_share_one_batch_call() -> None:
    api = TerminatingApi({f"t{n}": "running" for n in range(5)})
    async with executor(api) as run:
        done = await asyncio.gather(*(run.run(terminate_job(f"t{n}")) for n in range(5)))
    assert api.calls == ["POST /batch/terminate"]
    assert [(d.outcome, d.status, d.attempts) for d in done] == [(Outcome.OK, "terminated", 1)] * 5


async def test_terminate_coalescing_with_one_bad_id_answers_that_id_on_its_own() -> None:
    statuses = {f"t{n}": "running" for n in range(4)} | {"finished": "complete"}
    api = TerminatingApi(statuses)
    ids = ["t0", "t1", "finished", "t2", "missing", "t3"]
    async with executor(api) as run:
        answers = await asyncio.gather(*(run.run(terminate_job(i)) for i in ids))
    done = dict(zip(ids, answers, strict=True))
    for instance_id in ("t0", "t1", "t2", "t3"):
        # The call terminated 4 of 6 and cannot say which: one list page told every id.
        assert (done[instance_id].outcome, done[instance_id].status) == (Outcome.OK, "terminated")
        assert done[instance_id].attempts == 1
    assert done["finished"].outcome is Outcome.REJECTED
    assert isinstance(done["finished"].error, Conflict)
    assert done["missing"].outcome is Outcome.REJECTED
    assert isinstance(done["missing"].error, NotFound)
    assert done["missing"].error.code == 10400
    assert api.calls.count("POST /batch/terminate") == 1
    assert api.calls.count("PATCH /finished/status") == 1
    assert not [c for c in api.calls if c.startswith("PATCH /t")]  # no good id sent twice
    assert api.calls.count("GET ") == 1  # one list page, not a get per id
    # the batch, the page, the finished one's PATCH + GET, the missing one's PATCH
    assert len(api.calls) == 1 + 1 + 2 + 1


async def test_terminate_with_rollback_and_a_busy_terminate_job_go_alone() -> None:
    api = TerminatingApi({"r": "running", "b": "running"}, busy=True)
    async with executor(api) as run:
        rolled = await run.run(terminate_job("r", rollback=True))
        busy = await run.run(terminate_job("b"))
    assert (rolled.outcome, rolled.status, rolled.attempts) == (Outcome.OK, "terminated", 1)
    assert (busy.outcome, busy.status, busy.attempts) == (Outcome.OK, "terminated", 2)
    assert api.calls == ["PATCH /r/status", "POST /batch/terminate", "PATCH /b/status"]


async def test_deletes_share_a_batch_and_a_missing_instance_is_ok() -> None:
    calls: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((f"{request.method} {request.url.path.split('/instances')[1]}", body))
        if request.url.path.endswith("/batch/delete"):
            return ok(
                {
                    "deleted": [{"id": "here"}],
                    "errors": [
                        {"id": "gone", "code": 10400, "message": "instance.not_found"},
                        {"id": "flaky", "code": 10001, "message": "internal_server"},
                    ],
                }
            )
        return ok({"instanceId": "flaky", "timestamp": None})

    def job(instance_id: str) -> Job:
        return Job("c", "delete", "wf", instance_id, DeleteOp())

    async with executor(handler) as run:
        here, gone = await asyncio.gather(run.run(job("here")), run.run(job("gone")))
    assert (here.outcome, here.status, here.attempts) == (Outcome.OK, None, 1)
    assert (gone.outcome, gone.attempts) == (Outcome.OK, 1)
    assert calls == [("POST /batch/delete", {"instances": ["here", "gone"]})]


async def test_delete_of_an_undeployed_workflow_is_rejected_and_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return fail(404, 10200, "workflows.api.error.workflow.not_found")

    async with executor(handler) as run:
        batched = await run.run(Job("c", "delete", "nope", "i", DeleteOp()))
        single = await run.run(terminate_job("i"))
    assert batched.outcome is Outcome.REJECTED
    assert isinstance(batched.error, NotFound)
    assert batched.error.code == 10200
    assert single.outcome is Outcome.REJECTED
    assert calls == 2  # one request each, no retry


async def test_get_reports_the_state_with_steps_only_when_asked() -> None:
    queries: list[str] = []
    state = {
        "status": "errored",
        "output": None,
        "error": {"name": "Error", "message": "boom"},
        "params": {"p": 1},
        "versionId": "v1",
        "step_count": 1,
        "steps": [{"type": "sleep", "name": "nap-1", "finished": True}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(str(request.url.query, "ascii"))
        return ok(state)

    async with executor(handler) as run:
        plain = await run.run(Job("c", "get", "wf", "i", GetOp()))
        detailed = await run.run(Job("c", "get", "wf", "i", GetOp(steps=True)))
    assert queries == ["simple=true", "simple=false"]
    assert (plain.outcome, plain.status, plain.attempts) == (Outcome.OK, "errored", 1)
    assert plain.instance is not None
    assert plain.instance.error is not None
    assert plain.instance.error.message == "boom"
    assert (plain.steps, detailed.steps) == (False, True)
