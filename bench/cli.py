"""``python -m bench [--runs N] [--quick] [--only a,b,c,d,t,e]``: run the scenarios, print a table.

The exit code is 0 when every contestant run finished with exactly the expected results, 1 when
one failed (timeout, crash, wrong count), 2 for bad arguments. A missed target does not change
it unless ``--require-targets`` is given: the table says which targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiokafka.errors import KafkaError

from bench import report as reporting
from bench import states
from bench.baseline import BASELINE_REV, BEFORE, baseline_tree
from bench.common import BenchError, Broker, Names, say
from bench.runner import PARTITIONS, Context, Measurement
from bench.scenarios import DEFAULT, QUICK, Scenario, Sizes, select
from bridge.local import EmbeddedTansu

#: The whole benchmark stops taking on new work after this long (seconds), by default.
TIME_LIMIT = 60 * 60.0
#: How long past the time limit a run that started in time may go on before it is stopped.
HARD_LIMIT_GRACE = 300.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark the bridge against a raw Kafka pipe and a naive bridge.",
    )
    parser.add_argument("--runs", type=int, help="runs of each timed scenario (default 3; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test for CI")
    parser.add_argument(
        "--only",
        help="scenarios to run, comma-separated: a|creates, b|mixed, c|rate-limited, d|rss, "
        "t|terminates, e|states, f|faults, s|skew, u|uniform, p|cpu, l0|latency-0, "
        "l20|latency-20",
    )
    parser.add_argument(
        "--bridge-set",
        action="append",
        default=[],
        metavar="BRIDGE_X=VALUE",
        help="extra bridge setting for every bridge run (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument(
        "--baseline-rev",
        default=BASELINE_REV,
        help=f"git revision run as '{BEFORE}' (default {BASELINE_REV}: main before issue #9)",
    )
    parser.add_argument("--logs", type=Path, help="keep the contestants' logs in this directory")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=TIME_LIMIT,
        help=f"seconds after which remaining runs are skipped (default {TIME_LIMIT:g})",
    )
    parser.add_argument(
        "--require-targets", action="store_true", help="exit 1 when a target is missed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        scenarios = select(args.only)
        overrides = dict(_setting(item) for item in args.bridge_set)
    except ValueError as exc:
        parser.error(str(exc))
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return asyncio.run(_run(args, scenarios, overrides))


def _setting(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.startswith("BRIDGE_"):
        raise ValueError(f"--bridge-set wants BRIDGE_NAME=VALUE, not {item!r}")
    return key, value


@contextlib.asynccontextmanager
async def _broker() -> AsyncIterator[Broker]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        flavour = os.environ.get("KAFKA_FLAVOUR", "apache").strip().lower() or "apache"
        yield Broker(bootstrap, flavour == "tansu", f"{flavour} at {bootstrap}")
        return
    async with EmbeddedTansu() as tansu:
        yield Broker(tansu.bootstrap_servers, True, f"embedded Tansu at {tansu.bootstrap_servers}")


async def _run(
    args: argparse.Namespace, scenarios: list[Scenario], overrides: dict[str, str]
) -> int:
    started = time.monotonic()
    sizes = QUICK if args.quick else DEFAULT
    runs = args.runs or (1 if args.quick else 3)
    with contextlib.ExitStack() as stack:
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            logs = args.logs
        else:
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-logs-")))
        try:
            before = None
            if any(scenario.baseline for scenario in scenarios):
                before = stack.enter_context(baseline_tree(args.baseline_rev))
            async with _broker() as broker:
                ctx = Context(broker, Names(), logs, started + args.time_limit, overrides)
                ctx.baseline = before
                description = broker.description
                say(f"broker: {description}; {runs} run(s) of each timed scenario")
                measurements = await _all(ctx, scenarios, sizes, runs, args.time_limit)
        except (BenchError, KafkaError, OSError) as exc:
            print(f"bench: cannot run: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    result = reporting.build(scenarios, sizes, measurements)
    result.notes = _notes(sizes, runs, description, overrides, elapsed)
    if any(scenario.baseline for scenario in scenarios):
        result.notes += _notes_9(sizes, args.baseline_rev)
    print(reporting.render(result))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "sizes": dataclasses.asdict(sizes),
                    "runs": runs,
                    "elapsed_seconds": round(elapsed, 1),
                    "measurements": [
                        dataclasses.asdict(m)
                        | {
                            "used": m.used,
                            "not_own": m.not_own,
                            "confirmations": m.confirmations,
                            "cpu_per_1000": m.cpu_per_1000,
                        }
                        for m in measurements
                    ],
                    "verdicts": [dataclasses.asdict(v) for v in result.verdicts],
                },
                indent=2,
            )
        )
    if result.errors:
        return 1
    if args.require_targets and not all(v.met for v in result.verdicts):
        return 1
    return 0


async def _all(
    ctx: Context, scenarios: list[Scenario], sizes: Sizes, runs: int, time_limit: float
) -> list[Measurement]:
    """Every run of every scenario, one after another; a run that hangs is stopped."""
    measurements: list[Measurement] = []
    current = ("-", 0)
    limit = time_limit + HARD_LIMIT_GRACE
    try:
        # The context's deadline skips runs that would start late; this stops one that hangs.
        async with asyncio.timeout(limit):
            for scenario in scenarios:
                for run in range(1, (runs if scenario.repeated else 1) + 1):
                    current = (scenario.key, run)
                    measurements += await _scenario(ctx, scenario, sizes, run)
    except TimeoutError:
        say(f"stopped: still running after {limit:g} s")
        key, run = current
        measurements.append(Measurement(key, "(stopped)", run, 0, error=f"stopped at {limit:g} s"))
    return measurements


async def _scenario(ctx: Context, scenario: Scenario, sizes: Sizes, run: int) -> list[Measurement]:
    say(f"{scenario.key}. {scenario.title(sizes)}: run {run}")
    try:
        measured = await scenario.run(ctx, sizes, run)
    except (BenchError, KafkaError, OSError, TimeoutError) as exc:
        failed = Measurement(scenario.key, "(setup)", run, 0, error=f"{type(exc).__name__}: {exc}")
        return [failed]
    for m in measured:
        say(f"{scenario.key} run {run}: {m.contestant}: {_summary(m)}")
    return measured


def _summary(m: Measurement) -> str:
    if m.error is not None:
        return "FAILED: " + m.error.splitlines()[0]
    parts = [f"{m.results:,} results" if m.results is not None else "no count"]
    if m.rate is not None:
        parts.append(f"{m.rate:,.0f} cmd/s")
    if m.used is not None:
        parts.append(f"{m.used:.3f} of the allowed rate, {m.throttled} x 429")
    if m.peak_rss_mb is not None:
        parts.append(f"peak RSS {m.peak_rss_mb:.1f} MB")
    if m.api_requests:
        parts.append("API " + ", ".join(f"{k} {v:,}" for k, v in sorted(m.api_requests.items())))
    return "; ".join(parts)


def _notes(
    sizes: Sizes, runs: int, broker: str, overrides: dict[str, str], elapsed: float
) -> list[str]:
    window = f"{sizes.window:g} s"
    notes = [
        f"broker: {broker}, {PARTITIONS} partitions per topic; API: the project's emulator over "
        "HTTP on 127.0.0.1, in the benchmark's process",
        "contestants: each its own process, one at a time, the whole backlog in the topic before "
        "it starts; this bridge = `python -m bridge run` with BRIDGE_* variables (in-process it "
        "measured ~10% slower on a: the emulator and the result reader share its interpreter)",
        f"per run: the value of each run ({runs} runs of a, b, c, t; d once); median over runs; "
        "'vs baseline' divides medians from the same runs",
        "throughput: (N - 1) / (last - first result), from the results' broker timestamps; "
        "start-up and group join are not counted. results = records on the output topic after "
        "the contestant stopped (exact count required)",
        "CPU: the contestant's CPU time / wall time while its results arrived (100% = one core)",
        "raw pipe: forwards each command record as it is (~120 bytes); the bridge writes a "
        "~450-byte result per command",
        "naive bridge: sequential per record; on a and b it takes only a prefix of the topic "
        f"({sizes.creates_naive:,} and {sizes.mixed_naive:,} commands), its rate being steady",
        "a, b, d: the emulator enforces no limits; the bridge's budget (1,000,000 requests/s) and "
        "creation limits (1,000,000/s per workflow and account) are set so high they never bind; "
        "log level warning; otherwise the bridge's defaults",
        f"c: emulator and bridge both allow {sizes.budget} requests per {window} (emulator blocks "
        f"{window} on excess); {sizes.budget * (sizes.windows + 1):,} events wait in the topic. "
        f"used = requests the emulator accepted in the {sizes.windows} whole windows from its "
        f"first accepted request / ({sizes.budget} x {sizes.windows}); the backlog outlasts "
        f"that interval (checked). The naive bridge waits out each 429 (Retry-After) and is "
        f"measured over {sizes.naive_windows} window(s)",
        "d: peak RSS = VmHWM of the contestant's process, sampled while the backlog drains",
        f"t: {sizes.terminates:,} creates then a terminate of each, keyed by instance, on live "
        "instances; req = requests on the terminate routes (batch/terminate, PATCH status, GET): "
        "this bridge coalesces terminates into batch/terminate calls, the naive bridge sends one "
        "PATCH per terminate, as this bridge did before; limits as in a",
        "a-d: the state stream is off (BRIDGE_STATES__ENABLED=false): its polling would blur the "
        "command figures, and its records share the output topic the results are counted on",
        f"e (once): {sizes.states:,} creates, paced at {states.CREATION_RATE}/s, of instances "
        f"that sleep {sizes.states_sleep_ms / 1000:g} s mid-way; per mode its own emulator with "
        f"a budget of {states.BUDGET.requests} requests per {states.BUDGET.window:g} s "
        "(Cloudflare's, 30x faster) enforced, the bridge with the same budget, the state "
        f"stream's defaults (share {states.SHARE:g}, poll every 10 s, reconcile every 300 s, "
        "reorder window 1 s); "
        "requests = the emulator's list + get less the token check at start; changes = state "
        "records; share = most state-tracking requests in any budget window / the budget; delay "
        "= broker timestamp - event_at (records without event_at, i.e. the bridge's own answers, "
        "left out)",
    ]
    if overrides:
        notes.append("bridge overrides: " + " ".join(f"{k}={v}" for k, v in overrides.items()))
    notes.append(f"benchmark took {elapsed:.0f} s")
    return notes


def _notes_9(sizes: Sizes, rev: str) -> list[str]:
    window = f"{sizes.window:g} s"
    return [
        f"{BEFORE}: the same service from git revision {rev} (main before issue #9), run the "
        "same way from a copy unpacked with `git archive`",
        "f: emulator fails 30 % of requests on every route (7.5 % each: 500, dropped "
        "connection, 500 after the change, dropped after the change); confirming = get "
        "requests and list pages of more than one item, over all requests; not own = requests "
        "on routes other than create and batch (confirming ones and the one-item token check "
        "each replica makes at start, retried under faults), over all requests",
        f"s, u: 3 replicas in one group, 3 command partitions; emulator and group budget "
        f"{sizes.budget} per {window} (the emulator blocks {window} on excess); the commands "
        "are published once every replica holds its partition; s: all on partition 0, u: keyed "
        f"over all three; used = requests accepted in {sizes.windows} whole windows from the "
        f"first accepted one / ({sizes.budget} x {sizes.windows})",
        "p: CPU = the contestant's user + system seconds from its first result to its last, "
        "per 1,000 commands; log level info (the default), JSON lines to a file",
        f"l0, l20: {sizes.latency_commands:,} mixed commands, one at a time at "
        f"{sizes.latency_rate:g}/s after a first one came back; latency = result's broker "
        "timestamp - command's broker timestamp (both CreateTime, this host's clock); creates "
        "include the 20 ms batch linger; log level info",
    ]
