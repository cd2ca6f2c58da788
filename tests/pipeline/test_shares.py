"""Demand-aware budget shares (``bridge.pipeline.shares``) on a fake clock and a simulated log.

The members here are the real ledger and the real sliding window; only the topic is a list and
time is a number. The safety test lets members grant requests as fast as their windows allow
while demand jumps between them, records reach readers late, and a member is cut off, and
checks the one thing that matters: no window of the budget's length ever holds more than the
budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from bridge.pipeline.budget import SlidingWindow
from bridge.pipeline.shares import (
    DYNAMIC,
    FALLBACK,
    LEAVING,
    ShareLedger,
    ShareRecord,
    static_share,
)

BUDGET, WINDOW, LEASE = 100, 10.0, 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Member:
    ledger: ShareLedger
    window: SlidingWindow
    read: int = 0
    cut_off: bool = False
    grants: list[float] = field(default_factory=list)

    def apply(self) -> None:
        self.window.set_capacity(self.ledger.cap)


class Group:
    """Members around one simulated single-partition log."""

    def __init__(self, clock: Clock, count: int, *, partitions: int | None = None) -> None:
        self.clock = clock
        self.log: list[tuple[str, ShareRecord | None]] = []
        total = partitions or count
        self.members = []
        for n in range(count):
            ledger = ShareLedger(
                group="g",
                member=f"m{n}",
                budget=BUDGET,
                window=WINDOW,
                lease=LEASE,
                clock=clock,
            )
            ledger.set_partitions(total // count + (1 if n < total % count else 0), total)
            window = SlidingWindow(BUDGET, WINDOW, clock=clock)
            member = Member(ledger, window)
            member.apply()
            self.members.append(member)

    def read(self, member: Member, upto: int | None = None) -> None:
        end = len(self.log) if upto is None else min(upto, len(self.log))
        while member.read < end:
            key, record = self.log[member.read]
            member.read += 1
            member.ledger.observe(key, record)
        member.apply()

    def tick(self, member: Member, demand: int) -> None:
        ledger = member.ledger
        used = member.window.used()
        target = ledger.target(used + demand)
        ledger.lower_to(target)
        ledger.follow_fallback()
        for note in ledger.notes():
            if note.startswith("forget ") and not member.cut_off:
                self.log.append((note.removeprefix("forget "), None))
        if ledger.may_write() and not member.cut_off:
            want = target if target > ledger.cap else ledger.cap
            record = ledger.next_record(used=used, demand=used + demand, want=want)
            self.log.append((ledger.key, record))
            ledger.sent(record)
        member.apply()

    def grant(self, member: Member, demand: int) -> int:
        granted = 0
        while granted < demand and member.window.wait_time() == 0:
            member.window.begin()
            member.window.end()
            member.grants.append(self.clock.now)
            granted += 1
        return granted

    def settle(self, rounds: int = 5) -> None:
        for _ in range(rounds):
            for member in self.members:
                self.read(member)
                self.tick(member, 0)
            for member in self.members:
                self.read(member)


def busiest_window(grants: list[float], window: float) -> int:
    grants = sorted(grants)
    most, start = 0, 0
    for end, at in enumerate(grants):
        while grants[start] <= at - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_idle_group_keeps_headroom_and_skew_moves_the_budget() -> None:
    clock = Clock()
    group = Group(clock, 3)
    group.settle()
    # No demand: each keeps its headroom, and nobody claims the rest.
    headroom = group.members[0].ledger.headroom
    assert [m.ledger.cap for m in group.members] == [headroom] * 3
    busy, *idle = group.members
    for _ in range(5):
        for member in group.members:
            group.read(member)
            group.tick(member, 500 if member is busy else 0)
        clock.now += 0.1
    assert [m.ledger.cap for m in idle] == [headroom, headroom]
    assert busy.ledger.cap == BUDGET - 2 * headroom
    assert busy.ledger.cap >= 0.9 * BUDGET


def test_evenly_loaded_members_split_the_whole_budget_by_partitions() -> None:
    clock = Clock()
    group = Group(clock, 3)
    for _ in range(8):
        for member in group.members:
            group.read(member)
            group.tick(member, 500)
        clock.now += 0.1
    caps = sorted(m.ledger.cap for m in group.members)
    assert caps == [33, 33, 34]  # the static split, with the last request handed out too
    weighted = Group(clock, 2, partitions=3)  # one member holds two of three partitions
    for _ in range(8):
        for member in weighted.members:
            weighted.read(member)
            weighted.tick(member, 500)
        clock.now += 0.1
    assert [m.ledger.cap for m in weighted.members] == [67, 33]


def test_a_member_that_gives_up_share_keeps_what_it_let_through_counted() -> None:
    clock = Clock()
    group = Group(clock, 2)
    first, second = group.members
    for _ in range(5):  # the first member is busy and uses nearly the whole budget
        for member in group.members:
            group.read(member)
            group.tick(member, 500 if member is first else 0)
            group.grant(member, 500 if member is first else 0)
        clock.now += 0.1
    assert len(first.grants) == first.ledger.cap == BUDGET - second.ledger.headroom
    # Demand moves to the second member: the first lowers its capacity at once...
    for _ in range(5):
        for member in group.members:
            group.read(member)
            group.tick(member, 500 if member is second else 0)
        clock.now += 0.1
    assert first.ledger.cap < 60
    # ...but what it let through still counts until it leaves the window: no room yet.
    assert second.ledger.cap == second.ledger.headroom
    assert first.ledger.reserved() >= 0
    clock.now += WINDOW * 1.02
    for _ in range(5):
        for member in group.members:
            group.read(member)
            group.tick(member, 500 if member is second else 0)
        clock.now += 0.1
    assert second.ledger.cap >= 0.9 * BUDGET - first.ledger.headroom


def test_raises_wait_for_the_log_and_concurrent_wants_cannot_both_win() -> None:
    clock = Clock()
    group = Group(clock, 2)
    group.settle()
    first, second = group.members
    # Both write a want for the whole budget before either reads the other's.
    for member in group.members:
        record = member.ledger.next_record(used=0, demand=1000, want=BUDGET)
        group.log.append((member.ledger.key, record))
        member.ledger.sent(record)
    headroom = first.ledger.headroom
    assert [m.ledger.cap for m in group.members] == [headroom] * 2  # nothing before the echo
    group.read(first)
    group.read(second)
    assert first.ledger.cap + second.ledger.cap <= BUDGET
    # First in the log: the other's claim before it counts. Second: the first's want counts in
    # full, so it keeps what it had.
    assert first.ledger.cap == BUDGET - headroom
    assert second.ledger.cap == headroom


def test_records_round_trip_and_foreign_bytes_are_refused() -> None:
    record = ShareRecord("g", "m", 3, DYNAMIC, 10, 20, 30, 2, 4, 100, 10.0)
    assert ShareRecord.decode(record.encode()) == record
    assert record.reserve == 20
    assert record.static_share() == 50
    for bad in (b"", b"[]", b'{"v": 2}', b'{"v": 1, "group": "g"}', b"\xff"):
        with pytest.raises(ValueError, match="share record"):
            ShareRecord.decode(bad)
    negative = record.encode().replace(b'"claim":10', b'"claim":-1')
    with pytest.raises(ValueError, match="out of range"):
        ShareRecord.decode(negative)
    assert static_share(100, 1, 3) == 33
    assert static_share(100, 1, 0) == 0


def test_a_silent_member_is_reserved_its_static_share_until_others_hold_its_partitions() -> None:
    clock = Clock()
    group = Group(clock, 3)
    group.settle()
    gone, first, second = group.members
    gone.cut_off = True
    clock.now += LEASE + 0.1
    group.settle()
    # Silent: its static share stays reserved (it may be running on it, cut off).
    assert first.ledger.reserved() >= 33
    clock.now += WINDOW
    group.settle()
    assert first.ledger.reserved() >= 33  # it still holds a third of the partitions
    # A rebalance gives its partitions to the others: it is out of the group, and silent for
    # longer than a lease and a window, so what it let through is gone: forgotten, tombstoned.
    first.ledger.set_partitions(2, 3)
    second.ledger.set_partitions(1, 3)
    group.settle()
    assert (gone.ledger.key, None) in group.log
    assert first.ledger.reserved() == second.ledger.cap


def test_a_cut_off_member_falls_back_to_its_static_share_only_after_lease_and_window() -> None:
    clock = Clock()
    group = Group(clock, 2)
    busy, idle = group.members
    for _ in range(5):
        for member in group.members:
            group.read(member)
            group.tick(member, 500 if member is busy else 0)
        clock.now += 0.1
    assert idle.ledger.cap == idle.ledger.headroom
    assert busy.ledger.cap == BUDGET - idle.ledger.headroom
    idle.cut_off = True  # it can neither read nor write the topic any more
    caps = []
    while clock.now < 2 * (LEASE + WINDOW):
        clock.now += 0.1
        group.read(busy)
        group.tick(busy, 500)
        group.tick(idle, 0)
        caps.append((clock.now, busy.ledger.cap, idle.ledger.cap))
        # Neither may count on more than the other leaves (nothing is granted here, so the
        # capacities are the claims).
        assert busy.ledger.cap + idle.ledger.cap <= BUDGET, caps[-5:]
    assert idle.ledger.own.fallback
    assert idle.ledger.cap == static_share(BUDGET, 1, 2)  # its partitions' share, in the end
    assert busy.ledger.cap == BUDGET - static_share(BUDGET, 1, 2)
    raised = next(at for at, _, cap in caps if cap > idle.ledger.headroom)
    lowered = next(at for at, cap, _ in caps if cap < BUDGET - idle.ledger.headroom)
    assert raised - lowered >= WINDOW  # the busy member gave room a whole window earlier


def test_a_member_that_cannot_read_its_records_back_announces_its_fallback() -> None:
    clock = Clock()
    group = Group(clock, 2)
    busy, deaf = group.members
    for _ in range(5):
        for member in group.members:
            group.read(member)
            group.tick(member, 500 if member is busy else 0)
        clock.now += 0.1
    assert busy.ledger.cap == BUDGET - deaf.ledger.headroom
    clock.now += LEASE + 0.1  # the deaf member still writes, but reads nothing back
    group.tick(deaf, 0)
    _, announced = group.log[-1]
    assert announced is not None
    assert (announced.mode, announced.want) == (FALLBACK, static_share(BUDGET, 1, 2))
    group.read(busy)
    group.tick(busy, 500)
    assert busy.ledger.cap == BUDGET - static_share(BUDGET, 1, 2)  # room kept for it


def test_a_crashed_member_out_of_the_group_holds_back_only_its_claim_for_a_window() -> None:
    clock = Clock()
    group = Group(clock, 2)
    crashed, heir = group.members
    for _ in range(5):  # the crashed member had 30 requests to make, and made them
        for member in group.members:
            work = 30 - len(member.grants) if member is crashed else 0
            group.read(member)
            group.tick(member, work)
            group.grant(member, work)
        clock.now += 0.1
    assert len(crashed.grants) == 30
    claim = group.log[-2][1]
    assert claim is not None
    assert 30 <= claim.claim < BUDGET // 2  # close to its use, not its partitions' half
    crashed.cut_off = True  # killed: never heard again
    heir.ledger.set_partitions(2, 2)  # the group gave the heir every partition
    clock.now += LEASE + 0.1
    assert heir.ledger.reserved() == claim.reserve
    clock.now += WINDOW
    assert heir.ledger.reserved() == 0
    assert f"forget {crashed.ledger.key}" in heir.ledger.notes()


def test_a_leaving_member_counts_for_one_window_after_its_last_record() -> None:
    clock = Clock()
    group = Group(clock, 2)
    group.settle()
    first, second = group.members
    record = first.ledger.leaving_record(used=40)
    # What it let through counts, not the capacity it will no longer use.
    assert (record.mode, record.claim, first.ledger.cap) == (LEAVING, 40, 0)
    group.log.append((first.ledger.key, record))
    group.read(second)
    second.ledger.set_partitions(2, 2)  # the rebalance gave it the leaver's partition
    assert second.ledger.reserved() == 40
    clock.now += WINDOW + 0.1
    assert second.ledger.reserved() == 0
    assert f"forget {first.ledger.key}" in second.ledger.notes()


@pytest.mark.parametrize("seed", range(12))
def test_no_window_ever_holds_more_than_the_budget(seed: int) -> None:
    rnd = random.Random(seed)
    clock = Clock()
    count = rnd.choice([2, 3, 4])
    group = Group(clock, count, partitions=rnd.choice([count, 2 * count, 6]))
    demand = {id(m): 0 for m in group.members}
    step = 0.05
    victim = rnd.choice(group.members)
    for tick in range(int(60 / step)):
        clock.now = tick * step
        if tick % 40 == 0:  # every 2 s the demand moves: skewed, uniform or idle
            shape = rnd.choice(["skew", "uniform", "idle", "random"])
            hot = rnd.choice(group.members)
            for m in group.members:
                demand[id(m)] = {
                    "skew": 1000 if m is hot else 0,
                    "uniform": 1000,
                    "idle": 0,
                    "random": rnd.choice([0, 5, 50, 1000]),
                }[shape]
        if tick == 300 and seed % 2:
            victim.cut_off = True  # cut off for good; it keeps granting what its rules allow
        for member in rnd.sample(group.members, len(group.members)):
            if not member.cut_off and rnd.random() < 0.6:
                # Readers lag: they read a random part of what is new (never more than a lease).
                behind = len(group.log) - member.read
                group.read(member, member.read + rnd.randint(0, behind) if behind else None)
            if tick % 4 == 0:
                group.tick(member, demand[id(member)])
            group.grant(member, rnd.randint(0, 3) if demand[id(member)] else 0)
        for member in group.members:  # nobody lags by more than 0.5 s
            if not member.cut_off and tick % 10 == 9:
                group.read(member)
    everything = [at for member in group.members for at in member.grants]
    assert busiest_window(everything, WINDOW) <= BUDGET
    assert len(everything) > BUDGET * 2  # the budget was really used, across many windows
