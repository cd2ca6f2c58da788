"""The request budget: how many API calls this replica may make, and when.

Cloudflare gives one token 1,200 requests per 5 minutes and blocks *every* call for 5 minutes
once that is exceeded, so the bridge paces itself instead of finding the limit:

* a sliding window: never more than ``capacity`` grants in any window of ``window`` seconds (a
  full burst followed by a full refill would break that, so the log of grants is kept, not a
  token count);
* ``capacity`` is this replica's part of the token's budget: either a share in proportion to the
  partitions it holds, re-split on every rebalance (:meth:`RequestBudget.set_share`), or a number
  of requests the group's replicas agreed on through their budget topic
  (:meth:`RequestBudget.set_capacity`, see :mod:`bridge.pipeline.shares`); the creation limits
  are always split by partitions;
* ``Ratelimit`` response headers, when the API sends them, tighten the pace further;
* a 429 blocks every call of this replica until ``Retry-After`` (or a whole window) has passed;
* creations have their own per-second limits per workflow and per account;
* background work (the state stream's polling) has a low-priority lane: at most its share of the
  token's budget, taken from the same window as commands, and only while no command waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from bridge.contract.rules import MAX_BATCH
from bridge.errors import RateLimitInfo

Clock = Callable[[], float]

#: Grants are spaced a little wider than the window, for clock skew and network delay.
_SAFETY = 1.01


class SlidingWindow:
    """At most ``capacity`` units in any ``window`` seconds; ``acquire`` waits for room.

    A request counts from the moment it is granted (in flight) and enters the log when its
    answer arrives: the API counted it on arrival, which is never later than that, so the log
    never places a request earlier than the server did. (Logging the grant time instead lets a
    slow first burst land inside the next window on the server's clock.)
    """

    def __init__(self, capacity: float, window: float, *, clock: Clock = time.monotonic) -> None:
        self._full_capacity = capacity
        self._window = window * _SAFETY
        self._clock = clock
        self._share = 1.0
        self._fixed: int | None = None
        self._log: deque[tuple[float, int]] = deque()
        self._logged = 0
        self._in_flight = 0
        self._lock = asyncio.Lock()
        self._ended = asyncio.Event()

    @property
    def capacity(self) -> int:
        if self._fixed is not None:
            return self._fixed
        return max(1, math.floor(self._full_capacity * self._share))

    def set_share(self, share: float) -> None:
        self._share = min(max(share, 0.0), 1.0)
        self._fixed = None
        self._ended.set()  # waiters look again

    def set_capacity(self, units: int) -> None:
        """Exactly ``units`` per window (0 stops every grant until it is raised again)."""
        self._fixed = max(units, 0)
        self._ended.set()  # waiters look again

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self._window:
            self._logged -= self._log.popleft()[1]

    def used(self) -> int:
        """Units in flight plus units answered within the window."""
        self._expire(self._clock())
        return self._logged + self._in_flight

    def wait_time(self, units: int = 1) -> float | None:
        """Seconds until ``units`` fit (0: now), or None when only an answer can make room."""
        now = self._clock()
        self._expire(now)
        room = self.capacity - self._logged - self._in_flight
        if units <= room:
            return 0.0
        need = units - room
        for when, count in self._log:
            need -= count
            if need <= 0:
                return max(when + self._window - now, 0.001)
        return None

    def begin(self, units: int = 1) -> None:
        self._in_flight += units

    def end(self, units: int = 1) -> None:
        """The request's answer arrived (or it failed): log it now."""
        self._in_flight -= units
        self._log.append((self._clock(), units))
        self._logged += units
        self._ended.set()

    async def acquire(self, units: int = 1) -> int:
        """Wait for room and mark ``units`` in flight; returns the units to :meth:`end` later.

        More units than the capacity take the whole capacity; a capacity of 0 grants nothing
        until it is raised.
        """
        async with self._lock:  # FIFO: waiters are served in order
            while True:
                take = min(units, self.capacity)
                delay = self.wait_time(take) if take > 0 else None
                if delay == 0:
                    break
                self._ended.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), delay)
            self.begin(take)
        return take


@dataclass(slots=True)
class BudgetStats:
    granted: int = 0
    throttled_429: int = 0
    blocked_seconds: float = 0.0
    waiting: int = 0
    background_granted: int = 0
    background_waiting: int = 0


class RequestBudget:
    """Every API request of this replica passes through :meth:`acquire`."""

    def __init__(
        self,
        *,
        requests: int,
        window_seconds: float,
        creations_per_workflow: float,
        creations_per_account: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._window_seconds = window_seconds
        self.requests = SlidingWindow(requests, window_seconds, clock=clock)
        self._creations_per_workflow = creations_per_workflow
        self._account_creations = SlidingWindow(creations_per_account, 1.0, clock=clock)
        self._workflow_creations: dict[str, SlidingWindow] = {}
        self._blocked_until = 0.0
        #: The token's requests left as the last response's ``Ratelimit`` said (None: no hint),
        #: and the requests this replica granted since.
        self._hint_raw: int | None = None
        self._hint_spent = 0
        self._hint_reset_at = 0.0
        self._share_changed = asyncio.Event()
        self._share = 1.0
        self._requests_full = requests
        self._creation_share = 1.0
        self._background: SlidingWindow | None = None
        #: Set whenever a command's wait ends or a request is answered: background waiters look.
        self._changed = asyncio.Event()
        #: Commands waiting for room in the request window (not for a creation limit).
        self._request_waiters = 0
        self.stats = BudgetStats()

    # -- sharing -----------------------------------------------------------------------

    def set_share(self, share: float) -> None:
        """This replica's fraction of the token's budget (its partitions / all partitions), for
        requests and creations alike."""
        self._share = share
        self.requests.set_share(share)
        self.set_creation_share(share)
        self._share_changed.set()

    def set_capacity(self, requests: int) -> None:
        """This replica's requests per window, as the group agreed (0: none for now)."""
        self.requests.set_capacity(requests)
        self._share = requests / self._requests_full
        self._share_changed.set()

    def set_creation_share(self, share: float) -> None:
        """This replica's fraction of the creation limits (its partitions / all partitions)."""
        self._creation_share = share
        self._account_creations.set_share(share)
        for window in self._workflow_creations.values():
            window.set_share(share)

    @property
    def share(self) -> float:
        """The fraction of the token's requests this replica may spend now."""
        return self._share

    def set_background_share(self, share: float) -> None:
        """The fraction of the token's budget (the whole group's) background work may use."""
        if self._background is None:
            self._background = SlidingWindow(
                self._requests_full, self._window_seconds, clock=self._clock
            )
        self._background.set_share(share)

    def max_batch(self, workflow: str) -> int:
        """The largest batch the creation limits can ever admit at once."""
        return min(MAX_BATCH, self._creations(workflow).capacity, self._account_creations.capacity)

    def _creations(self, workflow: str) -> SlidingWindow:
        window = self._workflow_creations.get(workflow)
        if window is None:
            window = SlidingWindow(self._creations_per_workflow, 1.0, clock=self._clock)
            window.set_share(self._creation_share)
            self._workflow_creations[workflow] = window
        return window

    # -- pacing ------------------------------------------------------------------------

    @property
    def blocked_for(self) -> float:
        """Seconds left in a 429 block (0 when not blocked)."""
        return max(self._blocked_until - self._clock(), 0.0)

    @contextlib.asynccontextmanager
    async def slot(self, *, creations: int = 0, workflow: str | None = None) -> AsyncIterator[None]:
        """Hold one request (creating ``creations`` instances) while the body sends it."""
        taken: list[tuple[SlidingWindow, int]] = []
        self.stats.waiting += 1
        try:
            while True:
                await self._wait_unblocked()
                if creations and workflow is not None:
                    for window in (self._creations(workflow), self._account_creations):
                        taken.append((window, await window.acquire(creations)))
                # Only now does this command compete with background work for requests.
                self._request_waiters += 1
                try:
                    await self._wait_for_hint()
                    taken.append((self.requests, await self.requests.acquire()))
                finally:
                    self._request_waiters -= 1
                if self.blocked_for == 0:
                    break
                # A 429 arrived while we waited: give the room back and wait out the block.
                for window, units in taken:
                    window.end(units)
                taken.clear()
        except BaseException:
            for window, units in taken:
                window.end(units)
            raise
        finally:
            self.stats.waiting -= 1
            self._changed.set()
        self.stats.granted += 1
        self._hint_spent += 1
        try:
            yield
        finally:
            for window, units in taken:
                window.end(units)
            self._changed.set()

    @contextlib.asynccontextmanager
    async def background_slot(self) -> AsyncIterator[None]:
        """Hold one request of background work: within its share, and never ahead of a command.

        It waits in its own lane (at most the background share of the budget in any window),
        then until no command is waiting for the request window and the window has room:
        commands always come first, and both together never exceed the replica's budget. (A
        command held by a creation limit does not hold background work up: it does not need
        the request window yet.)
        """
        lane = self._background
        if lane is None:
            raise RuntimeError("set_background_share() first")
        taken: list[tuple[SlidingWindow, int]] = []
        self.stats.background_waiting += 1
        try:
            taken.append((lane, await lane.acquire()))
            while True:
                self._changed.clear()
                delay = self._background_delay()
                if delay == 0:
                    break
                # Bounded: a change may also come from the clock alone (a window expiring).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(delay or 1.0, 1.0))
            self.requests.begin()
            taken.append((self.requests, 1))
        except BaseException:
            for window, units in taken:
                window.end(units)
            raise
        finally:
            self.stats.background_waiting -= 1
        self.stats.granted += 1
        self.stats.background_granted += 1
        self._hint_spent += 1
        try:
            yield
        finally:
            for window, units in taken:
                window.end(units)
            self._changed.set()

    def _background_delay(self) -> float | None:
        """0 when a background request may go now; else how long to wait at most (None: until
        something changes)."""
        now = self._clock()
        if self._blocked_until > now:
            return self._blocked_until - now
        if self._request_waiters:
            return None
        hint = self._hint_remaining
        if hint is not None and hint <= 0 and now < self._hint_reset_at:
            return self._hint_reset_at - now
        return self.requests.wait_time()

    async def _wait_unblocked(self) -> None:
        while (left := self.blocked_for) > 0:
            await asyncio.sleep(left)

    @property
    def _hint_remaining(self) -> int | None:
        """Our share of what the server said is left, less what we granted since (None: no
        hint). Computed with the share in effect now, so a larger share counts at once."""
        if self._hint_raw is None:
            return None
        return math.floor(self._hint_raw * self._share) - self._hint_spent

    async def _wait_for_hint(self) -> None:
        # The server's own count says how much of the token is left (other replicas and tools
        # spend it too). Keep our share of what is left; wait for the reset when it runs out,
        # or for a larger share.
        while (left := self._hint_remaining) is not None:
            now = self._clock()
            if now >= self._hint_reset_at:
                self._hint_raw = None
                return
            if left > 0:
                return
            self._share_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._share_changed.wait(), self._hint_reset_at - now)

    def observe(
        self, status: int, ratelimit: RateLimitInfo | None, retry_after: float | None
    ) -> None:
        """Learn from one response: a 429 blocks; ``Ratelimit`` headers set the pace."""
        now = self._clock()
        if status == 429:
            self.stats.throttled_429 += 1
            block = retry_after if retry_after is not None else self._window_seconds
            until = now + block
            if until > self._blocked_until:
                self.stats.blocked_seconds += until - max(self._blocked_until, now)
                self._blocked_until = until
            return
        if ratelimit is not None and ratelimit.remaining is not None:
            reset = (
                ratelimit.reset_seconds
                if ratelimit.reset_seconds is not None
                else self._window_seconds
            )
            self._hint_raw, self._hint_spent = ratelimit.remaining, 0
            self._hint_reset_at = now + reset

    def snapshot(self) -> dict[str, float | int]:
        """The budget's state for logs and metrics."""
        return {
            "share": round(self._share, 4),
            "capacity": self.requests.capacity,
            "used_in_window": self.requests.used(),
            "remaining": self.requests.capacity - self.requests.used(),
            "waiting": self.stats.waiting,
            "blocked_for": round(self.blocked_for, 3),
            "blocked_seconds_total": round(self.stats.blocked_seconds, 3),
            "throttled_429": self.stats.throttled_429,
            "background_capacity": 0 if self._background is None else self._background.capacity,
            "background_used_in_window": 0 if self._background is None else self._background.used(),
        }
