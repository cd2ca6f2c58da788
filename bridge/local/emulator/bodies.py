"""Request bodies of the emulated routes: JSON decoding and the API's input rules.

Unknown fields are ignored, as production does. The id, name and size rules come from
``bridge.contract.rules`` so the emulator refuses exactly what the bridge refuses.
"""

from __future__ import annotations

import json
from typing import Any, Literal, cast

from aiohttp import web

from bridge.contract.rules import (
    LOCATION_HINTS,
    MAX_PAYLOAD_BYTES,
    RETENTION_RE,
    STATUS_ACTIONS,
    instance_id_problem,
)
from bridge.local.emulator import problems
from bridge.local.emulator.engine import StepRef, StepType

Action = Literal["pause", "resume", "terminate", "restart"]
_STEP_TYPES: tuple[StepType, ...] = ("do", "sleep", "waitForEvent")


async def read_json(request: web.Request, *, default: Any, limit: bool = False) -> Any:
    """The decoded JSON body, ``default`` for an empty one; 400 when malformed.

    With ``limit`` the whole body is a payload and may not exceed 1 MiB.
    """
    raw = await request.read()
    if limit and len(raw) > MAX_PAYLOAD_BYTES:
        raise problems.invalid(f"The payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise problems.malformed_json() from None


def parse_create(body: Any, *, body_size: int) -> tuple[str | None, Any]:
    """``(instance_id, params)`` of one create body; raises the 400 problem when invalid.

    ``body_size`` is the size of the whole request body: ``params`` are only measured when it
    could hold more than the 1 MiB they may take.
    """
    if not isinstance(body, dict):
        raise problems.invalid("Each instance must be described by a JSON object")
    instance_id = body.get("instance_id")
    if instance_id is not None and (
        not isinstance(instance_id, str) or instance_id_problem(instance_id) is not None
    ):
        raise problems.invalid_instance_id()
    params = body.get("params")
    if body_size > MAX_PAYLOAD_BYTES and len(json.dumps(params).encode()) > MAX_PAYLOAD_BYTES:
        raise problems.invalid(f"params exceed {MAX_PAYLOAD_BYTES} bytes")
    _check_retention(body.get("instance_retention"))
    hint = body.get("location_hint")
    if hint is not None and hint not in LOCATION_HINTS:
        raise problems.invalid(f"location_hint must be one of {', '.join(LOCATION_HINTS)}")
    return instance_id, params


def _check_retention(retention: Any) -> None:
    if retention is None:
        return
    if not isinstance(retention, dict):
        raise problems.invalid("instance_retention must be an object")
    for key in ("success_retention", "error_retention"):
        value = retention.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        if not number and not (isinstance(value, str) and RETENTION_RE.match(value)):
            raise problems.invalid(f"instance_retention.{key} is not a valid duration")


def parse_status(body: Any) -> tuple[Action, StepRef | None]:
    """The action of a status edit and, for a restart, the step to restart from."""
    if not isinstance(body, dict):
        raise problems.invalid("The request body must be a JSON object")
    action = body.get("status")
    if action not in STATUS_ACTIONS:
        raise problems.invalid(f"status must be one of {', '.join(STATUS_ACTIONS)}")
    rollback = body.get("rollback")
    if rollback is not None and not isinstance(rollback, bool):
        raise problems.invalid("rollback must be a boolean")
    start_from = body.get("from")
    if start_from is None or action != "restart":
        return cast(Action, action), None
    if not isinstance(start_from, dict):
        raise problems.invalid("from must be an object")
    name, count, step_type = (start_from.get(k) for k in ("name", "count", "type"))
    if not isinstance(name, str) or not name:
        raise problems.invalid("from.name must be a non-empty string")
    if count is None:
        count = 1
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise problems.invalid("from.count must be a positive integer")
    if step_type is not None and step_type not in _STEP_TYPES:
        raise problems.invalid(f"from.type must be one of {', '.join(_STEP_TYPES)}")
    return "restart", StepRef(name, count, cast(StepType | None, step_type))
