"""The commit point only ever moves over a finished prefix of consumed offsets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.pipeline.offsets import OffsetTracker, PartitionOffsets


@given(
    st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_commit_point_is_lowest_unfinished(gaps: list[int], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    offsets = []
    position = 0
    for gap in gaps:  # gaps model compacted offsets and transaction markers
        position += gap
        offsets.append(position)
    tracker = PartitionOffsets()
    for offset in offsets:
        tracker.add(offset)
    order = offsets[:]
    rnd.shuffle(order)
    finished: set[int] = set()
    last_commit = None
    for offset in order:
        tracker.finish(offset)
        finished.add(offset)
        unfinished = [o for o in offsets if o not in finished]
        expected = None
        prefix = [o for o in offsets if not unfinished or o < unfinished[0]]
        if prefix:
            expected = prefix[-1] + 1
        point = tracker.to_commit()
        if expected is None or expected == last_commit:
            assert point is None
        else:
            assert point == expected
            # never past an unfinished offset
            assert not unfinished or point <= unfinished[0]
            tracker.committed(point)
            last_commit = point
    assert tracker.pending == 0
    assert last_commit == offsets[-1] + 1


def test_tracker_per_partition_and_forget() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in range(5):
        tracker.add("a", offset)
        tracker.add("b", offset)
    tracker.finish("a", 0)
    tracker.finish("a", 1)
    tracker.finish("b", 3)
    assert tracker.to_commit() == {"a": 2}
    assert tracker.pending() == 7
    tracker.committed({"a": 2})
    assert tracker.to_commit() == {}
    tracker.forget("b")
    tracker.finish("b", 0)  # a late finish for a revoked partition is ignored
    assert tracker.to_commit() == {}
    assert tracker.pending() == 3


def test_out_of_order_add_is_a_bug() -> None:
    tracker = PartitionOffsets()
    tracker.add(5)
    with pytest.raises(ValueError, match="after 5"):
        tracker.add(5)
