"""The ``emulator`` sub-command: flags, the TOML file, and a real start and SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

import bridge
from bridge.errors import ConfigError
from bridge.local.emulator import DoStep, WaitForEventStep
from bridge.local.emulator.cli import build_config, register, run

REPO_ROOT = Path(bridge.__file__).resolve().parents[1]
TOML = """
token = "from-file"
account_id = "acct"
seed = 3
duplicate_status = 400
event_queue = "from-file"

[queue]
body_encoding = "plain"
reorder_ratio = 0.25
lost_ack_ratio = 0.1

[budget]
requests = 100
window_seconds = 60

[creation]
per_workflow = 10
per_account = 30

[latency]
fixed_ms = 5

[faults]
drop_ratio = 0.1
routes = ["create", "batch"]

[workflows.orders]
concurrency = 4
output = { ok = true }
steps = [
  { kind = "do", name = "charge", duration_ms = 10, transient_failures = 1 },
  { kind = "wait_for_event", name = "approval", event_type = "approved", timeout_ms = 1000 },
]

[workflows.refunds]
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["emulator", *argv])


def test_defaults_and_handler() -> None:
    args = parse()
    assert (args.host, args.port, args.token, args.config) == ("127.0.0.1", 8788, None, None)
    assert args.handler is run
    config, source = build_config(args)
    assert config.token == "emulator-token"
    assert source == "default (emulator-token)"
    assert config.budget is None
    assert config.workflows is None
    assert config.faults.error_ratio == 0
    assert config.creation.per_workflow is None


def test_toml_file_sets_everything(tmp_path: Path) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(TOML, encoding="utf-8")
    config, source = build_config(parse("--config", str(path)))
    assert source == "config file"
    assert config.token == "from-file"
    assert config.account_id == "acct"
    assert config.seed == 3
    assert config.duplicate_status == 400
    assert config.budget is not None
    assert config.budget.block == 60
    assert (config.creation.per_workflow, config.creation.per_account) == (10, 30)
    assert config.latency.fixed_ms == 5
    assert config.faults.drop_ratio == 0.1
    assert config.faults.routes == frozenset({"create", "batch"})
    assert config.workflows is not None
    assert sorted(config.workflows) == ["orders", "refunds"]
    orders = config.workflows["orders"]
    assert orders.concurrency == 4
    assert orders.output == {"ok": True}
    assert isinstance(orders.steps[0], DoStep)
    assert orders.steps[0].transient_failures == 1
    assert isinstance(orders.steps[1], WaitForEventStep)
    assert orders.steps[1].timeout_ms == 1000
    assert len(config.workflows["refunds"].steps) == 3  # the default behaviour
    assert config.event_queue == "from-file"
    assert config.queue.body_encoding == "plain"
    assert (config.queue.reorder_ratio, config.queue.lost_ack_ratio) == (0.25, 0.1)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(TOML, encoding="utf-8")
    args = parse(
        "--config",
        str(path),
        "--token",
        "flag-token",
        "--budget",
        "1200/300",
        "--block-seconds",
        "30",
        "--workflow-rate",
        "100",
        "--latency-ms",
        "20",
        "--jitter-ms",
        "5",
        "--error-ratio",
        "0.2",
        "--seed",
        "9",
        "--queue",
        "states",
    )
    config, source = build_config(args)
    assert source == "--token"
    assert config.token == "flag-token"
    assert config.budget is not None
    assert (config.budget.requests, config.budget.window_seconds, config.budget.block) == (
        1200,
        300,
        30,
    )
    assert (config.creation.per_workflow, config.creation.per_account) == (100, 30)
    assert (config.latency.fixed_ms, config.latency.jitter_ms) == (20, 5)
    assert config.faults.error_ratio == 0.2
    assert config.faults.drop_ratio == 0.1
    assert config.seed == 9
    assert config.event_queue == "states"


@pytest.mark.parametrize(
    ("content", "argv"),
    [
        ("not = [valid", ()),
        ("[faults]\nerror_ratio = 2.0\n", ()),
        ("[workflows.'bad name']\n", ()),
        ("surprise = 1\n", ()),
        ("", ("--budget", "lots")),
        ("[faults]\ndrop_ratio = 0.9\n", ("--error-ratio", "0.5")),
    ],
)
def test_bad_settings_exit_with_2(tmp_path: Path, content: str, argv: tuple[str, ...]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    args = parse("--config", str(path), *argv)
    with pytest.raises(ConfigError):
        build_config(args)
    assert run(args) == 2


def test_missing_config_file_exits_with_2(tmp_path: Path) -> None:
    assert run(parse("--config", str(tmp_path / "absent.toml"))) == 2


async def test_serves_until_sigterm() -> None:
    root = REPO_ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        "emulator",
        "--port",
        "0",
        "--token",
        "cli-token",
        "--queue",
        "states",
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        assert "emulator_listening" in line
        assert "--token" in line
        match = re.search(r"http://127\.0\.0\.1:\d+/client/v4", line)
        assert match is not None, line
        url = f"{match.group(0)}/accounts/a/workflows/orders/instances"
        async with httpx.AsyncClient(headers={"Authorization": "Bearer cli-token"}) as client:
            response = await client.post(url, json={"instance_id": "from-cli"})
        assert response.status_code == 200
        assert response.json()["result"]["id"] == "from-cli"
        assert "event_queue=states" in line
        pull = f"{match.group(0)}/accounts/a/queues/states/messages/pull"
        async with httpx.AsyncClient(headers={"Authorization": "Bearer cli-token"}) as client:
            pulled = (await client.post(pull, json={"batch_size": 10})).json()["result"]
        assert pulled["messages"], pulled  # the workflow got a subscription feeding the queue
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await process.wait()
        assert code == 0
        remaining = (await process.stdout.read()).decode()
        assert "emulator_stopping" in remaining
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
