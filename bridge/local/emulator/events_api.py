"""The HTTP routes of Event Subscriptions and of queue pull consumers.

Subscription management is an ordinary API call (charged to the request budget); pulls and
acks are not, as in production (see the server's pipeline).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.local.emulator import problems
from bridge.local.emulator.bodies import read_json
from bridge.local.emulator.config import Route
from bridge.local.emulator.queues import ack_params, pull_params
from bridge.local.emulator.routes import Target
from bridge.local.emulator.subscriptions import EventHub

Result = tuple[Any, dict[str, Any] | None]
Handler = Callable[[web.Request, Target], Awaitable[Result]]

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 50


class EventsApi:
    """Route handlers over one :class:`EventHub`."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    def routes(self) -> dict[Route, Handler]:
        return {
            "subscription_list": self._list,
            "subscription_create": self._create,
            "subscription_get": self._get,
            "subscription_edit": self._edit,
            "subscription_delete": self._delete,
            "queue_pull": self._pull,
            "queue_ack": self._ack,
        }

    async def _list(self, request: web.Request, target: Target) -> Result:
        query = request.query
        page = _int(query.get("page"), 1, 1, None, "page")
        per_page = _int(query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE, "per_page")
        everything = list(self._hub.subscriptions.values())
        chosen = everything[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chosen),
            "total_count": len(everything),
            "total_pages": -(-len(everything) // per_page),
        }
        return [s.render() for s in chosen], info

    async def _create(self, request: web.Request, target: Target) -> Result:
        return self._hub.create(await read_json(request, default=None)).render(), None

    async def _get(self, request: web.Request, target: Target) -> Result:
        return self._hub.get(target.subscription_id).render(), None

    async def _edit(self, request: web.Request, target: Target) -> Result:
        body = await read_json(request, default=None)
        return self._hub.edit(target.subscription_id, body).render(), None

    async def _delete(self, request: web.Request, target: Target) -> Result:
        return {"id": self._hub.delete(target.subscription_id).id}, None

    async def _pull(self, request: web.Request, target: Target) -> Result:
        queue = self._hub.queue(target.queue_id)
        batch, visibility = pull_params(await read_json(request, default=None))
        messages = queue.pull(batch, visibility)
        metrics = queue.backlog()
        return {
            "messages": messages,
            "message_backlog_count": metrics["backlog_count"],
            "metadata": {"metrics": metrics},
        }, None

    async def _ack(self, request: web.Request, target: Target) -> Result:
        queue = self._hub.queue(target.queue_id)
        acks, retries = ack_params(await read_json(request, default=None))
        acked, retried, warnings = queue.ack(acks, retries)
        return {"ackCount": acked, "retryCount": retried, "warnings": warnings}, None


def _int(raw: str | None, default: int, low: int, high: int | None, name: str) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise problems.invalid(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise problems.invalid(f"{name} must be between {low} and {high or 'any'}")
    return value
