"""What the bridge itself costs (issue #9): CPU per command, and command → result latency.

* cpu: the mixed workload (creates, events, pauses, resumes, terminates) as a backlog, API 0 ms,
  at the default log level (info: one ``command_done`` line per command): the contestant's CPU
  seconds from its first result to its last, per 1,000 commands;
* latency: the same kinds of commands published one at a time at a light, steady rate while the
  bridge runs (after a first command has come back), API 0 ms and 20 ms: for each command, its
  result's broker timestamp minus its own; p50 and p99.

Both run this bridge and the bridge before issue #9 (:mod:`bench.baseline`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bench import workload
from bench.baseline import BEFORE
from bench.budget_use import STEADY_GROUP
from bench.common import say
from bench.measure import OutputWatcher
from bench.runner import BRIDGE, Context, Measurement, Plan, measure
from bridge.local.emulator import EmulatorConfig
from bridge.local.emulator.config import Latency, WaitForEventStep, WorkflowBehaviour
from bridge.local.topics import ensure_topics

if TYPE_CHECKING:
    from bench.scenarios import Sizes

WAITING = WorkflowBehaviour(
    steps=(WaitForEventStep(name="wait", event_type=workload.NEVER_SENT_EVENT),)
)
#: The default log level (what a deployed bridge writes) and session timeout.
DEFAULT_LOGS = {"BRIDGE_LOG_LEVEL": "info", **STEADY_GROUP}
SLACK = 60.0


async def cpu(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    n = sizes.cpu_commands
    work = workload.mixed(n, prefix=f"p{run}")
    topic = ctx.names("p", run, "commands")
    await ensure_topics(ctx.broker.bootstrap_servers, {topic: 4})
    await workload.publish(
        ctx.broker.bootstrap_servers, topic, work.records, within=SLACK + n / 5_000
    )
    say(f"p run {run}: published {work.describe()} to {topic}")
    return [
        await measure(
            ctx,
            Plan(
                "p",
                run,
                contestant,
                topic,
                n,
                SLACK + n / 100,
                emulator=EmulatorConfig(default_behaviour=WAITING),
                bridge_settings=DEFAULT_LOGS,
            ),
        )
        for contestant in (BEFORE, BRIDGE)
    ]


async def latency_0(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    return await _latency(ctx, sizes, run, "l0", 0.0)


async def latency_20(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    return await _latency(ctx, sizes, run, "l20", 20.0)


async def _latency(
    ctx: Context, sizes: Sizes, run: int, key: str, api_ms: float
) -> list[Measurement]:
    n = sizes.latency_commands
    measurements = []
    for contestant in (BEFORE, BRIDGE):
        tag = "before" if contestant == BEFORE else "bridge"
        work = workload.identified(workload.mixed(n, prefix=f"{key}{run}{tag}"), f"{key}-{tag}")
        topic = ctx.names(key, run, tag, "commands")
        await ensure_topics(ctx.broker.bootstrap_servers, {topic: 4})
        first, rest = work.records[:1], work.records[1:]

        async def feed(
            watcher: OutputWatcher,
            topic: str = topic,
            first: list[workload.Record] = first,
            rest: list[workload.Record] = rest,
        ) -> dict[str, int]:
            # The first command shows the bridge is consuming; the timed ones follow it.
            await workload.publish(ctx.broker.bootstrap_servers, topic, first, within=SLACK)
            while not watcher.seen.count:
                await asyncio.sleep(0.05)
            return await workload.paced(
                ctx.broker.bootstrap_servers,
                topic,
                rest,
                rate=sizes.latency_rate,
                within=SLACK + len(rest) / sizes.latency_rate,
            )

        measurements.append(
            await measure(
                ctx,
                Plan(
                    key,
                    run,
                    contestant,
                    topic,
                    n,
                    SLACK * 2 + n / sizes.latency_rate,
                    emulator=EmulatorConfig(
                        default_behaviour=WAITING, latency=Latency(fixed_ms=api_ms)
                    ),
                    bridge_settings=DEFAULT_LOGS,
                    feed=feed,
                ),
            )
        )
    return measurements
