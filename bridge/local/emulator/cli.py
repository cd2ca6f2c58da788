"""``workflows-bridge emulator``: serve the emulated Workflows API until SIGINT or SIGTERM.

The TOML file given with ``--config`` holds ``EmulatorConfig`` key for key; flags override it::

    token = "emulator-token"           # default; --token wins over it
    account_id = "my-account"          # omit to accept any account id
    seed = 7
    duplicate_status = 409             # or 400
    terminate_all_seconds = 1          # how long a "terminate all" job runs before it acts
    event_queue = "states"             # --queue wins over it: every workflow's events go here
    queues = ["other-queue"]           # further queues that exist

    [queue]                            # how queues deliver (see QueueBehaviour)
    body_encoding = "base64"           # or "plain"
    max_retries = 3
    duplicate_ratio = 0.05             # injected duplicate deliveries
    reorder_ratio = 0.05               # injected out-of-order deliveries
    reorder_delay_ms = 300
    lost_ack_ratio = 0.02              # acks answered but not applied

    [budget]                           # global request budget (off when absent)
    requests = 1200
    window_seconds = 300
    block_seconds = 300                # default: the window

    [creation]                         # instance creations per second (off when absent)
    per_workflow = 100
    per_account = 300
    retry_after = true

    [latency]
    fixed_ms = 20
    jitter_ms = 10

    [faults]                           # ratios in [0, 1], adding up to at most 1
    error_ratio = 0.01
    soft_error_ratio = 0.0
    timeout_ratio = 0.0
    timeout_seconds = 65
    drop_ratio = 0.0
    apply_then_error_ratio = 0.0
    apply_then_drop_ratio = 0.0
    routes = ["create", "batch"]       # default: every route

    [default_behaviour]                # used when [workflows] is absent
    concurrency = 50

    [workflows.orders]                 # any [workflows.*] table restricts the names
    concurrency = 10
    output = { ok = true }
    steps = [
      { kind = "do", name = "charge", duration_ms = 100, transient_failures = 1 },
      { kind = "sleep", name = "cool-off", duration_ms = 500 },
      { kind = "wait_for_event", name = "approval", event_type = "approved", timeout_ms = 60000 },
    ]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tomllib
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from bridge.errors import ConfigError
from bridge.local.emulator.config import (
    DEFAULT_TOKEN,
    CreationLimits,
    EmulatorConfig,
    Faults,
    Latency,
    RequestBudget,
)
from bridge.local.emulator.emulator import Emulator

log = structlog.get_logger(__name__)

DEFAULT_PORT = 8788


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``emulator`` sub-command."""
    parser = subparsers.add_parser(
        "emulator",
        help="serve a local emulation of the Cloudflare Workflows instances REST API",
        description=(
            "Serve /client/v4/accounts/{account}/workflows/{name}/instances... locally, "
            "with Event Subscriptions and Queues (pull/ack), optional rate limits, latency "
            "and faults."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind, 0 = any ({DEFAULT_PORT})"
    )
    parser.add_argument(
        "--token", help=f"bearer token clients must send (default {DEFAULT_TOKEN!r})"
    )
    parser.add_argument("--config", type=Path, help="TOML file of emulator settings")
    parser.add_argument(
        "--queue",
        metavar="ID",
        help="create queue ID with an event subscription for every workflow feeding it",
    )
    parser.add_argument(
        "--budget", metavar="N/SECONDS", help="global budget, e.g. 1200/300 (default: none)"
    )
    parser.add_argument(
        "--block-seconds", type=float, help="block after the budget is exceeded (the window)"
    )
    parser.add_argument("--workflow-rate", type=int, help="instance creations/s per workflow")
    parser.add_argument("--account-rate", type=int, help="instance creations/s per account")
    parser.add_argument("--latency-ms", type=float, help="latency added to every answer")
    parser.add_argument("--jitter-ms", type=float, help="random extra latency, up to this")
    parser.add_argument("--error-ratio", type=float, help="share of requests answered 500")
    parser.add_argument("--seed", type=int, help="seed of fault and latency draws")
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> tuple[EmulatorConfig, str]:
    """The configuration from ``--config`` and the flags, and where the token came from."""
    data: dict[str, Any] = {}
    if args.config is not None:
        try:
            data = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read emulator config {args.config}: {exc}") from exc
    token_source = "config file" if "token" in data else f"default ({DEFAULT_TOKEN})"
    try:
        config = EmulatorConfig.model_validate(data)
        if args.token is not None:
            config.token, token_source = args.token, "--token"
        if args.budget is not None:
            config.budget = _budget(args.budget, args.block_seconds)
        elif args.block_seconds is not None and config.budget is not None:
            config.budget.block_seconds = args.block_seconds
        if args.workflow_rate is not None or args.account_rate is not None:
            config.creation = CreationLimits(
                per_workflow=args.workflow_rate or config.creation.per_workflow,
                per_account=args.account_rate or config.creation.per_account,
                retry_after=config.creation.retry_after,
            )
        if args.latency_ms is not None or args.jitter_ms is not None:
            config.latency = Latency(
                fixed_ms=config.latency.fixed_ms if args.latency_ms is None else args.latency_ms,
                jitter_ms=config.latency.jitter_ms if args.jitter_ms is None else args.jitter_ms,
            )
        if args.error_ratio is not None:
            config.faults = Faults.model_validate(
                config.faults.model_dump() | {"error_ratio": args.error_ratio}
            )
        if args.seed is not None:
            config.seed = args.seed
        if args.queue is not None:
            config.event_queue = args.queue
    except ValidationError as exc:
        raise ConfigError(f"invalid emulator settings: {exc}") from exc
    return config, token_source


def _budget(text: str, block_seconds: float | None) -> RequestBudget:
    requests, _, window = text.partition("/")
    try:
        return RequestBudget(
            requests=int(requests), window_seconds=float(window), block_seconds=block_seconds
        )
    except ValueError as exc:
        raise ConfigError(f"--budget wants REQUESTS/SECONDS, e.g. 1200/300, not {text!r}") from exc


def run(args: argparse.Namespace) -> int:
    """Handler of the sub-command: 0 after a clean shutdown, 2 for bad settings, 1 otherwise."""
    try:
        config, token_source = build_config(args)
    except ConfigError as exc:
        log.error("emulator_config_invalid", error=str(exc))
        return 2
    try:
        asyncio.run(_serve(config, host=args.host, port=args.port, token_source=token_source))
    except OSError as exc:
        log.error("emulator_failed", error=str(exc))
        return 1
    return 0


async def _serve(config: EmulatorConfig, *, host: str, port: int, token_source: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Emulator(config, host=host, port=port) as emu:
            log.info(
                "emulator_listening",
                url=emu.base_url,
                token_source=token_source,
                account_id=config.account_id or "any",
                workflows=sorted(config.workflows) if config.workflows is not None else "any",
                event_queue=config.event_queue,
            )
            await stop.wait()
            log.info("emulator_stopping")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
