"""What the bridge writes to the output topic: one ``result`` per command (per batch item).

``kind`` tells the record types apart; ``state`` records (instance-state changes) are reserved
for the state stream and share the topic, keyed by instance id like results.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


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
    source: Source
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class StateRecord(_Record):
    """An observed change of an instance's status (reserved for the instance-state stream)."""

    kind: Literal["state"] = "state"
    workflow: str
    instance_id: str
    status: str
    previous_status: str | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


OutputRecord = Annotated[ResultRecord | StateRecord, Field(discriminator="kind")]
OUTPUT_ADAPTER: TypeAdapter[OutputRecord] = TypeAdapter(OutputRecord)
