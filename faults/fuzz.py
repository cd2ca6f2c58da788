"""``scripts/fuzz-run``: the whole bridge under arbitrary input, bounded in time.

One ``workflows-bridge run`` process takes, for ``--seconds``, a stream where half the records
are valid creates and half are anything: random bytes, truncated and mutated commands, huge and
deeply nested JSON, other encodings, null keys and values, and hostile headers (huge, binary,
repeated names, look-alikes of the bridge's own ``workflows_bridge.*``). It passes when the
bridge never crashed or stalled, every record was answered (a result, or a dead letter), every
valid command's result is ``ok`` for its instance and the instance holds its params, and the
bridge's peak RSS stayed under ``--max-rss-mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bridge.local.emulator import EmulatorConfig
from faults.cluster import say
from faults.hostile import fuzzed, valid_command
from faults.solo import Solo, slope_per_minute, solo

#: A record with no answer after this many seconds of no progress at all is a stall.
STALL_SECONDS = 60.0


async def _offer(
    s: Solo, seconds: float, rate: float, seed: int
) -> tuple[dict[tuple[int, int], dict[str, Any] | None], Counter[str]]:
    """Send for ``seconds``; returns every record by (partition, offset): the valid command or
    None for fuzz."""
    rnd = random.Random(seed)
    sent: dict[tuple[int, int], dict[str, Any] | None] = {}
    kinds: Counter[str] = Counter()
    pending: list[tuple[asyncio.Future[Any], dict[str, Any] | None]] = []
    started, n = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        due = started + n / rate
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        n += 1
        key: bytes | None
        value: bytes | None
        headers: list[tuple[str, bytes]]
        if rnd.random() < 0.5:
            command = valid_command(rnd, n)
            key, value, headers = command["instance_id"].encode(), json.dumps(command).encode(), []
            kinds["valid"] += 1
        else:
            command = None
            key, value, headers = fuzzed(rnd, n)
            kinds["fuzzed"] += 1
        future = await s.producer.send(s.topics["commands"], value=value, key=key, headers=headers)
        pending.append((future, command))
    for future, command in pending:
        try:
            meta = await future
        except Exception as exc:  # noqa: BLE001 - the broker refused it: not sent, not owed
            kinds[f"refused by the broker: {type(exc).__name__}"] += 1
            continue
        sent[(meta.partition, meta.offset)] = command
    return sent, kinds


async def _run(args: argparse.Namespace, logs: Path) -> int:
    config = EmulatorConfig(token="fuzz-" + random.Random(args.seed).randbytes(8).hex())
    settings = {
        "BRIDGE_PIPELINE__DRAIN_TIMEOUT_SECONDS": "10",
        # Every valid record creates an instance that ends within seconds: with the default
        # hour the state tracker would rightly still remember them all when a run ends. A minute
        # lets the run show that memory levels off once ended instances are forgotten.
        "BRIDGE_STATES__FORGET_FINAL_AFTER_SECONDS": "60",
    }
    async with solo("fuzz", logs, config, settings) as s:
        rss: list[tuple[float, float]] = []
        started = time.monotonic()
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await s.reader.poll(0.5)
                kb = s.replica.current.current_rss_kb() if s.replica.current else None
                if kb:
                    rss.append((time.monotonic() - started, kb / 1024))
                s.replica.sample()

        watcher = asyncio.create_task(watch())
        sent, kinds = await _offer(s, args.seconds, args.rate, args.seed)
        say(f"sent {len(sent):,} records: {dict(kinds)}")
        stalled = await _wait(s, sent)
        stop.set()
        await watcher
        code = await s.replica.terminate()
        await s.reader.read_to_end()
        return _report(s, sent, kinds, rss, stalled, code, args)


async def _wait(s: Solo, sent: dict[tuple[int, int], dict[str, Any] | None]) -> bool:
    """Until every record is answered; True when progress stopped for STALL_SECONDS."""
    last, progress = -1, time.monotonic()
    while True:
        answered = sum(1 for key in sent if _answered(s, key))
        if answered == len(sent):
            return False
        if answered != last:
            last, progress = answered, time.monotonic()
        elif time.monotonic() - progress > STALL_SECONDS:
            return True
        await asyncio.sleep(0.5)


def _answered(s: Solo, key: tuple[int, int]) -> bool:
    return key in s.reader.seen.results or key in s.reader.seen.dead_lettered


def _report(  # noqa: PLR0917 - one call site, every figure it prints
    s: Solo,
    sent: dict[tuple[int, int], dict[str, Any] | None],
    kinds: Counter[str],
    rss: list[tuple[float, float]],
    stalled: bool,
    exit_code: int,
    args: argparse.Namespace,
) -> int:
    seen = s.reader.seen
    unanswered = [key for key in sent if not _answered(s, key)]
    wrong = []
    for key, command in sent.items():
        if command is None:
            continue
        instance = s.emulator.instance("fuzz", command["instance_id"])
        outcomes = seen.outcomes.get(key, [])
        ids = seen.results.get(key, [])
        if (
            outcomes[:1] != ["ok"]
            or ids[:1] != [command["instance_id"]]
            or instance is None
            or instance.params != command["params"]
        ):
            wrong.append(key)
    valid = sum(1 for c in sent.values() if c is not None)
    fuzz_outcomes: Counter[str] = Counter(
        seen.outcomes[key][0] for key, c in sent.items() if c is None and key in seen.outcomes
    )
    peak = s.replica.peak_rss_kb / 1024
    warm = [(t, mb) for t, mb in rss if t >= min(30.0, args.seconds / 3)]
    crashes = len(s.replica.unplanned_exits)
    lines = [
        f"records sent                   {len(sent):,} "
        f"({valid:,} valid, {len(sent) - valid:,} fuzzed)",
        f"records answered               {len(sent) - len(unanswered):,}",
        f"records WITHOUT an answer      {len(unanswered)}",
        f"valid commands WRONG           {len(wrong)}",
        f"fuzzed records' outcomes       {dict(fuzz_outcomes)}",
        f"dead letters by reason         {dict(seen.dead_letters.most_common())}",
        f"bridge crashes / stall         {crashes} / {'yes' if stalled else 'no'}",
        f"bridge exit code on SIGTERM    {exit_code}",
        f"peak RSS                       {peak:.0f} MB (limit {args.max_rss_mb} MB)",
        f"RSS slope after warm-up        {slope_per_minute(warm):+.2f} MB/min",
        f"sent by kind                   {dict(kinds)}",
    ]
    print("\n".join(lines))
    failed = unanswered or wrong or crashes or stalled or exit_code != 0
    failed = failed or peak > args.max_rss_mb or not sent
    print("verdict: " + ("FAILED" if failed else "the bridge answered everything, correctly"))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz-run", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send (60)")
    parser.add_argument("--rate", type=float, default=150.0, help="records a second (150)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generator (1)")
    parser.add_argument("--max-rss-mb", type=float, default=400.0, help="peak RSS bound (400)")
    parser.add_argument("--logs", type=Path, help="keep the bridge's log here")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        logs = args.logs or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-")))
        logs.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(args, logs))


if __name__ == "__main__":
    sys.exit(main())
