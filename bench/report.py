"""Medians, ratios against the baselines, the targets of issues #4 and #9, and the table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench import cost_report, states
from bench.runner import BRIDGE, NAIVE, RAW, Measurement
from bench.scenarios import Scenario, Sizes

#: The targets of issue #4.
CREATES_VS_RAW = 0.5
MIXED_VS_NAIVE = 20.0
RATE_USE = 0.95
RSS_LIMIT_MB = 200.0
#: The target of issue #9 for the terminates scenario: requests for its terminates.
TERMINATE_REQUESTS = 10
#: The routes a terminate may spend requests on: the bulk call, a lone PATCH, a status read.
TERMINATE_ROUTES = ("batch_terminate", "status", "get")


def terminate_requests(m: Measurement) -> float | None:
    """Requests the run spent on terminates (its creates and the token check left out)."""
    if not m.api_requests:
        return None
    return float(sum(m.api_requests.get(route, 0) for route in TERMINATE_ROUTES))


@dataclass(slots=True)
class Verdict:
    scenario: str
    target: str
    measured: str
    met: bool | None


@dataclass(slots=True)
class Row:
    scenario: str = ""
    contestant: str = ""
    results: str = ""
    runs: str = ""
    median: str = ""
    api_calls: str = ""
    cpu: str = ""
    versus: str = ""
    target: str = ""
    met: str = ""


@dataclass(slots=True)
class Report:
    rows: list[Row] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _of(runs: list[Measurement], metric: Callable[[Measurement], float | None]) -> float | None:
    """The median over runs, or None if any run failed (a failed run has no value)."""
    if not runs or any(not m.ok for m in runs):
        return None
    return _median([metric(m) for m in runs])


def _met(flag: bool | None) -> str:
    return {True: "MET", False: "MISSED", None: "n/a"}[flag]


def build(
    scenarios: Sequence[Scenario], sizes: Sizes, measurements: Sequence[Measurement]
) -> Report:
    report = Report()
    for scenario in scenarios:
        mine = [m for m in measurements if m.scenario == scenario.key]
        if not mine:
            continue
        by: dict[str, list[Measurement]] = {}
        for m in mine:
            by.setdefault(m.contestant, []).append(m)
            if m.error:
                report.errors.append(f"{scenario.key}/{m.contestant} run {m.run}: {m.error}")
        rows = [_row(scenario.key, contestant, runs) for contestant, runs in by.items()]
        rows[0].scenario = f"{scenario.key}. {scenario.title(sizes)}"
        if scenario.key == "e":
            for row in rows:
                judged = _state_verdict(row.contestant, by[row.contestant])
                report.verdicts.append(judged)
                row.target, row.met = judged.target, _met(judged.met)
        verdict = _verdict(scenario.key, by)
        if verdict is not None:
            report.verdicts.append(verdict)
        for row in rows:
            if row.contestant == BRIDGE:
                _judge(row, scenario.key, verdict, by)
        if report.rows:
            report.rows.append(Row())
        report.rows.extend(rows)
    return report


def _judge(row: Row, key: str, verdict: Verdict | None, by: dict[str, list[Measurement]]) -> None:
    """This bridge's row: its target and verdict, or (CPU, latency) beside today's bridge."""
    if verdict is not None:
        row.target, row.met = verdict.target, _met(verdict.met)
        row.versus = row.versus or verdict.measured
    elif key in cost_report.KEYS:  # no target: reported beside the bridge before #9
        row.versus, row.target = cost_report.compared(key, by), "reported"


def _row(key: str, contestant: str, runs: list[Measurement]) -> Row:
    row = Row(contestant=contestant)
    expected = runs[0].expected
    failed = [m for m in runs if not m.ok]
    row.results = (
        f"{expected:,}/{expected:,}" if not failed else f"FAILED {len(failed)}/{len(runs)}"
    )
    if contestant == NAIVE and key in ("a", "b"):
        row.contestant += " (prefix)"
    if key == "c":
        row.runs = " ".join("—" if m.used is None else f"{m.used:.2f}" for m in runs)
        used = _of(runs, lambda m: m.used)
        row.median = "—" if used is None else f"{used:.2f} used"
        throttled = sum(m.throttled or 0 for m in runs)
        row.versus = f"{throttled} × 429"
    elif key == "e":
        per = [_per_1000(m) for m in runs]
        row.runs = " ".join("—" if v is None else f"{v:.0f}" for v in per)
        median = _of(runs, _per_1000)
        row.median = "—" if median is None else f"{median:.0f} req/1,000 changes"
        share = _of(runs, lambda m: m.share_used)
        p50, p99 = _of(runs, lambda m: m.delay_p50), _of(runs, lambda m: m.delay_p99)
        changes = _of(runs, lambda m: None if m.state_changes is None else float(m.state_changes))
        row.versus = (
            "—"
            if share is None or changes is None
            else f"{changes:,.0f} changes, share {share:.3f}, delay p50 "
            f"{_seconds(p50)} p99 {_seconds(p99)}"
        )
    elif key == "d":
        row.runs = " ".join("—" if m.peak_rss_mb is None else f"{m.peak_rss_mb:.0f}" for m in runs)
        rss = _of(runs, lambda m: m.peak_rss_mb)
        row.median = "—" if rss is None else f"{rss:.0f} MB RSS"
    elif key in cost_report.KEYS:
        cost_report.fill(key, runs, row)
    elif key == "t":
        counted = [terminate_requests(m) for m in runs]
        row.runs = " ".join("—" if c is None else f"{c:.0f}" for c in counted)
        spent = _of(runs, terminate_requests)
        row.median = "—" if spent is None else f"{spent:,.0f} req for {expected // 2:,} terminates"
    else:
        row.runs = " ".join(_rate(m.rate) for m in runs)
        row.median = f"{_rate(_of(runs, lambda m: m.rate))} cmd/s"
    calls = _of(runs, lambda m: float(sum(m.api_requests.values())) if m.api_requests else None)
    row.api_calls = "—" if calls is None else f"{calls:,.0f}"
    cpu = _of(runs, lambda m: m.cpu_busy)
    row.cpu = "—" if cpu is None else f"{cpu:.0%}"
    return row


def _verdict(key: str, by: dict[str, list[Measurement]]) -> Verdict | None:
    if key in cost_report.KEYS:
        judged = cost_report.verdict(key, by)
        return None if judged is None else Verdict(key, *judged)
    bridge = by.get(BRIDGE, [])
    if key == "a":
        return _ratio(key, bridge, by.get(RAW, []), RAW, CREATES_VS_RAW)
    if key == "b":
        return _ratio(key, bridge, by.get(NAIVE, []), NAIVE, MIXED_VS_NAIVE)
    if key == "c":
        used = _of(bridge, lambda m: m.used)
        throttled = sum(m.throttled or 0 for m in bridge)
        target = f"≥ {RATE_USE} used, 0 × 429"
        if used is None:
            return Verdict(key, target, "—", None)
        met = used >= RATE_USE and throttled == 0 and all(m.saturated for m in bridge)
        return Verdict(key, target, f"{used:.2f} used, {throttled} × 429", met)
    if key == "t":
        spent = _of(bridge, terminate_requests)
        naive = _of(by.get(NAIVE, []), terminate_requests)
        count = bridge[0].expected // 2 if bridge else 0
        target = f"≤ {TERMINATE_REQUESTS} requests for {count:,} terminates"
        if spent is None:
            return Verdict(key, target, "—", None)
        versus = "" if naive is None else f" (one per terminate: {naive:,.0f})"
        return Verdict(key, target, f"{spent:,.0f}{versus}", spent <= TERMINATE_REQUESTS)
    if key == "d":
        rss = _of(bridge, lambda m: m.peak_rss_mb)
        target = f"< {RSS_LIMIT_MB:.0f} MB"
        if rss is None:
            return Verdict(key, target, "—", None)
        return Verdict(key, target, f"{rss:.0f} MB", rss < RSS_LIMIT_MB)
    return None


def _per_1000(m: Measurement) -> float | None:
    if m.tracking_requests is None or not m.state_changes:
        return None
    return m.tracking_requests / m.state_changes * 1000


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _state_verdict(mode: str, runs: list[Measurement]) -> Verdict:
    """Issue #8's targets: polling within its share; the queue ≤ 350 requests per 1,000 changes
    (only the final gets), 0 without outputs."""
    if mode == states.POLL:
        share = _of(runs, lambda m: m.share_used)
        target = f"share used ≤ {states.SHARE:g}"
        if share is None:
            return Verdict("e", f"({mode}) {target}", "—", None)
        return Verdict("e", f"({mode}) {target}", f"{share:.3f}", share <= states.SHARE)
    limit = states.QUEUE_PER_1000 if mode == states.QUEUE else 0.0
    per = _of(runs, _per_1000)
    target = f"≤ {limit:g} requests per 1,000 changes"
    if per is None:
        return Verdict("e", f"({mode}) {target}", "—", None)
    return Verdict("e", f"({mode}) {target}", f"{per:.0f}", per <= limit)


def _ratio(
    key: str, bridge: list[Measurement], base: list[Measurement], name: str, target: float
) -> Verdict:
    """The ratio of medians: this bridge over ``name``, both from the same runs."""
    mine = _of(bridge, lambda m: m.rate)
    theirs = _of(base, lambda m: m.rate)
    text = f"≥ {target:g} × {name}"
    if mine is None or not theirs:
        return Verdict(key, text, "—", None)
    ratio = mine / theirs
    shown = f"{ratio:.2f} × {name}" if ratio < 10 else f"{ratio:.0f} × {name}"
    return Verdict(key, text, shown, ratio >= target)


HEADERS = Row(
    "scenario",
    "contestant",
    "results",
    "per run",
    "median",
    "API calls",
    "CPU",
    "vs baseline",
    "target",
    "met",
)


def render(report: Report) -> str:
    """The table, then every target's verdict."""
    rows = [HEADERS, *report.rows]
    columns = list(Row.__slots__)
    widths = {c: max(len(getattr(r, c)) for r in rows) for c in columns}
    right = {"results", "median", "api_calls", "cpu"}

    def line(row: Row) -> str:
        cells = []
        for column in columns:
            text = getattr(row, column)
            cells.append(
                text.rjust(widths[column]) if column in right else text.ljust(widths[column])
            )
        return "  ".join(cells).rstrip()

    out = [line(HEADERS), "  ".join("-" * widths[c] for c in columns)]
    out += [line(row) for row in report.rows]
    out.append("")
    met = sum(1 for v in report.verdicts if v.met)
    out.append(f"targets met: {met} of {len(report.verdicts)}")
    for verdict in report.verdicts:
        out.append(
            f"  {verdict.scenario}. this bridge {verdict.target}: {verdict.measured} — "
            f"{_met(verdict.met)}"
        )
    if report.notes:
        out.append("")
        out += report.notes
    if report.errors:
        out.append("")
        out.append("errors:")
        out += [f"  {error}" for error in report.errors]
    return "\n".join(out)
