"""What the bridge writes to the output topic: one ``result`` per command (per batch item), and
one ``state`` per observed change of an instance's status (the instance-state stream).

``kind`` tells the record types apart. Both are keyed by instance id; states go to their own
topic when ``BRIDGE_TOPICS__STATES`` is set.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter


class Outcome(StrEnum):
    """How a command ended."""

    #: The API applied the command.
    OK = "ok"
    #: A create whose instance id was already taken; ``status`` is the existing instance's.
    ALREADY_EXISTS = "already_exists"
    #: Invalid input or refused by the API (4xx); retrying the same command cannot help.
    REJECTED = "rejected"
    #: Given up after transient errors (deadline passed); the command may be replayed.
    FAILED = "failed"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorInfo(_Record):
    """Why a command was not applied."""

    type: str = Field(
        description="Error class, e.g. `ContractError`, `Conflict`, `TransportError`."
    )
    message: str
    http_status: int | None = None
    code: int | None = Field(default=None, description="Cloudflare's numeric error code.")


class Source(_Record):
    """The command record this result answers."""

    topic: str
    partition: int
    offset: int


class InstanceError(_Record):
    """Why an instance ended ``errored``, as the API reports it."""

    name: str
    message: str


class InstanceSnapshot(_Record):
    """An instance's state as ``GET /instances/{id}`` reported it, for the ``get`` command.

    The names follow the instance-state records (``status``, ``output``, ``error``,
    ``version_id``). A field too large for one Kafka record is left out and named in
    ``omitted`` (``steps`` first, then ``params``, then ``output``).
    """

    status: str
    output: JsonValue = Field(default=None, description="The workflow's output once complete.")
    error: InstanceError | None = None
    params: JsonValue = None
    version_id: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    step_count: int | None = None
    steps: list[dict[str, JsonValue]] | None = Field(
        default=None,
        description="The step log as the API gives it (names with their counter suffix); "
        "only when the command asked for `steps`.",
    )
    omitted: list[str] = Field(
        default_factory=list, description="Fields left out to keep the record under 1 MB."
    )


class ResultRecord(_Record):
    """The answer to one command (one per item of a ``create_batch``)."""

    kind: Literal["result"] = "result"
    command_id: str
    action: str | None = Field(description="The command's action; null when it could not be read.")
    workflow: str | None
    instance_id: str | None
    outcome: Outcome
    status: str | None = Field(
        description="The instance status the API reported after the action, or null."
    )
    error: ErrorInfo | None = None
    http_status: int | None = None
    cf_ray: str | None = None
    attempts: int = Field(ge=0, description="API requests made for this command.")
    instance: InstanceSnapshot | None = Field(
        default=None, description="The instance's state: set by the `get` command."
    )
    source: Source
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


#: Where a state change was learnt: a queue event, a poll of the API, or a command's own answer.
StateSource = Literal["event", "poll", "command"]


class StateRecord(_Record):
    """One observed change of an instance's status; the records of one instance form a chain."""

    kind: Literal["state"] = "state"
    workflow: str
    instance_id: str
    status: str = Field(description="The instance status, in the REST API's words.")
    previous_status: str | None = Field(
        default=None,
        description="The status of this instance's previous state record; null on its first.",
    )
    at: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When the bridge observed the change.",
    )
    event_at: datetime | None = Field(
        default=None,
        description="The source's own time of the change (event timestamp, or the instance's "
        "modified_on in a list), when it has one.",
    )
    source: StateSource = Field(
        description="`event` (Event Subscriptions queue), `poll` (list/get), `command` (the "
        "answer to one of the bridge's own calls)."
    )
    version_id: str | None = None
    output: JsonValue = Field(
        default=None, description="The instance output, on `complete` (when fetched)."
    )
    error: InstanceError | None = Field(
        default=None, description="The instance error, on `errored` (when fetched)."
    )
    inferred: bool = Field(
        default=False,
        description="A poll saw the result of a change it did not see happen: the first sighting "
        "was past `queued`, statuses in between were missed, or a `get` found where an instance "
        "that left the listed statuses ended.",
    )


OutputRecord = Annotated[ResultRecord | StateRecord, Field(discriminator="kind")]
OUTPUT_ADAPTER: TypeAdapter[OutputRecord] = TypeAdapter(OutputRecord)
