"""``GET /instances``: filters, the opaque cursor and the page-number fallback.

Instances are kept in creation order (a deleted one keeps its place, invisibly), so a cursor is
simply the creation index of the next instance to return, tagged with the direction. Following
``result_info.cursor`` until it is absent yields every matching instance exactly once, even
while new instances are created (they sort after the cursor in ``asc`` and before the first
page in ``desc``).

``direction`` applies to cursor pagination, as the API documents it: without ``page`` the
listing walks in ``direction`` (default ``desc``, newest first) and the cursor it hands out
carries that direction, so a ``direction`` sent along with a cursor must agree with it (400
otherwise). The deprecated page-number listing (``page``, exclusive with ``cursor``) is always
newest first and ignores ``direction``.
"""

from __future__ import annotations

import base64
import binascii
import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.contract.rules import INSTANCE_STATUSES, MAX_PER_PAGE, ORDERS
from bridge.local.emulator import problems
from bridge.local.emulator.engine import Flow
from bridge.local.emulator.instance import QUEUED_AT, Instance
from bridge.local.emulator.render import list_item

DEFAULT_PER_PAGE = 50


def encode_cursor(direction: str, index: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{direction}:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, direction, index = text.split(":")
        position = int(index)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise problems.invalid("cursor is not valid") from None
    if version != "v1" or direction not in ("asc", "desc") or position < 0:
        raise problems.invalid("cursor is not valid")
    return direction, position


def list_page(flow: Flow, query: Mapping[str, str]) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``flow``'s instances and its ``result_info``."""
    per_page = _int(query, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    asked = query.get("direction")
    if asked is not None and asked not in ORDERS:
        raise problems.invalid("direction must be asc or desc")
    direction = asked or "desc"
    cursor, page = query.get("cursor"), None
    if cursor and "page" in query:
        raise problems.invalid("cursor and page exclude each other")
    if cursor:
        direction, after = decode_cursor(cursor)
        if asked is not None and asked != direction:
            raise problems.invalid(f"direction {asked} does not match the cursor's ({direction})")
    elif "page" in query:
        direction = "desc"  # direction applies to cursor pagination only
        page = _int(query, "page", 1, 1, None)
    indices = _matching(flow, query)
    total = len(indices)
    if cursor:
        first = (
            bisect_left(indices, after)
            if direction == "asc"
            else total - bisect_right(indices, after)
        )
    else:
        first = 0 if page is None else (page - 1) * per_page

    def at(position: int) -> int:
        return indices[position] if direction == "asc" else indices[total - 1 - position]

    stop = min(first + per_page, total)
    items = [list_item(flow.order[at(p)], flow) for p in range(first, stop)]
    info: dict[str, Any] = {"count": len(items), "per_page": per_page, "total_count": total}
    if stop < total:
        info["cursor"] = encode_cursor(direction, at(stop))
    if page is not None:
        info["page"] = page
        info["total_pages"] = -(-total // per_page)
    return items, info


def _int(query: Mapping[str, str], key: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise problems.invalid(f"{key} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise problems.invalid(f"{key} must be between {low} and {high or 'any'}")
    return value


def _matching(flow: Flow, query: Mapping[str, str]) -> Sequence[int]:
    """Creation indices of the instances that pass the status and date filters, ascending."""
    order: list[Instance] = flow.order
    status = query.get("status")
    if status is not None and status not in INSTANCE_STATUSES:
        raise problems.invalid(f"status {status!r} is not an instance status")
    start, end = _date(query, "date_start"), _date(query, "date_end")
    if status is None and start is None and end is None and flow.deleted == 0:
        return range(len(order))
    return [
        index
        for index, inst in enumerate(order)
        if not inst.deleted
        and (status is None or inst.status == status)
        and (start is None or _shown(inst.times[QUEUED_AT]) >= start)
        and (end is None or _shown(inst.times[QUEUED_AT]) <= end)
    ]


def _shown(stamp: float) -> int:
    """A creation time in whole milliseconds, as ``created_on`` shows it, so that a filter
    copied from a listing matches the instance it was copied from."""
    return math.floor(stamp * 1000)


def _date(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise problems.invalid(f"{key} must be an ISO 8601 timestamp") from None
    if moment.tzinfo is None:  # the API's timestamps are UTC without an offset
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)
