"""The HTTP face of the emulator: routing, authentication, the Cloudflare envelope, limits, faults.

Every request goes through the same pipeline, in this order:

1. resolve the route from the raw (still percent-encoded) path, decoding each segment;
2. count it, then hold it for the configured latency;
3. authenticate (403 while revoked, 401 for a wrong token);
4. charge the global request budget (429, then a block);
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
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from bridge.contract.rules import MAX_BATCH, MAX_EVENT_TYPE, MAX_WORKFLOW_NAME, name_problem
from bridge.local.emulator import problems
from bridge.local.emulator.bodies import parse_create, parse_status, read_json
from bridge.local.emulator.config import EmulatorConfig, Route
from bridge.local.emulator.engine import Engine
from bridge.local.emulator.limits import (
    APPLY_FIRST,
    CreationRateLimiter,
    FaultInjector,
    RequestBudgetLimiter,
)
from bridge.local.emulator.listing import list_page
from bridge.local.emulator.problems import ApiProblem
from bridge.local.emulator.render import create_result, get_result, now_iso
from bridge.local.emulator.stats import Stats

API_ROOT = "/client/v4"
#: Large enough for a batch of 100 items near the 1 MiB ``params`` limit each.
MAX_BODY_BYTES = 128 * 1024 * 1024

Result = tuple[Any, dict[str, Any] | None]
Handler = Callable[[web.Request, "Target"], Awaitable[Result]]


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved request: the route and the decoded path parameters."""

    route: Route
    account: str
    workflow: str
    instance_id: str = ""
    event_type: str = ""


def resolve(method: str, raw_path: str) -> Target:
    """Map a method and raw path onto a route; raises the 404/405 problem otherwise."""
    parts = [unquote(part) for part in raw_path.split("/")]
    if parts and parts[-1] == "":
        parts.pop()
    fixed = ["", "client", "v4", "accounts", None, "workflows", None, "instances"]
    if len(parts) < len(fixed) or any(
        want is not None and got != want for want, got in zip(fixed, parts, strict=False)
    ):
        raise problems.no_route(raw_path)
    account, workflow, rest = parts[4], parts[6], parts[8:]
    routes: list[tuple[int, str, Route]] = [
        (0, "GET", "list"),
        (0, "POST", "create"),
        (1, "POST", "batch"),
        (1, "GET", "get"),
        (2, "PATCH", "status"),
        (3, "POST", "event"),
    ]
    shape_ok = (
        len(rest) <= 1
        or (len(rest) == 2 and rest[1] == "status")
        or (len(rest) == 3 and rest[1] == "events")
    )
    if not shape_ok:
        raise problems.no_route(raw_path)
    for length, verb, route in routes:
        if length != len(rest) or verb != method:
            continue
        if route == "batch" and rest[0] != "batch":
            continue
        instance_id = rest[0] if route in ("get", "status", "event") else ""
        event_type = rest[2] if route == "event" else ""
        return Target(route, account, workflow, instance_id, event_type)
    raise problems.method_not_allowed()


class ApiServer:
    """The aiohttp application; ``app`` is what the runner serves."""

    def __init__(
        self,
        config: EmulatorConfig,
        engine: Engine,
        stats: Stats,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        #: Seconds on a monotonic scale for the budget and the creation limits.
        self._clock = clock
        self._engine = engine
        self._stats = stats
        self._budget = RequestBudgetLimiter()
        self._creation = CreationRateLimiter()
        self._faults = FaultInjector(config.seed)
        self._routes: dict[Route, Handler] = {
            "list": self._list,
            "create": self._create,
            "batch": self._batch,
            "get": self._get,
            "status": self._status,
            "event": self._event,
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
            self._charge_budget()
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

    def _charge_budget(self) -> None:
        budget = self._config.budget
        if budget is None:
            return
        now = self._clock()
        was_blocked = self._budget.blocked(now)
        try:
            self._budget.admit(budget, now)
        except ApiProblem:
            self._stats.throttled["blocked" if was_blocked else "budget"] += 1
            raise

    def _take_creations(self, workflow: str, count: int) -> None:
        try:
            self._creation.take(self._config.creation, workflow, count, self._clock())
        except ApiProblem:
            self._stats.throttled["creation"] += 1
            raise

    async def _serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        faults = self._config.faults
        fault = self._faults.draw(faults, target.route)
        if fault is not None:
            self._stats.faults[fault] += 1
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
        return list_page(flow, request.query)

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
        self._take_creations(flow.name, 1)
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
            self._take_creations(flow.name, len(fresh))
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

    async def _status(self, request: web.Request, target: Target) -> Result:
        action, start_from = parse_status(await read_json(request, default=None))
        engine = self._engine
        inst = engine.instance(_workflow(target), target.instance_id)
        if action == "pause":
            status = engine.pause(inst)
        elif action == "resume":
            status = engine.resume(inst)
        elif action == "terminate":
            status = engine.terminate(inst)
        else:
            keep = 0 if start_from is None else engine.step_index(inst, start_from)
            self._take_creations(inst.workflow, 1)
            status = engine.restart(inst, keep)
            self._stats.restarts[inst.workflow] += 1
        return {"status": status, "timestamp": now_iso()}, None

    async def _event(self, request: web.Request, target: Target) -> Result:
        problem = name_problem(target.event_type, what="event type", max_length=MAX_EVENT_TYPE)
        if problem is not None:
            raise problems.invalid(problem)
        inst = self._engine.instance(_workflow(target), target.instance_id)
        payload = await read_json(request, default=None, limit=True)
        self._engine.send_event(inst, target.event_type, payload)
        self._stats.events[inst.workflow] += 1
        return {"instanceId": inst.id, "timestamp": now_iso()}, None


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
