"""Which offsets may be committed: only past commands that are finished, without gaps.

Commands of one partition finish out of order (different instances run concurrently), but a
commit says "everything before this offset is done". So each partition keeps its consumed
offsets in order, and the commit point moves only over a finished prefix.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(slots=True)
class PartitionOffsets:
    """Consumed offsets of one partition and which of them are finished."""

    _consumed: deque[int] = field(default_factory=deque)
    #: When each consumed offset was taken in (wall-clock seconds), in step with ``_consumed``.
    _taken_at: deque[float] = field(default_factory=deque)
    _finished: set[int] = field(default_factory=set)
    #: The next offset to commit (one past the finished prefix), once anything finished.
    _frontier: int | None = None
    _committed: int | None = None

    def add(self, offset: int, at: float = 0.0) -> None:
        if self._consumed and offset <= self._consumed[-1]:
            raise ValueError(f"offset {offset} consumed after {self._consumed[-1]}")
        self._consumed.append(offset)
        self._taken_at.append(at)

    def finish(self, offset: int) -> None:
        self._finished.add(offset)
        while self._consumed and self._consumed[0] in self._finished:
            head = self._consumed.popleft()
            self._taken_at.popleft()
            self._finished.discard(head)
            self._frontier = head + 1

    @property
    def oldest_unfinished_at(self) -> float | None:
        """When the first unfinished command was consumed; None when all are finished.

        Everything written for this partition's commands past the frontier was written after
        this moment: offsets are consumed in order.
        """
        return self._taken_at[0] if self._taken_at else None

    @property
    def pending(self) -> int:
        """Consumed and not yet finished."""
        return len(self._consumed) - len(self._finished)

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when nothing new is committable."""
        if self._frontier is None or self._frontier == self._committed:
            return None
        return self._frontier

    def committed(self, offset: int) -> None:
        self._committed = offset


class OffsetTracker(Generic[P]):
    """:class:`PartitionOffsets` for every partition this member holds."""

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}

    def add(self, partition: P, offset: int, at: float = 0.0) -> None:
        self._partitions.setdefault(partition, PartitionOffsets()).add(offset, at)

    def finish(self, partition: P, offset: int) -> None:
        offsets = self._partitions.get(partition)
        if offsets is not None:  # finished after the partition was revoked: nothing to commit
            offsets.finish(offset)

    def to_commit(self, partitions: set[P] | None = None) -> dict[P, int]:
        """Offsets to commit now, for all partitions or only ``partitions``."""
        result = {}
        for partition, offsets in self._partitions.items():
            if partitions is not None and partition not in partitions:
                continue
            offset = offsets.to_commit()
            if offset is not None:
                result[partition] = offset
        return result

    def committed(self, offsets: dict[P, int]) -> None:
        for partition, offset in offsets.items():
            if partition in self._partitions:
                self._partitions[partition].committed(offset)

    def oldest_unfinished_at(self, partition: P) -> float | None:
        offsets = self._partitions.get(partition)
        return None if offsets is None else offsets.oldest_unfinished_at

    def pending(self, partition: P | None = None) -> int:
        if partition is not None:
            offsets = self._partitions.get(partition)
            return 0 if offsets is None else offsets.pending
        return sum(offsets.pending for offsets in self._partitions.values())

    def forget(self, partition: P) -> None:
        """Drop a revoked partition; its unfinished commands belong to the next owner."""
        self._partitions.pop(partition, None)
