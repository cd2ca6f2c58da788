"""``scripts/soak``: 100,000 mixed commands at a steady rate over at least ten minutes.

One ``workflows-bridge run`` process, the emulator answering after 10-30 ms. Every 10 s it
samples the bridge's resident set and open file descriptors; at the end it prints the samples,
the RSS slope after the warm-up (least squares, MB per minute), the descriptors' range, and the
latency from sending a command to its first result per minute (p50, p95, p99). It fails only if
a command is left without a result or the bridge did not stop cleanly: the figures are for
reading, not for a threshold a busy machine could trip.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

from bridge.local.emulator import EmulatorConfig, Latency, WorkflowBehaviour
from bridge.local.emulator.config import WaitForEventStep
from faults.cluster import say
from faults.load import MixedLoad, Truth, offer
from faults.solo import Solo, percentile, slope_per_minute, solo

SAMPLE_EVERY = 10.0


async def _run(args: argparse.Namespace, logs: Path) -> int:
    config = EmulatorConfig(
        token="soak-token",
        default_behaviour=WorkflowBehaviour(
            steps=(WaitForEventStep(name="hold", event_type="never"),)
        ),
        latency=Latency(fixed_ms=10, jitter_ms=20),
    )
    seconds = args.commands / args.rate
    async with solo("soak", logs, config, {}) as s:
        truth = Truth()
        samples: list[tuple[float, float, int]] = []
        started = time.monotonic()
        stop = asyncio.Event()

        async def follow() -> None:
            while not stop.is_set():
                await s.reader.poll(0.5)

        async def sample() -> None:
            while not stop.is_set():
                current = s.replica.current
                kb = current.current_rss_kb() if current else None
                fds = current.open_files() if current else None
                if kb is not None and fds is not None:
                    at = time.monotonic() - started
                    samples.append((at, kb / 1024, fds))
                    say(
                        f"{at:5.0f} s  RSS {kb / 1024:6.1f} MB  fds {fds}  "
                        f"sent {len(truth.sent):,}  answered {len(s.reader.seen.results):,}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)

        tasks = [asyncio.create_task(follow()), asyncio.create_task(sample())]
        load = MixedLoad(5, prefix="soak", active=200, hostile_share=0.01)
        await offer(s.producer, s.topics["commands"], load, truth, rate=args.rate, seconds=seconds)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(_answered(s, truth)) < len(truth.sent):
            await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*tasks)
        code = await s.replica.terminate()
        return _report(s, truth, samples, code, args, time.monotonic() - started)


def _answered(s: Solo, truth: Truth) -> set[tuple[int, int]]:
    return {key for key in truth.sent if key in s.reader.seen.results}


def _report(  # noqa: PLR0917 - one call site, every figure it prints
    s: Solo,
    truth: Truth,
    samples: list[tuple[float, float, int]],
    exit_code: int,
    args: argparse.Namespace,
    elapsed: float,
) -> int:
    answered = _answered(s, truth)
    missing = len(truth.sent) - len(answered)
    warm = [(t, mb) for t, mb, _ in samples if t >= args.warm_up]
    fds = [n for t, _, n in samples if t >= args.warm_up]
    lines = [
        f"sent {len(truth.sent):,} records at {args.rate:g}/s; answered {len(answered):,}; "
        f"without a result {missing}; bridge exit code {exit_code}; took {elapsed:.0f} s",
        "",
        "  time    RSS MB   fds",
    ]
    lines += [f"{t:6.0f} s  {mb:7.1f}  {n:4d}" for t, mb, n in samples]
    lines.append("")
    if warm:
        lines.append(
            f"RSS after {args.warm_up:g} s warm-up: {min(mb for _, mb in warm):.1f}-"
            f"{max(mb for _, mb in warm):.1f} MB, slope {slope_per_minute(warm):+.3f} MB/min"
        )
        lines.append(f"open file descriptors after warm-up: {min(fds)}-{max(fds)}")
    lines.append("latency, command sent -> first result (ms), per minute of sending:")
    lines.append("  minute  commands    p50    p95    p99")
    by_minute: dict[int, list[float]] = {}
    first = min((sent.sent_at for sent in truth.sent.values()), default=0.0)
    for key, sent in truth.sent.items():
        at = s.reader.seen.first_at.get(key)
        if at is not None:
            minute = int((sent.sent_at - first) // 60)
            by_minute.setdefault(minute, []).append(at - sent.sent_at * 1000)
    for minute, values in sorted(by_minute.items()):
        lines.append(
            f"  {minute:6d}  {len(values):8,}  {percentile(values, 0.5):5.0f}  "
            f"{percentile(values, 0.95):5.0f}  {percentile(values, 0.99):5.0f}"
        )
    print("\n".join(lines))
    return 1 if missing or exit_code != 0 or not truth.sent else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=100_000, help="commands (100,000)")
    parser.add_argument("--rate", type=float, default=160.0, help="commands a second (160)")
    parser.add_argument("--warm-up", type=float, default=120.0, help="seconds not in the slope")
    parser.add_argument("--logs", type=Path, help="keep the bridge's log here")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        logs = args.logs or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        logs.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(args, logs))


if __name__ == "__main__":
    sys.exit(main())
