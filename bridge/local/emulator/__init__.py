"""A local emulator of the Cloudflare Workflows instances REST API, for tests and development.

It serves ``/client/v4/accounts/{account_id}/workflows/{workflow_name}/instances…`` over real
sockets — create, batch create, list, get, step, status edits, events, delete, batch delete,
batch terminate, and the "terminate all" job with its status — with production's envelope, error
codes, duplicate-id rules, status transitions and event buffering; Event Subscriptions
(``…/event_subscriptions/subscriptions``) publishing the six instance lifecycle events to Queues
read by HTTP pull (``…/queues/{id}/messages/pull|ack``, outside the request budget); and it can
act like production under load: a global request budget with its block, creation-rate limits,
latency, and faults (5xx, ``success: false``, timeouts, dropped connections, and changes applied
before the answer fails).

Without configuration every workflow name exists and each instance runs three steps: a
``step.do`` of 50 ms ("prepare"), a ``step.sleep`` of 200 ms ("nap") and a ``step.do`` of 50 ms
("finish"), so it completes in about 300 ms with output ``{"params": <params>}``.

Usage::

    async with Emulator(EmulatorConfig(token="t"), port=0) as emu:
        emu.base_url          # http://127.0.0.1:<port>/client/v4
        emu.config.faults.error_ratio = 0.3
        emu.stats.created["orders"]
        emu.instances("orders")

``bridge.local.emulator.testing`` has an httpx client factory and envelope unwrappers for tests; the
``workflows-bridge emulator`` command (``bridge.local.emulator.cli``) serves it from a shell.

Where it differs from production, knowingly:

- Unverified production choices are pinned and documented: a duplicate create answers 409 with
  ``10405`` (``duplicate_status`` makes it 400); numeric codes production never documented are
  the emulator's own (see ``problems``); the creation-rate 429 carries ``Retry-After`` unless
  ``CreationLimits.retry_after`` is off; ``GET /instances`` lists newest first by default,
  ``direction`` applies to cursor pagination only, and a ``direction`` that contradicts the
  cursor's is 400.
- Events sent to a finished instance are accepted and ignored, as Cloudflare's local engine does.
  Pause on a ``queued`` instance is a no-op, as in the local engine.
- What it does not implement answers 501 ``not emulated`` (code 7501), never a plausible answer:
  ``terminate`` with ``rollback: true`` (no ``rollingBack`` phase or rollback steps), and the
  routes beside ``/instances`` (the workflow itself, its versions, the workflow list, settings).
- ``batch/terminate`` acts at once and counts the live ids it terminated (final, unknown and
  repeated ids are not counted); production runs it "via an async job". The "terminate all" job
  runs ``terminate_all_seconds`` later in one go.
- ``restart`` keeps events that were never consumed; events consumed by the re-run steps are spent.
- Event Subscriptions and Queues (``subscriptions``, ``queues``): one subscription per workflow
  and queue; queues exist once configured or named by a subscription; no queue management
  routes, consumers or dead-letter queues (a message out of deliveries is deleted); no
  ``/messages/extend``. ``instance.started`` is published on first start and on resume from
  ``paused``, not when a sleep or wait ends (production unverified), and ``instance.errored``
  also for a retried step error unless ``QueueBehaviour.errored_on_step_errors`` is off.
- No retention, versions or per-step timeouts; the ``params`` of a create are stored as given (a
  JSON string is not parsed).
- The budget is one sliding window for the whole emulator (not per token), the block starts a
  fresh window when it ends, and requests refused for a missing, wrong or revoked token are
  not charged.
- ``output`` is ``null`` until an instance completes; instance and step outputs are the JSON
  values themselves (the SDK types them as strings but does not enforce it).
"""

from bridge.local.emulator.config import (
    DEFAULT_TOKEN,
    CreationLimits,
    DoStep,
    EmulatorConfig,
    Faults,
    Latency,
    QueueBehaviour,
    RequestBudget,
    Route,
    SleepStep,
    WaitForEventStep,
    WorkflowBehaviour,
)
from bridge.local.emulator.emulator import DEFAULT_ACCOUNT_ID, Emulator
from bridge.local.emulator.instance import InstanceView
from bridge.local.emulator.stats import Stats

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_TOKEN",
    "CreationLimits",
    "DoStep",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "InstanceView",
    "Latency",
    "QueueBehaviour",
    "RequestBudget",
    "Route",
    "SleepStep",
    "Stats",
    "WaitForEventStep",
    "WorkflowBehaviour",
]
