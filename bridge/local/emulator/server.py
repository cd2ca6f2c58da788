"""The HTTP face of the emulator: routing, authentication, the Cloudflare envelope, limits, faults.

Every request goes through the same pipeline, in this order:

1. resolve the route from the raw (still percent-encoded) path, decoding each segment
   (:mod:`bridge.local.emulator.routes`; 404, 405, or 501 for what is not emulated);
2. count it, then hold it for the configured latency;
3. authenticate (403 while revoked, 401 for a wrong token);
4. charge the global request budget (429, then a block) — except queue pulls and acks, which
   production exempts;
5. check the account id and the route (403, 404, 405);
6. draw a fault; faults that do not apply first answer now;
7. run the route (which may charge the creation rate: 429, nothing created);
8. "apply then fail" faults spoil the answer of a change that was made.

Each answer carries ``cf-ray`` and, when a budget is configured, ``Ratelimit`` and
``Ratelimit-Policy``; 429s from the budget always carry ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.contract.rules import MAX_BATCH, MAX_EVENT_TYPE, MAX_WORKFLOW_NAME, name_problem
from bridge.local.emulator import problems
from bridge.local.emulator.bodies import (
    parse_create,
    parse_id_list,
    parse_status,
    parse_step_query,
    parse_terminate_filter,
    read_json,
)
from bridge.local.emulator.config import UNBUDGETED_ROUTES, EmulatorConfig, Route
from bridge.local.emulator.engine import Engine
from bridge.local.emulator.events_api import EventsApi
from bridge.local.emulator.limits import (
    APPLY_FIRST,
    CreationRateLimiter,
    FaultInjector,
    RequestBudgetLimiter,
)
from bridge.local.emulator.listing import list_page
from bridge.local.emulator.problems import ApiProblem
from bridge.local.emulator.render import create_result, get_result, now_iso, step_result
from bridge.local.emulator.routes import Target, resolve
from bridge.local.emulator.stats import Stats
from bridge.local.emulator.subscriptions import EventHub

API_ROOT = "/client/v4"
#: Large enough for a batch of 100 items near the 1 MiB ``params`` limit each.
MAX_BODY_BYTES = 128 * 1024 * 1024

Result = tuple[Any, dict[str, Any] | None]
Handler = Callable[[web.Request, Target], Awaitable[Result]]


class ApiServer:
    """The aiohttp application; ``app`` is what the runner serves."""

    def __init__(
        self,
        config: EmulatorConfig,
        engine: Engine,
        hub: EventHub,
        stats: Stats,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        #: Seconds on a monotonic scale for the budget and the creation limits.
        self._clock = clock
        self._engine = engine
        self._events = EventsApi(hub)
        self._stats = stats
        self._budget = RequestBudgetLimiter()
        self._creation = CreationRateLimiter()
        self._faults = FaultInjector(config.seed)
        self._routes: dict[Route, Handler] = {
            "list": self._list,
            "create": self._create,
            "batch": self._batch,
            "get": self._get,
            "step": self._step,
            "status": self._status,
            "event": self._event,
            "delete": self._delete,
            "batch_delete": self._batch_delete,
            "batch_terminate": self._batch_terminate,
            "terminate_all": self._terminate_all,
            "terminate_status": self._terminate_status,
            **self._events.routes(),
        }
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # -- pipeline ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        stats, config = self._stats, self._config
        target: Target | ApiProblem
        try:
            target = resolve(request.method, request.rel_url.raw_path)
        except ApiProblem as problem:
            target = problem
        stats.requests[target.route if isinstance(target, Target) else "unknown"] += 1
        stats.methods[request.method] += 1
        delay = self._faults.delay(config.latency)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            self._authenticate(request)
            if not isinstance(target, Target) or target.route not in UNBUDGETED_ROUTES:
                self._charge_budget(request)
            if isinstance(target, ApiProblem):
                raise target
            if config.account_id is not None and target.account != config.account_id:
                raise problems.foreign_account()
            return await self._serve(request, target)
        except ApiProblem as problem:
            return self._answer(problem.status, _failure(problem), problem.retry_after)

    def _authenticate(self, request: web.Request) -> None:
        if self._config.revoked:
            raise problems.revoked()
        if request.headers.get("Authorization", "") != f"Bearer {self._config.token}":
            raise problems.unauthenticated()

    def _charge_budget(self, request: web.Request) -> None:
        budget = self._config.budget
        if budget is None:
            return
        now = self._clock()
        was_blocked = self._budget.blocked(now)
        try:
            self._budget.admit(budget, now)
        except ApiProblem:
            self._throttled("blocked" if was_blocked else "budget", request)
            raise

    def _take_creations(self, request: web.Request, workflow: str, count: int) -> None:
        try:
            self._creation.take(self._config.creation, workflow, count, self._clock())
        except ApiProblem:
            self._throttled("creation", request)
            raise

    def _throttled(self, kind: str, request: web.Request) -> None:
        agent = request.headers.get("User-Agent", "").split("/", 1)[0] or "unknown"
        self._stats.throttled[kind] += 1
        self._stats.throttled_agents[f"{kind}:{agent}"] += 1

    async def _serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        faults = self._config.faults
        fault = self._faults.draw(faults, target.route)
        if fault is not None:
            self._stats.faults[fault] += 1
            self._stats.faults_by_route[f"{fault}:{target.route}"] += 1
        if fault == "error":
            raise problems.internal_error()
        if fault == "soft_error":
            return self._answer(200, _failure(problems.internal_error()))
        if fault == "drop":
            return _drop(request)
        if fault == "timeout":
            await asyncio.sleep(faults.timeout_seconds)
            if request.transport is None or request.transport.is_closing():
                return web.Response()  # the client gave up; nothing was applied
        result, info = await self._routes[target.route](request, target)
        if fault in APPLY_FIRST:
            if fault == "apply_then_drop":
                return _drop(request)
            raise problems.internal_error()
        body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
        if info is not None:
            body["result_info"] = info
        return self._answer(200, body)

    def _answer(
        self, status: int, body: dict[str, Any], retry_after: float | None = None
    ) -> web.Response:
        headers = {"cf-ray": f"{os.urandom(8).hex()}-EMU"}
        budget = self._config.budget
        if budget is not None:
            headers.update(self._budget.state(budget, self._clock()).headers())
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._stats.responses[status] += 1
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    # -- routes ------------------------------------------------------------------------------

    async def _list(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        items, info = list_page(flow, request.query)
        self._stats.list_page_sizes[info["per_page"]] += 1
        return items, info

    async def _create(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        body = await read_json(request, default={})
        instance_id, params = parse_create(body, body_size=request.content_length or 0)
        if instance_id is None:
            instance_id = self._engine.new_id()
        existing = flow.instances.get(instance_id)
        if existing is not None:
            existing.duplicate_attempts += 1
            self._stats.duplicates_rejected[flow.name] += 1
            raise problems.already_exists(self._config.duplicate_status)
        self._take_creations(request, flow.name, 1)
        [inst] = self._engine.create(flow, [(instance_id, params)])
        self._stats.created[flow.name] += 1
        return create_result(inst, flow), None

    async def _batch(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        body = await read_json(request, default=None)
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
            raise problems.invalid(
                f"The request body must be a JSON array of 1 to {MAX_BATCH} instances"
            )
        size = request.content_length or 0
        parsed = [parse_create(item, body_size=size) for item in body]
        fresh: dict[str, Any] = {}
        for instance_id, params in parsed:
            key = self._engine.new_id() if instance_id is None else instance_id
            existing = flow.instances.get(key)
            if existing is not None or key in fresh:
                if existing is not None:
                    existing.duplicate_attempts += 1
                self._stats.batch_skipped[flow.name] += 1
                continue
            fresh[key] = params
        if fresh:
            self._take_creations(request, flow.name, len(fresh))
        created = self._engine.create(flow, fresh.items())
        self._stats.created[flow.name] += len(created)
        return [create_result(inst, flow) for inst in created], None

    async def _get(self, request: web.Request, target: Target) -> Result:
        inst = self._engine.instance(_workflow(target), target.instance_id)
        query = request.query
        simple, order = query.get("simple", "false"), query.get("order", "asc")
        if simple not in ("true", "false") or order not in ("asc", "desc"):
            raise problems.invalid("simple must be true|false and order asc|desc")
        flow = self._engine.flow(inst.workflow)
        result = get_result(inst, flow, simple=simple == "true", descending=order == "desc")
        return result, None

    async def _step(self, request: web.Request, target: Target) -> Result:
        name, step_type, attempt = parse_step_query(request.query)
        inst = self._engine.instance(_workflow(target), target.instance_id)
        return step_result(inst, name, step_type, attempt), None

    async def _status(self, request: web.Request, target: Target) -> Result:
        edit = parse_status(await read_json(request, default=None))
        action, start_from = edit.action, edit.start_from
        engine = self._engine
        inst = engine.instance(_workflow(target), target.instance_id)
        if edit.rollback:
            # Accepting it and terminating without the rollback would be a plausible lie.
            raise problems.not_emulated("terminate with rollback: true (rollingBack, rollbacks)")
        if action == "pause":
            status = engine.pause(inst)
        elif action == "resume":
            status = engine.resume(inst)
        elif action == "terminate":
            status = engine.terminate(inst)
        else:
            keep = 0 if start_from is None else engine.step_index(inst, start_from)
            self._take_creations(request, inst.workflow, 1)
            status = engine.restart(inst, keep)
            self._stats.restarts[inst.workflow] += 1
        return {"status": status, "timestamp": now_iso()}, None

    async def _event(self, request: web.Request, target: Target) -> Result:
        problem = name_problem(target.event_type, what="event type", max_length=MAX_EVENT_TYPE)
        if problem is not None:
            raise problems.invalid(problem)
        inst = self._engine.instance(_workflow(target), target.instance_id)
        payload = await read_json(request, default=None, limit=True)
        if any(event == (target.event_type, payload) for event in inst.received()):
            self._stats.events_repeated[inst.workflow] += 1
        self._engine.send_event(inst, target.event_type, payload)
        self._stats.events[inst.workflow] += 1
        return {"instanceId": inst.id, "timestamp": now_iso()}, None

    async def _delete(self, request: web.Request, target: Target) -> Result:
        inst = self._engine.instance(_workflow(target), target.instance_id)
        self._engine.delete(inst)
        self._stats.deleted[inst.workflow] += 1
        return {"instanceId": inst.id, "timestamp": now_iso()}, None

    async def _batch_delete(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        ids = parse_id_list(await read_json(request, default=None), wrapped=True)
        deleted: list[dict[str, str]] = []
        errors: list[dict[str, Any]] = []
        gone: set[str] = set()
        for instance_id in ids:  # one entry per id given, repeats included
            inst = flow.instances.get(instance_id)
            if inst is not None:
                self._engine.delete(inst)
                self._stats.deleted[flow.name] += 1
                gone.add(instance_id)
            if instance_id in gone:
                deleted.append({"id": instance_id})
            else:
                missing = problems.instance_not_found()
                errors.append({"id": instance_id, "code": missing.code, "message": missing.message})
        return {"deleted": deleted, "errors": errors}, None

    async def _batch_terminate(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        ids = parse_id_list(await read_json(request, default=None), wrapped=False)
        if flow.terminator is not None:
            return {"instancesTerminated": 0, "status": "already_running"}, None
        terminated = self._engine.terminate_many(flow, ids)
        self._stats.batch_terminated[flow.name] += terminated
        return {"instancesTerminated": terminated, "status": "ok"}, None

    async def _terminate_all(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        status = parse_terminate_filter(request.query)
        started = self._engine.start_terminate_all(flow, status)
        return {"status": "ok" if started else "already_running"}, None

    async def _terminate_status(self, request: web.Request, target: Target) -> Result:
        flow = self._engine.flow(_workflow(target))
        return {"status": "not_running" if flow.terminator is None else "running"}, None


def _workflow(target: Target) -> str:
    problem = name_problem(target.workflow, what="workflow name", max_length=MAX_WORKFLOW_NAME)
    if problem is not None:
        raise problems.invalid(problem)
    return target.workflow


def _failure(problem: ApiProblem) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": problem.code, "message": problem.message}],
        "messages": [],
        "result": None,
    }


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer (the response returned is never written)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()
