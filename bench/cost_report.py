"""The rows and targets of issue #9's scenarios (:mod:`bench.budget_use`, :mod:`bench.overhead`):
this bridge beside the bridge before the issue, medians of the runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Protocol

from bench.baseline import BEFORE
from bench.runner import BRIDGE, Measurement

#: Issue #9's targets: confirmation requests under faults, and budget use under skew.
CONFIRMING_SHARE = 0.05
SKEW_USE = 0.9
#: "As good as today" on uniform load: no more than this below the bridge before #9.
UNIFORM_SLACK = 0.02
KEYS = frozenset({"f", "s", "u", "p", "l0", "l20"})


class RowLike(Protocol):
    results: str
    runs: str
    median: str
    versus: str


def _of(runs: Sequence[Measurement], metric: Callable[[Measurement], float | None]) -> float | None:
    """The median over runs, or None if any run failed or has no value."""
    if not runs or any(not m.ok for m in runs):
        return None
    values = [metric(m) for m in runs]
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _routes(runs: Sequence[Measurement]) -> str:
    names = sorted({route for m in runs for route in m.api_requests})
    parts = []
    for name in names:

        def requests(m: Measurement, name: str = name) -> float:
            return float(m.api_requests.get(name, 0))

        count = _of(runs, requests)
        if count:
            parts.append(f"{name} {count:,.0f}")
    return ", ".join(parts)


def fill(key: str, runs: list[Measurement], row: RowLike) -> None:
    """Fill ``row`` for one contestant of scenario ``key``."""
    if key == "f":
        row.runs = " ".join(
            "—" if m.confirmations is None else f"{m.confirmations:.1%}" for m in runs
        )
        share = _of(runs, lambda m: m.confirmations)
        other = _of(runs, lambda m: m.not_own)
        row.median = (
            "—"
            if share is None or other is None
            else f"{share:.1%} confirming ({other:.1%} not own)"
        )
        row.versus = _routes(runs)
    elif key in ("s", "u"):
        done = _of(runs, lambda m: None if m.results is None else float(m.results))
        row.results = "—" if done is None else f"{done:,.0f} answered"
        row.runs = " ".join("—" if m.used is None else f"{m.used:.2f}" for m in runs)
        used = _of(runs, lambda m: m.used)
        row.median = "—" if used is None else f"{used:.2f} used"
        row.versus = f"{sum(m.throttled or 0 for m in runs)} × 429"
    elif key == "p":
        row.runs = " ".join(
            "—" if m.cpu_per_1000 is None else f"{m.cpu_per_1000:.3f}" for m in runs
        )
        cpu = _of(runs, lambda m: m.cpu_per_1000)
        row.median = "—" if cpu is None else f"{cpu:.3f} CPU s/1,000"
    else:
        row.runs = " ".join(_latency(m.latency_p50_ms, m.latency_p99_ms) for m in runs)
        p50 = _of(runs, lambda m: m.latency_p50_ms)
        p99 = _of(runs, lambda m: m.latency_p99_ms)
        row.median = "—" if p50 is None or p99 is None else f"p50 {p50:.0f} / p99 {p99:.0f} ms"


def _latency(p50: float | None, p99: float | None) -> str:
    return "—" if p50 is None or p99 is None else f"{p50:.0f}/{p99:.0f}"


def compared(key: str, by: dict[str, list[Measurement]]) -> str:
    """This bridge against the bridge before #9, for the rows without a target (CPU, latency)."""
    mine, before = by.get(BRIDGE, []), by.get(BEFORE, [])
    if key == "p":
        a, b = _of(mine, lambda m: m.cpu_per_1000), _of(before, lambda m: m.cpu_per_1000)
        return "—" if a is None or not b else f"{a / b:.2f} × {BEFORE}"
    a50, b50 = _of(mine, lambda m: m.latency_p50_ms), _of(before, lambda m: m.latency_p50_ms)
    a99, b99 = _of(mine, lambda m: m.latency_p99_ms), _of(before, lambda m: m.latency_p99_ms)
    if None in (a50, b50, a99, b99):
        return "—"
    return f"{BEFORE}: p50 {b50:.0f} / p99 {b99:.0f} ms"


def verdict(key: str, by: dict[str, list[Measurement]]) -> tuple[str, str, bool | None] | None:
    """(target, measured, met) of scenario ``key``, or None when it has no target."""
    mine, before = by.get(BRIDGE, []), by.get(BEFORE, [])
    if key == "f":
        share = _of(mine, lambda m: m.confirmations)
        theirs = _of(before, lambda m: m.confirmations)
        target = f"≤ {CONFIRMING_SHARE:.0%} of requests confirming instances"
        if share is None:
            return target, "—", None
        versus = "" if theirs is None else f" ({BEFORE}: {theirs:.0%})"
        return target, f"{share:.1%}{versus}", share <= CONFIRMING_SHARE
    if key in ("s", "u"):
        used = _of(mine, lambda m: m.used)
        theirs = _of(before, lambda m: m.used)
        throttled = sum(m.throttled or 0 for m in mine)
        if key == "s":
            target = f"≥ {SKEW_USE} used, 0 × 429"
            met = None if used is None else used >= SKEW_USE and throttled == 0
        else:
            target = f"≥ {BEFORE} − {UNIFORM_SLACK}, 0 × 429"
            met = (
                None
                if used is None or theirs is None
                else used >= theirs - UNIFORM_SLACK and throttled == 0
            )
        if used is None:
            return target, "—", None
        met = met and all(m.saturated for m in mine)
        versus = "" if theirs is None else f" ({BEFORE}: {theirs:.2f})"
        return target, f"{used:.2f} used, {throttled} × 429{versus}", met
    return None
