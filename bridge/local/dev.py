"""``workflows-bridge dev``: the whole system on one machine, with nothing else installed.

It starts an embedded Kafka broker (Tansu), the API emulator (with Event Subscriptions feeding a
queue) and the bridge (following states from that queue), plays a short scenario through the
command topic, and shows every instance's state and timeline live until Ctrl-C — read from the
state stream on the output topic, as any consumer would, not from the emulator. The scenario's
commands are printed as ``workflows-bridge send`` lines to copy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from bridge.config import (
    CloudflareSettings,
    KafkaSettings,
    PipelineSettings,
    Settings,
    StateSettings,
    TopicSettings,
)
from bridge.local.emulator import Emulator, EmulatorConfig, WorkflowBehaviour
from bridge.local.emulator.config import DoStep, SleepStep, WaitForEventStep
from bridge.local.tansu import EmbeddedTansu
from bridge.local.topics import ensure_topics
from bridge.logs import configure
from bridge.pipeline.service import Bridge
from bridge.runtime import run_until_signalled
from bridge.tools.watch import Timelines

WORKFLOW = "orders"
#: The queue the emulator's event subscriptions feed and the bridge pulls.
QUEUE = "workflows-bridge-dev-states"
TOPICS = TopicSettings(
    commands=["workflows.commands"], output="workflows.instances", dlq="workflows.commands.dlq"
)


def _behaviour() -> WorkflowBehaviour:
    return WorkflowBehaviour(
        steps=(
            DoStep(name="reserve-stock", duration_ms=300),
            SleepStep(name="cool-off", duration_ms=2000),
            WaitForEventStep(name="approval", event_type="approval"),
            DoStep(name="ship", duration_ms=300),
        )
    )


def scenario() -> list[tuple[float, dict[str, Any] | str]]:
    """(delay before, command) pairs; a string is sent as raw, malformed bytes."""
    ids = [f"order-{n}" for n in range(1, 6)]
    steps: list[tuple[float, dict[str, Any] | str]] = [
        (
            0.5,
            {
                "action": "create_batch",
                "workflow": WORKFLOW,
                "instances": [{"instance_id": i, "params": {"order": i}} for i in ids],
            },
        ),
        (
            0.5,
            {
                "action": "create",
                "workflow": WORKFLOW,
                "instance_id": "order-6",
                "params": {"rush": True},
            },
        ),
        (1.0, {"action": "pause", "workflow": WORKFLOW, "instance_id": "order-2"}),
        (1.0, {"action": "terminate", "workflow": WORKFLOW, "instance_id": "order-3"}),
        (0.5, '{"action": "create", "workflow": "orders", "instance_id": "not a valid id!"'),
    ]
    for instance_id in ("order-1", "order-4", "order-5", "order-6"):
        steps.append(
            (
                1.0,
                {
                    "action": "send_event",
                    "workflow": WORKFLOW,
                    "instance_id": instance_id,
                    "event_type": "approval",
                    "payload": {"by": "dev"},
                },
            )
        )
    steps.append((1.0, {"action": "resume", "workflow": WORKFLOW, "instance_id": "order-2"}))
    steps.append(
        (
            2.5,
            {
                "action": "send_event",
                "workflow": WORKFLOW,
                "instance_id": "order-2",
                "event_type": "approval",
                "payload": {"by": "dev"},
            },
        )
    )
    # The instance's state on demand (its step log too), and a terminated one forgotten.
    steps.append(
        (1.0, {"action": "get", "workflow": WORKFLOW, "instance_id": "order-1", "steps": True})
    )
    steps.append((1.0, {"action": "delete", "workflow": WORKFLOW, "instance_id": "order-3"}))
    return steps


@dataclass
class _Board:
    timelines: Timelines = field(default_factory=Timelines)
    log: list[str] = field(default_factory=list)


async def _play(bootstrap: str, board: _Board) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for delay, command in scenario():
            await asyncio.sleep(delay)
            if isinstance(command, str):
                await producer.send_and_wait(TOPICS.commands[0], command.encode())
                board.log.append("sent a malformed command (expect a dead letter)")
                continue
            key = command.get("instance_id")
            value = json.dumps(command).encode()
            await producer.send_and_wait(
                TOPICS.commands[0], value, key=key.encode() if key else None
            )
            board.log.append(f"sent {command['action']} {key or ''}".rstrip())
    finally:
        await producer.stop()


async def _watch(bootstrap: str, board: _Board) -> None:
    consumer = AIOKafkaConsumer(
        TOPICS.output,
        TOPICS.dlq,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        async for message in consumer:
            if message.topic == TOPICS.dlq:
                board.log.append(f"dead letter at {TOPICS.dlq}:{message.offset}")
                continue
            record = json.loads(message.value or b"{}")
            if isinstance(record, dict):
                board.timelines.add(record)
    finally:
        await consumer.stop()


def _render(board: _Board, bootstrap: str) -> Group:
    table = board.timelines.table(f"{TOPICS.output} — the state stream and the results, live")
    hint = Text(
        f"\nSend your own commands:\n  workflows-bridge send --bootstrap {bootstrap} "
        f'\'{{"action":"create","workflow":"{WORKFLOW}","instance_id":"mine-1"}}\'\n'
        f"Follow the stream elsewhere:\n  workflows-bridge watch --bootstrap {bootstrap}\n"
        "Ctrl-C stops everything.",
        style="dim",
    )
    return Group(table, Text("\n".join(board.log[-8:])), hint)


async def _dev(stop: asyncio.Event, *, emulator_port: int) -> None:
    console = Console()
    config = EmulatorConfig(workflows={WORKFLOW: _behaviour()}, event_queue=QUEUE)
    async with EmbeddedTansu() as broker, Emulator(config, port=emulator_port) as emulator:
        bootstrap = broker.bootstrap_servers
        await ensure_topics(bootstrap, {TOPICS.commands[0]: 4, TOPICS.output: 4, TOPICS.dlq: 1})
        settings = Settings(
            kafka=KafkaSettings(
                bootstrap_servers=bootstrap,
                group_id="workflows-bridge-dev",
                session_timeout_ms=2000,
                heartbeat_interval_ms=500,
                idempotent_producer=False,
            ),
            topics=TOPICS,
            cloudflare=CloudflareSettings(
                account_id="dev-account", api_token=config.token, base_url=emulator.base_url
            ),
            pipeline=PipelineSettings(drain_timeout_seconds=5),
            states=StateSettings(queue_id=QUEUE, reconcile_interval_seconds=15),
            log_format="json",
            health_port=0,
        )
        console.print(
            f"broker {bootstrap} · emulator {emulator.base_url} · bridge group workflows-bridge-dev"
        )
        board = _Board()
        bridge_stop = asyncio.Event()
        bridge = Bridge(settings)
        tasks: list[asyncio.Task[None]] = []

        def start(coro: Callable[[], Awaitable[None]]) -> None:
            async def wrap() -> None:
                await coro()

            tasks.append(asyncio.create_task(wrap()))

        start(lambda: bridge.run(bridge_stop))
        start(lambda: _watch(bootstrap, board))
        await bridge.ready.wait()
        start(lambda: _play(bootstrap, board))
        try:
            with Live(_render(board, bootstrap), console=console, refresh_per_second=4) as live:
                while not stop.is_set():
                    live.update(_render(board, bootstrap))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.25)
                    if tasks[0].done():
                        break
        finally:
            bridge_stop.set()
            await asyncio.gather(tasks[0], return_exceptions=True)
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)


def _run(args: argparse.Namespace) -> int:
    # The live table owns the terminal; the bridge's own log lines go to a file.
    with args.log_file.open("a", encoding="utf-8") as log_file:
        configure(fmt="json", level="info", stream=log_file)
        Console(stderr=True).print(f"bridge logs: {args.log_file}")
        return run_until_signalled(lambda stop: _dev(stop, emulator_port=args.emulator_port))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dev", help="run broker, emulator and bridge locally with a live demo (nothing else needed)"
    )
    parser.add_argument("--emulator-port", type=int, default=8787, help="default 8787 (0 = any)")
    parser.add_argument(
        "--log-file", type=Path, default=Path("workflows-bridge-dev.log"), help="where log lines go"
    )
    parser.set_defaults(handler=_run)
