"""Typed results of the Workflows instances API, shaped like the official SDK's models.

Parsing is tolerant where production drifts (unknown statuses, extra fields) and strict where a
wrong shape would mislead the bridge (ids and statuses must be present).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.contract.rules import FINAL_STATUSES, INSTANCE_STATUSES

__all__ = ["FINAL_STATUSES", "INSTANCE_STATUSES"]


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class ErrorInfo(_ApiModel):
    name: str
    message: str


class InstanceCreateResponse(_ApiModel):
    id: str
    status: str
    version_id: str | None = None
    workflow_id: str | None = None
    trigger_source: str | None = None


class InstanceBulkResponse(InstanceCreateResponse):
    """One created instance of a ``/batch`` call (existing ids are absent, not errors)."""


class InstanceListResponse(_ApiModel):
    id: str
    status: str
    created_on: datetime | None = None
    modified_on: datetime | None = None
    started_on: datetime | None = None
    ended_on: datetime | None = None
    version_id: str | None = None
    workflow_id: str | None = None
    trigger_source: str | None = None


class Trigger(_ApiModel):
    source: str | None = None


class Attempt(_ApiModel):
    start: datetime | None = None
    end: datetime | None = None
    success: bool | None = None
    error: ErrorInfo | None = None


class StepRunStep(_ApiModel):
    type: Literal["step", "rollback"]
    name: str
    start: datetime | None = None
    end: datetime | None = None
    success: bool | None = None
    output: Any = None
    attempts: list[Attempt] = Field(default_factory=list)
    config: dict[str, Any] | None = None


class StepSleep(_ApiModel):
    type: Literal["sleep"]
    name: str
    start: datetime | None = None
    end: datetime | None = None
    finished: bool | None = None
    error: ErrorInfo | None = None


class StepTermination(_ApiModel):
    type: Literal["termination"]
    trigger: Trigger | None = None


class StepWaitForEvent(_ApiModel):
    type: Literal["waitForEvent"]
    name: str
    start: datetime | None = None
    end: datetime | None = None
    finished: bool | None = None
    error: ErrorInfo | None = None
    event_type: str | None = None
    output: Any = None


Step = Annotated[
    StepRunStep | StepSleep | StepTermination | StepWaitForEvent, Field(discriminator="type")
]


class InstanceGetResponse(_ApiModel):
    status: str
    queued: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    params: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    success: bool | None = None
    trigger: Trigger | None = None
    version_id: str | None = Field(default=None, alias="versionId")
    step_count: int | None = None
    steps: list[Step] = Field(default_factory=list)
    rollback: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None


class StatusEditResponse(_ApiModel):
    status: str
    timestamp: datetime | None = None


class EventCreateResponse(_ApiModel):
    instance_id: str | None = Field(default=None, alias="instanceId")
    timestamp: datetime | None = None


class InstanceDeleteResponse(_ApiModel):
    """``DELETE /instances/{id}``: the id that was deleted and when."""

    instance_id: str | None = Field(default=None, alias="instanceId")
    timestamp: datetime | None = None


class DeletedInstance(_ApiModel):
    id: str


class DeleteError(_ApiModel):
    """One id of a ``/batch/delete`` that was not deleted (``10400``: no such instance)."""

    id: str
    code: int | None = None
    message: str = ""


class BatchDeleteResponse(_ApiModel):
    """``POST /instances/batch/delete``: one entry per id given, in ``deleted`` or ``errors``."""

    deleted: list[DeletedInstance] = Field(default_factory=list)
    errors: list[DeleteError] = Field(default_factory=list)


class BatchTerminateResponse(_ApiModel):
    """``POST /instances/batch/terminate``: how many of the ids were terminated.

    ``status`` is ``already_running`` when a terminate job of the workflow was running and the
    call did nothing; the API does not say which ids it terminated, only how many.
    """

    instances_terminated: int = Field(alias="instancesTerminated")
    status: str


class TerminateAllResponse(_ApiModel):
    """``PUT /instances/terminate``: ``ok`` (a job started) or ``already_running``."""

    status: str


class TerminateJobStatus(_ApiModel):
    """``GET /instances/terminate``: ``running`` or ``not_running``."""

    status: str


class InstanceStepResponse(_ApiModel):
    """``GET /instances/{id}/step``: one step's full output (``running``, ``waiting``,
    ``complete`` or ``errored``); ``output`` is set once the step completed."""

    status: str
    error: ErrorInfo | None = None
    output: Any = None
    event_type: str | None = None
