"""The pure translator: commands to jobs, outcomes to result and dead-letter records."""

from __future__ import annotations

import json

from bridge.cloudflare.models import InstanceGetResponse
from bridge.contract.decode import decode_command
from bridge.contract.results import OUTPUT_ADAPTER, Outcome, ResultRecord
from bridge.contract.rules import instance_id_problem
from bridge.errors import ContractError, NotFound, TransportError
from bridge.pipeline.translate import (
    MAX_RESULT_BYTES,
    CreateOp,
    DeleteOp,
    EventOp,
    GetOp,
    Job,
    JobOutcome,
    Origin,
    StatusOp,
    derived_instance_id,
    plan,
    records_for_invalid,
    records_for_job,
)

ORIGIN = Origin("cmds", 2, 41, b"k", b'{"x":1}', (("trace", b"abc"),))


def _plan(data: dict[str, object]) -> list:  # type: ignore[type-arg]
    return plan(decode_command(json.dumps(data).encode()), ORIGIN)


def test_derived_ids_are_deterministic_valid_and_distinct() -> None:
    first = derived_instance_id("c-1")
    assert first == derived_instance_id("c-1")
    assert first != derived_instance_id("c-2")
    assert derived_instance_id("c-1", 0) != derived_instance_id("c-1", 1)
    assert instance_id_problem(first) is None


def test_create_without_id_uses_the_default_command_id() -> None:
    [job] = _plan({"action": "create", "workflow": "w", "params": {"a": 1}})
    assert job.command_id == "cmds-2-41"
    assert job.instance_id == derived_instance_id("cmds-2-41")
    assert job.op == CreateOp({"a": 1}, None)
    assert job.op.body(job.instance_id) == {"instance_id": job.instance_id, "params": {"a": 1}}


def test_batch_plans_one_job_per_item() -> None:
    jobs = _plan(
        {
            "action": "create_batch",
            "workflow": "w",
            "command_id": "b",
            "instances": [
                {"instance_id": "x"},
                {"instance_retention": {"success_retention": "1 day"}},
            ],
        }
    )
    assert [j.item for j in jobs] == [0, 1]
    assert jobs[0].instance_id == "x"
    assert jobs[1].instance_id == derived_instance_id("b", 1)
    assert jobs[1].op == CreateOp(None, {"success_retention": "1 day"})


def test_status_and_event_jobs() -> None:
    [terminate] = _plan(
        {"action": "terminate", "workflow": "w", "instance_id": "i", "rollback": True}
    )
    assert terminate.op == StatusOp("terminate", rollback=True)
    [restart] = _plan(
        {"action": "restart", "workflow": "w", "instance_id": "i", "from": {"name": "s"}}
    )
    assert restart.op == StatusOp("restart", from_={"name": "s"})
    [pause] = _plan({"action": "pause", "workflow": "w", "instance_id": "i"})
    assert pause.op == StatusOp("pause")
    [event] = _plan(
        {"action": "send_event", "workflow": "w", "instance_id": "i", "event_type": "e"}
    )
    assert event.op == EventOp("e", {})
    assert event.key == ("w", "i")


def test_ok_result_has_no_dead_letter_and_keeps_headers() -> None:
    [job] = _plan({"action": "pause", "workflow": "w", "instance_id": "i", "command_id": "c"})
    [record] = records_for_job(
        job, JobOutcome(Outcome.OK, "paused", attempts=1, http_status=200, cf_ray="r"), ORIGIN
    )
    assert record.key == b"i"
    assert record.headers == ORIGIN.headers
    result = OUTPUT_ADAPTER.validate_json(record.value or b"")
    assert isinstance(result, ResultRecord)
    assert (result.outcome, result.status, result.attempts, result.cf_ray) == (
        Outcome.OK,
        "paused",
        1,
        "r",
    )
    assert (result.source.topic, result.source.partition, result.source.offset) == ("cmds", 2, 41)


def test_rejected_and_failed_results_are_dead_lettered() -> None:
    jobs = _plan(
        {
            "action": "create_batch",
            "workflow": "w",
            "instances": [{"instance_id": "a"}, {"instance_id": "b"}],
        }
    )
    error = NotFound("GET …: HTTP 404: not found", http_status=404, code=10400, cf_ray="ray")
    _result, dead = records_for_job(
        jobs[1], JobOutcome(Outcome.REJECTED, None, error, 1, 404, "ray"), ORIGIN
    )
    assert dead.dead_letter
    assert (dead.key, dead.value) == (ORIGIN.key, ORIGIN.value)
    headers = dict(dead.headers)
    assert headers["trace"] == b"abc"
    assert headers["workflows_bridge.errors.class_name"] == b"NotFound"
    assert headers["workflows_bridge.errors.field"] == b"instances[1]"
    assert headers["workflows_bridge.errors.code"] == b"10400"
    assert headers["workflows_bridge.errors.offset"] == b"41"
    failed = records_for_job(
        jobs[0], JobOutcome(Outcome.FAILED, None, TransportError("timed out"), 7), ORIGIN
    )
    assert len(failed) == 2
    assert json.loads(failed[0].value or b"")["error"]["type"] == "TransportError"


def test_invalid_record_gets_result_and_dead_letter() -> None:
    origin = Origin(
        "cmds", 0, 5, b"key", b'{"action":"pause","workflow":"w","instance_id":"bad id"}'
    )
    try:
        decode_command(origin.value)
    except ContractError as exc:
        result, dead = records_for_invalid(origin, exc)
    else:
        raise AssertionError("the command is invalid")
    body = json.loads(result.value or b"")
    assert body["outcome"] == "rejected"
    assert body["instance_id"] == "bad id"
    assert body["command_id"] == "cmds-0-5"
    assert result.key == b"bad id"
    assert dead.value == origin.value
    headers = dict(dead.headers)
    assert headers["workflows_bridge.errors.field"] == b"instance_id"
    assert headers["workflows_bridge.errors.stage"] == b"validate"


def test_command_id_header_wins_over_the_offset_and_ce_id() -> None:
    create = decode_command(b'{"action": "create", "workflow": "w"}')
    replayed = Origin(
        "cmds", 0, 900, None, b"", (("ce_id", b"event-7"), ("workflows_bridge.command_id", b"c-1"))
    )
    [job] = plan(create, replayed)
    assert job.command_id == "c-1"
    assert job.instance_id == derived_instance_id("c-1")
    [cloud_event] = plan(create, Origin("cmds", 0, 901, None, b"", (("ce_id", b"event-7"),)))
    assert cloud_event.command_id == "event-7"
    [plain] = plan(create, Origin("cmds", 0, 902, None, b"", (("ce_id", b""),)))
    assert plain.command_id == "cmds-0-902"
    explicit = decode_command(b'{"action": "create", "workflow": "w", "command_id": "mine"}')
    [own] = plan(explicit, replayed)
    assert own.command_id == "mine"


def test_workflow_outside_the_allow_list_is_rejected_before_any_request() -> None:
    value = b'{"action": "terminate", "workflow": "payroll", "instance_id": "i"}'
    origin = Origin("cmds", 2, 41, b"i", value)
    command = decode_command(value)
    assert plan(command, origin, frozenset())  # empty: any workflow
    assert plan(command, origin, frozenset({"payroll"}))
    try:
        plan(command, origin, frozenset({"orders"}))
    except ContractError as exc:
        error = exc
    else:
        raise AssertionError("planned a job for a workflow outside the allow-list")
    assert (error.field, error.rule, error.stage) == (
        "workflow",
        "workflow_not_allowed",
        "validate",
    )
    result, dead = records_for_invalid(origin, error)
    answer = json.loads(result.value or b"")
    assert answer["outcome"] == "rejected"
    assert (answer["workflow"], answer["instance_id"]) == ("payroll", "i")
    headers = dict(dead.headers)
    assert headers["workflows_bridge.errors.rule"] == b"workflow_not_allowed"
    # The dead letter names the command id, so a replay keeps it.
    assert headers["workflows_bridge.errors.command_id"] == b"cmds-2-41"


def test_delete_and_get_jobs() -> None:
    [delete] = _plan({"action": "delete", "workflow": "w", "instance_id": "i"})
    assert (delete.action, delete.key, delete.op) == ("delete", ("w", "i"), DeleteOp())
    [plain] = _plan({"action": "get", "workflow": "w", "instance_id": "i"})
    [detailed] = _plan({"action": "get", "workflow": "w", "instance_id": "i", "steps": True})
    assert (plain.op, detailed.op) == (GetOp(steps=False), GetOp(steps=True))


def _state(**fields: object) -> InstanceGetResponse:
    base: dict[str, object] = {
        "status": "complete",
        "queued": "2026-11-29T06:40:46.512Z",
        "end": "2026-11-29T06:40:47.000Z",
        "params": {"p": 1},
        "output": {"done": True},
        "error": None,
        "versionId": "v-1",
        "step_count": 2,
        "steps": [
            {"type": "step", "name": "prepare-1", "success": True, "output": 1, "attempts": []},
            {"type": "waitForEvent", "name": "approval-1", "finished": True, "output": {"a": 1}},
        ],
    }
    return InstanceGetResponse.model_validate(base | fields)


def _get_result(state: InstanceGetResponse, *, steps: bool) -> dict[str, object]:
    job = Job("g", "get", "w", "i", GetOp(steps=steps))
    done = JobOutcome(Outcome.OK, state.status, attempts=1, instance=state, steps=steps)
    [record] = records_for_job(job, done, ORIGIN)
    assert not record.dead_letter
    assert record.value is not None
    parsed = OUTPUT_ADAPTER.validate_json(record.value)
    assert isinstance(parsed, ResultRecord)
    value: dict[str, object] = json.loads(record.value)
    return value


def test_get_publishes_the_instance_snapshot() -> None:
    with_steps = _get_result(_state(), steps=True)
    assert with_steps["status"] == "complete"
    snapshot = with_steps["instance"]
    assert isinstance(snapshot, dict)
    assert snapshot["output"] == {"done": True}
    assert snapshot["params"] == {"p": 1}
    assert snapshot["version_id"] == "v-1"
    assert snapshot["queued_at"] == "2026-11-29T06:40:46.512000Z"
    assert snapshot["started_at"] is None
    assert [s["name"] for s in snapshot["steps"]] == ["prepare-1", "approval-1"]
    assert snapshot["omitted"] == []
    without = _get_result(_state(), steps=False)["instance"]
    assert isinstance(without, dict)
    assert without["steps"] is None
    failed = _get_result(
        _state(status="errored", output=None, error={"name": "Error", "message": "boom"}),
        steps=False,
    )["instance"]
    assert isinstance(failed, dict)
    assert failed["error"] == {"name": "Error", "message": "boom"}


def test_a_snapshot_too_large_for_one_record_sheds_steps_then_params_then_output() -> None:
    big = "x" * 400_000
    many_steps = [
        {"type": "step", "name": f"s-{n}", "success": True, "output": big[:1000], "attempts": []}
        for n in range(1000)
    ]
    shed_steps = _get_result(_state(steps=many_steps), steps=True)
    assert len(json.dumps(shed_steps)) <= MAX_RESULT_BYTES
    snapshot = shed_steps["instance"]
    assert isinstance(snapshot, dict)
    assert (snapshot["steps"], snapshot["omitted"]) == (None, ["steps"])
    assert snapshot["params"] == {"p": 1}

    shed_all = _get_result(
        _state(steps=many_steps, params={"big": big}, output={"big": big * 3}), steps=True
    )
    snapshot = shed_all["instance"]
    assert isinstance(snapshot, dict)
    assert snapshot["omitted"] == ["steps", "params", "output"]
    assert (snapshot["params"], snapshot["output"]) == (None, None)
    assert snapshot["status"] == "complete"
