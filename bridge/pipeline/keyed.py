"""Per-key ordering with concurrency across keys.

Items with the same key run one at a time, in the order submitted; items with different keys run
concurrently on a fixed pool of workers. A key waiting for a worker costs a deque entry, not a
task, so a large backlog stays cheap.

The handler is expected to answer its own errors. One that escapes is a bug: it is passed to
``on_crash`` (the bridge stops on it, so the item is redelivered) and the worker carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Generic, Self, TypeVar

import structlog

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

log = structlog.get_logger(__name__)


class KeyedRunner(Generic[K, T]):
    """Run ``handler(item)`` for submitted items: ordered per key, ``workers`` keys at once."""

    def __init__(
        self,
        handler: Callable[[T], Awaitable[None]],
        *,
        workers: int,
        on_crash: Callable[[T, Exception], None],
    ) -> None:
        self._handler = handler
        self._on_crash = on_crash
        self._workers = workers
        self._queues: dict[K, deque[T]] = {}
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._active: set[K] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"keyed-worker-{n}")
            for n in range(self._workers)
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def submit(self, key: K, item: T) -> None:
        """Queue ``item`` behind every earlier item of ``key``; never blocks."""
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque([item])
            self._ready.put_nowait(key)
        else:
            queue.append(item)

    @property
    def queued(self) -> int:
        """Items submitted and not finished (running ones included)."""
        return sum(len(queue) for queue in self._queues.values())

    def drop(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove items that have not started and match ``predicate``; returns them."""
        dropped: list[T] = []
        for key, queue in list(self._queues.items()):
            running = queue[0] if key in self._active and queue else None
            kept = deque(item for item in queue if item is running or not predicate(item))
            dropped.extend(item for item in queue if item is not running and predicate(item))
            if kept:
                self._queues[key] = kept
            else:
                # Nothing left: the key's entry in the ready queue is skipped by the worker.
                del self._queues[key]
        return dropped

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            # A key can be queued twice (dropped, then submitted again); one worker owns it.
            if key in self._active or not self._queues.get(key):
                continue
            self._active.add(key)
            try:
                while queue := self._queues.get(key):
                    item = queue[0]
                    try:
                        await self._handler(item)
                    except Exception as exc:  # the handler answers its own errors: a bug
                        # Not even a broken log sink may cost the pool a worker.
                        with contextlib.suppress(Exception):
                            log.exception("handler_crashed", key=str(key))
                        with contextlib.suppress(Exception):
                            self._on_crash(item, exc)
                    finally:
                        current = self._queues.get(key)
                        if current and current[0] is item:
                            current.popleft()
            finally:
                self._active.discard(key)
                if key in self._queues and not self._queues[key]:
                    del self._queues[key]
