"""Cloudflare Queues as an HTTP pull consumer sees them: messages, leases, acks and retries.

- ``pull`` hands out up to ``batch_size`` (default 5, at most 100) visible messages, each under
  a new ``lease_id`` for ``visibility_timeout_ms`` (default 30 s, at most 12 h); every delivery
  increments ``attempts``. Short polling: an empty queue answers at once.
- A message whose lease expires is delivered again, unless it has had ``max_retries``
  deliveries: then it is deleted.
- ``ack`` deletes the message of each lease (late acks, after the lease expired, are accepted
  while the message exists); ``retries`` make it visible again after ``delay_seconds`` (a
  message out of deliveries is deleted instead). Unknown leases come back as ``warnings``.
- Delivery is at least once and unordered: ``QueueBehaviour`` injects duplicates, reordering
  and lost acks on demand (see there). Messages are handed out in the order they became
  visible, so one held back is delivered behind those published after it.

Times are ``time.monotonic`` seconds except ``timestamp_ms`` (wall clock, as production).
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.local.emulator import problems
from bridge.local.emulator.config import QueueBehaviour

DEFAULT_BATCH = 5
MAX_BATCH = 100
DEFAULT_VISIBILITY_MS = 30_000.0
MAX_VISIBILITY_MS = 12 * 3600 * 1000.0
MAX_DELAY_SECONDS = 12 * 3600


@dataclass(slots=True, eq=False)
class Message:
    id: str
    body: str
    size: int
    timestamp_ms: float
    visible_at: float
    attempts: int = 0
    lease: str | None = None
    leased_until: float = 0.0
    leases: set[str] = field(default_factory=set)


@dataclass(slots=True)
class QueueCounters:
    published: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    retried: int = 0
    deleted_unacked: int = 0
    duplicates_injected: int = 0
    reordered: int = 0
    acks_lost: int = 0


class Queue:
    """One queue's messages, in publication order."""

    def __init__(
        self,
        queue_id: str,
        behaviour: Callable[[], QueueBehaviour],
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.id = queue_id
        self._behaviour = behaviour
        self._rng = rng
        self._clock = clock
        self._wall = wall
        self._messages: dict[str, Message] = {}
        self._by_lease: dict[str, Message] = {}
        self.counters = QueueCounters()

    # -- producing ---------------------------------------------------------------------

    def publish(self, envelope: dict[str, Any]) -> None:
        """Write one event; injected duplicates and reordering happen here."""
        behaviour = self._behaviour()
        now = self._clock()
        text = json.dumps(envelope, separators=(",", ":"))
        delay = 0.0
        if behaviour.reorder_ratio and self._rng.random() < behaviour.reorder_ratio:
            delay = behaviour.reorder_delay_ms / 1000
            self.counters.reordered += 1
        self._add(text, behaviour, now + delay)
        if behaviour.duplicate_ratio and self._rng.random() < behaviour.duplicate_ratio:
            self._add(text, behaviour, now + delay + behaviour.duplicate_delay_ms / 1000)
            self.counters.duplicates_injected += 1

    def _add(self, text: str, behaviour: QueueBehaviour, visible_at: float) -> None:
        body = (
            base64.b64encode(text.encode()).decode()
            if behaviour.body_encoding == "base64"
            else text
        )
        message = Message(
            id=os.urandom(16).hex(),
            body=body,
            size=len(text.encode()),
            timestamp_ms=round(self._wall() * 1000),
            visible_at=visible_at,
        )
        self._messages[message.id] = message
        self.counters.published += 1

    # -- consuming ---------------------------------------------------------------------

    def pull(self, batch_size: int, visibility_ms: float) -> list[dict[str, Any]]:
        """Lease up to ``batch_size`` visible messages."""
        behaviour = self._behaviour()
        if behaviour.lease_ms is not None:
            visibility_ms = behaviour.lease_ms
        now = self._clock()
        content_type = "json" if behaviour.body_encoding == "base64" else "text"
        out: list[dict[str, Any]] = []
        # Oldest visibility first: a message held back is handed out behind later ones.
        for message in sorted(self._messages.values(), key=_visible_at):
            if len(out) >= batch_size:
                break
            if not self._deliverable(message, behaviour, now):
                continue
            if message.attempts:
                self.counters.redelivered += 1
            message.attempts += 1
            lease = os.urandom(24).hex()
            message.lease = lease
            message.leases.add(lease)
            message.leased_until = now + visibility_ms / 1000
            self._by_lease[lease] = message
            self.counters.delivered += 1
            out.append(
                {
                    "id": message.id,
                    "body": message.body,
                    "timestamp_ms": message.timestamp_ms,
                    "attempts": message.attempts,
                    "lease_id": lease,
                    "metadata": {
                        "CF-sourceMessageSource": "event-subscription",
                        "CF-Content-Type": content_type,
                    },
                }
            )
        return out

    def _deliverable(self, message: Message, behaviour: QueueBehaviour, now: float) -> bool:
        if message.visible_at > now:
            return False
        if message.lease is not None:
            if message.leased_until > now:
                return False
            if message.attempts >= behaviour.max_retries:
                self._delete(message)
                self.counters.deleted_unacked += 1
                return False
        return True

    def ack(
        self, acks: list[str], retries: list[tuple[str, float]]
    ) -> tuple[int, int, dict[str, str]]:
        """Apply acknowledgements and retries; ``(ackCount, retryCount, warnings)``."""
        behaviour = self._behaviour()
        warnings: dict[str, str] = {}
        acked = retried = 0
        for lease in acks:
            message = self._by_lease.get(lease)
            if message is None or message.id not in self._messages:
                warnings[lease] = "lease not found: the message was already deleted"
                continue
            acked += 1
            if behaviour.lost_ack_ratio and self._rng.random() < behaviour.lost_ack_ratio:
                self.counters.acks_lost += 1
                continue
            self._delete(message)
            self.counters.acked += 1
        now = self._clock()
        for lease, delay in retries:
            message = self._by_lease.get(lease)
            if message is None or message.id not in self._messages:
                warnings[lease] = "lease not found: the message was already deleted"
                continue
            retried += 1
            self.counters.retried += 1
            if message.attempts >= behaviour.max_retries:
                self._delete(message)
                self.counters.deleted_unacked += 1
                continue
            message.lease = None
            message.visible_at = now + delay
        return acked, retried, warnings

    def _delete(self, message: Message) -> None:
        self._messages.pop(message.id, None)
        for lease in message.leases:
            self._by_lease.pop(lease, None)

    # -- metrics -----------------------------------------------------------------------

    def backlog(self) -> dict[str, Any]:
        """``message_backlog_count`` and ``metadata.metrics`` of a pull answer."""
        messages = list(self._messages.values())
        oldest = min((m.timestamp_ms for m in messages), default=None)
        return {
            "backlog_count": len(messages),
            "backlog_bytes": sum(m.size for m in messages),
            "oldest_message_timestamp_ms": oldest,
        }

    def __len__(self) -> int:
        return len(self._messages)


def _visible_at(message: Message) -> float:
    return message.visible_at


def pull_params(body: Any) -> tuple[int, float]:
    """``(batch_size, visibility_ms)`` from a pull body; both ``visibility_timeout_ms`` and the
    docs' ``visibility_timeout`` are accepted (milliseconds)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise problems.invalid("The request body must be a JSON object")
    batch = body.get("batch_size", DEFAULT_BATCH)
    visibility = body.get("visibility_timeout_ms", body.get("visibility_timeout"))
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise problems.invalid(f"batch_size must be an integer from 1 to {MAX_BATCH}")
    if visibility is None:
        visibility = DEFAULT_VISIBILITY_MS
    if (
        isinstance(visibility, bool)
        or not isinstance(visibility, int | float)
        or not 0 < visibility <= MAX_VISIBILITY_MS
    ):
        raise problems.invalid(f"visibility_timeout_ms must be from 1 to {MAX_VISIBILITY_MS:g}")
    return batch, float(visibility)


def ack_params(body: Any) -> tuple[list[str], list[tuple[str, float]]]:
    """``(acks, retries)`` from an ack body."""
    if not isinstance(body, dict):
        raise problems.invalid("The request body must be a JSON object")
    acks, retries = body.get("acks", []), body.get("retries", [])
    if not isinstance(acks, list) or not isinstance(retries, list):
        raise problems.invalid("acks and retries must be arrays")
    leases: list[str] = []
    for item in acks:
        if not isinstance(item, dict) or not isinstance(item.get("lease_id"), str):
            raise problems.invalid("each ack needs a lease_id")
        leases.append(item["lease_id"])
    again: list[tuple[str, float]] = []
    for item in retries:
        if not isinstance(item, dict) or not isinstance(item.get("lease_id"), str):
            raise problems.invalid("each retry needs a lease_id")
        delay = item.get("delay_seconds", 0)
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= MAX_DELAY_SECONDS
        ):
            raise problems.invalid(f"delay_seconds must be from 0 to {MAX_DELAY_SECONDS}")
        again.append((item["lease_id"], float(delay)))
    return leases, again
