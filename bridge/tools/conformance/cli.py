"""``workflows-bridge conformance --workflow NAME``: the emulator's assumptions against an API.

It runs the behaviour scenarios against whatever ``BRIDGE_CLOUDFLARE__BASE_URL`` and token it is
given (production, the emulator, Cloudflare's local engine through the test shim), prints the
most requests it will make before it starts, deletes every instance it created, and prints a
table: behaviour, observed answer, what the emulator assumes, the verdict, and the emulator
setting to change where they differ. Exit code 0 when nothing differs, 1 when something does,
2 for bad settings or a run that could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bridge.config import load_api_tool_settings, secret_values
from bridge.contract.rules import MAX_BATCH, name_problem
from bridge.errors import ApiError, ConfigError
from bridge.logs import register_secret
from bridge.runtime import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from bridge.tools.conformance.judging import Aborted, Row, Run, Verdict
from bridge.tools.conformance.probe import Probe
from bridge.tools.conformance.scenarios import SCENARIOS, cost

#: The most requests a run may ever make (the issue's bound).
MAX_COST = 60


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "conformance",
        help="check the API emulator's assumptions against an API (production included)",
        description="Runs the behaviour scenarios against BRIDGE_CLOUDFLARE__BASE_URL with "
        "BRIDGE_CLOUDFLARE__API_TOKEN in BRIDGE_CLOUDFLARE__ACCOUNT_ID, deletes what it "
        "created, and prints what differs from what the emulator assumes. Instances of "
        "--workflow are created and run: use a workflow made for the test, whose instances "
        "wait (step.sleep or step.waitForEvent) for a minute or more.",
    )
    parser.add_argument("--workflow", required=True, help="the workflow to create instances of")
    parser.add_argument(
        "--config", type=Path, help="TOML file, as for run; BRIDGE_* variables win over it"
    )
    parser.add_argument(
        "--probe-creation-rate",
        action="store_true",
        help="also create 200 instances at once to see the creation-rate 429 (and its headers)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    output.add_argument(
        "--markdown", action="store_true", help="print the table as Markdown (to paste in an issue)"
    )
    parser.set_defaults(handler=_conformance)


def _conformance(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    problem = name_problem(args.workflow, what="workflow name", max_length=64)
    if problem is not None:
        console.print(f"--workflow: {problem}")
        return EXIT_CONFIG
    try:
        settings = load_api_tool_settings(args.config)
    except ConfigError as exc:
        console.print(f"workflows-bridge conformance: {exc}")
        return EXIT_CONFIG
    for secret in secret_values(settings):
        register_secret(secret)
    cf = settings.cloudflare
    limit = cost(with_rate=args.probe_creation_rate)
    console.print(
        f"conformance against {cf.base_url}, account {cf.account_id}, workflow {args.workflow}: "
        f"at most {limit} requests (of the token's 1,200 per 5 minutes), every instance deleted "
        "at the end"
    )
    try:
        rows, used = asyncio.run(
            run(
                account_id=cf.account_id,
                api_token=cf.api_token.get_secret_value(),
                base_url=cf.base_url,
                workflow=args.workflow,
                with_rate=args.probe_creation_rate,
            )
        )
    except Aborted as exc:
        console.print(f"[red]could not run:[/red] {exc}")
        return EXIT_CONFIG
    if args.json:
        write_json(rows, sys.stdout)
    elif args.markdown:
        sys.stdout.write(markdown(rows))
    else:
        Console().print(table(rows))
    differ = sum(row.verdict is Verdict.DIFFER for row in rows)
    console.print(f"{len(rows)} behaviours, {differ} differ; {used} requests made (of {limit})")
    return EXIT_FAILED if differ else EXIT_OK


async def run(
    *, account_id: str, api_token: str, base_url: str, workflow: str, with_rate: bool = False
) -> tuple[list[Row], int]:
    """Every scenario in order, then the cleanup; the rows and the requests made."""
    async with Probe(account_id=account_id, api_token=api_token, base_url=base_url) as probe:
        state = Run(probe, workflow, f"wbc-{secrets.token_hex(4)}")
        try:
            for scenario in SCENARIOS:
                if scenario.optional and not with_rate:
                    continue
                await scenario.run(state)
        finally:
            await _clean_up(state)
        if probe.requests > cost(with_rate=with_rate):
            raise AssertionError(f"made {probe.requests} requests, more than announced")
        return state.rows, probe.requests


async def _clean_up(state: Run) -> None:
    ids = list(dict.fromkeys(state.created))
    for start in range(0, len(ids), MAX_BATCH):
        chunk = ids[start : start + MAX_BATCH]
        try:
            await state.probe.client.delete_batch(state.workflow, chunk)
        except ApiError as exc:
            Console(stderr=True).print(f"[yellow]could not delete {chunk}:[/yellow] {exc}")


def table(rows: list[Row]) -> Table:
    """The rows as the table users send us."""
    shown = Table(title="workflows-bridge conformance", show_lines=True)
    for column in ("behaviour", "observed", "emulator assumes", "verdict", "setting to change"):
        shown.add_column(column, overflow="fold")
    styles = {Verdict.MATCH: "green", Verdict.DIFFER: "bold red"}
    for row in rows:
        verdict = row.verdict.value + (f" ({row.note})" if row.note else "")
        shown.add_row(
            Text(row.behaviour),
            Text(row.observed),
            Text(row.assumed),
            Text(verdict, style=styles.get(row.verdict, "yellow")),
            Text(row.setting),
        )
    return shown


def markdown(rows: list[Row]) -> str:
    """The table in Markdown."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| behaviour | observed | emulator assumes | verdict | setting to change |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = row.verdict.value + (f" ({row.note})" if row.note else "")
        cells = (row.behaviour, row.observed, row.assumed, verdict, row.setting)
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(rows: list[Row], out: TextIO) -> None:
    for row in rows:
        out.write(json.dumps(asdict(row) | {"verdict": row.verdict.value}) + "\n")


__all__ = ["MAX_COST", "markdown", "register", "run", "table"]
