"""Running one contestant on one input topic and measuring it.

Every contestant run gets a fresh output topic, a fresh consumer group and (when it calls the
API) a fresh emulator, so runs cannot see each other's state, budget or instances.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.errors import KafkaError

from bench.common import BenchError, Broker, Names, python_env, say
from bench.measure import OutputWatcher, count_records
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
    error: str | None = None

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
    sample_rss: bool = False
    expected_outcome: str = "ok"


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
    slug = {RAW: "raw", NAIVE: "naive", BRIDGE: "bridge"}[plan.contestant]
    output = names(plan.scenario, plan.run, slug, "out")
    dlq = names(plan.scenario, plan.run, slug, "dlq")
    group = names(plan.scenario, plan.run, slug, "group")
    await ensure_topics(ctx.broker.bootstrap_servers, {output: PARTITIONS, dlq: 1})
    log_path = ctx.logs / f"{plan.scenario}-{plan.run}-{slug}.log"
    async with contextlib.AsyncExitStack() as stack:
        emu: Emulator | None = None
        answers = _TimedAnswers()
        if plan.emulator is not None:
            emu = await stack.enter_async_context(Emulator(plan.emulator, port=0))
            emu.stats.responses = answers
            for instance_id in plan.existing_instances:
                emu.add_instance(WORKFLOW, instance_id)
        watcher = await stack.enter_async_context(
            OutputWatcher(ctx.broker.bootstrap_servers, output)
        )
        args, env = _command(ctx, plan, emu, output=output, dlq=dlq, group=group)
        contestant = await stack.enter_async_context(
            Contestant(plan.contestant, args, env=env, log_path=log_path)
        )
        seen = await watcher.wait_for(
            plan.expected, within=within, contestant=contestant, sample_rss=plan.sample_rss
        )
        if plan.sample_rss:
            result.peak_rss_mb = contestant.sample_rss() / 1024
        code = await contestant.stop()
        if code != 0:
            raise BenchError(f"{plan.contestant} exited with {code}:\n{contestant.log_tail()}")
        result.results = await watcher.final_count()
        result.rate, result.span, result.cpu_busy = seen.rate(), seen.span_seconds, seen.cpu_busy
        result.outcomes = dict(seen.outcomes)
        if emu is not None:
            result.api_requests = dict(emu.stats.requests)
            result.throttled = emu.stats.rate_limited
            if plan.budget_windows and plan.emulator is not None:
                _rate_use(result, plan, answers.accepted_at)
    if plan.contestant == BRIDGE:
        result.dead_letters = await count_records(ctx.broker.bootstrap_servers, dlq)
    _check(result, plan)


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
    if result.results != plan.expected:
        raise BenchError(
            f"{plan.contestant}: {result.results:,} results on the output topic, "
            f"expected exactly {plan.expected:,}"
        )
    if result.dead_letters:
        raise BenchError(f"{plan.contestant}: {result.dead_letters:,} dead letters, expected 0")
    wrong = {k: v for k, v in result.outcomes.items() if k != plan.expected_outcome}
    if wrong:
        raise BenchError(
            f"{plan.contestant}: unexpected outcomes {wrong} (all should be "
            f"{plan.expected_outcome!r})"
        )


def _command(
    ctx: Context, plan: Plan, emu: Emulator | None, *, output: str, dlq: str, group: str
) -> tuple[list[str], dict[str, str]]:
    bootstrap = ctx.broker.bootstrap_servers
    if plan.contestant == BRIDGE:
        if emu is None:
            raise BenchError("the bridge needs an emulator")
        return ["-m", "bridge", "run"], bridge_env(
            ctx, plan, emu, output=output, dlq=dlq, group=group
        )
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
    return args, python_env()


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
