"""The pure core: commands in, API jobs out; job outcomes in, output records out.

Nothing here does I/O, so every rule of the contract's meaning (default ids, one result per
command or batch item, what goes to the dead-letter topic) is testable without a broker.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.cloudflare.bodies import create_body
from bridge.cloudflare.models import InstanceGetResponse
from bridge.contract.commands import (
    Command,
    CreateBatchCommand,
    CreateCommand,
    DeleteCommand,
    GetCommand,
    InstanceRetention,
    RestartCommand,
    SendEventCommand,
    TerminateCommand,
)
from bridge.contract.deadletter import HEADER_PREFIX, DeadLetterHeaders, dead_letter_headers
from bridge.contract.decode import salvage
from bridge.contract.results import (
    ErrorInfo,
    InstanceError,
    InstanceSnapshot,
    Outcome,
    ResultRecord,
    Source,
)
from bridge.contract.rules import MAX_COMMAND_ID, SERIALISED_GROWTH
from bridge.errors import ApiError, BridgeError, ContractError

Headers = tuple[tuple[str, bytes], ...]

#: Larger command values are not copied into the dead letter (see :func:`_dead_letter`).
MAX_DEAD_LETTER_VALUE = 1_000_000
#: A record header naming the command id, honoured over the offset-derived default: ``dlq
#: replay`` sets it so a replayed command keeps its id (and a create its derived instance id).
COMMAND_ID_HEADER = "workflows_bridge.command_id"
#: CloudEvents binary mode's event id, the command id when nothing more specific is given.
CLOUDEVENTS_ID_HEADER = "ce_id"
#: A result carrying an instance snapshot is kept under this (Kafka's default is about 1 MB).
MAX_RESULT_BYTES = 900_000
#: What a snapshot gives up, in this order, when the record would be larger than that.
_DROPPABLE = ("steps", "params", "output")


@dataclass(frozen=True, slots=True)
class Origin:
    """The command record as it was consumed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    #: The record's timestamp (ms since the epoch), for the command-age metric.
    timestamp_ms: int | None = field(default=None, compare=False)

    @property
    def default_command_id(self) -> str:
        """The id of a command without ``command_id``: the ``workflows_bridge.command_id``
        header, else the ``ce_id`` header, else ``<topic>-<partition>-<offset>``."""
        by_header = dict(self.headers)
        for name in (COMMAND_ID_HEADER, CLOUDEVENTS_ID_HEADER):
            given = by_header.get(name)
            if given:
                try:
                    text = given.decode("utf-8").strip()
                except UnicodeDecodeError:
                    continue
                if 0 < len(text) <= MAX_COMMAND_ID:
                    return text
        return f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def source(self) -> Source:
        return Source(topic=self.topic, partition=self.partition, offset=self.offset)


@dataclass(frozen=True, slots=True)
class CreateOp:
    params: Any = None
    instance_retention: dict[str, Any] | None = None
    #: An upper bound of :meth:`body`'s serialised size when one is cheap to know, else None.
    size_bound: int | None = field(default=None, compare=False)

    def body(self, instance_id: str) -> dict[str, Any]:
        """The create body the API takes, alone or as one ``/batch`` item."""
        return create_body(instance_id, self.params, self.instance_retention)


@dataclass(frozen=True, slots=True)
class StatusOp:
    status: str
    rollback: bool | None = None
    from_: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EventOp:
    event_type: str
    payload: Any


@dataclass(frozen=True, slots=True)
class DeleteOp:
    pass


@dataclass(frozen=True, slots=True)
class GetOp:
    steps: bool = False


Op = CreateOp | StatusOp | EventOp | DeleteOp | GetOp


@dataclass(frozen=True, slots=True)
class Job:
    """One API operation on one instance; a command yields one job, a batch one per item."""

    command_id: str
    action: str
    workflow: str
    instance_id: str
    op: Op
    #: Index in a ``create_batch``; None for single-instance commands.
    item: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Jobs with the same key run one after another, in offset order."""
        return (self.workflow, self.instance_id)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended, with what the API said."""

    outcome: Outcome
    status: str | None = None
    error: BridgeError | None = None
    attempts: int = 0
    http_status: int | None = None
    cf_ray: str | None = None
    #: What ``GET /instances/{id}`` answered, for a ``get`` job.
    instance: InstanceGetResponse | None = None
    #: Whether the snapshot should carry the step log.
    steps: bool = False


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to write: to the output topic or, with ``dead_letter``, to the DLQ."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    dead_letter: bool = False
    log: dict[str, Any] = field(default_factory=dict)


def derived_instance_id(command_id: str, item: int | None = None) -> str:
    """A deterministic instance id for a create without one: redelivery makes no duplicate."""
    basis = command_id if item is None else f"{command_id}#{item}"
    return "wb-" + hashlib.blake2b(basis.encode(), digest_size=16).hexdigest()


def _retention(value: InstanceRetention | None) -> dict[str, Any] | None:
    return None if value is None else value.model_dump(exclude_none=True)


def plan(
    command: Command, origin: Origin, allowed_workflows: frozenset[str] = frozenset()
) -> list[Job]:
    """The jobs that carry out ``command``; with ``allowed_workflows``, only for those."""
    if allowed_workflows and command.workflow not in allowed_workflows:
        raise ContractError(
            f"workflow: {command.workflow!r} is not one this bridge may drive "
            "(BRIDGE_CLOUDFLARE__WORKFLOWS)",
            stage="validate",
            field="workflow",
            rule="workflow_not_allowed",
        )
    command_id = command.command_id or origin.default_command_id

    def job(instance_id: str, op: Op, item: int | None = None) -> Job:
        return Job(command_id, command.action, command.workflow, instance_id, op, item)

    # A single create's body is never more than SERIALISED_GROWTH times its record, plus a
    # derived id; batches are sized exactly, item by item.
    bound = SERIALISED_GROWTH * len(origin.value or b"") + 64

    match command:
        case CreateCommand():
            instance_id = command.instance_id or derived_instance_id(command_id)
            create = CreateOp(command.params, _retention(command.instance_retention), bound)
            return [job(instance_id, create)]
        case CreateBatchCommand():
            return [
                job(
                    item.instance_id or derived_instance_id(command_id, index),
                    CreateOp(item.params, _retention(item.instance_retention)),
                    index,
                )
                for index, item in enumerate(command.instances)
            ]
        case SendEventCommand():
            return [job(command.instance_id, EventOp(command.event_type, command.payload))]
        case TerminateCommand():
            return [job(command.instance_id, StatusOp("terminate", rollback=command.rollback))]
        case RestartCommand():
            start = None if command.from_ is None else command.from_.model_dump(exclude_none=True)
            return [job(command.instance_id, StatusOp("restart", from_=start))]
        case DeleteCommand():
            return [job(command.instance_id, DeleteOp())]
        case GetCommand():
            return [job(command.instance_id, GetOp(steps=command.steps is True))]
        case _:
            return [job(command.instance_id, StatusOp(command.action))]


def error_info(error: BridgeError) -> ErrorInfo:
    api = error if isinstance(error, ApiError) else None
    return ErrorInfo(
        type=type(error).__name__,
        message=str(error),
        http_status=api.http_status if api else None,
        code=api.code if api else None,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def snapshot(answer: InstanceGetResponse, *, steps: bool, drop: int = 0) -> InstanceSnapshot:
    """The ``get`` command's view of an instance; ``drop`` leaves out the first ``drop`` fields
    of ``_DROPPABLE`` (to keep the record small enough)."""
    gone = _DROPPABLE[:drop]
    error = answer.error
    return InstanceSnapshot(
        status=answer.status,
        output=None if "output" in gone else answer.output,
        error=None if error is None else InstanceError(name=error.name, message=error.message),
        params=None if "params" in gone else answer.params,
        version_id=answer.version_id,
        queued_at=answer.queued,
        started_at=answer.start,
        ended_at=answer.end,
        step_count=answer.step_count,
        steps=[step.model_dump(mode="json", by_alias=True) for step in answer.steps]
        if steps and "steps" not in gone
        else None,
        omitted=[name for name in gone if name != "steps" or steps],
    )


def _result(job: Job, done: JobOutcome, origin: Origin, at: datetime) -> ResultRecord:
    """The result record; a snapshot too large for one record sheds fields until it fits."""
    drop = 0
    while True:
        result = ResultRecord(
            command_id=job.command_id,
            action=job.action,
            workflow=job.workflow,
            instance_id=job.instance_id,
            outcome=done.outcome,
            status=done.status,
            error=None if done.error is None else error_info(done.error),
            http_status=done.http_status,
            cf_ray=done.cf_ray,
            attempts=done.attempts,
            instance=None
            if done.instance is None
            else snapshot(done.instance, steps=done.steps, drop=drop),
            source=origin.source,
            at=at,
        )
        if done.instance is None or drop == len(_DROPPABLE):
            return result
        if len(result.model_dump_json().encode()) <= MAX_RESULT_BYTES:
            return result
        drop += 1


def records_for_job(job: Job, done: JobOutcome, origin: Origin) -> list[OutRecord]:
    """The result record of a finished job, and a dead-letter copy when it was not applied."""
    at = _now()
    result = _result(job, done, origin, at)
    log = {
        "command_id": job.command_id,
        "instance_id": job.instance_id,
        "workflow": job.workflow,
        "action": job.action,
        "outcome": done.outcome.value,
        "status": done.status,
        "attempts": done.attempts,
    }
    records = [
        OutRecord(
            job.instance_id.encode(), result.model_dump_json().encode(), origin.headers, log=log
        )
    ]
    if done.outcome in (Outcome.REJECTED, Outcome.FAILED) and done.error is not None:
        api = done.error if isinstance(done.error, ApiError) else None
        records.append(
            _dead_letter(
                origin,
                DeadLetterHeaders(
                    topic=origin.topic,
                    partition=origin.partition,
                    offset=origin.offset,
                    command_id=job.command_id,
                    stage="api",
                    class_name=type(done.error).__name__,
                    message=str(done.error),
                    outcome=done.outcome.value,
                    field=None if job.item is None else f"instances[{job.item}]",
                    http_status=api.http_status if api else None,
                    code=api.code if api else None,
                    cf_ray=api.cf_ray if api else None,
                    attempts=done.attempts,
                    at=at.isoformat(),
                ),
            )
        )
    return records


def records_for_invalid(origin: Origin, error: ContractError) -> list[OutRecord]:
    """A ``rejected`` result and a dead-letter copy for a record that is not a valid command."""
    return _unapplied(
        origin,
        None,
        Outcome.REJECTED,
        error_info(error),
        stage=error.stage,
        class_name=type(error).__name__,
        field=error.field,
        rule=error.rule,
    )


def records_for_crash(
    origin: Origin, stage: str, error: Exception, job: Job | None = None
) -> list[OutRecord]:
    """A ``failed`` result and a dead letter for a command the bridge itself failed on.

    An unexpected exception is a bug in the bridge, not in the command: answering it (rather
    than stopping) keeps one poison record from stalling its partition in a crash loop, and the
    dead letter can be replayed once the bug is fixed. ``stage`` names where it happened.
    """
    name = type(error).__name__
    info = ErrorInfo(type=name, message=f"unexpected error while {stage}: {name}: {error}")
    return _unapplied(
        origin,
        job,
        Outcome.FAILED,
        info,
        stage=stage,
        class_name=name,
        field=None if job is None or job.item is None else f"instances[{job.item}]",
    )


def _unapplied(
    origin: Origin,
    job: Job | None,
    outcome: Outcome,
    info: ErrorInfo,
    *,
    stage: str,
    class_name: str,
    field: str | None = None,
    rule: str | None = None,
) -> list[OutRecord]:
    """The result and dead letter of a command that was not applied, addressed as well as the
    job (or, without one, what can be salvaged from the record) allows."""
    known = salvage(origin.value) if job is None else {}
    command_id = job.command_id if job else known.get("command_id") or origin.default_command_id
    instance_id = job.instance_id if job else known.get("instance_id")
    at = _now()
    result = ResultRecord(
        command_id=command_id,
        action=job.action if job else known.get("action"),
        workflow=job.workflow if job else known.get("workflow"),
        instance_id=instance_id,
        outcome=outcome,
        status=None,
        error=info,
        attempts=0,
        source=origin.source,
        at=at,
    )
    key = instance_id.encode() if instance_id else origin.key
    log = {
        "command_id": command_id,
        "instance_id": instance_id,
        "action": result.action,
        "outcome": outcome.value,
        "error": info.message,
    }
    return [
        OutRecord(key, result.model_dump_json().encode(), origin.headers, log=log),
        _dead_letter(
            origin,
            DeadLetterHeaders(
                topic=origin.topic,
                partition=origin.partition,
                offset=origin.offset,
                command_id=command_id,
                stage=stage,
                class_name=class_name,
                message=info.message,
                outcome=outcome.value,
                field=field,
                rule=rule,
                at=at.isoformat(),
            ),
        ),
    ]


def _dead_letter(origin: Origin, error: DeadLetterHeaders) -> OutRecord:
    headers: list[tuple[str, bytes]] = dead_letter_headers(origin.headers, error)
    value = origin.value
    if value is not None and len(value) > MAX_DEAD_LETTER_VALUE:
        # Kafka's default record limit is about 1 MB: a copy this large could be refused by the
        # dead-letter topic and stall the bridge. The original stays in the command topic at
        # the offset the headers name.
        headers.append((HEADER_PREFIX + "value_omitted", str(len(value)).encode()))
        value = None
    return OutRecord(origin.key, value, tuple(headers), dead_letter=True)
