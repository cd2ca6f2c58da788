"""Demand-aware shares of the group's request budget: the rules, without any I/O.

The replicas of one consumer group share one token's budget ``B`` requests per window ``W``.
Each replica keeps its own sliding window with a capacity (``cap``); the group stays inside
``B`` as long as the capacities, and what they already let through, add up to no more than
``B``. The replicas agree on capacities by writing *share records* to one partition of a small
compacted topic and reading every record back in the log's order (:mod:`bridge.pipeline.
share_exchange` does the I/O). This module holds the rules each replica follows.

Claims. A member's record states ``claim = max(cap, used)``, ``used`` being its requests still
in its window (in flight, or answered less than a window ago). From the moment it is written
until the member raises its capacity again, no window ending later holds more than ``claim`` of
the member's requests: the requests already let through are in ``used``, and new ones are only
let through while the window holds fewer than ``cap``. A member that gives up share lowers
``cap`` at once but keeps claiming what it already let through, until that leaves its window.

Raises. A member never raises ``cap`` on its own judgment of the present: it writes a record
with ``want > claim`` and waits for it to come back from the log. Reading the log in order, it
then knows every record written before its own, and takes

    cap := max(cap, min(want, B - reserved))

where ``reserved`` is what every other member may use as of that position: ``max(claim, want)``
of its latest record (a want not yet settled counts in full), plus the reservations below.
Writes are strictly one at a time per member (the next record only after the previous one came
back), so a member's capacity never exceeds what its latest record in the log states.

Why the group stays inside ``B`` in every window: order all raises by their position in the log
and take any moment ``t``. Let ``p`` be the position of the latest raise in effect at ``t``, by
member ``i``. Every other member ``j`` has not raised since ``p`` (else its raise would be
later), so what ``j`` can have in any window ending at ``t`` is at most what its latest record
before ``p`` states — which is what ``i`` counted in ``reserved`` at ``p``. ``i`` took at most
``B - reserved``. So the sum is at most ``B``; with no raise in effect, every member is at its
first record's claim, 0. (Lowering never needs agreement, and a lowered claim still counts
what was let through.)

Reservations beyond the members' own records, so that members that cannot take part are safe:

* ``unknown partitions``: members state their command partitions and the total. Partitions no
  member accounts for may belong to a replica that cannot reach the topic and runs on its static
  share ``B × partitions / total``; that much is reserved.
* ``silent`` members (nothing heard for ``lease`` seconds): while the members still heard do
  not hold every partition, a silent one may hold some and run on its static share (cut off, see
  below), so it is reserved ``max(claim, want, static share)``. Once the members heard hold every
  partition it is out of the group (crashed, or stopped without a word): it keeps its last claim
  until ``lease + W`` after it was last heard, then it is forgotten (its key gets a tombstone).
* ``leaving`` members (a replica that shut down) keep what they let through (their last claim)
  for ``W`` after it is read, then are forgotten.

Fallback. A member whose own records stop coming back for ``lease`` seconds is cut off: it
lowers ``cap`` to at most its static share at once and states ``want = static share`` in every
record it can still write (so members that read them reserve it); only ``2 × lease + W`` after
its latest record that did not announce this was written does it raise to the static share.
Members that still read the topic have by then read that record, then either read an
announcement or heard nothing for a lease, and lowered their capacities, and what they let
through before has left the window. This assumes a record written by a live member is read by
the others within ``lease``; a member that reads more slowly is cut off itself. A replica that
has not reached the topic since it started follows the same rule from its start. Where the
topic cannot be used at all (no name, or the cluster refuses it), every replica of the group
runs on its static share from the start.

Targets (how much each member *should* have) are a matter of efficiency, not safety: the
budget not reserved is split by demand — each member's requests in its window plus the requests
waiting for a slot, plus ``headroom`` so that an idle replica can start at once and a busy one
has room to grow — max-min fair with the partitions as weights; evenly loaded replicas get the
static shares. What nobody wants is left to nobody: claims stay close to use, so a replica that
crashed holds back little more than it really spent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

Clock = Callable[[], float]

#: Record format version.
VERSION = 1
#: Kinds of members, as their records state them.
DYNAMIC, FALLBACK, LEAVING = "dynamic", "fallback", "leaving"
_MODES = frozenset({DYNAMIC, FALLBACK, LEAVING})


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """One member's state as written to the budget topic (keyed ``group/member``)."""

    group: str
    member: str
    seq: int
    mode: str
    claim: int
    want: int
    demand: int
    partitions: int
    total: int
    budget: int
    window: float

    @property
    def key(self) -> str:
        return record_key(self.group, self.member)

    @property
    def reserve(self) -> int:
        """What readers count for the member until its next record."""
        return max(self.claim, self.want)

    def static_share(self) -> int:
        return static_share(self.budget, self.partitions, self.total)

    def encode(self) -> bytes:
        return json.dumps({"v": VERSION, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> ShareRecord:
        """Parse a record; ``ValueError`` for anything that is not one of ours."""
        try:
            data = json.loads(value)
            if not isinstance(data, dict) or data.pop("v", None) != VERSION:
                raise ValueError("not a share record of this version")
            record = cls(**data)
        except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a share record: {exc}") from None
        ints = (record.seq, record.claim, record.want, record.demand, record.partitions)
        if (
            record.mode not in _MODES
            or not all(isinstance(n, int) and n >= 0 for n in (*ints, record.total, record.budget))
            or not isinstance(record.group, str)
            or not isinstance(record.member, str)
        ):
            raise ValueError("share record with fields out of range")
        return record


def record_key(group: str, member: str) -> str:
    return f"{group}/{member}"


def static_share(budget: int, partitions: int, total: int) -> int:
    """The requests per window a replica holding ``partitions`` of ``total`` gets statically
    (0 while it knows of no partition)."""
    if total <= 0:
        return 0
    return math.floor(budget * min(partitions, total) / total)


@dataclass(slots=True)
class _Peer:
    record: ShareRecord
    heard_at: float


@dataclass(slots=True)
class Own:
    """This member's own state."""

    cap: int = 0
    partitions: int = 0
    total: int = 0
    seq: int = 0
    #: The latest record written and not read back yet.
    outstanding: ShareRecord | None = None
    #: When each record not read back yet was written, by sequence number.
    sent_at: dict[int, float] = field(default_factory=dict)
    #: When the latest record read back had been written, and when it came back.
    echoed_sent_at: float | None = None
    echoed_at: float | None = None
    #: When the latest record that did not announce the fallback was written.
    dynamic_sent_at: float | None = None
    started_at: float = 0.0
    fallback: bool = False
    notes: list[str] = field(default_factory=list)


class ShareLedger:
    """One member's view of its group's share records, and its own capacity ``cap``."""

    def __init__(
        self,
        *,
        group: str,
        member: str,
        budget: int,
        window: float,
        lease: float,
        headroom: int | None = None,
        clock: Clock,
    ) -> None:
        self.group = group
        self.member = member
        self.budget = budget
        self.window = window
        self.lease = lease
        #: The least target of a member: what an idle replica keeps to start at once.
        self.headroom = headroom if headroom is not None else max(1, math.ceil(budget * 0.02))
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self.own = Own(started_at=clock())

    @property
    def cap(self) -> int:
        return self.own.cap

    @property
    def key(self) -> str:
        return record_key(self.group, self.member)

    def set_partitions(self, mine: int, total: int) -> None:
        self.own.partitions, self.own.total = mine, total

    def static(self) -> int:
        """This member's static share: what it runs on when cut off from the topic."""
        return static_share(self.budget, self.own.partitions, self.own.total)

    # -- reading the log ---------------------------------------------------------------------

    def observe(self, key: str, record: ShareRecord | None) -> bool:
        """Take the next record of the log (None: a tombstone); True when ``cap`` rose."""
        now = self._clock()
        if key == self.key:
            return record is not None and self._echo(record, now)
        if record is None:
            self._peers.pop(key, None)
        elif record.group == self.group:
            self._peers[key] = _Peer(record, now)
        return False

    def _echo(self, record: ShareRecord, now: float) -> bool:
        own = self.own
        written = own.sent_at.pop(record.seq, None)
        if written is None:
            return False  # not written by this run of the member
        for seq in [seq for seq in own.sent_at if seq < record.seq]:
            del own.sent_at[seq]
        own.echoed_sent_at, own.echoed_at = written, now
        if own.fallback:
            own.fallback = False
            own.notes.append("reconnected")
        if own.outstanding is None or record.seq != own.outstanding.seq:
            return False  # an older record of ours: only the latest one may raise
        mine, own.outstanding = own.outstanding, None
        if mine.mode != DYNAMIC or mine.want <= own.cap:
            return False
        # Everything written before our record is known now: take what the others leave.
        granted = max(own.cap, min(mine.want, self.budget - self.reserved(now)))
        raised = granted > own.cap
        own.cap = granted
        return raised

    # -- what the others may use -------------------------------------------------------------

    def reserved(self, now: float | None = None) -> int:
        """Requests per window every other member, known or not, may use now."""
        fixed, live = self._others(self._clock() if now is None else now)
        return fixed + sum(record.reserve for record in live.values())

    def _others(self, now: float) -> tuple[int, dict[str, ShareRecord]]:
        """(reservations that demand does not move, latest records of live dynamic members)."""
        heard = {k: p for k, p in self._peers.items() if now - p.heard_at <= self.lease}
        covered = self.own.partitions + sum(
            p.record.partitions for p in heard.values() if p.record.mode != LEAVING
        )
        total = self.own.total
        fixed = 0
        live: dict[str, ShareRecord] = {}
        for key, peer in list(self._peers.items()):
            record, quiet = peer.record, now - peer.heard_at
            if record.mode == LEAVING:
                if quiet > self.window:  # what it let through has left every window
                    self._forget(key)
                else:
                    fixed += record.claim
            elif key not in heard:
                if total <= 0 or covered < total:
                    # It may hold partitions still, cut off and running on its static share.
                    fixed += max(record.reserve, record.static_share())
                elif quiet > self.lease + self.window:
                    self._forget(key)  # out of the group, and what it let through is gone
                else:
                    fixed += record.reserve  # out of the group; it let through at most this
            elif record.mode == FALLBACK:
                fixed += record.reserve
            else:
                live[key] = record
        known = self.own.partitions + sum(p.record.partitions for p in self._peers.values())
        if total > 0 and known < total:  # a replica we do not hear may run on its static share
            fixed += math.ceil(self.budget * (total - known) / total)
        return fixed, live

    def _forget(self, key: str) -> None:
        del self._peers[key]
        self.own.notes.append(f"forget {key}")

    def notes(self) -> list[str]:
        """What happened since the last call: ``forget <key>`` (give it a tombstone),
        ``cut_off``, ``reconnected``."""
        notes, self.own.notes = self.own.notes, []
        return notes

    def members(self) -> int:
        """Members heard from (this one included)."""
        now = self._clock()
        return 1 + sum(1 for p in self._peers.values() if now - p.heard_at <= self.lease)

    # -- what this member should have --------------------------------------------------------

    def target(self, demand: int) -> int:
        """The capacity this member should have when ``demand`` requests per window want it."""
        fixed, live = self._others(self._clock())
        available = max(self.budget - fixed, 0)
        wants = {self.key: (demand + self.headroom, _weight(self.own.partitions))}
        for key, record in live.items():
            wants[key] = (record.demand + self.headroom, _weight(record.partitions))
        return _whole(_water_fill(available, wants), available)[self.key]

    def lower_to(self, target: int) -> bool:
        """Lower ``cap`` to ``target`` when it is above (always safe); True when it changed."""
        if target < self.own.cap:
            self.own.cap = max(target, 0)
            return True
        return False

    # -- writing the log ---------------------------------------------------------------------

    def may_write(self) -> bool:
        """The previous record came back (or, cut off, it may never)."""
        return self.own.outstanding is None or self.cut_off()

    def next_record(self, *, used: int, demand: int, want: int) -> ShareRecord:
        """The record to write now; the caller writes it and calls :meth:`sent`."""
        own = self.own
        mode = FALLBACK if self.cut_off() else DYNAMIC
        if mode == FALLBACK:
            want = self.static()  # what it will run on: readers reserve it from now on
        claim = max(own.cap, used)
        own.seq += 1
        return ShareRecord(
            group=self.group,
            member=self.member,
            seq=own.seq,
            mode=mode,
            claim=claim,
            want=max(want, claim),
            demand=demand,
            partitions=own.partitions,
            total=own.total,
            budget=self.budget,
            window=self.window,
        )

    def leaving_record(self, *, used: int) -> ShareRecord:
        """The last record: what this member let through still counts for a window (it lets
        nothing more through)."""
        own = self.own
        own.seq += 1
        claim = used
        own.cap = 0
        return ShareRecord(
            group=self.group,
            member=self.member,
            seq=own.seq,
            mode=LEAVING,
            claim=claim,
            want=claim,
            demand=0,
            partitions=0,
            total=own.total,
            budget=self.budget,
            window=self.window,
        )

    def sent(self, record: ShareRecord) -> None:
        """``record`` went to the producer."""
        now = self._clock()
        self.own.outstanding = record
        self.own.sent_at[record.seq] = now
        if record.mode != FALLBACK:
            self.own.dynamic_sent_at = now

    # -- cut off -----------------------------------------------------------------------------

    def cut_off(self) -> bool:
        """Nothing of ours has come back for ``lease`` seconds (or ever, since the start)."""
        own = self.own
        last = own.echoed_at if own.echoed_at is not None else own.started_at
        return self._clock() - last > self.lease

    def follow_fallback(self) -> bool:
        """Apply the fallback rules; True when ``cap`` changed.

        Cut off: at most the static share at once; the static share itself only ``2 × lease +
        W`` after the latest record that did not announce the fallback was written (or after
        the start). Every other member has by then read that record (within a lease, or it is
        cut off itself), then either read a record announcing the fallback or heard nothing
        for a lease, reserved the static share, lowered its capacity — and what it let through
        before has left the window.
        """
        own = self.own
        if not self.cut_off():
            return False
        if not own.fallback:
            own.fallback = True
            own.notes.append("cut_off")
        static = self.static()
        since = own.dynamic_sent_at if own.dynamic_sent_at is not None else own.started_at
        if self._clock() - since >= 2 * self.lease + self.window and own.cap < static:
            own.cap = static
            return True
        return self.lower_to(static)


def _weight(partitions: int) -> float:
    return float(max(partitions, 1))


def _whole(shares: dict[str, float], available: int) -> dict[str, int]:
    """Whole requests: each share rounded down, and the units that frees given to the largest
    remainders (ties by key, so every member that sees the same records agrees)."""
    whole = {k: math.floor(v + 1e-9) for k, v in shares.items()}
    spare = min(available, math.floor(sum(shares.values()) + 1e-9)) - sum(whole.values())
    by_remainder = sorted(shares, key=lambda k: (-(shares[k] - whole[k]), k))
    for k in by_remainder[: max(spare, 0)]:
        whole[k] += 1
    return whole


def _water_fill(available: float, wants: dict[str, tuple[int, float]]) -> dict[str, float]:
    """Split ``available`` max-min fairly by weight with nobody above its want; what nobody
    wants stays with nobody (so that claims stay close to use)."""
    share: dict[str, float] = {}
    open_ = dict(wants)
    left = float(available)
    while open_:
        weights = sum(weight for _, weight in open_.values())
        level = left / weights
        full = {k: want for k, (want, weight) in open_.items() if want <= level * weight}
        if not full:
            for k, (_, weight) in open_.items():
                share[k] = level * weight
            return share
        for k, want in full.items():
            share[k] = float(want)
            left -= want
            del open_[k]
    return share
