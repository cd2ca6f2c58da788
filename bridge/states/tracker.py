"""The pure core of the state stream: per instance, which observations are changes to publish.

Observations come from three sources in any order, duplicated, late or early: queue events
(timestamped by Cloudflare), polls (a list item's ``modified_on``, or a ``get``) and the answers
to the bridge's own commands (timestamped by the bridge). For each instance the tracker keeps the
last published status and decides, for each observation, whether it is a change. The rules:

* **Never backwards.** An observation is a change only when it is newer than what was applied:
  a later source time, or the same time and a later lifecycle rank (``queued`` < live statuses
  < final ones). Command answers carry the bridge's clock, not Cloudflare's, so they are *weak*:
  events and polls are compared with the last *strong* time, and a command answer with the
  latest time of any kind.
* **Once.** The status the instance already has is never a change (duplicates, redeliveries,
  the same change seen by two sources).
* **Final states absorb.** After ``complete``, ``errored`` or ``terminated`` nothing is a change,
  except a ``restart`` the bridge itself made (its answer is newer than the final state).
  A final status is always a change for a live instance, whatever its time: it is the end.
* **Births inform only.** A create's ``queued`` (or the status an ``already_exists`` reported)
  is a change only for an instance the tracker has never seen.

``inferred`` is set on poll records that did not see the change happen (see :func:`_inferred`).

**Memory.** A live instance is remembered until it ends; a final one only until
:meth:`Tracker.forget_finals` is told its end is old enough (the follower passes a horizon), so
memory follows the instances live or recently ended, not every instance ever seen. A duplicate
that arrives after that horizon finds the instance unknown and is published again (with no
``previous_status``); duplicates come from queue redeliveries and lost acks, minutes apart.

Nothing here does I/O or reads a clock: every time comes in with the observation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from bridge.contract.results import InstanceError, StateRecord, StateSource
from bridge.contract.rules import FINAL_STATUSES

#: Statuses a poll lists to see every live instance (one ``list`` call per status and page).
LIVE_STATUSES: tuple[str, ...] = (
    "queued",
    "running",
    "waiting",
    "waitingForPause",
    "paused",
    "rollingBack",
)

#: Steps the lifecycle can take in one transition; a poll that sees any other step missed some.
_DIRECT: dict[str | None, frozenset[str]] = {
    None: frozenset({"queued"}),
    "queued": frozenset({"running", "terminated"}),
    "running": frozenset(
        {"waiting", "waitingForPause", "complete", "errored", "terminated", "rollingBack"}
    ),
    "waiting": frozenset({"running", "paused", "terminated", "errored"}),
    "waitingForPause": frozenset({"paused", "running", "terminated"}),
    "paused": frozenset({"running", "queued", "terminated"}),
    "rollingBack": frozenset({"terminated", "errored"}),
}


class Kind(Enum):
    """What an observation can say beyond its status."""

    #: A status the instance had at the observation's time.
    SIGHTING = "sighting"
    #: The status a create (or an ``already_exists``) reported: news only for an unknown instance.
    BIRTH = "birth"
    #: The ``queued`` a restart answered: it may reopen a final instance.
    RESTART = "restart"
    #: A ``get`` of an instance that left the listed statuses unseen: where it ended.
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Observation:
    """One source's word on one instance's status."""

    workflow: str
    instance_id: str
    status: str
    source: StateSource
    #: When the bridge observed it.
    at: datetime
    #: The source's own timestamp, when it has one.
    event_at: datetime | None = None
    kind: Kind = Kind.SIGHTING
    version_id: str | None = None
    output: Any = None
    error: InstanceError | None = None
    #: True once a ``get`` has added the output or error (or found there is none to add).
    fetched: bool = False
    #: When the instance was created, when the source says (list items and ``get`` do).
    created_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.workflow, self.instance_id)

    @property
    def time(self) -> datetime:
        """The time the tracker orders by."""
        return as_utc(self.event_at if self.event_at is not None else self.at)

    @property
    def weak(self) -> bool:
        """True when the time is the bridge's clock (a command's answer), not Cloudflare's."""
        return self.source == "command"

    def with_details(
        self, *, version_id: str | None, output: Any, error: InstanceError | None
    ) -> Observation:
        """The same observation with what a ``get`` added."""
        return replace(
            self,
            version_id=version_id or self.version_id,
            output=output,
            error=error,
            fetched=True,
        )


def as_utc(moment: datetime) -> datetime:
    """``moment`` with a time zone: the API writes UTC without an offset."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def rank(status: str) -> int:
    """Lifecycle rank for ties of time: ``queued`` 0, live statuses 1, final statuses 2."""
    if status == "queued":
        return 0
    return 2 if status in FINAL_STATUSES else 1


class _Entry:
    __slots__ = ("ended_seen", "status", "strong_time", "time", "version_id")

    def __init__(
        self, status: str, time: datetime, strong_time: datetime | None, version_id: str | None
    ) -> None:
        self.status = status
        #: The latest time applied, of any source.
        self.time = time
        #: The latest time applied from a source with Cloudflare's clock (None: only commands).
        self.strong_time = strong_time
        self.version_id = version_id
        #: When the bridge saw the instance end (None while it is live).
        self.ended_seen: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class Tracker:
    """The last published status of every instance followed, and the rules above."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._live: dict[str, set[str]] = {}
        #: Instances in the order they ended, with when the bridge saw the end (a stale pair,
        #: one that ended again later or was restarted, is skipped when its turn comes).
        self._ended: deque[tuple[datetime, tuple[str, str]]] = deque()

    # -- reading -----------------------------------------------------------------------

    def known(self, workflow: str, instance_id: str) -> str | None:
        """The last published status of the instance, or None when it was never seen."""
        entry = self._entries.get((workflow, instance_id))
        return None if entry is None else entry.status

    def live(self, workflow: str) -> frozenset[str]:
        """Ids of the instances of ``workflow`` whose last status is not final."""
        return frozenset(self._live.get(workflow, ()))

    def workflows(self) -> frozenset[str]:
        """Every workflow with an instance known."""
        return frozenset(self._live)

    def __len__(self) -> int:
        return len(self._entries)

    # -- deciding ----------------------------------------------------------------------

    def is_change(self, obs: Observation) -> bool:
        """Whether ``obs`` would be published now (before paying for its details)."""
        entry = self._entries.get(obs.key)
        if obs.kind is Kind.RESTART:
            return entry is None or (obs.time > entry.time and entry.status != obs.status)
        if entry is None:
            return True
        if entry.final or obs.status == entry.status or obs.kind is Kind.BIRTH:
            return False
        if obs.status in FINAL_STATUSES:
            return True
        if obs.weak:
            reference: datetime | None = entry.time
        else:
            reference = entry.strong_time
        if reference is None:
            return True
        if obs.time != reference:
            return obs.time > reference
        return rank(obs.status) > rank(entry.status)

    def apply(self, obs: Observation) -> list[StateRecord]:
        """The state records for ``obs`` when it is a change (and remember it), else none.

        An instance first seen past ``queued`` by a source that knows when it was created (a
        list item's ``created_on``, a ``get``'s ``queued``) gets its ``queued`` record first,
        at that time and ``inferred``: every instance begins queued, and the chain stays whole.
        """
        if not self.is_change(obs):
            return []
        entry = self._entries.get(obs.key)
        records: list[StateRecord] = []
        if entry is None and obs.status != "queued" and obs.created_at is not None:
            born = StateRecord(
                workflow=obs.workflow,
                instance_id=obs.instance_id,
                status="queued",
                at=obs.at,
                event_at=obs.created_at,
                source=obs.source,
                version_id=obs.version_id,
                inferred=True,
            )
            records.append(born)
            time = min(as_utc(obs.created_at), obs.time)
            self._remember(
                obs.key, "queued", time, weak=obs.weak, version_id=obs.version_id, seen=obs.at
            )
            entry = self._entries[obs.key]
        previous = None if entry is None else entry.status
        version_id = obs.version_id or (None if entry is None else entry.version_id)
        record = StateRecord(
            workflow=obs.workflow,
            instance_id=obs.instance_id,
            status=obs.status,
            previous_status=previous,
            at=obs.at,
            event_at=obs.event_at,
            source=obs.source,
            version_id=version_id,
            output=obs.output if obs.status == "complete" else None,
            error=obs.error if obs.status == "errored" else None,
            inferred=_inferred(obs, previous),
        )
        self._remember(
            obs.key, obs.status, obs.time, weak=obs.weak, version_id=version_id, seen=obs.at
        )
        records.append(record)
        return records

    def forget_finals(self, ended_before: datetime) -> int:
        """Forget instances whose end the bridge saw before ``ended_before``; returns how many."""
        forgotten = 0
        while self._ended and self._ended[0][0] < ended_before:
            seen, key = self._ended.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.final and entry.ended_seen == seen:
                del self._entries[key]
                forgotten += 1
        return forgotten

    def forget(self, workflow: str, instance_id: str) -> None:
        """Stop following an instance the API no longer knows (deleted, or past retention)."""
        self._entries.pop((workflow, instance_id), None)
        self._live.get(workflow, set()).discard(instance_id)

    def restore(self, record: StateRecord, *, ended_before: datetime | None = None) -> None:
        """Take a state record already published (read back from Kafka) as the current state.

        A final record older than ``ended_before`` makes the instance forgotten rather than
        remembered: what :meth:`forget_finals` would have dropped is not read back in.
        """
        key = (record.workflow, record.instance_id)
        if (
            ended_before is not None
            and record.status in FINAL_STATUSES
            and as_utc(record.at) < ended_before
        ):
            self.forget(*key)
            return
        time = as_utc(record.event_at if record.event_at is not None else record.at)
        self._remember(
            key,
            record.status,
            time,
            weak=record.source == "command",
            version_id=record.version_id,
            seen=as_utc(record.at),
        )

    def _remember(
        self,
        key: tuple[str, str],
        status: str,
        time: datetime,
        *,
        weak: bool,
        version_id: str | None,
        seen: datetime,
    ) -> None:
        workflow, instance_id = key
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(status, time, None if weak else time, version_id)
        else:
            entry.status = status
            entry.time = max(entry.time, time)
            if not weak:
                strong = entry.strong_time
                entry.strong_time = time if strong is None else max(strong, time)
            entry.version_id = version_id or entry.version_id
        live = self._live.setdefault(workflow, set())
        if entry.final:
            live.discard(instance_id)
            entry.ended_seen = as_utc(seen)
            self._ended.append((entry.ended_seen, key))
        else:
            live.add(instance_id)
            entry.ended_seen = None


def _inferred(obs: Observation, previous: str | None) -> bool:
    """A poll record whose change was not seen happen: the first sighting past ``queued``, a
    step that skips statuses the lifecycle must pass through, or where an instance that left
    the listed statuses ended (learnt from a ``get``)."""
    if obs.source != "poll":
        return False
    if obs.kind is Kind.ENDED:
        return True
    return obs.status not in _DIRECT.get(previous, frozenset())


def order_key(obs: Observation) -> tuple[datetime, int]:
    """The order to apply observations in: by time, then lifecycle rank."""
    return (obs.time, rank(obs.status))


def ordered(observations: Iterable[Observation]) -> Iterator[Observation]:
    """Observations in the order to apply them (see :func:`order_key`)."""
    return iter(sorted(observations, key=order_key))
