"""Queue messages from Event Subscriptions, read into observations (pure).

A message's ``body`` is a string: the docs say JSON bodies are base64-encoded, their own example
is plain JSON, and consumers in the wild do either — so both are accepted (a dict too). The
envelope (``eventSchemaVersion: 1``)::

    {"type": "cf.workflows.workflow.instance.completed",
     "source": {"type": "workflows.workflow", "workflowName": "orders"},
     "payload": {"versionId": "…", "instanceId": "order-42"},
     "metadata": {"accountId": "…", "eventSubscriptionId": "…", "eventSchemaVersion": 1,
                  "eventTimestamp": "2026-11-30T10:00:00.123Z"}}
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from bridge.states.tracker import Observation, as_utc

EVENT_PREFIX = "cf.workflows.workflow.instance."
#: The six Workflows event types and the REST status each announces.
EVENT_STATUS: dict[str, str] = {
    "queued": "queued",
    "started": "running",
    "paused": "paused",
    "errored": "errored",
    "terminated": "terminated",
    "completed": "complete",
}
#: The names a subscription's ``events`` list takes.
SUBSCRIPTION_EVENTS: tuple[str, ...] = tuple(f"instance.{name}" for name in EVENT_STATUS)


class BadEvent(ValueError):
    """A queue message that is not a Workflows instance event."""


def decode_body(body: Any) -> dict[str, Any]:
    """The event envelope from a message body: a dict, base64 JSON, or plain JSON."""
    if isinstance(body, dict):
        return body
    if not isinstance(body, str):
        raise BadEvent(f"body is {type(body).__name__}, not a string")
    try:
        decoded = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        try:
            decoded = json.loads(body)
        except ValueError:
            raise BadEvent("body is neither JSON nor base64-encoded JSON") from None
    if not isinstance(decoded, dict):
        raise BadEvent("body is not a JSON object")
    return decoded


def observation(envelope: dict[str, Any], *, at: datetime) -> Observation:
    """The observation an event envelope makes; :class:`BadEvent` when it is not one."""
    kind = envelope.get("type")
    if not isinstance(kind, str) or not kind.startswith(EVENT_PREFIX):
        raise BadEvent(f"type {kind!r} is not a Workflows instance event")
    status = EVENT_STATUS.get(kind.removeprefix(EVENT_PREFIX))
    if status is None:
        raise BadEvent(f"unknown Workflows event type {kind!r}")
    source, payload, metadata = (
        _object(envelope, name) for name in ("source", "payload", "metadata")
    )
    workflow = source.get("workflowName")
    instance_id = payload.get("instanceId")
    stamp = metadata.get("eventTimestamp")
    if not isinstance(workflow, str) or not workflow:
        raise BadEvent("source.workflowName is missing")
    if not isinstance(instance_id, str) or not instance_id:
        raise BadEvent("payload.instanceId is missing")
    try:
        event_at = as_utc(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")))
    except ValueError:
        raise BadEvent(f"metadata.eventTimestamp {stamp!r} is not ISO 8601") from None
    version = payload.get("versionId")
    return Observation(
        workflow=workflow,
        instance_id=instance_id,
        status=status,
        source="event",
        at=at,
        event_at=event_at,
        version_id=version if isinstance(version, str) else None,
    )


def _object(envelope: dict[str, Any], name: str) -> dict[str, Any]:
    value = envelope.get(name)
    if not isinstance(value, dict):
        raise BadEvent(f"{name} is not an object")
    return value
