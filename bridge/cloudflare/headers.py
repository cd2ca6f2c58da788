"""Reading Cloudflare's rate-limit headers: ``Ratelimit``, ``Ratelimit-Policy``, ``Retry-After``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from bridge.errors import RateLimitInfo


def _items(header: str) -> list[dict[str, str]]:
    """Split a structured-field list such as ``"default";r=50;t=30, "burst";r=4;t=1``."""
    items = []
    for item in header.split(","):
        params: dict[str, str] = {}
        for part in item.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key:
                params[key.strip().lower()] = value.strip().strip('"')
        items.append(params)
    return items


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """The tightest of the policies the response reported, or None when it reported none."""
    limit = headers.get("ratelimit")
    policy = headers.get("ratelimit-policy")
    if limit is None and policy is None:
        return None
    remaining = reset = quota = window = None
    for params in _items(limit or ""):
        r, t = _number(params.get("r")), _number(params.get("t"))
        if r is not None and (remaining is None or r < remaining):
            remaining, reset = int(r), t
    for params in _items(policy or ""):
        q, w = _number(params.get("q")), _number(params.get("w"))
        if (
            q is not None
            and w is not None
            and (quota is None or window is None or q / w < quota / window)
        ):
            quota, window = int(q), w
    return RateLimitInfo(
        remaining=remaining, reset_seconds=reset, quota=quota, window_seconds=window
    )


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
