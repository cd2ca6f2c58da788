"""Event Subscriptions: which workflow's lifecycle events go to which queue, and the events.

The engine reports each status change here (:meth:`EventHub.status_changed`); every enabled
subscription of that workflow whose ``events`` name the change publishes production's envelope
(``eventSchemaVersion: 1``, camelCase payload) to its queue. Six events exist::

    queued      the instance was created, restarted, or resumed while the workflow was full
    started     first start, and resume from ``paused`` (no event when a sleep or wait ends,
                nor when a resume cancels a pending pause)
    paused      paused
    errored     the instance ended errored; with ``errored_on_step_errors`` also each failed
                step attempt that will be retried (the docs' wording; production unverified)
    terminated  terminated
    completed   complete

``waiting``, ``waitingForPause`` and ``rollingBack`` announce nothing, as in production.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from bridge.contract.rules import MAX_WORKFLOW_NAME, name_problem
from bridge.local.emulator import problems
from bridge.local.emulator.config import DEFAULT_ACCOUNT_ID, EmulatorConfig
from bridge.local.emulator.instance import Instance
from bridge.local.emulator.queues import Queue
from bridge.local.emulator.render import iso

EVENT_TYPE_PREFIX = "cf.workflows.workflow.instance."
EVENT_NAMES: tuple[str, ...] = (
    "instance.queued",
    "instance.started",
    "instance.paused",
    "instance.errored",
    "instance.terminated",
    "instance.completed",
)
SOURCE_TYPE = "workflows.workflow"
DESTINATION_TYPE = "queues.queue"


def event_for(old: str | None, new: str) -> str | None:
    """The event a status change announces (``instance.…``), or None."""
    if new == "queued":
        return "instance.queued"
    if new in ("running", "waiting"):
        # Starting (or resuming) straight into a sleep or wait starts the instance too.
        return "instance.started" if old in (None, "queued", "paused") else None
    return {
        "paused": "instance.paused",
        "errored": "instance.errored",
        "terminated": "instance.terminated",
        "complete": "instance.completed",
    }.get(new)


class Subscription:
    __slots__ = (
        "created_at",
        "enabled",
        "events",
        "id",
        "modified_at",
        "name",
        "queue_id",
        "workflow",
    )

    def __init__(
        self,
        name: str,
        workflow: str,
        queue_id: str,
        events: list[str],
        *,
        enabled: bool,
        now: float,
    ) -> None:
        self.id = os.urandom(16).hex()
        self.name = name
        self.workflow = workflow
        self.queue_id = queue_id
        self.events = events
        self.enabled = enabled
        self.created_at = now
        self.modified_at = now

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "source": {"type": SOURCE_TYPE, "workflow_name": self.workflow},
            "destination": {"type": DESTINATION_TYPE, "queue_id": self.queue_id},
            "events": list(self.events),
            "created_at": iso(self.created_at),
            "modified_at": iso(self.modified_at),
        }


class EventHub:
    """Subscriptions and queues of one emulator, fed by the engine's status changes."""

    def __init__(self, config: EmulatorConfig, wall: Callable[[], float]) -> None:
        self._config = config
        self._wall = wall
        self._rng = random.Random(config.seed + 1)
        self.queues: dict[str, Queue] = {}
        self.subscriptions: dict[str, Subscription] = {}
        for queue_id in config.queues:
            self.queue_for(queue_id)
        if config.event_queue is not None:
            self.queue_for(config.event_queue)
            for workflow in sorted(config.workflows or ()):
                self.flow_created(workflow)

    # -- queues ------------------------------------------------------------------------

    def queue_for(self, queue_id: str) -> Queue:
        """The queue, created when it does not exist yet."""
        queue = self.queues.get(queue_id)
        if queue is None:
            queue = self.queues[queue_id] = Queue(queue_id, lambda: self._config.queue, self._rng)
        return queue

    def queue(self, queue_id: str) -> Queue:
        """The queue; 404 when there is none with that id."""
        queue = self.queues.get(queue_id)
        if queue is None:
            raise problems.queue_not_found()
        return queue

    # -- subscriptions -----------------------------------------------------------------

    def create(self, body: Any) -> Subscription:
        if not isinstance(body, dict):
            raise problems.invalid("The request body must be a JSON object")
        name = body.get("name")
        source, destination = body.get("source"), body.get("destination")
        events = body.get("events")
        enabled = body.get("enabled", True)
        if not isinstance(name, str) or not name:
            raise problems.invalid("name is required")
        if not isinstance(source, dict) or source.get("type") != SOURCE_TYPE:
            raise problems.invalid(f"source.type must be {SOURCE_TYPE!r}")
        workflow = source.get("workflow_name")
        if not isinstance(workflow, str) or name_problem(
            workflow, what="workflow name", max_length=MAX_WORKFLOW_NAME
        ):
            raise problems.invalid("source.workflow_name must name a workflow")
        if self._config.behaviour_for(workflow) is None:
            raise problems.workflow_not_found()
        queue_id = self._destination(destination)
        if not isinstance(enabled, bool):
            raise problems.invalid("enabled must be a boolean")
        subscription = Subscription(
            name, workflow, queue_id, self._events(events), enabled=enabled, now=self._wall()
        )
        self.queue_for(queue_id)
        self.subscriptions[subscription.id] = subscription
        return subscription

    def get(self, subscription_id: str) -> Subscription:
        found = self.subscriptions.get(subscription_id)
        if found is None:
            raise problems.subscription_not_found()
        return found

    def edit(self, subscription_id: str, body: Any) -> Subscription:
        found = self.get(subscription_id)
        if not isinstance(body, dict):
            raise problems.invalid("The request body must be a JSON object")
        unknown = set(body) - {"name", "enabled", "events", "destination"}
        if unknown:
            raise problems.invalid(f"cannot change {', '.join(sorted(unknown))}")
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"]:
                raise problems.invalid("name must be a non-empty string")
            found.name = body["name"]
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise problems.invalid("enabled must be a boolean")
            found.enabled = body["enabled"]
        if "events" in body:
            found.events = self._events(body["events"])
        if "destination" in body:
            found.queue_id = self._destination(body["destination"])
            self.queue_for(found.queue_id)
        found.modified_at = self._wall()
        return found

    def delete(self, subscription_id: str) -> Subscription:
        found = self.get(subscription_id)
        del self.subscriptions[subscription_id]
        return found

    @staticmethod
    def _events(events: Any) -> list[str]:
        if not isinstance(events, list) or not events:
            raise problems.invalid("events must be a non-empty array")
        for event in events:
            if event not in EVENT_NAMES:
                raise problems.invalid(f"unknown event {event!r}; known: {', '.join(EVENT_NAMES)}")
        return list(dict.fromkeys(events))

    @staticmethod
    def _destination(destination: Any) -> str:
        if not isinstance(destination, dict) or destination.get("type") != DESTINATION_TYPE:
            raise problems.invalid(f"destination.type must be {DESTINATION_TYPE!r}")
        queue_id = destination.get("queue_id")
        if not isinstance(queue_id, str) or not queue_id:
            raise problems.invalid("destination.queue_id is required")
        return queue_id

    # -- the engine's reports ----------------------------------------------------------

    def flow_created(self, workflow: str) -> None:
        """A workflow got its first instance (or exists by configuration): with ``event_queue``
        it gets a subscription feeding that queue."""
        queue_id = self._config.event_queue
        if queue_id is None:
            return
        if any(
            s.workflow == workflow and s.queue_id == queue_id for s in self.subscriptions.values()
        ):
            return
        subscription = Subscription(
            f"emulator-{workflow}",
            workflow,
            queue_id,
            list(EVENT_NAMES),
            enabled=True,
            now=self._wall(),
        )
        self.queue_for(queue_id)
        self.subscriptions[subscription.id] = subscription

    def status_changed(
        self, inst: Instance, version_id: str, old: str | None, new: str, at: float
    ) -> None:
        event = event_for(old, new)
        if event is not None:
            self._publish(inst, version_id, event, at)

    def step_errored(self, inst: Instance, version_id: str, at: float) -> None:
        """A step attempt failed and will be retried."""
        if self._config.queue.errored_on_step_errors:
            self._publish(inst, version_id, "instance.errored", at)

    def _publish(self, inst: Instance, version_id: str, event: str, at: float) -> None:
        for subscription in self.subscriptions.values():
            if (
                subscription.enabled
                and subscription.workflow == inst.workflow
                and event in subscription.events
            ):
                envelope = {
                    "type": EVENT_TYPE_PREFIX + event.removeprefix("instance."),
                    "source": {"type": SOURCE_TYPE, "workflowName": inst.workflow},
                    "payload": {"versionId": version_id, "instanceId": inst.id},
                    "metadata": {
                        "accountId": self._config.account_id or DEFAULT_ACCOUNT_ID,
                        "eventSubscriptionId": subscription.id,
                        "eventSchemaVersion": 1,
                        "eventTimestamp": iso(at),
                    },
                }
                self.queue_for(subscription.queue_id).publish(envelope)
