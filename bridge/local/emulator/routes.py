"""Routing: which emulated route a method and raw path name, and what is deliberately not there.

Under ``/client/v4/accounts/{account}/workflows/{name}/instances`` the fixed sub-paths are
matched before an instance id is assumed, so ``GET …/instances/terminate`` is the terminate
job's status and never an instance called ``terminate``; a method a fixed sub-path does not serve
is 405, not a lookup of an instance called ``batch``. (``batch``, ``terminate`` and
``terminateAll`` are reserved: no instance can have those ids.)

Paths production serves that the emulator does not implement (the workflow itself, its versions,
the account's workflow list and settings) answer 501 "not emulated"; any other path is 404.

Beside ``workflows/``, two more families under the account: ``queues/{queue_id}/messages/pull``
and ``…/ack`` (a queue's HTTP pull consumer) and ``event_subscriptions/subscriptions[/{id}]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from bridge.local.emulator import problems
from bridge.local.emulator.config import Route

#: An instance id in a route shape.
_ID = "{instance_id}"
#: An event type in a route shape.
_TYPE = "{event_type}"

#: Route shapes below ``…/instances``, fixed sub-paths first: method -> route.
_SHAPES: tuple[tuple[tuple[str, ...], dict[str, Route]], ...] = (
    ((), {"GET": "list", "POST": "create"}),
    (("batch",), {"POST": "batch"}),
    (("batch", "delete"), {"POST": "batch_delete"}),
    (("batch", "terminate"), {"POST": "batch_terminate"}),
    (("terminate",), {"PUT": "terminate_all", "GET": "terminate_status"}),
    ((_ID,), {"GET": "get", "DELETE": "delete"}),
    ((_ID, "status"), {"PATCH": "status"}),
    ((_ID, "step"), {"GET": "step"}),
    ((_ID, "events", _TYPE), {"POST": "event"}),
)


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved request: the route and the decoded path parameters."""

    route: Route
    account: str
    workflow: str = ""
    instance_id: str = ""
    event_type: str = ""
    queue_id: str = ""
    subscription_id: str = ""


def resolve(method: str, raw_path: str) -> Target:
    """Map a method and raw path onto a route; raises the 404, 405 or 501 problem otherwise."""
    parts = [unquote(part) for part in raw_path.split("/")]
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) < 6 or parts[:4] != ["", "client", "v4", "accounts"]:
        raise problems.no_route(raw_path)
    account, family, below = parts[4], parts[5], parts[6:]
    if family == "queues":
        return _queue_target(method, raw_path, account, below)
    if family == "event_subscriptions":
        return _subscription_target(method, raw_path, account, below)
    if family != "workflows":
        raise problems.no_route(raw_path)
    if not below or below[0] == "settings":
        raise problems.not_emulated(f"{method} {_template(below)}")
    workflow, rest = below[0], below[1:]
    if not rest or rest[0] == "versions":
        raise problems.not_emulated(f"{method} {_template(below)}")
    if rest[0] != "instances":
        raise problems.no_route(raw_path)
    rest = rest[1:]
    for shape, methods in _SHAPES:
        if not _fits(shape, rest):
            continue
        route = methods.get(method)
        if route is None:
            raise problems.method_not_allowed()
        instance_id = rest[0] if shape[:1] == (_ID,) else ""
        event_type = rest[2] if shape[-1:] == (_TYPE,) else ""
        return Target(route, account, workflow, instance_id, event_type)
    raise problems.no_route(raw_path)


def _queue_target(method: str, raw_path: str, account: str, rest: list[str]) -> Target:
    """``queues/{id}/messages/pull`` and ``…/ack`` (POST)."""
    if len(rest) != 3 or rest[1] != "messages" or rest[2] not in ("pull", "ack"):
        raise problems.no_route(raw_path)
    if method != "POST":
        raise problems.method_not_allowed()
    route: Route = "queue_pull" if rest[2] == "pull" else "queue_ack"
    return Target(route, account, queue_id=rest[0])


def _subscription_target(method: str, raw_path: str, account: str, rest: list[str]) -> Target:
    """``event_subscriptions/subscriptions[/{id}]``."""
    if not rest or rest[0] != "subscriptions" or len(rest) > 2:
        raise problems.no_route(raw_path)
    if len(rest) == 1:
        verbs: dict[str, Route] = {"GET": "subscription_list", "POST": "subscription_create"}
    else:
        verbs = {
            "GET": "subscription_get",
            "PATCH": "subscription_edit",
            "DELETE": "subscription_delete",
        }
    route = verbs.get(method)
    if route is None:
        raise problems.method_not_allowed()
    return Target(route, account, subscription_id=rest[1] if len(rest) == 2 else "")


def _fits(shape: tuple[str, ...], rest: list[str]) -> bool:
    if len(shape) != len(rest):
        return False
    return all(want in (_ID, _TYPE) or want == got for want, got in zip(shape, rest, strict=True))


def _template(below: list[str]) -> str:
    """The production route a not-emulated path belongs to, as its template."""
    if not below:
        return "/accounts/{account_id}/workflows"
    if below[0] == "settings":
        return "/accounts/{account_id}/workflows/settings"
    if len(below) == 1:
        return "/accounts/{account_id}/workflows/{workflow_name}"
    return "/accounts/{account_id}/workflows/{workflow_name}/" + "/".join(below[1:2]) + "…"
