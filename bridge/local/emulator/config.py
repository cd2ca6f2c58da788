"""Settings of the emulator: workflow behaviours, limits and faults.

Every model is a mutable pydantic model validated on assignment, so a test may change a running
emulator (``emu.config.faults.error_ratio = 0.3``, ``emu.config.budget = RequestBudget(...)``) and
the next request sees the change. Behaviours and their steps are frozen: replace a behaviour as a
whole (``emu.config.workflows["orders"] = WorkflowBehaviour(...)``); instances keep the behaviour
they were created or restarted with.

The same models load from the CLI's TOML file, key for key (see ``bridge.local.emulator.cli``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from bridge.contract.rules import MAX_EVENT_TYPE, MAX_WORKFLOW_NAME, name_problem

#: The routes of the emulated REST surface, by the name used in stats and fault filters.
Route = Literal[
    "list",
    "create",
    "batch",
    "get",
    "step",
    "status",
    "event",
    "delete",
    "batch_delete",
    "batch_terminate",
    "terminate_all",
    "terminate_status",
    "subscription_list",
    "subscription_create",
    "subscription_get",
    "subscription_edit",
    "subscription_delete",
    "queue_pull",
    "queue_ack",
]
#: Routes that change state; only these can suffer "apply then fail" faults.
MUTATING_ROUTES: frozenset[Route] = frozenset(
    {
        "create",
        "batch",
        "status",
        "event",
        "delete",
        "batch_delete",
        "batch_terminate",
        "terminate_all",
        "subscription_create",
        "subscription_edit",
        "subscription_delete",
        "queue_pull",
        "queue_ack",
    }
)
#: Queue consumer routes: outside the request budget, as in production.
UNBUDGETED_ROUTES: frozenset[Route] = frozenset({"queue_pull", "queue_ack"})

DEFAULT_TOKEN = "emulator-token"
#: Account id to put in URLs when the configuration accepts any.
DEFAULT_ACCOUNT_ID = "emulator-account"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DoStep(_Frozen):
    """``step.do``: work taking ``duration_ms`` per attempt; the instance reports ``running``.

    The first ``transient_failures`` attempts fail and are retried after ``retry_delay_ms``
    (the instance reports ``waiting`` during the back-off). When the attempts exceed
    ``retry_limit`` retries the instance ends ``errored`` with ``{"name": "Error"}``. With
    ``fail`` the attempt after the transient ones throws a NonRetryableError and the instance
    ends ``errored`` with ``{"name": "WorkflowFatalError"}``.
    """

    kind: Literal["do"] = "do"
    name: str = "step"
    duration_ms: float = Field(default=50.0, ge=0)
    transient_failures: int = Field(default=0, ge=0)
    retry_limit: int = Field(default=5, ge=0)
    retry_delay_ms: float = Field(default=100.0, ge=0)
    fail: bool = False
    error_message: str = "emulated step failure"
    output: JsonValue = None


class SleepStep(_Frozen):
    """``step.sleep`` for ``duration_ms``; the instance reports ``waiting``."""

    kind: Literal["sleep"] = "sleep"
    name: str = "sleep"
    duration_ms: float = Field(default=200.0, ge=0)


class WaitForEventStep(_Frozen):
    """``step.waitForEvent`` of ``event_type``; the instance reports ``waiting``.

    Takes the oldest buffered event of that type. Without ``timeout_ms`` it waits forever
    (production's default is 24 hours); after it the instance ends ``errored``.
    """

    kind: Literal["wait_for_event"] = "wait_for_event"
    name: str = "wait"
    event_type: str
    timeout_ms: float | None = Field(default=None, gt=0)

    @field_validator("event_type")
    @classmethod
    def _valid_type(cls, value: str) -> str:
        problem = name_problem(value, what="event type", max_length=MAX_EVENT_TYPE)
        if problem is not None:
            raise ValueError(problem)
        return value


Step = Annotated[DoStep | SleepStep | WaitForEventStep, Field(discriminator="kind")]


def default_steps() -> tuple[Step, ...]:
    """The steps of a workflow nobody configured: done in about 300 ms."""
    return (
        DoStep(name="prepare", duration_ms=50),
        SleepStep(name="nap", duration_ms=200),
        DoStep(name="finish", duration_ms=50),
    )


class WorkflowBehaviour(_Frozen):
    """What an instance of one workflow does once it starts.

    ``output`` is the instance output on completion; ``None`` means ``{"params": <params>}``.
    ``concurrency`` bounds the instances that are running, waiting or waiting for a pause;
    further ones report ``queued`` until a slot frees up (paused ones give their slot back).
    """

    steps: tuple[Step, ...] = Field(default_factory=default_steps)
    output: JsonValue = None
    concurrency: int | None = Field(default=None, ge=1)


class RequestBudget(_Settings):
    """The global API budget: ``requests`` per sliding ``window_seconds``.

    The request that exceeds it is answered 429 and starts a block of ``block_seconds``
    (default: the window) during which every call gets 429; the block ends with a fresh window.
    """

    requests: int = Field(default=1200, ge=1)
    window_seconds: float = Field(default=300.0, gt=0)
    block_seconds: float | None = Field(default=None, ge=0)

    @property
    def block(self) -> float:
        """Seconds every call stays blocked after the budget was exceeded."""
        return self.window_seconds if self.block_seconds is None else self.block_seconds


class CreationLimits(_Settings):
    """Instance creations per second, over a sliding one-second window.

    Created batch items and restarts count. A create, batch or restart that would go over either
    limit gets 429 and creates nothing (no partial batch). ``retry_after`` says whether that 429
    carries a ``Retry-After`` header (production: unknown).
    """

    per_workflow: int | None = Field(default=None, ge=1)
    per_account: int | None = Field(default=None, ge=1)
    retry_after: bool = True


class Latency(_Settings):
    """Delay added before every answer: ``fixed_ms`` plus a uniform ``[0, jitter_ms]``."""

    fixed_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)


_Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class Faults(_Settings):
    """Ratios of requests answered badly; one seeded draw per request picks at most one.

    - ``error_ratio``: 500 ``10001 workflows.api.error.internal_server``, nothing applied.
    - ``soft_error_ratio``: HTTP 200 with ``success: false`` and ``result: null``, nothing applied.
    - ``timeout_ratio``: hold the request ``timeout_seconds``, then answer normally; if the client
      gave up meanwhile nothing is applied.
    - ``drop_ratio``: close the connection without answering, nothing applied.
    - ``apply_then_error_ratio`` / ``apply_then_drop_ratio``: state-changing routes only; perform
      the change, then answer 500 or close the connection.

    ``routes`` limits the faults to some routes (``None``: all).
    """

    error_ratio: _Ratio = 0.0
    soft_error_ratio: _Ratio = 0.0
    timeout_ratio: _Ratio = 0.0
    drop_ratio: _Ratio = 0.0
    apply_then_error_ratio: _Ratio = 0.0
    apply_then_drop_ratio: _Ratio = 0.0
    timeout_seconds: float = Field(default=65.0, ge=0)
    routes: frozenset[Route] | None = None

    @model_validator(mode="after")
    def _ratios_fit(self) -> Self:
        total = (
            self.error_ratio
            + self.soft_error_ratio
            + self.timeout_ratio
            + self.drop_ratio
            + self.apply_then_error_ratio
            + self.apply_then_drop_ratio
        )
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault ratios add up to {total:g}; at most 1 is possible")
        return self


class QueueBehaviour(_Settings):
    """How the emulated Queues deliver Event Subscription messages, and what goes wrong.

    - ``body_encoding``: ``base64`` (the docs' words for JSON bodies) or ``plain`` JSON text.
    - ``max_retries``: deliveries after which an unacknowledged message is deleted.
    - ``duplicate_ratio``: messages published twice (a second message with its own id, visible
      ``duplicate_delay_ms`` later), as at-least-once delivery may.
    - ``reorder_ratio``: messages held back ``reorder_delay_ms`` so later ones overtake them.
    - ``lost_ack_ratio``: acknowledgements answered as counted but not applied: the message is
      delivered again once its lease expires.
    - ``lease_ms``: when set, every lease lasts this long whatever the puller asked (tests).
    - ``errored_on_step_errors``: also publish ``instance.errored`` when a step attempt fails and
      is retried (the docs: "when an instance step throws an error"; production unverified).
    """

    body_encoding: Literal["base64", "plain"] = "base64"
    max_retries: int = Field(default=3, ge=1, le=100)
    duplicate_ratio: _Ratio = 0.0
    duplicate_delay_ms: float = Field(default=200.0, ge=0)
    reorder_ratio: _Ratio = 0.0
    reorder_delay_ms: float = Field(default=300.0, ge=0)
    lost_ack_ratio: _Ratio = 0.0
    lease_ms: float | None = Field(default=None, gt=0)
    errored_on_step_errors: bool = True


class EmulatorConfig(_Settings):
    """Everything the emulator can be told; every limit and fault is off by default.

    ``workflows``: ``None`` means every workflow name exists and runs ``default_behaviour``; a
    mapping restricts the names to its keys (others get 404 ``10200``).
    ``account_id``: ``None`` accepts any account in the path; a value makes others 403.
    ``duplicate_status``: the HTTP status of a create with an id in use (production unverified).
    ``revoked``: every call gets 403, as with a token that was revoked.
    ``terminate_all_seconds``: how long a "terminate all" job (``PUT …/instances/terminate``)
    runs before it terminates the workflow's live instances; meanwhile the job reports
    ``running`` and batch terminates answer ``already_running``.
    ``event_queue``: a queue that gets an event subscription for every workflow (created with the
    workflow: at start for configured ones, on first use otherwise); ``queues`` are further
    queue ids that exist (a subscription's destination also creates its queue).
    """

    token: str = DEFAULT_TOKEN
    revoked: bool = False
    account_id: str | None = None
    workflows: dict[str, WorkflowBehaviour] | None = None
    default_behaviour: WorkflowBehaviour = Field(default_factory=WorkflowBehaviour)
    duplicate_status: Literal[400, 409] = 409
    terminate_all_seconds: float = Field(default=1.0, ge=0)
    budget: RequestBudget | None = None
    creation: CreationLimits = Field(default_factory=CreationLimits)
    latency: Latency = Field(default_factory=Latency)
    faults: Faults = Field(default_factory=Faults)
    event_queue: str | None = Field(default=None, min_length=1)
    queues: list[str] = Field(default_factory=list)
    queue: QueueBehaviour = Field(default_factory=QueueBehaviour)
    seed: int = 0

    @field_validator("workflows")
    @classmethod
    def _valid_names(
        cls, value: dict[str, WorkflowBehaviour] | None
    ) -> dict[str, WorkflowBehaviour] | None:
        for name in value or {}:
            problem = name_problem(name, what="workflow name", max_length=MAX_WORKFLOW_NAME)
            if problem is not None:
                raise ValueError(problem)
        return value

    def behaviour_for(self, workflow: str) -> WorkflowBehaviour | None:
        """The behaviour of ``workflow``, or None when that workflow does not exist."""
        if self.workflows is None:
            return self.default_behaviour
        return self.workflows.get(workflow)
