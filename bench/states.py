"""Scenario e: the instance-state stream — instances driven to a final state, polling only vs the
queue (with and without fetching outputs).

Per mode, a fresh emulator (request budget enforced, Event Subscriptions feeding a queue in the
queue modes), output topic and group; ``python -m bridge run`` with the state stream on and its
default intervals, share and reorder window. The budget is Cloudflare's scaled 30× in time
(1,200 requests per 10 s instead of per 300 s), so the runs take minutes, not hours: ratios of
requests to changes and the share of the budget used carry over, delays shrink with it.

Measured, from outside the bridge:

* requests on state tracking: the emulator's ``list`` and ``get`` requests, less the one ``list``
  that verifies the token at start (commands here are creates only, which never list or get);
* state changes: the state records on the output topic once every instance is final;
* polling's share: the most state-tracking requests the emulator received in any window of the
  budget's length, over the budget;
* delay: each state record's broker timestamp less its ``event_at`` (the emulator's time of the
  transition; records of the bridge's own answers have none and are left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer

from bench import workload
from bench.common import BenchError, say, stop_within
from bench.procs import Contestant
from bench.runner import BRIDGE, PARTITIONS, Budget, Context, Measurement, Plan, bridge_env
from bridge.local.emulator import Emulator, EmulatorConfig, RequestBudget, WorkflowBehaviour
from bridge.local.emulator.config import DoStep, SleepStep
from bridge.local.topics import ensure_topics

POLL, QUEUE, QUEUE_BARE = "polling only", "queue", "queue, FETCH_OUTPUT=false"
MODES = (POLL, QUEUE, QUEUE_BARE)
QUEUE_ID = "bench-states"
#: Cloudflare's budget, 30× faster: 1,200 requests per 10 s.
BUDGET = Budget(1200, 10.0)
#: The setting under test (the default).
SHARE = 0.1
#: Instances created per second: completions then arrive at about the pace the share can fetch.
CREATION_RATE = 10
#: Targets of issue #8.
QUEUE_PER_1000 = 350.0


@dataclass(frozen=True, slots=True)
class StateSizes:
    instances: int
    sleep_ms: float


class _TimedRequests(Counter[str]):
    """``emu.stats.requests`` that also notes when each ``list`` and ``get`` arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.tracking_at: list[float] = []

    def __setitem__(self, route: str, value: int) -> None:
        if route in ("list", "get") and value > self.get(route, 0):
            self.tracking_at.append(time.monotonic())
        super().__setitem__(route, value)


def _behaviour(sizes: StateSizes) -> WorkflowBehaviour:
    return WorkflowBehaviour(
        steps=(
            DoStep(name="prepare", duration_ms=100),
            SleepStep(name="wait", duration_ms=sizes.sleep_ms),
            DoStep(name="finish", duration_ms=100),
        )
    )


async def run(ctx: Context, sizes: StateSizes, run_number: int) -> list[Measurement]:
    n = sizes.instances
    topic = ctx.names("e", run_number, "commands")
    await ensure_topics(ctx.broker.bootstrap_servers, {topic: PARTITIONS})
    work = workload.creates(n, prefix=f"e{run_number}")
    await workload.publish(ctx.broker.bootstrap_servers, topic, work.records, within=120)
    say(f"e run {run_number}: published {work.describe()} to {topic}")
    return [await _mode(ctx, sizes, run_number, mode, topic) for mode in MODES]


async def _mode(
    ctx: Context, sizes: StateSizes, run_number: int, mode: str, topic: str
) -> Measurement:
    n = sizes.instances
    result = Measurement("e", mode, run_number, n)
    within = min(120 + n / CREATION_RATE * 3 + sizes.sleep_ms / 1000, ctx.remaining())
    if within <= 5:
        result.error = "skipped: the benchmark's time limit is used up"
        return result
    try:
        await _measure(ctx, sizes, run_number, mode, topic, result=result, within=within)
    except (BenchError, OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        say(f"e/{mode} run {run_number} failed: {result.error}")
    return result


async def _measure(
    ctx: Context,
    sizes: StateSizes,
    run_number: int,
    mode: str,
    topic: str,
    *,
    result: Measurement,
    within: float,
) -> None:
    slug = {POLL: "poll", QUEUE: "queue", QUEUE_BARE: "bare"}[mode]
    names, bootstrap = ctx.names, ctx.broker.bootstrap_servers
    output, dlq = names("e", run_number, slug, "out"), names("e", run_number, slug, "dlq")
    group = names("e", run_number, slug, "group")
    await ensure_topics(bootstrap, {output: PARTITIONS, dlq: 1})
    config = EmulatorConfig(
        workflows={workload.WORKFLOW: _behaviour(sizes)},
        event_queue=None if mode == POLL else QUEUE_ID,
        budget=RequestBudget(requests=BUDGET.requests, window_seconds=BUDGET.window),
    )
    settings = {
        "BRIDGE_STATES__ENABLED": "true",
        "BRIDGE_STATES__BUDGET_SHARE": str(SHARE),
        "BRIDGE_CLOUDFLARE__CREATIONS_PER_SECOND_PER_WORKFLOW": str(CREATION_RATE),
    }
    if mode != POLL:
        settings["BRIDGE_STATES__QUEUE_ID"] = QUEUE_ID
    if mode == QUEUE_BARE:
        settings["BRIDGE_STATES__FETCH_OUTPUT"] = "false"
    plan = Plan(
        "e",
        run_number,
        BRIDGE,
        topic,
        sizes.instances,
        within,
        emulator=config,
        bridge_budget=BUDGET,
        bridge_settings=settings,
    )
    log_path = ctx.logs / f"e-{run_number}-{slug}.log"
    async with contextlib.AsyncExitStack() as stack:
        emu = await stack.enter_async_context(Emulator(config, port=0))
        requests = _TimedRequests()
        emu.stats.requests = requests
        watcher = await stack.enter_async_context(_StateWatcher(bootstrap, output))
        env = bridge_env(ctx, plan, emu, output=output, dlq=dlq, group=group)
        bridge = await stack.enter_async_context(
            Contestant(mode, ["-m", "bridge", "run"], env=env, log_path=log_path)
        )
        await watcher.until_final(sizes.instances, within=within, contestant=bridge)
        await watcher.settle()
        code = await bridge.stop()
        if code != 0:
            raise BenchError(f"the bridge exited with {code}:\n{bridge.log_tail()}")
        await watcher.settle()
        result.api_requests = dict(requests)
        result.throttled = emu.stats.rate_limited
        tracking = requests["list"] + requests["get"] - 1  # less the token check at start
        result.results = watcher.finals()
        result.state_changes = len(watcher.records)
        result.tracking_requests = tracking
        result.share_used = _share(requests.tracking_at[1:], BUDGET)
        delays = watcher.delays()
        if delays:
            quantiles = statistics.quantiles(delays, n=100, method="inclusive")
            result.delay_p50, result.delay_p99 = quantiles[49], quantiles[98]
    if result.results != sizes.instances:
        raise BenchError(f"{result.results} of {sizes.instances} instances reached a final state")


def _share(times: list[float], budget: Budget) -> float | None:
    """The most requests in any window of the budget's length, over the budget."""
    if not times:
        return 0.0
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= budget.window:
            start += 1
        most = max(most, end - start + 1)
    return most / budget.requests


class _StateWatcher:
    """The state records of one output topic, with their broker timestamps."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            client_id="bench-state-watcher",
            auto_offset_reset="earliest",
        )
        self.records: list[tuple[dict[str, object], int]] = []
        self._final: set[str] = set()

    async def __aenter__(self) -> _StateWatcher:
        await asyncio.wait_for(self._consumer.start(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_within(self._consumer.stop(), 10, "the state watcher")

    async def _read(self, seconds: float) -> int:
        batches = await self._consumer.getmany(timeout_ms=int(seconds * 1000))
        count = 0
        for messages in batches.values():
            for message in messages:
                value = json.loads(message.value or b"null")
                if isinstance(value, dict) and value.get("kind") == "state":
                    self.records.append((value, message.timestamp))
                    if value.get("status") in ("complete", "errored", "terminated"):
                        self._final.add(str(value.get("instance_id")))
                    count += 1
        return count

    async def until_final(self, count: int, *, within: float, contestant: Contestant) -> None:
        deadline = time.monotonic() + within
        while len(self._final) < count:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(self._final):,} of {count:,} instances final within {within:.0f} s"
                )
            contestant.check_alive()
            await self._read(0.5)

    async def settle(self) -> None:
        while await self._read(1.0):
            pass

    def finals(self) -> int:
        return len(self._final)

    def delays(self) -> list[float]:
        out = []
        for value, timestamp_ms in self.records:
            event_at = value.get("event_at")
            if isinstance(event_at, str):
                moment = datetime.fromisoformat(event_at.replace("Z", "+00:00"))
                out.append(timestamp_ms / 1000 - moment.timestamp())
        return out
