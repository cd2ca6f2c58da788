"""Commands: what producers write to the command topics (contract version 1).

A command is one Kafka record whose value is a UTF-8 JSON object; ``action`` picks its shape.
Every rule the Workflows API would enforce is checked here, before any API budget is spent.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.contract import rules

CONTRACT_VERSION = 1


def _checked(what: str, max_length: int) -> AfterValidator:
    def check(value: str) -> str:
        problem = rules.name_problem(value, what=what, max_length=max_length)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _check_instance_id(value: str) -> str:
    problem = rules.instance_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A record this much under the limit cannot hold an oversized payload, and is not re-serialised.
_SURELY_SMALL = rules.MAX_PAYLOAD_BYTES // rules.SERIALISED_GROWTH


def _check_payload_size(value: JsonValue, info: ValidationInfo) -> JsonValue:
    raw_size = info.context.get("raw_size") if isinstance(info.context, dict) else None
    if isinstance(raw_size, int) and raw_size <= _SURELY_SMALL:
        return value
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > rules.MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"serialises to {size} bytes; the API allows at most {rules.MAX_PAYLOAD_BYTES}"
        )
    return value


WorkflowName = Annotated[
    str,
    Field(max_length=rules.MAX_WORKFLOW_NAME, pattern=rules.NAME_PATTERN, strict=True),
    _checked("workflow name", rules.MAX_WORKFLOW_NAME),
]
InstanceId = Annotated[
    str,
    Field(
        max_length=rules.MAX_INSTANCE_ID,
        pattern=rules.NAME_PATTERN,
        strict=True,
        description="Not `cf_` + 64 hex digits, nor `batch`, `terminate`, `terminateAll`.",
    ),
    AfterValidator(_check_instance_id),
]
EventType = Annotated[
    str,
    Field(max_length=rules.MAX_EVENT_TYPE, pattern=rules.NAME_PATTERN, strict=True),
    _checked("event type", rules.MAX_EVENT_TYPE),
]
CommandId = Annotated[str, Field(min_length=1, max_length=rules.MAX_COMMAND_ID, strict=True)]
Payload = Annotated[
    JsonValue,
    Field(description="Any JSON value; at most 1 MiB once serialised."),
    AfterValidator(_check_payload_size),
]
Retention = Annotated[
    str | int,
    Field(
        description="A duration such as `7 days`, or milliseconds.",
        union_mode="left_to_right",
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InstanceRetention(_Model):
    """How long a finished instance is kept (and so how long its id stays taken)."""

    success_retention: Retention | None = None
    error_retention: Retention | None = None

    @model_validator(mode="after")
    def _check_durations(self) -> InstanceRetention:
        for name in ("success_retention", "error_retention"):
            value = getattr(self, name)
            if isinstance(value, str) and rules.RETENTION_RE.match(value) is None:
                raise ValueError(f"{name} {value!r} does not match {rules.RETENTION_PATTERN}")
            if isinstance(value, int) and value <= 0:
                raise ValueError(f"{name} must be a positive number of milliseconds")
        return self


class _Command(_Model):
    command_id: CommandId | None = Field(
        default=None,
        description="Correlates results with the command; default `<topic>-<partition>-<offset>`.",
    )
    workflow: WorkflowName


class CreateCommand(_Command):
    """Create one instance. Without ``instance_id`` the bridge derives one from the command id."""

    action: Literal["create"]
    instance_id: InstanceId | None = None
    params: Payload | None = None
    instance_retention: InstanceRetention | None = None


class BatchItem(_Model):
    """One instance of a ``create_batch`` command."""

    instance_id: InstanceId | None = None
    params: Payload | None = None
    instance_retention: InstanceRetention | None = None


class CreateBatchCommand(_Command):
    """Create up to 100 instances; each gets its own result record."""

    action: Literal["create_batch"]
    instances: Annotated[list[BatchItem], Field(min_length=1, max_length=rules.MAX_BATCH)]

    @field_validator("instances")
    @classmethod
    def _unique_ids(cls, instances: list[BatchItem]) -> list[BatchItem]:
        seen: set[str] = set()
        for index, item in enumerate(instances):
            if item.instance_id is None:
                continue
            if item.instance_id in seen:
                raise ValueError(
                    f"[{index}].instance_id {item.instance_id!r} repeats an earlier item"
                )
            seen.add(item.instance_id)
        return instances


class _InstanceCommand(_Command):
    instance_id: InstanceId


class PauseCommand(_InstanceCommand):
    action: Literal["pause"]


class ResumeCommand(_InstanceCommand):
    action: Literal["resume"]


class TerminateCommand(_InstanceCommand):
    action: Literal["terminate"]
    rollback: bool | None = Field(default=None, strict=True)


class RestartFrom(_Model):
    """The step to restart from; earlier steps keep their cached results."""

    name: Annotated[str, Field(min_length=1, strict=True)]
    count: Annotated[int, Field(ge=1, strict=True)] | None = None
    type: Literal["do", "sleep", "waitForEvent"] | None = None


class RestartCommand(_InstanceCommand):
    action: Literal["restart"]
    from_: RestartFrom | None = Field(default=None, alias="from")


class SendEventCommand(_InstanceCommand):
    action: Literal["send_event"]
    event_type: EventType
    payload: Payload = Field(default_factory=dict)


class DeleteCommand(_InstanceCommand):
    """Stop the instance without rollback and forget it; its id can then be created again.

    Deleting an instance that does not exist (a redelivered delete) is ``ok``.
    """

    action: Literal["delete"]


class GetCommand(_InstanceCommand):
    """Publish the instance's current state (with output or error, and its steps when asked)."""

    action: Literal["get"]
    steps: bool | None = Field(
        default=None, strict=True, description="Include the step log (default: no)."
    )


Command = Annotated[
    CreateCommand
    | CreateBatchCommand
    | PauseCommand
    | ResumeCommand
    | TerminateCommand
    | RestartCommand
    | SendEventCommand
    | DeleteCommand
    | GetCommand,
    Field(discriminator="action"),
]

ACTIONS: tuple[str, ...] = (
    "create",
    "create_batch",
    "pause",
    "resume",
    "terminate",
    "restart",
    "send_event",
    "delete",
    "get",
)

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def command_to_json(command: Command) -> dict[str, Any]:
    """The wire form of ``command`` (what a producer would write)."""
    data: dict[str, Any] = command.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data
