"""What production does to a client under load: the request budget, creation rates and faults.

All three read their settings on every call, so a running emulator follows configuration changes
at once. Randomness (fault draws, latency jitter) comes from ``random.Random`` seeded from
``EmulatorConfig.seed``, so a test sees the same faults for the same request sequence.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

from bridge.local.emulator import problems
from bridge.local.emulator.config import (
    MUTATING_ROUTES,
    CreationLimits,
    Faults,
    Latency,
    RequestBudget,
    Route,
)

FaultKind = Literal["error", "soft_error", "timeout", "drop", "apply_then_error", "apply_then_drop"]
#: Faults that let the request change state before the answer goes wrong.
APPLY_FIRST: frozenset[FaultKind] = frozenset({"apply_then_error", "apply_then_drop"})


def _whole_seconds(seconds: float) -> int:
    """Seconds rounded up, at least 1: what ``Retry-After`` and ``Ratelimit`` carry."""
    return max(1, math.ceil(seconds - 1e-9))


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The budget as one response reports it in its ``Ratelimit`` headers."""

    quota: int
    window: float
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "Ratelimit": f'"default";r={self.remaining};t={self.reset_seconds}',
            "Ratelimit-Policy": f'"default";q={self.quota};w={self.window:g}',
        }


class RequestBudgetLimiter:
    """Counts requests in a sliding window; going over blocks every call for a while.

    ``t`` in the ``Ratelimit`` header is the time until the oldest counted request leaves the
    window (when at least one more request will be admitted), or until the block ends.
    """

    def __init__(self) -> None:
        self._policy: RequestBudget | None = None
        self._stamps: deque[float] = deque()
        self._blocked_until = 0.0

    def admit(self, budget: RequestBudget, now: float) -> BudgetState:
        """Count one request; raises the 429 problem when over budget or blocked."""
        self._follow(budget)
        if now < self._blocked_until:
            wait = _whole_seconds(self._blocked_until - now)
            raise problems.budget_exceeded(budget.requests, budget.window_seconds, wait)
        self._expire(budget, now)
        if len(self._stamps) >= budget.requests:
            self._blocked_until = now + budget.block
            self._stamps.clear()
            wait = _whole_seconds(budget.block)
            raise problems.budget_exceeded(budget.requests, budget.window_seconds, wait)
        self._stamps.append(now)
        return self.state(budget, now)

    def blocked(self, now: float) -> bool:
        """Whether the last refusal started a block that is still running."""
        return now < self._blocked_until

    def state(self, budget: RequestBudget, now: float) -> BudgetState:
        """The budget's current state, without counting anything."""
        self._follow(budget)
        if now < self._blocked_until:
            remaining, reset = 0, self._blocked_until - now
        else:
            self._expire(budget, now)
            remaining = budget.requests - len(self._stamps)
            reset = self._stamps[0] + budget.window_seconds - now if self._stamps else 0.0
        return BudgetState(budget.requests, budget.window_seconds, remaining, math.ceil(reset))

    def _follow(self, budget: RequestBudget) -> None:
        if budget is not self._policy:  # a new budget object starts afresh
            self._policy = budget
            self._stamps.clear()
            self._blocked_until = 0.0

    def _expire(self, budget: RequestBudget, now: float) -> None:
        horizon = now - budget.window_seconds
        stamps = self._stamps
        while stamps and stamps[0] <= horizon:
            stamps.popleft()


class _RateWindow:
    """Creations in the last second, as ``(time, count)`` pairs with a running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def used(self, now: float) -> int:
        entries = self.entries
        while entries and entries[0][0] <= now - 1.0:
            self.total -= entries.popleft()[1]
        return self.total

    def wait(self, now: float) -> float:
        return self.entries[0][0] + 1.0 - now if self.entries else 1.0

    def take(self, now: float, count: int) -> None:
        self.entries.append((now, count))
        self.total += count


class CreationRateLimiter:
    """Instance creations per second, per workflow and per account; all or nothing."""

    def __init__(self) -> None:
        self._account = _RateWindow()
        self._workflows: dict[str, _RateWindow] = {}

    def take(self, limits: CreationLimits, workflow: str, count: int, now: float) -> None:
        """Count ``count`` creations for ``workflow``; raises the 429 problem instead if any
        limit would be exceeded (then nothing is counted)."""
        flow_window = self._workflows.get(workflow)
        if flow_window is None:
            flow_window = self._workflows[workflow] = _RateWindow()
        checks = (
            ("workflow", limits.per_workflow, flow_window),
            ("account", limits.per_account, self._account),
        )
        for scope, limit, window in checks:
            if limit is not None and window.used(now) + count > limit:
                retry = _whole_seconds(window.wait(now)) if limits.retry_after else None
                raise problems.creation_rate_exceeded(scope, limit, retry)
        flow_window.take(now, count)
        self._account.take(now, count)


class FaultInjector:
    """Seeded draws: which fault (if any) hits a request, and how much latency to add."""

    def __init__(self, seed: int) -> None:
        self._faults = random.Random(seed)
        self._jitter = random.Random(seed + 1)

    def delay(self, latency: Latency) -> float:
        """Seconds to hold the request before handling it."""
        seconds = latency.fixed_ms / 1000
        if latency.jitter_ms > 0:
            seconds += self._jitter.uniform(0.0, latency.jitter_ms / 1000)
        return seconds

    def draw(self, faults: Faults, route: Route) -> FaultKind | None:
        """The fault for one request on ``route``, or None."""
        if faults.routes is not None and route not in faults.routes:
            return None
        table: list[tuple[FaultKind, float]] = [
            ("error", faults.error_ratio),
            ("soft_error", faults.soft_error_ratio),
            ("timeout", faults.timeout_ratio),
            ("drop", faults.drop_ratio),
        ]
        if route in MUTATING_ROUTES:
            table.append(("apply_then_error", faults.apply_then_error_ratio))
            table.append(("apply_then_drop", faults.apply_then_drop_ratio))
        if not any(ratio > 0 for _, ratio in table):
            return None
        point = self._faults.random()
        for kind, ratio in table:
            if point < ratio:
                return kind
            point -= ratio
        return None
