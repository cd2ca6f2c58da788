"""The state stream's API calls (``list`` pages, ``get``), from the budget's background lane.

Every call waits in the low-priority lane of the request budget (at most
``BRIDGE_STATES__BUDGET_SHARE`` of the token's budget, and never ahead of a command) and is
retried with capped backoff for as long as it takes: the stream must not lose a change for a
transient error. A 429 is waited out by the budget; a refused token parks the replica at its auth
gate, where commands wait too.

``get`` asks ``simple=true`` first; when the answer for a ``complete`` instance has no ``output``
field at all (whether production keeps it under ``simple`` is unverified) it asks the full form.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import structlog

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.models import InstanceGetResponse, InstanceListResponse
from bridge.contract.rules import MAX_PER_PAGE
from bridge.errors import ApiError, AuthError, NotFound, RateLimited
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget

T = TypeVar("T")
log = structlog.get_logger(__name__)


class Refused(Exception):
    """The API refused the call for good (a 4xx other than 401, 403 and 429)."""


class BackgroundApi:
    """``list`` and ``get`` for the state stream; counts what it spends."""

    def __init__(
        self,
        client: WorkflowsClient,
        budget: RequestBudget,
        gate: AuthGate,
        *,
        backoff_initial: float,
        backoff_max: float,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._on_request = on_request
        self._client = client
        self._budget = budget
        self._gate = gate
        self._initial = backoff_initial
        self._max = backoff_max
        #: Requests sent, by kind (``list``, ``get``).
        self.requests: dict[str, int] = {"list": 0, "get": 0}

    async def get(self, workflow: str, instance_id: str) -> InstanceGetResponse | None:
        """The instance, or None when the API says it does not exist (deleted, expired) or
        refuses to say."""
        found = await self._get(workflow, instance_id, simple=True)
        if (
            found is not None
            and found.status == "complete"
            and "output" not in found.model_fields_set
        ):
            found = await self._get(workflow, instance_id, simple=False)
        return found

    async def _get(
        self, workflow: str, instance_id: str, *, simple: bool
    ) -> InstanceGetResponse | None:
        async def call() -> InstanceGetResponse:
            answer = await self._client.get(workflow, instance_id, simple=simple)
            return answer.result

        try:
            return await self._call("get", call, f"{workflow}/{instance_id}")
        except (NotFound, Refused):
            return None

    async def list_page(
        self,
        workflow: str,
        *,
        status: str,
        cursor: str | None,
        date_start: datetime | None = None,
    ) -> tuple[list[InstanceListResponse], str | None]:
        """One page of up to 100 instances of ``status``, and the next page's cursor."""

        async def call() -> tuple[list[InstanceListResponse], str | None]:
            answer, following = await self._client.list_page(
                workflow,
                status=status,
                per_page=MAX_PER_PAGE,
                cursor=cursor,
                date_start=None if cursor is not None else date_start,
            )
            return answer.result, following

        return await self._call("list", call, f"{workflow} {status}")

    async def _call(self, kind: str, call: Callable[[], Awaitable[T]], what: str) -> T:
        failures = 0
        while True:
            await self._gate.wait()
            try:
                async with self._budget.background_slot():
                    self.requests[kind] += 1
                    if self._on_request is not None:
                        self._on_request(kind)
                    return await call()
            except NotFound:
                raise
            except AuthError as exc:
                self._gate.close(exc)
            except RateLimited:
                pass  # the budget is blocked now; the next slot waits it out
            except ApiError as exc:
                if not exc.retriable:
                    log.warning("state_api_refused", request=kind, what=what, error=str(exc))
                    raise Refused(str(exc)) from exc
                failures += 1
                delay = min(self._initial * 2 ** (failures - 1), self._max)
                delay = max(delay * random.uniform(0.5, 1.0), exc.retry_after or 0.0)
                log.info(
                    "state_api_retry",
                    request=kind,
                    what=what,
                    error=str(exc),
                    delay=round(delay, 3),
                )
                await asyncio.sleep(delay)
