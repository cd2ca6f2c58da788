"""Issue #9's benchmark rows: the bridge before the issue as a contestant, what counts as a
confirmation, and how the faults, skew and uniform targets and the CPU and latency rows are
judged (``bench/baseline.py``, ``bench/cost_report.py``); and the faults scenario end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.baseline import BEFORE, baseline_env, baseline_tree
from bench.report import build, render
from bench.runner import BRIDGE, Measurement
from bench.scenarios import DEFAULT, QUICK, select
from tests.support.bench_harness import run_quick_bench
from tests.support.kafka_harness import KafkaBroker


def test_the_baseline_is_the_bridge_before_issue_9() -> None:
    with baseline_tree() as baseline:
        tree = baseline.path
        executor = (tree / "bridge/pipeline/executor.py").read_text()
        assert "async def _status_of" in executor  # the confirmation GET per item
        assert not (tree / "bridge/pipeline/shares.py").exists()
        assert not (tree / "bridge/pipeline/lookup.py").exists()
        assert "BRIDGE_LOG_LEVEL" in baseline.variables
        assert "BRIDGE_TOPICS__BUDGET" not in baseline.variables
        env = baseline_env(
            {
                "BRIDGE_TOPICS__BUDGET": "b",
                "BRIDGE_STATES__ENABLED": "false",
                "BRIDGE_LOG_LEVEL": "info",
                "HOME": "/h",
                "PYTHONPATH": "/x",
            },
            baseline,
        )
        assert env == {"BRIDGE_LOG_LEVEL": "info", "HOME": "/h", "PYTHONPATH": str(tree)}
    assert not tree.exists()


def test_confirmations_leave_out_the_one_item_token_check() -> None:
    bridge = Measurement(
        "f", BRIDGE, 1, 100, api_requests={"batch": 90, "list": 3}, list_page_sizes={1: 2, 100: 1}
    )
    assert bridge.confirmations == pytest.approx(1 / 93)
    assert bridge.not_own == pytest.approx(3 / 93)
    before = Measurement("f", BEFORE, 1, 100, api_requests={"batch": 50, "get": 50})
    assert before.confirmations == before.not_own == 0.5


def _faults(contestant: str, run: int, gets: int, pages: int) -> Measurement:
    return Measurement(
        "f",
        contestant,
        run,
        3000,
        results=3000,
        api_requests={"batch": 100, "get": gets, "list": pages},
        list_page_sizes={100: pages} if pages else {},
    )


def test_the_faults_target_is_judged_on_median_confirmations() -> None:
    runs = [_faults(BEFORE, n, 150, 0) for n in (1, 2, 3)]
    runs += [_faults(BRIDGE, 1, 0, 0), _faults(BRIDGE, 2, 0, 30), _faults(BRIDGE, 3, 0, 5)]
    [verdict] = build(select("f"), DEFAULT, runs).verdicts
    assert verdict.met is True  # median 5 / 105 = 4.8 %
    assert verdict.measured == f"4.8% ({BEFORE}: 60%)"
    runs[3] = _faults(BRIDGE, 1, 6, 0)
    [verdict] = build(select("f"), DEFAULT, runs).verdicts
    assert verdict.met is False  # median 6 / 106
    assert "batch 100, get 150" in render(build(select("f"), DEFAULT, runs))


def _budget(key: str, contestant: str, run: int, used: float, throttled: int = 0) -> Measurement:
    return Measurement(
        key,
        contestant,
        run,
        400,
        results=300,
        throttled=throttled,
        accepted=round(used * 300),
        allowed=300,
        saturated=True,
    )


def test_skew_wants_nine_tenths_without_a_429_and_uniform_as_much_as_before() -> None:
    skew = [_budget("s", BEFORE, n, 0.33) for n in (1, 2, 3)]
    skew += [_budget("s", BRIDGE, n, used) for n, used in ((1, 0.96), (2, 0.85), (3, 0.95))]
    [verdict] = build(select("s"), DEFAULT, skew).verdicts
    assert (verdict.met, verdict.measured) == (True, f"0.95 used, 0 × 429 ({BEFORE}: 0.33)")
    skew[3] = _budget("s", BRIDGE, 1, 0.96, throttled=1)
    assert build(select("s"), DEFAULT, skew).verdicts[0].met is False

    uniform = [_budget("u", BEFORE, n, 0.99) for n in (1, 2, 3)]
    uniform += [_budget("u", BRIDGE, n, 0.97) for n in (1, 2, 3)]
    assert build(select("u"), DEFAULT, uniform).verdicts[0].met is True
    uniform[3:] = [_budget("u", BRIDGE, n, 0.96) for n in (1, 2, 3)]
    assert build(select("u"), DEFAULT, uniform).verdicts[0].met is False


def test_cpu_and_latency_are_reported_beside_the_bridge_before_issue_9() -> None:
    def cpu(contestant: str, run: int, seconds: float) -> Measurement:
        return Measurement("p", contestant, run, 5001, results=5001, cpu_seconds=seconds)

    report = build(
        select("p"),
        DEFAULT,
        [cpu(BEFORE, n, 3.0) for n in (1, 2, 3)] + [cpu(BRIDGE, n, 1.5) for n in (1, 2, 3)],
    )
    assert report.verdicts == []  # no target: reported
    text = render(report)
    assert "0.600 CPU s/1,000" in text
    assert f"0.50 × {BEFORE}" in text

    def latency(contestant: str, run: int, p50: float) -> Measurement:
        return Measurement(
            "l20",
            contestant,
            run,
            300,
            results=300,
            latency_p50_ms=p50,
            latency_p99_ms=p50 * 3,
        )

    text = render(
        build(
            select("l20"),
            DEFAULT,
            [latency(BEFORE, n, 40.0) for n in (1, 2, 3)]
            + [latency(BRIDGE, n, 30.0) for n in (1, 2, 3)],
        )
    )
    assert "p50 30 / p99 90 ms" in text
    assert f"{BEFORE}: p50 40 / p99 120 ms" in text


@pytest.mark.slow
def test_quick_faults_scenario_confirms_nothing(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    done = run_quick_bench(kafka_broker, "f", report, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    measured = {m["contestant"]: m for m in json.loads(report.read_text())["measurements"]}
    assert set(measured) == {BEFORE, BRIDGE}
    for contestant in (BEFORE, BRIDGE):
        assert measured[contestant]["results"] == QUICK.faulty_creates
    bridge = measured[BRIDGE]
    assert bridge["outcomes"] == {"ok": QUICK.faulty_creates}
    assert bridge["api_requests"].get("get", 0) == 0
    assert bridge["confirmations"] == 0
    assert "f. this bridge ≤ 5% of requests confirming instances" in done.stdout
