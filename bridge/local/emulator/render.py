"""JSON shapes of instances, as the SDK's models (``cloudflare`` 5.9.0) expect them.

- ``create_result``: ``InstanceCreateResponse`` / ``InstanceBulkResponse``;
- ``list_item``: ``InstanceListResponse``;
- ``get_result``: ``InstanceGetResponse`` (note ``versionId`` in camelCase), with the step log
  rebuilt from the instance's compact history;
- ``step_result``: ``InstanceStepResponse``, one step's full output (``GET …/step``).

Step names carry production's counter suffix: the *n*-th ``step.do`` called ``prepare`` is
``prepare-n`` (counted per kind and name, and for sleeps per duration too, as Cloudflare's engine
counts them), and ``…/step?name=prepare-1`` finds it.

Timestamps are ISO 8601 in UTC with millisecond precision and a ``Z``. Step and workflow outputs
are the JSON values themselves (the SDK types them ``str``; it does not enforce that). A
``waitForEvent`` step's output is the event it consumed, ``{"type", "payload", "timestamp"}``,
which is what ``step.waitForEvent`` hands the workflow and what Cloudflare's local engine records.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.local.emulator import problems
from bridge.local.emulator.config import DoStep, SleepStep, Step, WaitForEventStep
from bridge.local.emulator.engine import FATAL_NAME, Flow
from bridge.local.emulator.instance import ENDED_AT, MODIFIED_AT, QUEUED_AT, STARTED_AT, Instance

Json = dict[str, Any]

#: What the emulator reports as every ``do`` step's timeout (it never enforces one).
STEP_TIMEOUT = "10 minutes"


def iso(stamp: float | None) -> str | None:
    """``2026-11-29T06:33:00.123Z`` for a wall-clock time, None for None."""
    if stamp is None or math.isnan(stamp):
        return None
    moment = datetime.fromtimestamp(stamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time, formatted like every other timestamp."""
    text = iso(datetime.now(UTC).timestamp())
    assert text is not None
    return text


def create_result(inst: Instance, flow: Flow) -> Json:
    return {
        "id": inst.id,
        "status": inst.status,
        "version_id": flow.version_id,
        "workflow_id": flow.id,
        "trigger_source": inst.trigger,
    }


def list_item(inst: Instance, flow: Flow) -> Json:
    return {
        "id": inst.id,
        "created_on": iso(inst.times[QUEUED_AT]),
        "modified_on": iso(inst.times[MODIFIED_AT]),
        "started_on": iso(inst.times[STARTED_AT]),
        "ended_on": iso(inst.times[ENDED_AT]),
        "status": inst.status,
        "version_id": flow.version_id,
        "workflow_id": flow.id,
        "trigger_source": inst.trigger,
    }


def get_result(inst: Instance, flow: Flow, *, simple: bool, descending: bool) -> Json:
    steps = _steps(inst)
    if descending:
        steps.reverse()
    status = inst.status
    result: Json = {
        "status": status,
        "queued": iso(inst.times[QUEUED_AT]),
        "start": iso(inst.times[STARTED_AT]),
        "end": iso(inst.times[ENDED_AT]),
        "params": inst.params,
        "output": inst.output(),
        "error": None if inst.error is None else _error(*inst.error),
        "success": True if status == "complete" else False if status == "errored" else None,
        "trigger": {"source": inst.trigger},
        "versionId": flow.version_id,
        "step_count": len(steps),
        "steps": [] if simple else steps,
        "rollback": None,
        "schedule": None,
    }
    if simple:
        del result["steps"]
    return result


def _error(name: str, message: str) -> Json:
    return {"name": name, "message": message}


def step_labels(steps: Sequence[Step]) -> list[str]:
    """Each step's name as the step log shows it: ``<name>-<n>``, counted per kind and name."""
    seen: Counter[tuple[str, str, float]] = Counter()
    labels = []
    for step in steps:
        duration = step.duration_ms if isinstance(step, SleepStep) else 0.0
        key = (step.kind, step.name, duration)
        seen[key] += 1
        labels.append(f"{step.name}-{seen[key]}")
    return labels


def step_result(inst: Instance, name: str, step_type: str, attempt: int | None) -> Json:
    """The ``/step`` answer for the step labelled ``name`` of ``step_type`` (``step`` or
    ``waitForEvent``), or for one ``attempt`` of a ``step``; 404 when there is none."""
    behaviour_steps = inst.behaviour.steps
    records = list(inst.records())
    kind = "do" if step_type == "step" else "wait_for_event"
    labels = step_labels(behaviour_steps)
    index = next(
        (i for i in range(len(records)) if labels[i] == name and behaviour_steps[i].kind == kind),
        None,
    )
    if index is None:
        raise problems.step_not_found(name, step_type)
    step, record = behaviour_steps[index], records[index]
    failed = inst.status == "errored" and index == len(records) - 1
    if isinstance(step, WaitForEventStep):
        event = inst.consumed_by(index)
        if event is not None:
            status, output, error = "complete", event.payload, None
        elif failed and inst.error is not None:
            status, output, error = "errored", None, _error(*inst.error)
        else:
            status, output, error = "waiting", None, None
        return {"status": status, "error": error, "output": output, "event_type": step.event_type}
    assert isinstance(step, DoStep)
    if attempt is not None:
        if not 1 <= attempt <= len(record.attempts):
            raise problems.step_not_found(f"{name} attempt {attempt}", step_type)
        shown = _attempt(step, attempt - 1, *record.attempts[attempt - 1])
        if shown["success"] is None:
            return {"status": "running", "error": None, "output": None}
        if shown["success"]:
            return {"status": "complete", "error": None, "output": step.output}
        return {"status": "errored", "error": shown["error"], "output": None}
    if record.end is not None:
        if failed:
            return {
                "status": "errored",
                "error": _error(*inst.error or ("Error", "")),
                "output": None,
            }
        return {"status": "complete", "error": None, "output": step.output}
    # In flight: a failed earlier attempt means the step is being retried.
    retried = len(record.attempts) > 1 or (
        len(record.attempts) == 1 and record.attempts[0][1] is not None
    )
    error = _error("Error", step.error_message) if retried else None
    return {"status": "running", "error": error, "output": None}


def _steps(inst: Instance) -> list[Json]:
    behaviour_steps = inst.behaviour.steps
    labels = step_labels(behaviour_steps)
    records = list(inst.records())
    failed_at = len(records) - 1 if inst.status == "errored" else -1
    rendered: list[Json] = []
    for index, record in enumerate(records):
        step = behaviour_steps[index]
        failed = index == failed_at
        start, end = record.start, record.end
        if isinstance(step, DoStep):
            attempts = [
                _attempt(step, n, a_start, a_end)
                for n, (a_start, a_end) in enumerate(record.attempts)
            ]
            success = None if end is None else not failed
            rendered.append(
                {
                    "type": "step",
                    "name": labels[index],
                    "start": iso(start),
                    "end": iso(end),
                    "success": success,
                    "output": step.output if success else None,
                    "attempts": attempts,
                    "config": {
                        "retries": {
                            "limit": step.retry_limit,
                            "delay": step.retry_delay_ms,
                            "backoff": "constant",
                        },
                        "timeout": STEP_TIMEOUT,
                    },
                }
            )
        elif isinstance(step, SleepStep):
            rendered.append(
                {
                    "type": "sleep",
                    "name": labels[index],
                    "start": iso(start),
                    "end": iso(start + step.duration_ms / 1000 if end is None else end),
                    "finished": end is not None,
                    "error": None,
                }
            )
        else:
            rendered.append(
                _wait(
                    inst,
                    index=index,
                    label=labels[index],
                    step=step,
                    start=start,
                    end=end,
                    failed=failed,
                )
            )
    if inst.status == "terminated":
        rendered.append({"type": "termination", "trigger": {"source": "api"}})
    return rendered


def _attempt(step: DoStep, number: int, start: float, end: float | None) -> Json:
    if end is None:
        success, error = None, None
    elif number < step.transient_failures:
        success, error = False, _error("Error", step.error_message)
    elif step.fail:
        success, error = False, _error(FATAL_NAME, step.error_message)
    else:
        success, error = True, None
    return {"start": iso(start), "end": iso(end), "success": success, "error": error}


def _wait(
    inst: Instance,
    *,
    index: int,
    label: str,
    step: WaitForEventStep,
    start: float,
    end: float | None,
    failed: bool,
) -> Json:
    event = inst.consumed_by(index)
    planned = start if step.timeout_ms is None else start + step.timeout_ms / 1000
    return {
        "type": "waitForEvent",
        "name": label,
        "start": iso(start),
        "end": iso(planned if end is None else end),
        "finished": event is not None,
        "error": _error(*inst.error) if failed and inst.error is not None else None,
        "event_type": step.event_type,
        "output": None
        if event is None
        else {"type": event.type, "payload": event.payload, "timestamp": iso(event.at)},
    }
