"""One workflow instance's state, kept compact: the emulator may hold 100,000 of them.

An instance is a ``__slots__`` object. Its timestamps and its whole step history live in one
``array('d')`` of wall-clock seconds (NaN = not yet)::

    [queued, started, ended, modified,                      # header
     start, end, n, a1_start, a1_end, …, an_start, an_end,  # one record per step reached
     …]

Record *i* belongs to step *i* of the instance's behaviour, so names and kinds are not stored.
Events are kept only once one arrives. A finished instance holds no task or timer; a live one
holds at most one ``asyncio.TimerHandle``.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Literal, NamedTuple

from bridge.contract.rules import FINAL_STATUSES, Status
from bridge.local.emulator.config import WorkflowBehaviour

TriggerSource = Literal["api", "binding", "event", "cron", "unknown"]
FINAL: frozenset[str] = FINAL_STATUSES
#: Statuses that occupy a slot of the workflow's concurrency bound.
ACTIVE: frozenset[str] = frozenset({"running", "waiting", "waitingForPause"})

QUEUED_AT, STARTED_AT, ENDED_AT, MODIFIED_AT = 0, 1, 2, 3
_HEADER = 4
_UNSET = math.nan

#: ``EventRecord.step`` values other than the index of the step that consumed the event.
BUFFERED = -1
SPENT = -2


class Phase(IntEnum):
    """What the instance's timer, if any, is counting down."""

    IDLE = 0  # nothing pending: the step at ``position`` has not begun
    ATTEMPT = 1  # a ``do`` attempt is in flight
    BACKOFF = 2  # a ``do`` waits to retry
    SLEEP = 3
    WAIT = 4  # ``waitForEvent``; the timer (if any) is the timeout


class EventRecord:
    """One event sent to the instance; ``step`` says who consumed it (see BUFFERED, SPENT)."""

    __slots__ = ("at", "payload", "step", "type")

    def __init__(self, event_type: str, payload: Any, at: float, step: int) -> None:
        self.type = event_type
        self.payload = payload
        self.at = at
        self.step = step


class StepRecord(NamedTuple):
    """A step's history as read back from the array."""

    start: float
    end: float | None
    attempts: tuple[tuple[float, float | None], ...]


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


class Instance:
    """The mutable state of one instance; the engine is the only writer."""

    __slots__ = (
        "behaviour",
        "deleted",
        "due",
        "duplicate_attempts",
        "error",
        "events",
        "id",
        "params",
        "phase",
        "position",
        "record_at",
        "remaining",
        "restarts",
        "status",
        "timer",
        "times",
        "trigger",
        "workflow",
    )

    def __init__(
        self,
        workflow: str,
        instance_id: str,
        params: Any,
        behaviour: WorkflowBehaviour,
        now: float,
        *,
        trigger: TriggerSource = "api",
    ) -> None:
        self.workflow = workflow
        self.id = instance_id
        self.params = params
        self.behaviour = behaviour
        self.trigger = trigger
        self.status: Status = "queued"
        self.times = array("d", (now, _UNSET, _UNSET, now))
        #: Index of the step being run (or to run next).
        self.position = 0
        #: Offset in ``times`` of the current step's record.
        self.record_at = -1
        self.phase = Phase.IDLE
        self.timer: asyncio.TimerHandle | None = None
        #: Loop time at which ``timer`` fires.
        self.due = 0.0
        #: Seconds left on the interrupted timer while paused or queued; inf = no timeout.
        self.remaining = 0.0
        self.error: tuple[str, str] | None = None
        self.events: list[EventRecord] | None = None
        self.duplicate_attempts = 0
        self.restarts = 0
        #: Deleted instances keep their place in the workflow's creation order (cursors are
        #: positions in it) but are invisible everywhere.
        self.deleted = False

    # -- timestamps ------------------------------------------------------------------------

    def stamp(self, slot: int, now: float) -> None:
        """Set header timestamp ``slot`` to ``now``."""
        self.times[slot] = now

    def moment(self, slot: int) -> float | None:
        """Header timestamp ``slot``, or None when unset."""
        return _opt(self.times[slot])

    # -- step records ------------------------------------------------------------------------

    def open_record(self, now: float) -> None:
        """Start the record of the step at ``position``."""
        self.record_at = len(self.times)
        self.times.extend((now, _UNSET, 0.0))

    def close_record(self, now: float) -> None:
        """Set the end of the current step's record."""
        self.times[self.record_at + 1] = now

    def open_attempt(self, now: float) -> int:
        """Begin one more attempt of the current ``do`` step; returns its 1-based number."""
        count = int(self.times[self.record_at + 2]) + 1
        self.times[self.record_at + 2] = count
        self.times.extend((now, _UNSET))
        return count

    def close_attempt(self, now: float) -> None:
        """End the current attempt (always the last pair of the array)."""
        self.times[-1] = now

    def records(self) -> Iterator[StepRecord]:
        """The history, one record per step reached, in order."""
        times, at = self.times, _HEADER
        while at < len(times):
            count = int(times[at + 2])
            pairs = tuple(
                (times[at + 3 + 2 * i], _opt(times[at + 4 + 2 * i])) for i in range(count)
            )
            yield StepRecord(times[at], _opt(times[at + 1]), pairs)
            at += 3 + 2 * count

    def record_count(self) -> int:
        """How many steps have been reached."""
        return sum(1 for _ in self.records())

    def forget_from(self, step: int) -> None:
        """Drop the records of step ``step`` and later ones (restart ``from``)."""
        times, at = self.times, _HEADER
        for _ in range(step):
            at += 3 + 2 * int(times[at + 2])
        del times[at:]
        self.record_at = -1

    def reset(self, now: float, *, keep_steps: int = 0) -> None:
        """Forget the run from step ``keep_steps`` on, as a restart does."""
        self.forget_from(keep_steps)
        self.times[QUEUED_AT] = now
        self.times[STARTED_AT] = _UNSET
        self.times[ENDED_AT] = _UNSET
        self.times[MODIFIED_AT] = now
        self.position = keep_steps
        self.phase = Phase.IDLE
        self.error = None
        self.remaining = 0.0
        for event in self.events or ():
            if event.step >= keep_steps:
                event.step = SPENT

    # -- events ------------------------------------------------------------------------------

    def add_event(self, event_type: str, payload: Any, at: float, *, buffered: bool) -> None:
        """Remember an event; a buffered one waits for a matching ``waitForEvent``."""
        if self.events is None:
            self.events = []
        self.events.append(EventRecord(event_type, payload, at, BUFFERED if buffered else SPENT))

    def received(self) -> Iterator[tuple[str, Any]]:
        """Every event received so far, as ``(type, payload)``."""
        for event in self.events or ():
            yield event.type, event.payload

    def take_event(self, event_type: str, step: int) -> EventRecord | None:
        """Hand the oldest buffered event of ``event_type`` to step ``step``."""
        for event in self.events or ():
            if event.step == BUFFERED and event.type == event_type:
                event.step = step
                return event
        return None

    def consumed_by(self, step: int) -> EventRecord | None:
        """The event that step ``step`` consumed, if any."""
        for event in self.events or ():
            if event.step == step:
                return event
        return None

    # -- output ------------------------------------------------------------------------------

    def output(self) -> Any:
        """The workflow output: configured, ``{"params": …}`` by default, None until complete."""
        if self.status != "complete":
            return None
        if self.behaviour.output is not None:
            return self.behaviour.output
        return {"params": self.params}

    def view(self) -> InstanceView:
        """A detached snapshot for assertions."""
        return InstanceView(
            workflow=self.workflow,
            id=self.id,
            status=self.status,
            trigger=self.trigger,
            params=self.params,
            output=self.output(),
            error=self.error,
            events=tuple((e.type, e.payload) for e in self.events or ()),
            steps_reached=self.record_count(),
            duplicate_attempts=self.duplicate_attempts,
            restarts=self.restarts,
            created_at=datetime.fromtimestamp(self.times[QUEUED_AT], UTC),
        )


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What tests see of an instance (``Emulator.instances`` / ``Emulator.instance``).

    ``events`` lists every event received, in order, as ``(type, payload)``;
    ``duplicate_attempts`` counts creates refused (or batch items skipped) for this id.
    """

    workflow: str
    id: str
    status: Status
    trigger: TriggerSource
    params: Any
    output: Any
    error: tuple[str, str] | None
    events: tuple[tuple[str, Any], ...]
    steps_reached: int
    duplicate_attempts: int
    restarts: int
    created_at: datetime
