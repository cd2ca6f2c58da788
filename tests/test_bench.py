"""The benchmark (``bench/``) runs end to end: its cheapest scenario at ``--quick`` size prints the
table with every contestant's row, and every contestant wrote exactly one result per command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import build, render
from bench.runner import BRIDGE, NAIVE, RAW, Measurement
from bench.scenarios import QUICK, select
from tests.support.bench_harness import run_quick_bench
from tests.support.kafka_harness import KafkaBroker


@pytest.mark.slow
def test_quick_creates_scenario_counts_every_result(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    report = tmp_path / "bench.json"
    done = run_quick_bench(kafka_broker, "a", report, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.strip()]
    label = f"a. {QUICK.creates:,} creates"
    assert any(line.startswith(label) and RAW in line for line in rows), done.stdout
    for contestant in (NAIVE, BRIDGE):
        assert any(contestant in line for line in rows), done.stdout
    assert any(line.startswith("  a. this bridge ≥ 0.5 × raw pipe:") for line in rows)

    data = json.loads(report.read_text())
    measured = {m["contestant"]: m for m in data["measurements"]}
    assert set(measured) == {RAW, NAIVE, BRIDGE}
    assert measured[RAW]["results"] == QUICK.creates
    assert measured[NAIVE]["results"] == QUICK.creates_naive
    assert measured[BRIDGE]["results"] == QUICK.creates
    # Coalescing: the bridge sent /batch requests of up to 100 creates, and nothing else but
    # its one token check at start.
    assert set(measured[BRIDGE]["api_requests"]) == {"batch", "list"}
    assert measured[BRIDGE]["api_requests"]["list"] == 1
    assert measured[BRIDGE]["api_requests"]["batch"] >= QUICK.creates // 100
    assert all(m["rate"] and m["rate"] > 0 for m in measured.values())
    # The session's broker was used, not one of the benchmark's own.
    assert f"{kafka_broker.flavour.value} at {kafka_broker.bootstrap_servers}" in done.stdout


def test_a_wrong_count_fails_the_run_and_the_target_is_judged_on_medians() -> None:
    def run(contestant: str, number: int, rate: float, error: str | None = None) -> Measurement:
        return Measurement("a", contestant, number, 100, results=100, rate=rate, error=error)

    measurements = [
        run(RAW, 1, 1000.0),
        run(RAW, 2, 3000.0),
        run(RAW, 3, 2000.0),
        run(BRIDGE, 1, 1100.0),
        run(BRIDGE, 2, 900.0),
        run(BRIDGE, 3, 1000.0),
    ]
    report = build(select("a"), QUICK, measurements)
    [verdict] = report.verdicts
    assert verdict.met is True  # medians 1000 / 2000 = 0.5
    assert "0.50 × raw pipe" in verdict.measured

    measurements[4] = run(BRIDGE, 2, 900.0, error="this bridge: 99 results, expected exactly 100")
    report = build(select("a"), QUICK, measurements)
    assert report.verdicts[0].met is None
    assert "expected exactly 100" in render(report)


def test_the_terminates_target_counts_only_the_terminate_routes() -> None:
    def run(contestant: str, number: int, requests: dict[str, int]) -> Measurement:
        return Measurement("t", contestant, number, 600, results=600, api_requests=requests)

    naive = {"create": 300, "status": 300}
    measurements = [run(NAIVE, n, naive) for n in (1, 2, 3)] + [
        run(BRIDGE, 1, {"batch": 4, "batch_terminate": 3, "list": 1}),
        run(BRIDGE, 2, {"batch": 3, "batch_terminate": 4, "get": 100, "status": 1, "list": 1}),
        run(BRIDGE, 3, {"batch": 4, "batch_terminate": 4, "list": 1}),
    ]
    report = build(select("t"), QUICK, measurements)
    [verdict] = report.verdicts
    assert verdict.target == "≤ 10 requests for 300 terminates"
    assert verdict.measured == "4 (one per terminate: 300)"  # the median of 3, 105, 4
    assert verdict.met is True
    text = render(report)
    assert "3 105 4" in text
    assert "300 req for 300 terminates" in text

    measurements[4] = run(BRIDGE, 2, {"batch_terminate": 11})
    measurements[5] = run(BRIDGE, 3, {"batch_terminate": 12})
    assert build(select("t"), QUICK, measurements).verdicts[0].met is False


def test_the_state_stream_rows_judge_each_mode_on_its_own_target() -> None:
    from bench import states
    from bench.runner import Budget
    from bench.states import _share

    def mode(name: str, requests: int, changes: int, share: float) -> Measurement:
        return Measurement(
            "e",
            name,
            1,
            100,
            results=100,
            state_changes=changes,
            tracking_requests=requests,
            share_used=share,
            delay_p50=1.0,
            delay_p99=5.0,
        )

    report = build(
        select("e"),
        QUICK,
        [
            mode(states.POLL, 150, 300, 0.11),
            mode(states.QUEUE, 100, 300, 0.05),
            mode(states.QUEUE_BARE, 0, 300, 0.0),
        ],
    )
    verdicts = {v.target.split(")")[0].strip("("): v for v in report.verdicts}
    assert verdicts[states.POLL].met is False  # 0.11 of the budget: over its 0.1 share
    assert verdicts[states.QUEUE].met is True  # 333 per 1,000 changes
    assert verdicts[states.QUEUE].measured == "333"
    assert verdicts[states.QUEUE_BARE].met is True
    text = render(report)
    assert "333 req/1,000 changes" in text
    assert "delay p50 1.0 s p99 5.0 s" in text
    # the share: the most requests in any window of the budget's length, over the budget
    assert _share([0.0, 1.0, 2.0, 10.5, 11.0], Budget(10, 10.0)) == 0.3
