"""The scenarios of issues #4 and #9, each with its baselines, at default or ``--quick`` sizes.

Per run a scenario publishes its commands once to a new topic (the whole backlog is there
before any contestant starts); then the contestants take turns on it, one at a time, each with
its own consumer group, output topic and emulator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench import budget_use, overhead, states, workload
from bench.common import say
from bench.runner import (
    BRIDGE,
    NAIVE,
    PARTITIONS,
    RAW,
    Budget,
    Context,
    Measurement,
    Plan,
    measure,
)
from bridge.local.emulator import EmulatorConfig
from bridge.local.emulator.config import Latency, RequestBudget, WaitForEventStep, WorkflowBehaviour
from bridge.local.topics import ensure_topics

#: Instances wait for an event nobody sends: they stay live (every pause, resume, event and
#: terminate succeeds) and the emulator keeps no timer for them.
WAITING = WorkflowBehaviour(
    steps=(WaitForEventStep(name="wait", event_type=workload.NEVER_SENT_EVENT),)
)
#: The bridge's settings for the mixed scenario: its defaults. (Before the client moved to the
#: aiohttp transport, httpx's pool made 16 instances at once beat the default 256 here.)
MIXED_BRIDGE: dict[str, str] = {}
#: Extra seconds every contestant run may take for start-up (imports, group join) and stop.
SLACK = 60.0


@dataclass(frozen=True, slots=True)
class Sizes:
    creates: int
    #: The naive bridge takes only this prefix of the topic: it is strictly sequential, so its
    #: rate is steady and the whole topic would cost minutes.
    creates_naive: int
    mixed: int
    mixed_naive: int
    latency_ms: float
    #: The rate-limited scenario: ``budget`` requests per ``window`` seconds at the emulator
    #: and the bridge, measured over ``windows`` whole windows (``naive_windows`` for naive).
    budget: int
    window: float
    windows: int
    naive_windows: int
    backlog: int
    #: Instances of the terminates scenario: each is created, then terminated.
    terminates: int = 300
    #: The state-stream scenario: instances, and how long each sleeps mid-way (ms).
    states: int = 1_000
    states_sleep_ms: float = 15_000
    #: Issue #9: creates under faults; mixed commands for CPU; commands timed one by one at a
    #: light rate (per second) for latency. Skew and uniform use the budget sizes above.
    faulty_creates: int = 3_000
    cpu_commands: int = 5_000
    latency_commands: int = 300
    latency_rate: float = 20.0


DEFAULT = Sizes(
    creates=20_000,
    creates_naive=1_000,
    mixed=5_000,
    mixed_naive=400,
    latency_ms=20.0,
    budget=100,
    window=10.0,
    windows=3,
    naive_windows=1,
    backlog=100_000,
    states=1_000,
    states_sleep_ms=15_000,
)
QUICK = Sizes(
    creates=2_000,
    creates_naive=200,
    mixed=500,
    mixed_naive=60,
    latency_ms=20.0,
    budget=20,
    window=2.0,
    windows=2,
    naive_windows=1,
    backlog=10_000,
    states=100,
    states_sleep_ms=3_000,
    faulty_creates=300,
    cpu_commands=500,
    latency_commands=60,
)

Runner = Callable[[Context, Sizes, int], Awaitable[list[Measurement]]]


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    name: str
    title: Callable[[Sizes], str]
    #: Timed scenarios run ``--runs`` times; the memory scenario once.
    repeated: bool
    run: Runner
    #: It runs the bridge before issue #9 as today's behaviour (unpacked from git).
    baseline: bool = False


async def _feed(ctx: Context, key: str, run: int, work: workload.Workload) -> str:
    topic = ctx.names(key, run, "commands")
    await ensure_topics(ctx.broker.bootstrap_servers, {topic: PARTITIONS})
    await workload.publish(
        ctx.broker.bootstrap_servers, topic, work.records, within=SLACK + len(work) / 5_000
    )
    say(f"{key} run {run}: published {work.describe()} to {topic}")
    return topic


async def creates(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    n, sample = sizes.creates, min(sizes.creates_naive, sizes.creates)
    topic = await _feed(ctx, "a", run, workload.creates(n, prefix=f"a{run}"))

    def emulator() -> EmulatorConfig:
        return EmulatorConfig(default_behaviour=WAITING)

    return [
        await measure(
            ctx,
            Plan("a", run, RAW, topic, n, SLACK + n / 2_000, expected_outcome="forwarded"),
        ),
        await measure(
            ctx, Plan("a", run, NAIVE, topic, sample, SLACK + sample / 20, emulator=emulator())
        ),
        await measure(ctx, Plan("a", run, BRIDGE, topic, n, SLACK + n / 300, emulator=emulator())),
    ]


async def mixed(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    n, sample = sizes.mixed, min(sizes.mixed_naive, sizes.mixed)
    topic = await _feed(ctx, "b", run, workload.mixed(n, prefix=f"b{run}"))
    per_call = sizes.latency_ms / 1000

    def emulator() -> EmulatorConfig:
        return EmulatorConfig(default_behaviour=WAITING, latency=Latency(fixed_ms=sizes.latency_ms))

    return [
        await measure(
            ctx,
            Plan("b", run, RAW, topic, n, SLACK + n / 2_000, expected_outcome="forwarded"),
        ),
        await measure(
            ctx,
            Plan(
                "b",
                run,
                NAIVE,
                topic,
                sample,
                SLACK + sample * (per_call + 0.05),
                emulator=emulator(),
            ),
        ),
        await measure(
            ctx,
            Plan(
                "b",
                run,
                BRIDGE,
                topic,
                n,
                SLACK + n * per_call,
                emulator=emulator(),
                bridge_settings=MIXED_BRIDGE,
            ),
        ),
    ]


async def rate_limited(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    budget, window = sizes.budget, sizes.window
    # One window more than is measured: the backlog outlasts the interval.
    n = budget * (sizes.windows + 1)
    sample = budget * sizes.naive_windows + budget // 2
    work = workload.events(n, instances=2 * budget, prefix=f"c{run}")
    topic = await _feed(ctx, "c", run, work)

    def emulator() -> EmulatorConfig:
        return EmulatorConfig(
            default_behaviour=WAITING,
            budget=RequestBudget(requests=budget, window_seconds=window, block_seconds=window),
        )

    return [
        await measure(
            ctx,
            Plan(
                "c",
                run,
                NAIVE,
                topic,
                sample,
                SLACK + (sizes.naive_windows + 2) * window,
                emulator=emulator(),
                existing_instances=work.existing_instances,
                budget_windows=sizes.naive_windows,
            ),
        ),
        await measure(
            ctx,
            Plan(
                "c",
                run,
                BRIDGE,
                topic,
                n,
                SLACK + (sizes.windows + 1) * window * 1.5,
                emulator=emulator(),
                existing_instances=work.existing_instances,
                bridge_budget=Budget(budget, window),
                budget_windows=sizes.windows,
            ),
        ),
    ]


async def backlog_rss(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    n = sizes.backlog
    topic = await _feed(ctx, "d", run, workload.creates(n, prefix=f"d{run}"))
    return [
        await measure(
            ctx,
            Plan(
                "d",
                run,
                RAW,
                topic,
                n,
                SLACK + n / 2_000,
                sample_rss=True,
                expected_outcome="forwarded",
            ),
        ),
        await measure(
            ctx,
            Plan(
                "d",
                run,
                BRIDGE,
                topic,
                n,
                SLACK + n / 300,
                emulator=EmulatorConfig(default_behaviour=WAITING),
                sample_rss=True,
            ),
        ),
    ]


async def terminates(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    """Creates then terminates of one workflow: what the terminates cost in requests, coalesced
    into ``batch/terminate`` calls, against one request per terminate (the naive bridge, which
    sends each as ``PATCH …/status`` as this bridge did before)."""
    n = sizes.terminates
    topic = await _feed(ctx, "t", run, workload.terminates(n, prefix=f"t{run}"))

    def emulator() -> EmulatorConfig:
        return EmulatorConfig(default_behaviour=WAITING)

    return [
        await measure(
            ctx, Plan("t", run, NAIVE, topic, 2 * n, SLACK + 2 * n / 20, emulator=emulator())
        ),
        await measure(
            ctx, Plan("t", run, BRIDGE, topic, 2 * n, SLACK + 2 * n / 100, emulator=emulator())
        ),
    ]


async def state_stream(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    return await states.run(ctx, states.StateSizes(sizes.states, sizes.states_sleep_ms), run)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "a", "creates", lambda s: f"{s.creates:,} creates, API 0 ms", repeated=True, run=creates
    ),
    Scenario(
        "b",
        "mixed",
        lambda s: f"{s.mixed:,} mixed, API {s.latency_ms:g} ms",
        repeated=True,
        run=mixed,
    ),
    Scenario(
        "c",
        "rate-limited",
        lambda s: f"budget {s.budget}/{s.window:g} s",
        repeated=True,
        run=rate_limited,
    ),
    Scenario(
        "d",
        "rss",
        lambda s: f"peak RSS, {s.backlog:,} backlog",
        repeated=False,
        run=backlog_rss,
    ),
    Scenario(
        "t",
        "terminates",
        lambda s: f"{s.terminates:,} creates, then {s.terminates:,} terminates",
        repeated=True,
        run=terminates,
    ),
    Scenario(
        "e",
        "states",
        lambda s: f"{s.states:,} instances to a final state",
        repeated=False,
        run=state_stream,
    ),
    Scenario(
        "f",
        "faults",
        lambda s: f"{s.faulty_creates:,} creates, API failing 30 %",
        repeated=True,
        run=budget_use.faults,
        baseline=True,
    ),
    Scenario(
        "s",
        "skew",
        lambda s: f"3 replicas, budget {s.budget}/{s.window:g} s, load on one",
        repeated=True,
        run=budget_use.skew,
        baseline=True,
    ),
    Scenario(
        "u",
        "uniform",
        lambda s: f"3 replicas, budget {s.budget}/{s.window:g} s, load even",
        repeated=True,
        run=budget_use.uniform,
        baseline=True,
    ),
    Scenario(
        "p",
        "cpu",
        lambda s: f"CPU, {s.cpu_commands:,} mixed, API 0 ms, log level info",
        repeated=True,
        run=overhead.cpu,
        baseline=True,
    ),
    Scenario(
        "l0",
        "latency-0",
        lambda s: f"latency, {s.latency_rate:g} cmd/s, API 0 ms",
        repeated=True,
        run=overhead.latency_0,
        baseline=True,
    ),
    Scenario(
        "l20",
        "latency-20",
        lambda s: f"latency, {s.latency_rate:g} cmd/s, API 20 ms",
        repeated=True,
        run=overhead.latency_20,
        baseline=True,
    ),
)


def select(only: str | None) -> list[Scenario]:
    """Scenarios named in ``--only`` (keys or names, comma-separated), in their order."""
    if not only:
        return list(SCENARIOS)
    wanted = {part.strip().lower() for part in only.split(",") if part.strip()}
    known = {s.key for s in SCENARIOS} | {s.name for s in SCENARIOS}
    unknown = wanted - known
    if unknown:
        choices = ", ".join(f"{s.key}|{s.name}" for s in SCENARIOS)
        raise ValueError(f"unknown scenario {', '.join(sorted(unknown))}; choose from {choices}")
    return [s for s in SCENARIOS if s.key in wanted or s.name in wanted]
