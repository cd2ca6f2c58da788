"""Running one contestant on one input topic and measuring it.

Every contestant run gets a fresh output topic, a fresh consumer group and (when it calls the
API) a fresh emulator, so runs cannot see each other's state, budget or instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from bench.baseline import BEFORE, Baseline, baseline_env
from bench.common import ROOT, BenchError, Broker, Names, python_env, say
from bench.measure import Observed, OutputWatcher, count_records
from bench.procs import Contestant
from bench.workload import WORKFLOW
from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.local.topics import ensure_topics

RAW, NAIVE, BRIDGE = "raw pipe", "naive bridge", "this bridge"
#: Partitions of every command and output topic.
PARTITIONS = 4
ACCOUNT = "bench-account"
#: Budget and creation rates the bridge gets where the scenario is not about limits: far above
#: anything this machine can send, so they never bind (the emulator enforces none there).
NO_BIND_REQUESTS, NO_BIND_WINDOW, NO_BIND_CREATIONS = 1_000_000, 1.0, 1_000_000


@dataclass(slots=True)
class Context:
    broker: Broker
    names: Names
    logs: Path
    deadline: float
    #: ``BRIDGE_*`` settings from ``--bridge-set``, applied over each scenario's own.
    bridge_overrides: dict[str, str] = field(default_factory=dict)
    #: The ``bridge`` package before issue #9 (see :mod:`bench.baseline`), if unpacked.
    baseline: Baseline | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(slots=True)
class Budget:
    requests: int
    window: float


@dataclass(slots=True)
class Measurement:
    """One contestant's run of one scenario."""

    scenario: str
    contestant: str
    run: int
    expected: int
    results: int | None = None
    rate: float | None = None
    span: float = 0.0
    cpu_busy: float | None = None
    peak_rss_mb: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    api_requests: dict[str, int] = field(default_factory=dict)
    #: ``list`` requests by the page size they asked for (1: the token check at start).
    list_page_sizes: dict[int, int] = field(default_factory=dict)
    throttled: int | None = None
    #: Rate-limited scenario: requests accepted in the measured interval, and the budget's
    #: allowance for that interval.
    accepted: int | None = None
    allowed: int | None = None
    saturated: bool | None = None
    #: State-stream scenario: state records, requests on state tracking, the most of the budget
    #: they took in any window, and the transition-to-Kafka delay (seconds).
    state_changes: int | None = None
    tracking_requests: int | None = None
    share_used: float | None = None
    delay_p50: float | None = None
    delay_p99: float | None = None
    #: CPU seconds the contestant spent from its first result to its last.
    cpu_seconds: float | None = None
    #: Command → result latency percentiles (ms), where the scenario measures them.
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    error: str | None = None

    @property
    def cpu_per_1000(self) -> float | None:
        """CPU seconds per 1,000 commands, from the first result to the last."""
        if self.cpu_seconds is None or not self.results or self.results < 2:
            return None
        return self.cpu_seconds / (self.results - 1) * 1000

    @property
    def confirmations(self) -> float | None:
        """The share of API requests spent confirming instances: every ``get``, and ``list``
        pages longer than the one-item token check."""
        total = sum(self.api_requests.values())
        if not total:
            return None
        pages = sum(n for size, n in self.list_page_sizes.items() if size > 1)
        return (self.api_requests.get("get", 0) + pages) / total

    @property
    def not_own(self) -> float | None:
        """The share of API requests that are not a command's own call (creates: anything but
        ``create`` and ``batch``)."""
        total = sum(self.api_requests.values())
        if not total:
            return None
        return 1 - sum(self.api_requests.get(r, 0) for r in ("create", "batch")) / total

    @property
    def used(self) -> float | None:
        if self.accepted is None or not self.allowed:
            return None
        return self.accepted / self.allowed

    @property
    def ok(self) -> bool:
        return self.error is None


class _TimedAnswers(Counter[int]):
    """``emu.stats.responses`` that also notes when each answer other than 429 was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: list[float] = []

    def __setitem__(self, status: int, value: int) -> None:
        if status != 429 and value > self.get(status, 0):
            self.accepted_at.append(time.monotonic())
        super().__setitem__(status, value)


@dataclass(slots=True)
class Plan:
    """What one contestant run needs."""

    scenario: str
    run: int
    contestant: str
    input_topic: str
    expected: int
    within: float
    emulator: EmulatorConfig | None = None
    existing_instances: list[str] = field(default_factory=list)
    bridge_budget: Budget | None = None
    bridge_settings: dict[str, str] = field(default_factory=dict)
    #: Rate-limited scenario: measure the accepted requests over this many budget windows.
    budget_windows: int = 0
    #: Stop once those windows have passed, not when ``expected`` results are in (the backlog
    #: is larger than the windows can take).
    windows_only: bool = False
    sample_rss: bool = False
    expected_outcome: str = "ok"
    #: Further outcomes accepted (today's bridge answers retried creates ``already_exists``).
    also_allowed: frozenset[str] = frozenset()
    #: Processes of the contestant in one consumer group, and the input topic's partitions.
    replicas: int = 1
    partitions: int = PARTITIONS
    #: Publishes the commands while the contestant runs, once it consumes; returns when each
    #: command was written (ms) by command id, for latencies.
    feed: Callable[[OutputWatcher], Coroutine[Any, Any, dict[str, int]]] | None = None


async def measure(ctx: Context, plan: Plan) -> Measurement:
    """Run the contestant of ``plan`` until every expected result is in; never raises."""
    result = Measurement(plan.scenario, plan.contestant, plan.run, plan.expected)
    within = min(plan.within, ctx.remaining())
    if within <= 5:
        result.error = "skipped: the benchmark's time limit is used up"
        return result
    try:
        await _measure(ctx, plan, result, within)
    except BenchError as exc:
        result.error = str(exc)
    except (KafkaError, OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if result.error is not None:
        say(f"{plan.scenario}/{plan.contestant} run {plan.run} failed: {result.error}")
    return result


async def _measure(ctx: Context, plan: Plan, result: Measurement, within: float) -> None:
    names = ctx.names
    slug = {RAW: "raw", NAIVE: "naive", BRIDGE: "bridge", BEFORE: "before"}[plan.contestant]
    output = names(plan.scenario, plan.run, slug, "out")
    dlq = names(plan.scenario, plan.run, slug, "dlq")
    group = names(plan.scenario, plan.run, slug, "group")
    await ensure_topics(ctx.broker.bootstrap_servers, {output: PARTITIONS, dlq: 1})
    async with contextlib.AsyncExitStack() as stack:
        emu: Emulator | None = None
        answers = _TimedAnswers()
        if plan.emulator is not None:
            emu = await stack.enter_async_context(Emulator(plan.emulator, port=0))
            emu.stats.responses = answers
            for instance_id in plan.existing_instances:
                emu.add_instance(WORKFLOW, instance_id)
        watcher = await stack.enter_async_context(
            OutputWatcher(ctx.broker.bootstrap_servers, output, keep_times=plan.feed is not None)
        )
        args, env, cwd = _command(ctx, plan, emu, output=output, dlq=dlq, group=group)
        contestants = [
            await stack.enter_async_context(contestant)
            for contestant in _contestants(ctx, plan, slug, args=args, env=env, cwd=cwd)
        ]
        if plan.replicas > 1:
            await _group_formed(contestants, plan.partitions, within=SETTLE)
        feeding: asyncio.Task[dict[str, int]] | None = None
        if plan.feed is not None:
            # The budget windows are measured from the first request the fed commands cause,
            # not from the token check each replica makes at its start.
            answers.accepted_at.clear()
            feeding = asyncio.create_task(plan.feed(watcher))
        try:
            seen = await watcher.wait_for(
                plan.expected,
                within=within,
                contestant=contestants,
                sample_rss=plan.sample_rss,
                done=_windows_passed(plan, answers) if plan.windows_only else None,
            )
            sent_at = {} if feeding is None else await feeding
        finally:
            if feeding is not None and not feeding.done():
                feeding.cancel()
        if plan.sample_rss:
            result.peak_rss_mb = contestants[0].sample_rss() / 1024
        for contestant in contestants:
            code = await contestant.stop()
            if code != 0:
                raise BenchError(f"{contestant.name} exited with {code}:\n{contestant.log_tail()}")
        result.results = await watcher.final_count()
        _collect(result, plan, seen, sent_at)
        if emu is not None:
            result.api_requests = dict(emu.stats.requests)
            result.list_page_sizes = dict(emu.stats.list_page_sizes)
            result.throttled = emu.stats.rate_limited
            if plan.budget_windows and plan.emulator is not None:
                _rate_use(result, plan, answers.accepted_at)
    if plan.contestant in (BRIDGE, BEFORE):
        result.dead_letters = await count_records(ctx.broker.bootstrap_servers, dlq)
    _check(result, plan)


def _contestants(
    ctx: Context,
    plan: Plan,
    slug: str,
    *,
    args: list[str],
    env: dict[str, str],
    cwd: Path | str,
) -> list[Contestant]:
    """The contestant's processes (one per replica), each with its own log file."""
    made = []
    for replica in range(plan.replicas):
        name = plan.contestant if plan.replicas == 1 else f"{plan.contestant} #{replica + 1}"
        tag = "" if plan.replicas == 1 else f"-{replica + 1}"
        log_path = ctx.logs / f"{plan.scenario}-{plan.run}-{slug}{tag}.log"
        made.append(Contestant(name, args, env=env, log_path=log_path, cwd=cwd))
    return made


def _collect(result: Measurement, plan: Plan, seen: Observed, sent_at: dict[str, int]) -> None:
    result.rate, result.span, result.cpu_busy = seen.rate(), seen.span_seconds, seen.cpu_busy
    result.cpu_seconds = seen.cpu_seconds
    result.outcomes = dict(seen.outcomes)
    _latencies(result, sent_at, seen.result_at)


#: Longest wait for a group of replicas to settle on one partition each.
SETTLE = 90.0


async def _group_formed(contestants: list[Contestant], partitions: int, *, within: float) -> None:
    """Wait until every replica's latest ``partitions_assigned`` log line holds its own share of
    the partitions and together they hold them all (the bridge logs at info for this)."""
    deadline = time.monotonic() + within
    while True:
        latest = [_assigned(contestant) for contestant in contestants]
        held = [p for mine in latest if mine is not None for p in mine]
        each = partitions // len(contestants)
        if (
            all(mine is not None and len(mine) == each for mine in latest)
            and len(set(held)) == len(held) == partitions
        ):
            return
        for contestant in contestants:
            contestant.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"the replicas did not settle on their partitions: {latest}")
        await asyncio.sleep(0.2)


def _assigned(contestant: Contestant) -> list[str] | None:
    """The partitions of the replica's latest ``partitions_assigned`` line, if any."""
    try:
        lines = contestant.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if '"partitions_assigned"' not in line:
            continue
        try:
            partitions = json.loads(line).get("partitions")
        except ValueError:
            continue
        if isinstance(partitions, list):
            return [str(p) for p in partitions]
    return None


def _windows_passed(plan: Plan, answers: _TimedAnswers) -> Callable[[], bool]:
    """True once the measured budget windows (from the first accepted request) are over."""
    budget = plan.emulator.budget if plan.emulator is not None else None
    span = plan.budget_windows * (budget.window_seconds if budget is not None else 0.0)

    def passed() -> bool:
        return bool(answers.accepted_at) and time.monotonic() > answers.accepted_at[0] + span + 1

    return passed


def _latencies(result: Measurement, sent_at: dict[str, int], result_at: dict[str, int]) -> None:
    waits = sorted(result_at[c] - at for c, at in sent_at.items() if c in result_at)
    if len(waits) >= 2:
        cuts = statistics.quantiles(waits, n=100, method="inclusive")
        result.latency_p50_ms, result.latency_p99_ms = cuts[49], cuts[98]


def _rate_use(result: Measurement, plan: Plan, accepted_at: list[float]) -> None:
    """Accepted requests in ``budget_windows`` whole windows from the first accepted one."""
    budget = plan.emulator.budget if plan.emulator is not None else None
    if budget is None or not accepted_at:
        return
    start = accepted_at[0]
    end = start + plan.budget_windows * budget.window_seconds
    result.accepted = sum(1 for at in accepted_at if start <= at < end)
    result.allowed = plan.budget_windows * budget.requests
    # Saturated: there was still work after the interval, so the backlog never ran dry in it.
    result.saturated = accepted_at[-1] >= end


def _check(result: Measurement, plan: Plan) -> None:
    if plan.windows_only:
        # Stopped after the windows, with commands left; a rebalance may have answered a few
        # twice (at-least-once). At least one result, and only wanted outcomes.
        if not result.results:
            raise BenchError(f"{plan.contestant}: no result at all")
    elif result.results != plan.expected:
        raise BenchError(
            f"{plan.contestant}: {result.results:,} results on the output topic, "
            f"expected exactly {plan.expected:,}"
        )
    if result.dead_letters:
        raise BenchError(f"{plan.contestant}: {result.dead_letters:,} dead letters, expected 0")
    allowed = {plan.expected_outcome, *plan.also_allowed}
    wrong = {k: v for k, v in result.outcomes.items() if k not in allowed}
    if wrong:
        raise BenchError(
            f"{plan.contestant}: unexpected outcomes {wrong} (all should be "
            f"{plan.expected_outcome!r})"
        )


def _command(
    ctx: Context, plan: Plan, emu: Emulator | None, *, output: str, dlq: str, group: str
) -> tuple[list[str], dict[str, str], Path | str]:
    """The contestant's arguments, environment and working directory."""
    bootstrap = ctx.broker.bootstrap_servers
    if plan.contestant in (BRIDGE, BEFORE):
        if emu is None:
            raise BenchError("the bridge needs an emulator")
        env = bridge_env(ctx, plan, emu, output=output, dlq=dlq, group=group)
        if plan.contestant == BRIDGE:
            return ["-m", "bridge", "run"], env, ROOT
        if ctx.baseline is None:
            raise BenchError("no baseline: the bridge before #9 could not be unpacked from git")
        # Run from the baseline's directory: `python -m` puts the working directory first.
        return ["-m", "bridge", "run"], baseline_env(env, ctx.baseline), ctx.baseline.path
    args = [
        "-m",
        "bench.contestants",
        "raw" if plan.contestant == RAW else "naive",
        "--bootstrap",
        bootstrap,
        "--input",
        plan.input_topic,
        "--output",
        output,
        "--group",
        group,
        "--limit",
        str(plan.expected),
    ]
    if plan.contestant == NAIVE:
        if emu is None:
            raise BenchError("the naive bridge needs an emulator")
        args += ["--base-url", emu.base_url, "--token", emu.config.token, "--account", ACCOUNT]
    return args, python_env(), ROOT


def bridge_env(
    ctx: Context, plan: Plan, emu: Emulator, *, output: str, dlq: str, group: str
) -> dict[str, str]:
    """``python -m bridge run``'s whole configuration, as the process harness of the tests."""
    env = {k: v for k, v in python_env().items() if not k.startswith("BRIDGE_")}
    budget = plan.bridge_budget
    env.update(
        {
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": ctx.broker.bootstrap_servers,
            "BRIDGE_KAFKA__GROUP_ID": group,
            "BRIDGE_KAFKA__CLIENT_ID": "bench-bridge",
            "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "2000",
            "BRIDGE_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER": "false" if ctx.broker.tansu else "true",
            "BRIDGE_TOPICS__COMMANDS": plan.input_topic,
            "BRIDGE_TOPICS__OUTPUT": output,
            "BRIDGE_TOPICS__DLQ": dlq,
            "BRIDGE_TOPICS__BUDGET": f"{group}.budget",
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": ACCOUNT,
            "BRIDGE_CLOUDFLARE__API_TOKEN": emu.config.token,
            "BRIDGE_CLOUDFLARE__BASE_URL": emu.base_url,
            "BRIDGE_CLOUDFLARE__BUDGET_REQUESTS": str(
                NO_BIND_REQUESTS if budget is None else budget.requests
            ),
            "BRIDGE_CLOUDFLARE__BUDGET_WINDOW_SECONDS": str(
                NO_BIND_WINDOW if budget is None else budget.window
            ),
            "BRIDGE_CLOUDFLARE__CREATIONS_PER_SECOND_PER_WORKFLOW": str(NO_BIND_CREATIONS),
            "BRIDGE_CLOUDFLARE__CREATIONS_PER_SECOND_PER_ACCOUNT": str(NO_BIND_CREATIONS),
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_LOG_LEVEL": "warning",
            "BRIDGE_HEALTH_PORT": "0",
            # Off unless the scenario is about it: its polling would blur the command figures,
            # and its records share the output topic the results are counted on.
            "BRIDGE_STATES__ENABLED": "false",
        }
    )
    env.update(plan.bridge_settings)
    env.update(ctx.bridge_overrides)
    return env
