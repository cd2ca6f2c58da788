"""``scripts/fault-run``: everything going wrong at once, and the figures that came out.

On Apache Kafka (started by ``scripts/kafka/start-kafka.sh``), with three ``workflows-bridge run``
processes and the emulator in this process, under steady mixed load with hostile records:
one replica SIGKILLed three times (and restarted), one leaving with SIGTERM and a new one
joining; the broker stopped and restarted on its data, then paused longer than the session
timeout; the API failing 30 % of calls (half of them after taking effect), one budget breach
(provoked by another client of the token) answered by a 429 block, one token revocation and
restoration. Once without and once with ``BRIDGE_KAFKA__TRANSACTIONAL_ID``.

The exit code is 0 only if no command is left without a result, no instance was created twice,
the bridge drew no 429 itself, the token appears in no log line or record, and (in
transactional mode) no command has two visible results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from bridge.local.emulator import (
    CreationLimits,
    Emulator,
    EmulatorConfig,
    Faults,
    Latency,
    RequestBudget,
    WorkflowBehaviour,
)
from bridge.local.emulator.config import WaitForEventStep
from bridge.local.topics import ensure_topics
from faults.audit import OutputReader
from faults.cluster import Broker, Replica, bridge_env, running_broker, say, token_found
from faults.load import WORKFLOW, MixedLoad, Truth, offer

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
#: The API failing 30 % of calls: 5xx, timeouts, dropped connections; half after taking effect.
API_FAULTS = Faults(
    error_ratio=0.05,
    timeout_ratio=0.04,
    drop_ratio=0.06,
    apply_then_error_ratio=0.08,
    apply_then_drop_ratio=0.07,
    timeout_seconds=3.0,
)
#: The token's budget at the emulator, and the (smaller) share the bridge group is given.
EMULATOR_BUDGET = RequestBudget(requests=1200, window_seconds=30, block_seconds=15)
BRIDGE_BUDGET = 1000


@dataclass(frozen=True)
class Plan:
    """When each fault happens, in seconds from the start of the load."""

    load_seconds: float
    rate: float
    kills: tuple[float, ...]
    leave_at: float | None
    breach_at: float | None
    revoke_at: float | None
    revoke_for: float
    broker_stop_at: float | None
    broker_stop_for: float
    pause_at: float | None
    pause_for: float
    drain_within: float


FULL = Plan(
    load_seconds=170,
    rate=15,
    kills=(12, 48, 128),
    leave_at=100,
    breach_at=28,
    revoke_at=112,
    revoke_for=8,
    broker_stop_at=58,
    broker_stop_for=30,
    pause_at=142,
    pause_for=SESSION_TIMEOUT_MS / 1000 + 6,
    drain_within=240,
)
#: CI's subset: shorter, the broker restart and a kill included.
QUICK = Plan(
    load_seconds=75,
    rate=12,
    kills=(8, 50),
    leave_at=60,
    breach_at=None,
    revoke_at=None,
    revoke_for=0,
    broker_stop_at=20,
    broker_stop_for=30,
    pause_at=None,
    pause_for=0,
    drain_within=180,
)


@dataclass
class Report:
    mode: str
    sent: int = 0
    hostile: int = 0
    answered: int = 0
    unanswered: list[tuple[int, int]] = field(default_factory=list)
    duplicates_committed: int = 0
    duplicates_uncommitted: int = 0
    instances_intended: int = 0
    instances_created: int = 0
    duplicate_instances: int = 0
    events_sent: int = 0
    events_twice: int = 0
    event_faults_after_effect: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    breaches_provoked: int = 0
    drawn_429: int = 0
    blocked_429: int = 0
    token_found: int = 0
    unplanned_exits: int = 0
    replica_incarnations: int = 0
    peak_rss_mb: float = 0.0
    api_faults: dict[str, int] = field(default_factory=dict)
    failed_sends: int = 0
    timeline: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        failed = []
        if self.unanswered:
            failed.append(f"{len(self.unanswered)} commands without a result")
        if self.duplicate_instances:
            failed.append(f"{self.duplicate_instances} duplicate instances")
        if self.drawn_429:
            failed.append(f"{self.drawn_429} 429s drawn by the bridge")
        if self.token_found:
            failed.append(f"the token found {self.token_found} times")
        if self.mode == "transactional" and self.duplicates_committed:
            failed.append(f"{self.duplicates_committed} duplicate results (read_committed)")
        if not self.sent:
            failed.append("nothing was sent")
        return failed


class Run:
    """One mode's run: topics, emulator, replicas and the schedule of faults."""

    def __init__(self, broker: Broker, mode: str, plan: Plan, logs: Path) -> None:
        self.broker, self.mode, self.plan = broker, mode, plan
        self.logs = logs / mode
        self.logs.mkdir(parents=True, exist_ok=True)
        tag = secrets.token_hex(3)
        self.topics = {
            "commands": f"faults.{mode}.cmd.{tag}",
            "output": f"faults.{mode}.out.{tag}",
            "dlq": f"faults.{mode}.dlq.{tag}",
        }
        self.group = f"faults.{mode}.{tag}"
        self.token = "fault-token-" + secrets.token_hex(16)
        self.truth = Truth()
        self.report = Report(mode)
        self.replicas: dict[str, Replica] = {}
        self.started = 0.0

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f} s  {what}"
        self.report.timeline.append(line)
        say(f"[{self.mode}] {line}")

    def _replica(self, name: str, emulator: Emulator) -> Replica:
        settings = {
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "BRIDGE_KAFKA__GROUP_ID": self.group,
            "BRIDGE_KAFKA__CLIENT_ID": f"faults-{name}",
            "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "BRIDGE_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            "BRIDGE_TOPICS__COMMANDS": self.topics["commands"],
            "BRIDGE_TOPICS__OUTPUT": self.topics["output"],
            "BRIDGE_TOPICS__DLQ": self.topics["dlq"],
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": "faults-account",
            "BRIDGE_CLOUDFLARE__API_TOKEN": self.token,
            "BRIDGE_CLOUDFLARE__BASE_URL": emulator.base_url,
            "BRIDGE_CLOUDFLARE__BUDGET_REQUESTS": str(BRIDGE_BUDGET),
            "BRIDGE_CLOUDFLARE__BUDGET_WINDOW_SECONDS": str(EMULATOR_BUDGET.window_seconds),
            "BRIDGE_CLOUDFLARE__REQUEST_TIMEOUT_SECONDS": "2",
            "BRIDGE_PIPELINE__BACKOFF_INITIAL_SECONDS": "0.1",
            "BRIDGE_PIPELINE__BACKOFF_MAX_SECONDS": "2",
            "BRIDGE_PIPELINE__COMMIT_INTERVAL_SECONDS": "0.5",
            "BRIDGE_PIPELINE__DRAIN_TIMEOUT_SECONDS": "10",
            "BRIDGE_PIPELINE__AUTH_PROBE_SECONDS": "1",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_LOG_LEVEL": "info",
            "BRIDGE_HEALTH_PORT": "0",
        }
        if self.mode == "transactional":
            # One id per slot: a restarted replica fences its predecessor's open transaction.
            settings["BRIDGE_KAFKA__TRANSACTIONAL_ID"] = f"{self.group}.{name}"
        replica = Replica(name, bridge_env(settings), self.logs)
        self.replicas[name] = replica
        return replica

    async def execute(self) -> Report:
        plan = self.plan
        await ensure_topics(
            self.broker.bootstrap_servers,
            {
                self.topics["commands"]: PARTITIONS,
                self.topics["output"]: PARTITIONS,
                self.topics["dlq"]: 1,
            },
        )
        config = EmulatorConfig(
            token=self.token,
            default_behaviour=WorkflowBehaviour(
                steps=(WaitForEventStep(name="hold", event_type="never"),)
            ),
            budget=EMULATOR_BUDGET,
            creation=CreationLimits(per_workflow=100, per_account=300),
            latency=Latency(fixed_ms=5, jitter_ms=20),
            seed=7,
        )
        isolation = "read_committed" if self.mode == "transactional" else "read_uncommitted"
        async with Emulator(config) as emulator, contextlib.AsyncExitStack() as stack:
            reader = await stack.enter_async_context(
                OutputReader(
                    self.broker.bootstrap_servers,
                    **self.topics,
                    isolation_level=isolation,
                    token=self.token,
                )
            )
            stack.push_async_callback(self._close_replicas)
            for name in ("a", "b", "c"):
                await self._replica(name, emulator).start()
            for replica in list(self.replicas.values()):
                await replica.wait_running()
            self.started = time.monotonic()
            self.note("three replicas running; load starts")
            emulator.config.faults = API_FAULTS
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker.bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                request_timeout_ms=300_000,
                max_request_size=2 * 1024 * 1024,
            )
            await producer.start()
            stack.push_async_callback(producer.stop)
            load = MixedLoad(11, prefix=f"{self.mode[:2]}")
            schedule = asyncio.gather(*self._schedule(emulator))
            watcher = asyncio.create_task(self._follow(reader))
            await offer(
                producer,
                self.topics["commands"],
                load,
                self.truth,
                rate=plan.rate,
                seconds=plan.load_seconds,
            )
            await schedule
            self.note(f"load done: {len(self.truth.sent)} records sent; API faults off")
            emulator.config.faults = Faults()
            await self._wait_answered(reader, plan.drain_within)
            watcher.cancel()
            for name, replica in self.replicas.items():
                if not replica.left:
                    code = await replica.terminate()
                    self.note(f"replica {name} stopped with SIGTERM: exit {code}")
            await reader.read_to_end()
            await self._tally(emulator, reader)
        return self.report

    async def _close_replicas(self) -> None:
        for replica in self.replicas.values():
            await replica.close()

    def _schedule(self, emulator: Emulator) -> list[Awaitable[None]]:
        plan = self.plan
        steps: list[Awaitable[None]] = []

        def at(seconds: float | None, action: Callable[[], Awaitable[None]]) -> None:
            if seconds is not None:
                steps.append(self._at(seconds, action))

        for n, when in enumerate(plan.kills, 1):
            at(when, functools.partial(self._kill, "a", n))
        at(plan.leave_at, lambda: self._leave_and_join("b", "d", emulator))
        at(plan.breach_at, lambda: self._breach(emulator))
        at(plan.revoke_at, lambda: self._revoke(emulator))
        at(plan.broker_stop_at, self._broker_outage)
        at(plan.pause_at, self._broker_pause)
        return steps

    async def _at(self, seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(max(0.0, self.started + seconds - time.monotonic()))
        await action()

    async def _kill(self, name: str, n: int) -> None:
        replica = self.replicas[name]
        await replica.kill()
        self.note(f"replica {name} SIGKILLed ({n})")
        await asyncio.sleep(2)
        await replica.start()
        self.note(f"replica {name} restarted")

    async def _leave_and_join(self, leaving: str, joining: str, emulator: Emulator) -> None:
        code = await self.replicas[leaving].terminate()
        self.replicas[leaving].left = True
        self.note(f"replica {leaving} left with SIGTERM: exit {code}")
        await self._replica(joining, emulator).start()
        self.note(f"replica {joining} joined")

    async def _breach(self, emulator: Emulator) -> None:
        """Another client of the token spends what is left of the budget and one more."""
        before = emulator.stats.throttled["budget"]
        url = f"{emulator.base_url}/accounts/x/workflows/{WORKFLOW}/instances"
        headers = {"Authorization": f"Bearer {self.token}", "User-Agent": "fault-run/1"}
        spent = 0
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(headers=headers, timeout=1, limits=limits) as client:
            while emulator.stats.throttled["budget"] == before and spent < 5000:
                # The API faults hit this client too: a dropped or timed-out call is spent.
                await asyncio.gather(
                    *(client.get(url, params={"per_page": "1"}) for _ in range(100)),
                    return_exceptions=True,
                )
                spent += 100
        self.report.breaches_provoked += emulator.stats.throttled["budget"] - before
        self.note(f"budget breached by another client after {spent} requests: 429 block")

    async def _revoke(self, emulator: Emulator) -> None:
        emulator.config.revoked = True
        self.note("token revoked")
        await asyncio.sleep(self.plan.revoke_for)
        emulator.config.revoked = False
        self.note("token restored")

    async def _broker_outage(self) -> None:
        await self.broker.stop()
        self.note(f"broker stopped for {self.plan.broker_stop_for:g} s")
        await asyncio.sleep(self.plan.broker_stop_for)
        await self.broker.restart()
        self.note("broker restarted on its data")

    async def _broker_pause(self) -> None:
        await self.broker.pause()
        self.note(f"broker paused (unreachable) for {self.plan.pause_for:g} s")
        await asyncio.sleep(self.plan.pause_for)
        await self.broker.resume()
        self.note("broker resumed")

    async def _follow(self, reader: OutputReader) -> None:
        while True:
            await reader.poll(0.5)
            for replica in self.replicas.values():
                replica.sample()

    def _unanswered(self, reader: OutputReader) -> list[tuple[int, int]]:
        seen = reader.seen
        missing = []
        for key, sent in self.truth.sent.items():
            named = seen.results.get(key)
            if named is None:
                missing.append(key)
            elif sent.hostile:
                if key not in seen.dead_lettered:
                    missing.append(key)
            elif not set(sent.instances) <= set(named):
                missing.append(key)
        return missing

    async def _wait_answered(self, reader: OutputReader, within: float) -> None:
        deadline = time.monotonic() + within
        while self._unanswered(reader) and time.monotonic() < deadline:
            await asyncio.sleep(1)
        left = len(self._unanswered(reader))
        self.note("all answered" if not left else f"{left} still unanswered after {within:g} s")

    async def _tally(self, emulator: Emulator, reader: OutputReader) -> None:
        report, truth, stats = self.report, self.truth, emulator.stats
        seen = reader.seen
        report.sent = len(truth.sent)
        report.hostile = sum(1 for s in truth.sent.values() if s.hostile)
        report.failed_sends = truth.failed_sends
        report.unanswered = self._unanswered(reader)
        report.answered = report.sent - len(report.unanswered)
        if self.mode == "transactional":
            report.duplicates_committed = seen.duplicates()
            report.duplicates_uncommitted = await self._uncommitted_duplicates()
        else:
            report.duplicates_uncommitted = seen.duplicates()
            report.duplicates_committed = report.duplicates_uncommitted
        existing = {view.id for view in emulator.instances(WORKFLOW)}
        report.instances_intended = len(truth.instances)
        report.instances_created = stats.created[WORKFLOW]
        report.duplicate_instances = len(existing - truth.instances) + max(
            0, stats.created[WORKFLOW] - len(existing)
        )
        report.events_sent = stats.events[WORKFLOW]
        report.events_twice = stats.events_repeated[WORKFLOW]
        report.event_faults_after_effect = (
            stats.faults_by_route["apply_then_error:event"]
            + stats.faults_by_route["apply_then_drop:event"]
        )
        report.dead_letters = dict(seen.dead_letters.most_common())
        report.drawn_429 = (
            stats.throttled["budget"] - report.breaches_provoked + stats.throttled["creation"]
        )
        report.blocked_429 = stats.throttled_agents["blocked:workflows-bridge"]
        logs = [path for r in self.replicas.values() for path in r.log_paths]
        report.token_found = token_found(self.token, logs) + seen.token_hits
        report.unplanned_exits = sum(len(r.unplanned_exits) for r in self.replicas.values())
        report.replica_incarnations = sum(r.incarnations for r in self.replicas.values())
        report.peak_rss_mb = max(r.peak_rss_kb for r in self.replicas.values()) / 1024
        report.api_faults = dict(Counter(stats.faults))

    async def _uncommitted_duplicates(self) -> int:
        async with OutputReader(
            self.broker.bootstrap_servers, **self.topics, isolation_level="read_uncommitted"
        ) as raw:
            await raw.read_to_end()
            return raw.seen.duplicates()


def _fault_share() -> float:
    return float(sum(v for k, v in API_FAULTS.model_dump().items() if k.endswith("_ratio")))


def render(reports: list[Report], plan: Plan, elapsed: float) -> str:
    rows: list[tuple[str, Callable[[Report], Any]]] = [
        ("commands sent (of them hostile)", lambda r: f"{r.sent:,} ({r.hostile:,})"),
        ("commands with a result", lambda r: f"{r.answered:,}"),
        ("commands WITHOUT a result", lambda r: len(r.unanswered)),
        ("duplicate results, read_committed", lambda r: r.duplicates_committed),
        ("duplicate results, read_uncommitted", lambda r: r.duplicates_uncommitted),
        (
            "instances intended / created",
            lambda r: f"{r.instances_intended:,} / {r.instances_created:,}",
        ),
        ("DUPLICATE instances", lambda r: r.duplicate_instances),
        ("events accepted by the API", lambda r: f"{r.events_sent:,}"),
        ("events delivered twice", lambda r: r.events_twice),
        ("  event calls failed after taking effect", lambda r: r.event_faults_after_effect),
        ("budget breaches provoked by another client", lambda r: r.breaches_provoked),
        ("429s DRAWN by the bridge itself", lambda r: r.drawn_429),
        ("429s met by the bridge during the block", lambda r: r.blocked_429),
        ("TOKEN found in logs or records", lambda r: r.token_found),
        (
            "replica processes (unplanned exits)",
            lambda r: f"{r.replica_incarnations} ({r.unplanned_exits})",
        ),
        ("peak RSS of a replica", lambda r: f"{r.peak_rss_mb:.0f} MB"),
        ("API faults injected", lambda r: sum(r.api_faults.values())),
        ("producer sends not acknowledged", lambda r: r.failed_sends),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  " + "  ".join(f"{r.mode:>16}" for r in reports)]
    for label, value in rows:
        lines.append(f"{label:{width}}  " + "  ".join(f"{value(r)!s:>16}" for r in reports))
    for r in reports:
        lines.append(f"\ndead letters by reason ({r.mode}):")
        lines.extend(f"  {n:>6}  {reason}" for reason, n in r.dead_letters.items())
        lines.append(f"timeline ({r.mode}):")
        lines.extend(f"  {line}" for line in r.timeline)
        verdict = "; ".join(r.failures) or "every zero condition holds"
        lines.append(f"verdict ({r.mode}): {verdict}")
    lines.append(
        f"\nload {plan.rate:g} records/s for {plan.load_seconds:g} s per mode, {PARTITIONS} "
        f"partitions, API faults {_fault_share():.0%} of calls; "
        f"took {elapsed:.0f} s"
    )
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    # The broker goes away on purpose: its clients' connection errors are expected here.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    plan = QUICK if args.quick else FULL
    modes = ["plain", "transactional"] if args.mode == "both" else [args.mode]
    started = time.monotonic()
    reports = []
    with contextlib.ExitStack() as stack:
        logs = args.logs or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        async with running_broker(logs / "kafka") as broker:
            say(f"Apache Kafka at {broker.bootstrap_servers}; logs in {logs}")
            for mode in modes:
                reports.append(await Run(broker, mode, plan, logs).execute())
        print(render(reports, plan, time.monotonic() - started))
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2, default=str))
    return 1 if any(r.failures for r in reports) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fault-run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI's shorter subset")
    parser.add_argument(
        "--mode",
        choices=("both", "plain", "transactional"),
        default="both",
        help="run without, with, or (default) both without and with a transactional id",
    )
    parser.add_argument("--logs", type=Path, help="keep the broker's and replicas' logs here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
