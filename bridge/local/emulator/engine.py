"""The instance state machine: steps run on event-loop timers, one timer per live instance.

Life of an instance (statuses as the REST API reports them)::

    queued ──start──▶ running (step.do attempt) ──▶ … ──▶ complete
                      waiting (sleep, retry back-off, waitForEvent)   errored
                      waitingForPause ─(attempt ends)─▶ paused        terminated

- *pause*: ``running`` → ``waitingForPause`` until the in-flight attempt ends, then ``paused``;
  ``waiting`` → ``paused`` at once, keeping the time left on the sleep, back-off or timeout.
  A no-op on ``queued``, ``paused``, ``waitingForPause`` and final instances.
- *resume*: ``paused`` → carries on where it stopped, or ``queued`` while the workflow's
  concurrency bound is full; ``waitingForPause`` → ``running`` (the pause is cancelled);
  a no-op otherwise.
- *terminate*: any live status → ``terminated``; a final instance → 409.
- *restart*: any status → ``queued``, then runs from scratch (or from the step named in
  ``from``, keeping the history before it). Events consumed by forgotten steps are spent.
- *delete*: any status; the instance stops at once (no rollback) and is forgotten, so its id
  can be created again.
- *terminate all*: a job per workflow that, ``terminate_all_seconds`` after it was started,
  terminates every live instance (of one status, if asked); one job at a time.
- *events*: kept per type, oldest first, until a ``waitForEvent`` of that type takes one, also
  when sent before the step is reached or while paused; final instances record and ignore them.

Nothing here uses a task: every pending step is an ``asyncio.TimerHandle`` on the instance, so
an instance with nothing left to do costs no scheduler resources.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.contract.rules import Status
from bridge.local.emulator import problems
from bridge.local.emulator.config import DoStep, EmulatorConfig, SleepStep, WaitForEventStep
from bridge.local.emulator.instance import (
    ACTIVE,
    ENDED_AT,
    FINAL,
    MODIFIED_AT,
    STARTED_AT,
    Instance,
    Phase,
    TriggerSource,
)

FATAL_NAME = "WorkflowFatalError"
FATAL_MESSAGE = (
    "The execution of the Workflow instance was terminated, as a step threw an "
    "NonRetryableError and it was not handled"
)
StepType = Literal["do", "sleep", "waitForEvent"]
_KIND_TYPES: dict[str, StepType] = {"do": "do", "sleep": "sleep", "wait_for_event": "waitForEvent"}


class LifecycleObserver(Protocol):
    """Told of every workflow, status change and retried step error (Event Subscriptions)."""

    def flow_created(self, workflow: str) -> None: ...

    def status_changed(
        self, inst: Instance, version_id: str, old: str | None, new: str, at: float
    ) -> None: ...

    def step_errored(self, inst: Instance, version_id: str, at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class StepRef:
    """The ``from`` of a restart: the ``count``-th step called ``name`` (of ``type``)."""

    name: str
    count: int = 1
    type: StepType | None = None


class Flow:
    """One workflow's instances, in creation order, and its concurrency bookkeeping."""

    __slots__ = (
        "active",
        "deleted",
        "id",
        "instances",
        "name",
        "order",
        "pump_pending",
        "queue",
        "terminator",
        "version_id",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"workflows-emulator:{name}"))
        self.version_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"workflows-emulator:{name}:v1"))
        self.instances: dict[str, Instance] = {}
        self.order: list[Instance] = []
        self.queue: deque[Instance] = deque()
        self.active = 0
        self.pump_pending = False
        #: How many instances of ``order`` were deleted (0 keeps listing on its fast path).
        self.deleted = 0
        #: The running "terminate all" job, if any.
        self.terminator: asyncio.TimerHandle | None = None


class Engine:
    """Owns every instance and moves it through its behaviour's steps."""

    def __init__(
        self,
        config: EmulatorConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Callable[[], float] = time.time,
        observer: LifecycleObserver | None = None,
    ) -> None:
        self._config = config
        self._loop = loop
        self._clock = clock
        self._observer = observer
        self._flows: dict[str, Flow] = {}
        self._ids = random.Random(config.seed)
        self._watchers: list[tuple[Instance, frozenset[str], asyncio.Future[None]]] = []

    # -- lookups -----------------------------------------------------------------------------

    def flow(self, workflow: str) -> Flow:
        """The workflow's state; 404 when the configuration does not know the name."""
        if self._config.behaviour_for(workflow) is None:
            raise problems.workflow_not_found()
        found = self._flows.get(workflow)
        if found is None:
            found = self._flows[workflow] = Flow(workflow)
            if self._observer is not None:
                self._observer.flow_created(workflow)
        return found

    def known_flow(self, workflow: str) -> Flow | None:
        """The workflow's state if it ever had an instance (no configuration check)."""
        return self._flows.get(workflow)

    def instance(self, workflow: str, instance_id: str) -> Instance:
        """The instance; 404 for an unknown workflow or id."""
        found = self.flow(workflow).instances.get(instance_id)
        if found is None:
            raise problems.instance_not_found()
        return found

    def new_id(self) -> str:
        """An instance id for a create without one (a seeded UUID4)."""
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    # -- creation ----------------------------------------------------------------------------

    def create(
        self, flow: Flow, items: Iterable[tuple[str, Any]], trigger: TriggerSource = "api"
    ) -> list[Instance]:
        """Create instances from ``(id, params)`` pairs whose ids are known to be free."""
        behaviour = self._config.behaviour_for(flow.name) or self._config.default_behaviour
        now = self._clock()
        created = []
        for instance_id, params in items:
            inst = Instance(flow.name, instance_id, params, behaviour, now, trigger=trigger)
            flow.instances[instance_id] = inst
            flow.order.append(inst)
            flow.queue.append(inst)
            created.append(inst)
            if self._observer is not None:
                self._observer.status_changed(inst, flow.version_id, None, "queued", now)
        self._schedule_pump(flow)
        return created

    # -- actions -----------------------------------------------------------------------------

    def pause(self, inst: Instance) -> Status:
        if inst.status == "running":
            self._set_status(inst, "waitingForPause")
        elif inst.status == "waiting":
            inst.remaining = self._disarm(inst)
            self._set_status(inst, "paused")
        return inst.status

    def resume(self, inst: Instance) -> Status:
        if inst.status == "waitingForPause":
            self._set_status(inst, "running")
        elif inst.status == "paused":
            flow = self._flows[inst.workflow]
            if self._has_room(flow):
                self._continue(inst)
            else:
                self._set_status(inst, "queued")
                flow.queue.append(inst)
        return inst.status

    def terminate(self, inst: Instance) -> Status:
        if inst.status in FINAL:
            raise problems.not_restartable()
        self._disarm(inst)
        self._finish(inst, "terminated")
        return inst.status

    def restart(self, inst: Instance, keep: int = 0) -> Status:
        """Run again from step ``keep`` (see ``step_index``); 0 means from scratch."""
        self._disarm(inst)
        self._set_status(inst, "queued")
        behaviour = self._config.behaviour_for(inst.workflow)
        if keep == 0 and behaviour is not None:
            inst.behaviour = behaviour
        inst.reset(self._clock(), keep_steps=keep)
        inst.restarts += 1
        flow = self._flows[inst.workflow]
        flow.queue.append(inst)
        self._schedule_pump(flow)
        return inst.status

    def terminate_many(self, flow: Flow, instance_ids: Iterable[str]) -> int:
        """Terminate each live instance named (once); returns how many were terminated."""
        terminated = 0
        for instance_id in dict.fromkeys(instance_ids):
            inst = flow.instances.get(instance_id)
            if inst is not None and inst.status not in FINAL:
                self.terminate(inst)
                terminated += 1
        return terminated

    def delete(self, inst: Instance) -> None:
        """Stop the instance without rollback and forget it; its id is free again."""
        flow = self._flows[inst.workflow]
        self._disarm(inst)
        if inst.status in ACTIVE:
            flow.active -= 1
            if flow.queue:
                self._schedule_pump(flow)
        del flow.instances[inst.id]
        inst.deleted = True
        inst.phase = Phase.IDLE
        flow.deleted += 1

    def start_terminate_all(self, flow: Flow, status: str | None) -> bool:
        """Start the workflow's "terminate all" job; False when one is running already."""
        if flow.terminator is not None:
            return False
        flow.terminator = self._loop.call_later(
            self._config.terminate_all_seconds, self._terminate_all, flow, status
        )
        return True

    def _terminate_all(self, flow: Flow, status: str | None) -> None:
        flow.terminator = None
        for inst in list(flow.instances.values()):
            if inst.status not in FINAL and (status is None or inst.status == status):
                self.terminate(inst)

    def send_event(self, inst: Instance, event_type: str, payload: Any) -> None:
        final = inst.status in FINAL
        inst.add_event(event_type, payload, self._clock(), buffered=not final)
        if inst.status == "waiting" and inst.phase is Phase.WAIT:
            step = inst.behaviour.steps[inst.position]
            if isinstance(step, WaitForEventStep) and step.event_type == event_type:
                inst.take_event(event_type, inst.position)
                self._disarm(inst)
                self._step_done(inst)

    # -- observation -------------------------------------------------------------------------

    async def wait_for(self, inst: Instance, statuses: Iterable[str]) -> None:
        """Return once ``inst`` reports one of ``statuses`` (bound it with ``asyncio.timeout``)."""
        wanted = frozenset(statuses)
        if inst.status in wanted:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        watcher = (inst, wanted, future)
        self._watchers.append(watcher)
        try:
            await future
        finally:
            self._watchers.remove(watcher)

    def close(self) -> None:
        """Cancel every pending timer; the engine does nothing more afterwards."""
        for flow in self._flows.values():
            flow.queue.clear()
            if flow.terminator is not None:
                flow.terminator.cancel()
                flow.terminator = None
            for inst in flow.order:
                if inst.timer is not None:
                    inst.timer.cancel()
                    inst.timer = None

    # -- scheduling --------------------------------------------------------------------------

    def _has_room(self, flow: Flow) -> bool:
        behaviour = self._config.behaviour_for(flow.name)
        limit = None if behaviour is None else behaviour.concurrency
        return limit is None or flow.active < limit

    def _schedule_pump(self, flow: Flow) -> None:
        if not flow.pump_pending:
            flow.pump_pending = True
            self._loop.call_soon(self._pump, flow)

    def _pump(self, flow: Flow) -> None:
        """Start queued instances while the concurrency bound allows."""
        flow.pump_pending = False
        while flow.queue and self._has_room(flow):
            inst = flow.queue.popleft()
            if inst.status != "queued" or inst.deleted:
                continue  # terminated, deleted, restarted (and queued again) or started
            if math.isnan(inst.times[STARTED_AT]):
                inst.stamp(STARTED_AT, self._clock())
            self._continue(inst)

    def _arm(self, inst: Instance, seconds: float, callback: Callable[[Instance], None]) -> None:
        inst.due = self._loop.time() + seconds
        inst.timer = self._loop.call_later(seconds, callback, inst)

    def _disarm(self, inst: Instance) -> float:
        """Cancel the instance's timer; returns the seconds it had left (inf: no timer)."""
        if inst.timer is None:
            return math.inf
        inst.timer.cancel()
        inst.timer = None
        return max(0.0, inst.due - self._loop.time())

    def _set_status(self, inst: Instance, status: Status) -> None:
        old = inst.status
        if old == status:
            return
        inst.status = status
        now = self._clock()
        inst.stamp(MODIFIED_AT, now)
        flow = self._flows[inst.workflow]
        if self._observer is not None:
            self._observer.status_changed(inst, flow.version_id, old, status, now)
        if old in ACTIVE and status not in ACTIVE:
            flow.active -= 1
            if flow.queue:
                self._schedule_pump(flow)
        elif status in ACTIVE and old not in ACTIVE:
            flow.active += 1
        for watched, wanted, future in self._watchers:
            if watched is inst and status in wanted and not future.done():
                future.set_result(None)

    # -- step machinery ----------------------------------------------------------------------

    def _continue(self, inst: Instance) -> None:
        """Carry on from ``inst.phase`` with ``inst.remaining`` seconds (start or resume)."""
        phase = inst.phase
        if phase is Phase.IDLE:
            self._enter_step(inst)
        elif phase is Phase.BACKOFF:
            self._set_status(inst, "waiting")
            self._arm(inst, inst.remaining, self._begin_attempt)
        elif phase is Phase.SLEEP:
            self._set_status(inst, "waiting")
            self._arm(inst, inst.remaining, self._step_done)
        elif phase is Phase.WAIT:
            self._set_status(inst, "waiting")
            self._await_event(inst)

    def _enter_step(self, inst: Instance) -> None:
        steps = inst.behaviour.steps
        if inst.position >= len(steps):
            self._finish(inst, "complete")
            return
        step = steps[inst.position]
        inst.open_record(self._clock())
        if isinstance(step, DoStep):
            self._begin_attempt(inst)
        elif isinstance(step, SleepStep):
            inst.phase = Phase.SLEEP
            self._set_status(inst, "waiting")
            self._arm(inst, step.duration_ms / 1000, self._step_done)
        else:
            inst.phase = Phase.WAIT
            inst.remaining = math.inf if step.timeout_ms is None else step.timeout_ms / 1000
            self._set_status(inst, "waiting")
            self._await_event(inst)

    def _await_event(self, inst: Instance) -> None:
        step = inst.behaviour.steps[inst.position]
        assert isinstance(step, WaitForEventStep)
        if inst.take_event(step.event_type, inst.position) is not None:
            self._step_done(inst)
        elif math.isfinite(inst.remaining):
            self._arm(inst, inst.remaining, self._wait_timed_out)

    def _begin_attempt(self, inst: Instance) -> None:
        inst.timer = None
        step = inst.behaviour.steps[inst.position]
        assert isinstance(step, DoStep)
        inst.phase = Phase.ATTEMPT
        inst.open_attempt(self._clock())
        self._set_status(inst, "running")
        self._arm(inst, step.duration_ms / 1000, self._attempt_done)

    def _attempt_done(self, inst: Instance) -> None:
        inst.timer = None
        now = self._clock()
        inst.close_attempt(now)
        step = inst.behaviour.steps[inst.position]
        assert isinstance(step, DoStep)
        attempts = int(inst.times[inst.record_at + 2])
        if attempts <= step.transient_failures:
            if attempts > step.retry_limit:
                inst.close_record(now)
                self._fail(inst, ("Error", step.error_message))
                return
            inst.phase = Phase.BACKOFF
            if self._observer is not None:
                self._observer.step_errored(inst, self._flows[inst.workflow].version_id, now)
            if inst.status == "waitingForPause":
                inst.remaining = step.retry_delay_ms / 1000
                self._set_status(inst, "paused")
            else:
                self._set_status(inst, "waiting")
                self._arm(inst, step.retry_delay_ms / 1000, self._begin_attempt)
        elif step.fail:
            inst.close_record(now)
            self._fail(inst, (FATAL_NAME, FATAL_MESSAGE))
        else:
            self._step_done(inst)

    def _step_done(self, inst: Instance) -> None:
        inst.timer = None
        inst.close_record(self._clock())
        inst.position += 1
        inst.phase = Phase.IDLE
        if inst.status == "waitingForPause":
            self._set_status(inst, "paused")
        else:
            self._enter_step(inst)

    def _wait_timed_out(self, inst: Instance) -> None:
        inst.timer = None
        step = inst.behaviour.steps[inst.position]
        assert isinstance(step, WaitForEventStep)
        inst.close_record(self._clock())
        message = f"WorkflowTimeoutError: Execution timed out after {step.timeout_ms:g}ms"
        self._fail(inst, ("Error", message))

    def _fail(self, inst: Instance, error: tuple[str, str]) -> None:
        inst.error = error
        self._finish(inst, "errored")

    def _finish(self, inst: Instance, status: Status) -> None:
        inst.phase = Phase.IDLE
        inst.stamp(ENDED_AT, self._clock())
        self._set_status(inst, status)

    def step_index(self, inst: Instance, ref: StepRef) -> int:
        """Index of the step ``ref`` names among the steps reached; 400 when it is not there."""
        seen = 0
        steps: Sequence[DoStep | SleepStep | WaitForEventStep] = inst.behaviour.steps
        for index in range(min(inst.record_count(), len(steps))):
            step = steps[index]
            if step.name == ref.name and ref.type in (None, _KIND_TYPES[step.kind]):
                seen += 1
                if seen == ref.count:
                    return index
        raise problems.invalid(f'Step "{ref.name}" not found in execution history')
