"""Per-key order with concurrency across keys, and dropping queued work."""

from __future__ import annotations

import asyncio
import random

from bridge.pipeline.keyed import KeyedRunner


def _no_crash(item: object, exc: Exception) -> None:
    raise AssertionError(f"handler crashed on {item!r}: {exc!r}")


async def test_same_key_in_order_other_keys_concurrently() -> None:
    seen: dict[str, list[int]] = {}
    running = 0
    peak = 0
    rnd = random.Random(7)

    async def handle(item: tuple[str, int]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(rnd.random() / 500)
        seen.setdefault(item[0], []).append(item[1])
        running -= 1

    async with KeyedRunner[str, tuple[str, int]](handle, workers=8, on_crash=_no_crash) as runner:
        for n in range(400):
            key = f"k{rnd.randrange(20)}"
            runner.submit(key, (key, n))
        while runner.queued:
            await asyncio.sleep(0.01)
    assert sum(len(v) for v in seen.values()) == 400
    for numbers in seen.values():
        assert numbers == sorted(numbers)
    assert 1 < peak <= 8


async def test_drop_removes_only_unstarted_items() -> None:
    gate = asyncio.Event()
    started: list[int] = []

    async def handle(item: int) -> None:
        started.append(item)
        await gate.wait()

    async with KeyedRunner[str, int](handle, workers=1, on_crash=_no_crash) as runner:
        for n in range(5):
            runner.submit("k", n)
        runner.submit("other", 99)
        while not started:
            await asyncio.sleep(0.001)
        dropped = runner.drop(lambda item: item in (0, 2, 3, 99))
        assert sorted(dropped) == [2, 3, 99]  # 0 is running, so it stays
        gate.set()
        while runner.queued:
            await asyncio.sleep(0.001)
    assert started == [0, 1, 4]


async def test_a_crashing_handler_is_reported_and_does_not_stop_the_key() -> None:
    done: list[int] = []
    crashes: list[tuple[int, str]] = []

    async def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        done.append(item)

    def crashed(item: int, exc: Exception) -> None:
        crashes.append((item, str(exc)))

    async with KeyedRunner[str, int](handle, workers=2, on_crash=crashed) as runner:
        for n in range(3):
            runner.submit("k", n)
        while runner.queued:
            await asyncio.sleep(0.001)
    assert done == [0, 2]
    assert crashes == [(1, "boom")]
