"""Request bodies of the emulated routes: JSON decoding and the API's input rules.

Unknown fields are ignored, as production does. The id, name and size rules come from
``bridge.contract.rules`` so the emulator refuses exactly what the bridge refuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiohttp import web

from bridge.contract.rules import (
    LOCATION_HINTS,
    MAX_BATCH,
    MAX_INSTANCE_ID,
    MAX_PAYLOAD_BYTES,
    NAME_RE,
    RETENTION_RE,
    STATUS_ACTIONS,
    TERMINABLE_STATUSES,
    instance_id_problem,
)
from bridge.local.emulator import problems
from bridge.local.emulator.engine import StepRef, StepType

Action = Literal["pause", "resume", "terminate", "restart"]
_STEP_TYPES: tuple[StepType, ...] = ("do", "sleep", "waitForEvent")
#: Ids an existing instance may have: created ones, and cron-triggered ones (up to 271
#: characters with spaces, ``*``, ``/`` and ``,``), which a delete must be able to name.
_ADDRESSABLE_RE = re.compile(r"^[a-zA-Z0-9, */#_-]{1,271}$")


@dataclass(frozen=True, slots=True)
class StatusEdit:
    """A parsed ``PATCH …/status`` body."""

    action: Action
    start_from: StepRef | None = None
    rollback: bool = False


def parse_id_list(body: Any, *, wrapped: bool) -> list[str]:
    """The 1–100 ids of a batch delete (``{"instances": [...]}``, ``wrapped``) or a batch
    terminate (a bare array); 400 when the shape, the count or an id is wrong."""
    ids = body
    if wrapped:
        ids = body.get("instances") if isinstance(body, dict) else None
    shape = '{"instances": [ids]}' if wrapped else "a JSON array of ids"
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_BATCH:
        raise problems.invalid(f"The request body must be {shape} with 1 to {MAX_BATCH} ids")
    for value in ids:
        if not isinstance(value, str):
            raise problems.invalid_instance_id()
        valid = (
            _ADDRESSABLE_RE.match(value)
            if wrapped
            else len(value) <= MAX_INSTANCE_ID and NAME_RE.match(value)
        )
        if not valid:
            raise problems.invalid_instance_id()
    return ids


def parse_step_query(query: Mapping[str, str]) -> tuple[str, str, int | None]:
    """``(name, type, attempt)`` of a ``GET …/step``; ``type`` defaults to ``step``."""
    name, step_type, raw_attempt = (
        query.get("name"),
        query.get("type", "step"),
        query.get("attempt"),
    )
    if not name:
        raise problems.invalid("name is required: the step's name including its counter suffix")
    if step_type not in ("step", "waitForEvent"):
        raise problems.invalid("type must be step or waitForEvent")
    attempt = None
    if raw_attempt is not None:
        try:
            attempt = int(raw_attempt)
        except ValueError:
            attempt = 0
        if attempt < 1 or step_type != "step":
            raise problems.invalid("attempt must be a positive integer, for type step only")
    return name, step_type, attempt


def parse_terminate_filter(query: Mapping[str, str]) -> str | None:
    """The ``status`` a "terminate all" is limited to, if any."""
    status = query.get("status")
    if status is not None and status not in TERMINABLE_STATUSES:
        raise problems.invalid(f"status must be one of {', '.join(TERMINABLE_STATUSES)}")
    return status


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


def parse_status(body: Any) -> StatusEdit:
    """The action of a status edit with its ``from`` (restart) or ``rollback`` (terminate)."""
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
        return StatusEdit(cast(Action, action), rollback=rollback is True and action == "terminate")
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
    return StatusEdit("restart", StepRef(name, count, cast(StepType | None, step_type)))
