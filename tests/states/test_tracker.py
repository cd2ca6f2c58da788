"""The tracker's rules: once, never backwards, final states absorb, births inform, polls infer."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bridge.contract.results import InstanceError, StateRecord, StateSource
from bridge.states.tracker import Kind, Observation, Tracker, ordered

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def obs(
    status: str,
    second: float,
    *,
    source: StateSource = "event",
    kind: Kind = Kind.SIGHTING,
    instance: str = "i",
    observed: float | None = None,
) -> Observation:
    at = T0 + timedelta(seconds=second if observed is None else observed)
    event_at = None if source == "command" else T0 + timedelta(seconds=second)
    return Observation("wf", instance, status, source, at=at, event_at=event_at, kind=kind)


def one(tracker: Tracker, observation: Observation) -> StateRecord | None:
    """The record ``observation`` makes (None: no change); it never makes two here."""
    records = tracker.apply(observation)
    assert len(records) <= 1, records
    return records[0] if records else None


def statuses(records: list[StateRecord | None]) -> list[str]:
    return [r.status for r in records if r is not None]


def test_a_lifecycle_in_order_is_published_as_a_chain() -> None:
    tracker = Tracker()
    records = [
        one(tracker, obs(s, n)) for n, s in enumerate(["queued", "running", "paused", "running"])
    ]
    done = obs("complete", 9).with_details(version_id="v2", output={"ok": 1}, error=None)
    records.append(one(tracker, done))
    assert statuses(records) == ["queued", "running", "paused", "running", "complete"]
    chain = [r for r in records if r is not None]
    assert [r.previous_status for r in chain] == [None, "queued", "running", "paused", "running"]
    assert chain[-1].output == {"ok": 1}
    assert chain[-1].version_id == "v2"
    assert chain[0].output is None
    assert tracker.known("wf", "i") == "complete"
    assert tracker.live("wf") == frozenset()


def test_duplicates_old_news_and_anything_after_a_final_are_dropped() -> None:
    tracker = Tracker()
    assert one(tracker, obs("queued", 0)) is not None
    assert one(tracker, obs("running", 2)) is not None
    assert one(tracker, obs("running", 2)) is None  # a redelivery
    assert one(tracker, obs("queued", 0)) is None  # late and older
    assert one(tracker, obs("paused", 1)) is None  # older than what was applied
    errored = obs("errored", 3).with_details(
        version_id=None, output="ignored", error=InstanceError(name="E", message="m")
    )
    record = one(tracker, errored)
    assert record is not None
    assert record.error == InstanceError(name="E", message="m")
    assert record.output is None  # output belongs to complete only
    for late in (obs("running", 10), obs("complete", 11), obs("terminated", 12)):
        assert one(tracker, late) is None


def test_ties_go_by_lifecycle_rank_and_finals_always_end_a_live_instance() -> None:
    tracker = Tracker()
    assert one(tracker, obs("running", 5)) is not None
    assert one(tracker, obs("queued", 5)) is None  # same millisecond, earlier in the lifecycle
    assert one(tracker, obs("paused", 5)) is None  # same rank: no way to tell, keep what is
    assert one(tracker, obs("terminated", 1)) is not None  # a final whatever its time


def test_command_answers_are_weak_against_cloudflares_clock() -> None:
    tracker = Tracker()
    assert one(tracker, obs("running", 1)) is not None
    # the bridge paused it; the answer came at 10 s on the bridge's clock
    record = one(tracker, obs("waitingForPause", 10, source="command"))
    assert record is not None
    assert record.source == "command"
    assert record.event_at is None
    # the event of the pause happened at 3 s on Cloudflare's clock: still news
    assert one(tracker, obs("paused", 3)) is not None
    # but not an event older than the last Cloudflare-timed one
    assert one(tracker, obs("running", 2)) is None


def test_births_inform_only_and_a_restart_reopens() -> None:
    tracker = Tracker()
    first = one(tracker, obs("queued", 1, source="command", kind=Kind.BIRTH))
    assert first is not None
    assert first.previous_status is None
    assert one(tracker, obs("complete", 4)) is not None
    # the create's answer read again (recovery replays results): no news
    assert one(tracker, obs("queued", 1, source="command", kind=Kind.BIRTH)) is None
    # an old restart is not news either; a newer one reopens the instance
    assert one(tracker, obs("queued", 2, source="command", kind=Kind.RESTART)) is None
    again = one(tracker, obs("queued", 8, source="command", kind=Kind.RESTART))
    assert again is not None
    assert again.previous_status == "complete"
    assert tracker.live("wf") == frozenset({"i"})
    assert one(tracker, obs("queued", 8.5, source="command", kind=Kind.RESTART)) is None


def test_polls_mark_what_they_did_not_see_happen() -> None:
    tracker = Tracker()
    first = one(tracker, obs("waiting", 1, source="poll"))
    assert first is not None
    assert first.inferred
    direct = one(tracker, obs("running", 2, source="poll"))
    assert direct is not None
    assert not direct.inferred
    skipped = one(tracker, obs("paused", 3, source="poll"))
    assert skipped is not None
    assert skipped.inferred
    ended = one(tracker, obs("terminated", 4, source="poll", kind=Kind.ENDED))
    assert ended is not None
    assert ended.inferred
    event = one(Tracker(), obs("complete", 1))
    assert event is not None
    assert not event.inferred


def test_restore_continues_the_chain_from_kafka() -> None:
    published = Tracker()
    records = [one(published, obs(s, n)) for n, s in enumerate(["queued", "running"])]
    recovered = Tracker()
    for record in records:
        assert record is not None
        recovered.restore(StateRecord.model_validate_json(record.model_dump_json()))
    assert recovered.known("wf", "i") == "running"
    assert one(recovered, obs("running", 1)) is None
    nxt = one(recovered, obs("complete", 5))
    assert nxt is not None
    assert nxt.previous_status == "running"


def test_naive_api_timestamps_are_utc() -> None:
    tracker = Tracker()
    naive = Observation("wf", "i", "running", "poll", at=T0, event_at=datetime(2026, 11, 30, 12))
    assert one(tracker, naive) is not None
    assert one(tracker, obs("paused", 1)) is not None  # compares with an aware time


LIFECYCLE = ["queued", "running", "waiting", "running", "paused", "running", "complete"]


@given(
    st.lists(st.integers(min_value=0, max_value=len(LIFECYCLE) - 1), max_size=30),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=8),
)
def test_any_delivery_order_never_goes_backwards(
    extra: list[int], rng: random.Random, batch: int
) -> None:
    """Each change once, a chain without gaps in published order, times never decreasing, and
    nothing after the final state — whatever duplicates and reordering the queue brings."""
    deliveries = [obs(s, n) for n, s in enumerate(LIFECYCLE)]
    deliveries += [obs(LIFECYCLE[n], n) for n in extra]
    rng.shuffle(deliveries)
    tracker = Tracker()
    published: list[StateRecord] = []
    for start in range(0, len(deliveries), batch):  # pulled in batches, each sorted
        for observation in ordered(deliveries[start : start + batch]):
            record = one(tracker, observation)
            if record is not None:
                published.append(record)
    assert published, "something is always published"
    for before, after in itertools.pairwise(published):
        assert after.previous_status == before.status
        assert after.status != before.status
        assert before.event_at is not None
        assert after.event_at is not None
        assert after.event_at > before.event_at or after.status == "complete"
        assert before.status != "complete"
    assert published[0].previous_status is None
    assert published[-1].status == "complete"  # the final always arrives and ends it
    times = [r.event_at for r in published]
    assert len(set(times)) == len(times)  # no change published twice


@given(st.permutations(list(enumerate(LIFECYCLE))))
def test_a_batch_in_any_order_is_sorted_into_the_whole_chain(
    arrival: list[tuple[int, str]],
) -> None:
    tracker = Tracker()
    records = [one(tracker, o) for o in ordered(obs(s, n) for n, s in arrival)]
    assert statuses(records) == LIFECYCLE


def test_a_first_sighting_past_queued_begins_at_the_creation_time() -> None:
    tracker = Tracker()
    created = T0 + timedelta(seconds=1)
    seen = Observation(
        "wf",
        "i",
        "waiting",
        "poll",
        at=T0 + timedelta(seconds=9),
        event_at=T0 + timedelta(seconds=5),
        created_at=created,
    )
    born, waiting = tracker.apply(seen)
    assert (born.status, born.previous_status, born.event_at) == ("queued", None, created)
    assert born.inferred
    assert (waiting.status, waiting.previous_status) == ("waiting", "queued")
    # the create's own answer, read later, is no news
    assert one(tracker, obs("queued", 1, source="command", kind=Kind.BIRTH)) is None
    # nor an event of the start that happened before the listed status
    assert one(tracker, obs("running", 2)) is None


def test_ended_instances_are_forgotten_after_the_horizon_live_ones_never() -> None:
    tracker = Tracker()
    for n in range(3):
        one(tracker, obs("queued", n, instance=f"done-{n}"))
        one(tracker, obs("complete", 10 + n, instance=f"done-{n}"))
    one(tracker, obs("running", 5, instance="live"))
    assert len(tracker) == 4
    # "done-0" and "done-1" ended before T0 + 11.5 s (as the bridge saw them); "done-2" after.
    assert tracker.forget_finals(T0 + timedelta(seconds=11.5)) == 2
    assert tracker.known("wf", "done-0") is None
    assert tracker.known("wf", "done-2") == "complete"
    assert tracker.known("wf", "live") == "running"
    # within the horizon a late duplicate is still absorbed ...
    assert one(tracker, obs("complete", 12, instance="done-2", observed=30)) is None
    # ... after it, the instance is unknown again (the documented cost of a bounded memory)
    assert tracker.forget_finals(T0 + timedelta(days=1)) == 1
    late = one(tracker, obs("complete", 12, instance="done-2", observed=90_000))
    assert late is not None
    assert late.previous_status is None
    assert tracker.known("wf", "live") == "running"  # a live instance is never forgotten
    assert tracker.forget_finals(T0 + timedelta(days=1)) == 0


def test_a_restarted_instance_is_not_forgotten_for_its_earlier_end() -> None:
    tracker = Tracker()
    one(tracker, obs("queued", 0))
    one(tracker, obs("complete", 1))
    restarted = obs("queued", 5, source="command", kind=Kind.RESTART, observed=5)
    assert one(tracker, restarted) is not None
    assert tracker.forget_finals(T0 + timedelta(seconds=3)) == 0  # its end is stale now
    assert tracker.known("wf", "i") == "queued"


def test_restoring_skips_instances_that_ended_before_the_horizon() -> None:
    tracker = Tracker()
    horizon = T0 + timedelta(minutes=30)

    def record(instance: str, status: str, minute: int) -> StateRecord:
        return StateRecord(
            workflow="wf",
            instance_id=instance,
            status=status,
            at=T0 + timedelta(minutes=minute),
            source="event",
        )

    for restored in (
        record("old", "queued", 0),
        record("old", "complete", 10),
        record("recent", "queued", 20),
        record("recent", "errored", 40),
        record("live", "running", 5),
    ):
        tracker.restore(restored, ended_before=horizon)
    assert tracker.known("wf", "old") is None
    assert tracker.known("wf", "recent") == "errored"
    assert tracker.known("wf", "live") == "running"
    assert len(tracker) == 2
