"""``workflows-bridge check``: is this deployment able to work? One line per check, and an exit
code that says which failed first.

It reads the configuration exactly as ``run`` does, connects to the broker with the real
security settings, looks up every topic and its partitions, verifies the token with one API
request and that each workflow of the allow-list exists (those requests verify the token too),
and prints a short report (``--json`` for machines). Nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bridge.cloudflare.client import WorkflowsClient
from bridge.config import Settings, load_settings, secret_values
from bridge.errors import ApiError, AuthError, BridgeError, ConfigError, NotFound, TransportError
from bridge.logs import register_secret
from bridge.tools.common import started_admin

#: Exit codes, one per kind of problem (the first failing check decides).
EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_BROKER = 3
EXIT_TOPICS = 4
EXIT_TOKEN = 5
EXIT_WORKFLOW = 6
EXIT_API = 7

#: Listed when the allow-list is empty: any name answers once the token works (404 or a page).
_PROBE_WORKFLOW = "workflows-bridge-auth-probe"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    exit_code: int = EXIT_OK


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, exit_code: int) -> None:
        self.checks.append(Check(name, ok, detail, EXIT_OK if ok else exit_code))

    @property
    def exit_code(self) -> int:
        return next((c.exit_code for c in self.checks if not c.ok), EXIT_OK)


async def _check_broker(settings: Settings, report: Report) -> None:
    topics = settings.topics
    wanted = [*topics.commands, topics.output, topics.dlq]
    states = getattr(topics, "states", None)  # the instance-state stream's topic, when configured
    if isinstance(states, str) and states:
        wanted.append(states)
    try:
        async with started_admin(settings.kafka) as admin:
            report.add("broker", True, f"connected to {settings.kafka.bootstrap_servers}", 0)
            # Only topics that exist are described: a Metadata request naming a missing topic
            # would make a broker with auto-creation create it.
            present = set(await admin.list_topics())
            described = await admin.describe_topics([t for t in wanted if t in present])
    except BridgeError as exc:
        report.add("broker", False, str(exc), EXIT_BROKER)
        return
    found = {
        entry["topic"]: len(entry["partitions"])
        for entry in described
        if entry.get("error_code", 0) == 0 and entry.get("partitions")
    }
    for name in wanted:
        if name in found:
            report.add(f"topic {name}", True, f"{found[name]} partition(s)", 0)
        else:
            report.add(
                f"topic {name}",
                False,
                "missing (workflows-bridge topics create makes it)",
                EXIT_TOPICS,
            )


async def _check_api(settings: Settings, report: Report) -> None:
    cf = settings.cloudflare
    allowed = list(cf.workflows)
    async with WorkflowsClient(
        account_id=cf.account_id,
        api_token=cf.api_token.get_secret_value(),
        base_url=cf.base_url,
        timeout=httpx.Timeout(cf.request_timeout_seconds, connect=5.0),
    ) as client:
        # With an allow-list its first workflow's listing verifies the token: one request less.
        for index, workflow in enumerate(allowed or [_PROBE_WORKFLOW]):
            try:
                await client.list_page(workflow, per_page=1)
            except AuthError as exc:
                report.add("api token", False, f"refused: {exc}", EXIT_TOKEN)
                return
            except NotFound:
                if index == 0:
                    report.add("api token", True, "accepted", 0)
                if allowed:
                    report.add(
                        f"workflow {workflow}",
                        False,
                        "not found in the account (BRIDGE_CLOUDFLARE__WORKFLOWS)",
                        EXIT_WORKFLOW,
                    )
                continue
            except TransportError as exc:
                report.add("api", False, f"unreachable: {exc}", EXIT_API)
                return
            except ApiError as exc:
                report.add("api", False, f"unexpected answer: {exc}", EXIT_API)
                return
            if index == 0:
                report.add("api token", True, "accepted", 0)
            if allowed:
                report.add(f"workflow {workflow}", True, "exists", 0)
        if not allowed:
            report.add("workflows", True, "any (no BRIDGE_CLOUDFLARE__WORKFLOWS allow-list)", 0)


async def run_checks(settings: Settings) -> Report:
    report = Report()
    report.add("config", True, "valid", 0)
    await _check_broker(settings, report)
    await _check_api(settings, report)
    return report


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        document = {
            "ok": report.exit_code == EXIT_OK,
            "exit_code": report.exit_code,
            "checks": [asdict(check) for check in report.checks],
        }
        print(json.dumps(document, indent=2))
        return
    for check in report.checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    verdict = "all checks passed" if report.exit_code == EXIT_OK else "not ready to run"
    print(f"{verdict} (exit code {report.exit_code})")


def _check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        report = Report()
        report.add("config", False, str(exc), EXIT_CONFIG)
        _print(report, args.json)
        return report.exit_code
    for secret in secret_values(settings):
        register_secret(secret)
    report = asyncio.run(run_checks(settings))
    _print(report, args.json)
    return report.exit_code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check configuration, broker, topics, token and workflows; exit non-zero if not ready",
        description="Exit codes: 0 ready, 2 configuration, 3 broker, 4 topics, 5 API token, "
        "6 workflow of the allow-list, 7 API unreachable or unexpected.",
    )
    parser.add_argument("--config", type=Path, help="TOML file, as for run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_check)
