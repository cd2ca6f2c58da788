"""``workflows-bridge conformance``: against the emulator (all match, and a setting that makes a row
differ), against Cloudflare's local engine through the test shim, and as a command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import pytest

from bridge.local.emulator import (
    CreationLimits,
    DoStep,
    Emulator,
    EmulatorConfig,
    WaitForEventStep,
    WorkflowBehaviour,
)
from bridge.tools.conformance.cli import MAX_COST, run
from bridge.tools.conformance.judging import Row, Verdict
from bridge.tools.conformance.scenarios import cost
from tests.support.cf_engine_harness import CfEngineUnavailable, cf_engine, skip_or_fail
from tests.support.hermetic import without_bridge_variables

WORKFLOW = "conformance-wf"
#: Instances wait for an event: they stay live through the whole run, as the README asks.
WAITS = WorkflowBehaviour(
    steps=(
        DoStep(name="echo-params", duration_ms=5),
        WaitForEventStep(name="approval", event_type="approval"),
    )
)


def by_behaviour(rows: list[Row]) -> dict[str, Row]:
    return {row.behaviour: row for row in rows}


def differing(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.verdict is Verdict.DIFFER]


@contextlib.asynccontextmanager
async def emulator(config: EmulatorConfig) -> AsyncIterator[Emulator]:
    async with Emulator(config) as emu:
        yield emu


def test_the_announced_cost_is_within_60_requests() -> None:
    assert cost(with_rate=False) <= cost(with_rate=True) <= MAX_COST


async def test_every_assumption_holds_against_the_emulator() -> None:
    async with emulator(EmulatorConfig(workflows={WORKFLOW: WAITS})) as emu:
        rows, used = await run(
            account_id=emu.account_id,
            api_token=emu.token,
            base_url=emu.base_url,
            workflow=WORKFLOW,
            with_rate=False,
        )
        left = emu.instances(WORKFLOW)
    assert differing(rows) == [], rows
    verdicts = {row.behaviour: row.verdict for row in rows}
    assert verdicts["create with a taken id"] is Verdict.MATCH
    assert verdicts["batch/terminate of a live, a finished and an unknown id"] is Verdict.MATCH
    assert verdicts["terminate with rollback: true"] is Verdict.MATCH
    assert verdicts["PUT /instances/terminate (terminate all)"] is Verdict.NOT_RUN
    assert sum(v is Verdict.MATCH for v in verdicts.values()) >= 18
    assert used <= cost(with_rate=False)
    assert left == []  # cleaned up


async def test_a_setting_the_api_disagrees_with_is_named() -> None:
    config = EmulatorConfig(workflows={WORKFLOW: WAITS}, duplicate_status=400)
    async with emulator(config) as emu:
        rows, _ = await run(
            account_id=emu.account_id, api_token=emu.token, base_url=emu.base_url, workflow=WORKFLOW
        )
    [dup] = differing(rows)
    assert dup.behaviour == "create with a taken id"
    assert dup.observed.startswith("HTTP 400 code 10405")
    assert dup.setting == "duplicate_status = 400"

    async with emulator(EmulatorConfig()) as emu:  # every workflow name exists
        rows, _ = await run(
            account_id=emu.account_id, api_token=emu.token, base_url=emu.base_url, workflow=WORKFLOW
        )
    [undeployed] = differing(rows)
    assert undeployed.behaviour == "an undeployed workflow"
    assert "[workflows.NAME]" in undeployed.setting


async def test_the_creation_rate_probe() -> None:
    limits = CreationLimits(per_workflow=100)
    config = EmulatorConfig(workflows={WORKFLOW: WAITS}, creation=limits)
    async with emulator(config) as emu:
        rows, used = await run(
            account_id=emu.account_id,
            api_token=emu.token,
            base_url=emu.base_url,
            workflow=WORKFLOW,
            with_rate=True,
        )
        left = emu.instances(WORKFLOW)
    rate = by_behaviour(rows)["creation rate over 100/s per workflow"]
    assert rate.verdict is Verdict.MATCH, rate
    assert "Retry-After" in rate.observed
    assert used <= cost(with_rate=True)
    assert left == []

    limits = CreationLimits(per_workflow=100, retry_after=False)
    config = EmulatorConfig(workflows={WORKFLOW: WAITS}, creation=limits)
    async with emulator(config) as emu:
        rows, _ = await run(
            account_id=emu.account_id,
            api_token=emu.token,
            base_url=emu.base_url,
            workflow=WORKFLOW,
            with_rate=True,
        )
    rate = by_behaviour(rows)["creation rate over 100/s per workflow"]
    assert (rate.verdict, rate.setting) == (Verdict.DIFFER, "creation.retry_after = false")


@pytest.mark.cf_engine
async def test_nothing_differs_from_cloudflares_local_engine() -> None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            engine = await stack.enter_async_context(cf_engine(token="t"))
        except CfEngineUnavailable as exc:
            skip_or_fail(str(exc))
        rows, used = await run(
            account_id="local", api_token="t", base_url=engine.base_url, workflow=WORKFLOW
        )
    assert differing(rows) == [], rows
    verdicts = by_behaviour(rows)
    # Wire details and endpoints the local engine does not define are said so, not compared.
    for behaviour in (
        "an undeployed workflow",
        "direction on cursor pagination",
        "GET /instances/terminate",
        "batch/terminate of a live, a finished and an unknown id",
    ):
        assert verdicts[behaviour].verdict is Verdict.NOT_COMPARED, verdicts[behaviour]
    assert "local engine defines neither" in verdicts["create with a taken id"].note
    for behaviour in (
        "/batch with a taken id",
        "step names carry a counter suffix",
        "delete, then create the id again",
        "batch/delete with an unknown id",
    ):
        assert verdicts[behaviour].verdict is Verdict.MATCH, verdicts[behaviour]
    # The engine runs rollbacks; the emulator refuses them: a known gap, not a failure.
    assert verdicts["terminate with rollback: true"].verdict is Verdict.NOT_EMULATED
    assert used <= cost(with_rate=False)


async def test_the_command_prints_its_cost_then_the_table() -> None:
    async with emulator(EmulatorConfig(workflows={WORKFLOW: WAITS})) as emu:
        env = without_bridge_variables() | {
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": emu.account_id,
            "BRIDGE_CLOUDFLARE__API_TOKEN": emu.token,
            "BRIDGE_CLOUDFLARE__BASE_URL": emu.base_url,
            "COLUMNS": "200",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "conformance",
            "--workflow",
            WORKFLOW,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        statuses = dict(emu.stats.responses)
    text, log = out.decode(), err.decode()
    assert process.returncode == 0, log + text
    assert f"at most {cost(with_rate=False)} requests" in log
    assert log.index("at most") < log.index("behaviours")  # announced before the run
    assert "0 differ" in log
    assert "create with a taken id" in text
    assert "emulator assumes" in text
    assert emu.token not in log + text
    assert sum(statuses.values()) <= cost(with_rate=False)


def test_the_command_refuses_bad_settings(capfd: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(without_bridge_variables())
        assert main(["conformance", "--workflow", "has space"]) == 2
        assert "--workflow" in capfd.readouterr().err
        assert main(["conformance", "--workflow", WORKFLOW]) == 2
        assert "BRIDGE_CLOUDFLARE__ACCOUNT_ID" in capfd.readouterr().err
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_markdown_table_keeps_every_cell_in_its_column() -> None:
    from bridge.tools.conformance.cli import markdown

    rows = [
        Row("a | b", "HTTP 400\ncode 0", "HTTP 409", Verdict.DIFFER, "duplicate_status = 400"),
        Row("c", "HTTP 200", "HTTP 200", Verdict.NOT_COMPARED, note="local engine"),
    ]
    lines = markdown(rows).splitlines()
    assert lines[0] == "| behaviour | observed | emulator assumes | verdict | setting to change |"
    assert lines[2] == "| a \\| b | HTTP 400 code 0 | HTTP 409 | differ | duplicate_status = 400 |"
    assert lines[3] == "| c | HTTP 200 | HTTP 200 | not compared (local engine) |  |"


def test_the_readme_states_the_cost_the_run_announces() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = " ".join(readme.split())
    assert f"the most requests it will make: {cost(with_rate=False)} (of the token" in text
    assert f"{cost(with_rate=True)} with `--probe-creation-rate`" in text
