"""``workflows-bridge topics create``: the production topics, made once, with the right shape.

The command topics, the output topic and the dead-letter topic get ``--partitions`` partitions
(the dead-letter topic fewer: it is read rarely) and ``--replication-factor`` replicas; the
instance-state topic, when there is one, is compacted (only each instance's latest state
matters). Topics that exist are reported with their partition count and left alone.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from rich.console import Console

from bridge.config import KafkaSettings, TopicSettings
from bridge.errors import BridgeError, ConfigError
from bridge.tools.common import add_kafka_arguments, started_admin, tool_settings


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    partitions: int
    configs: dict[str, str]


def plans(
    topics: TopicSettings, *, partitions: int, dlq_partitions: int, states: str | None
) -> list[Plan]:
    """What to create: commands and output with ``partitions``, the DLQ, the states topic."""
    wanted = [Plan(name, partitions, {}) for name in topics.commands]
    wanted.append(Plan(topics.output, partitions, {}))
    wanted.append(Plan(topics.dlq, dlq_partitions, {}))
    if states:
        wanted.append(Plan(states, partitions, {"cleanup.policy": "compact"}))
    return wanted


async def create(
    kafka: KafkaSettings, wanted: list[Plan], replication_factor: int
) -> list[tuple[Plan, str]]:
    """Create what is missing; returns each plan with ``created`` or ``exists (N partitions)``."""
    report: list[tuple[Plan, str]] = []
    async with started_admin(kafka) as admin:
        # Describe only what exists: naming a missing topic in a Metadata request would make a
        # broker with auto-creation create it, with the broker's defaults.
        present = set(await admin.list_topics())
        existing = {
            entry["topic"]: len(entry["partitions"])
            for entry in await admin.describe_topics([p.name for p in wanted if p.name in present])
            if entry.get("error_code", 0) == 0 and entry.get("partitions")
        }
        for plan in wanted:
            if plan.name in existing:
                report.append((plan, f"exists ({existing[plan.name]} partitions)"))
                continue
            topic = NewTopic(
                plan.name,
                num_partitions=plan.partitions,
                replication_factor=replication_factor,
                topic_configs=plan.configs,
            )
            try:
                response = await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                report.append((plan, "exists"))
                continue
            except KafkaError as exc:
                raise BridgeError(f"cannot create {plan.name}: {exc}") from exc
            for name, code, message in _errors(response):
                if code == TopicAlreadyExistsError.errno:
                    report.append((plan, "exists"))
                    break
                if code:
                    raise BridgeError(f"cannot create {name}: error {code} {message or ''}")
            else:
                report.append((plan, "created"))
    return report


def _errors(response: object) -> list[tuple[str, int, str | None]]:
    found: list[tuple[str, int, str | None]] = []
    for entry in getattr(response, "topic_errors", []):
        name, code, *rest = entry
        found.append((name, code, rest[0] if rest else None))
    return found


def _create(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    try:
        settings = tool_settings(args)
    except ConfigError as exc:
        console.print(f"workflows-bridge topics create: {exc}", markup=False, highlight=False)
        return 2
    states = args.states or getattr(settings.topics, "states", None)
    wanted = plans(
        settings.topics,
        partitions=args.partitions,
        dlq_partitions=args.dlq_partitions or args.partitions,
        states=states if isinstance(states, str) else None,
    )
    try:
        report = asyncio.run(create(settings.kafka, wanted, args.replication_factor))
    except BridgeError as exc:
        console.print(f"could not create topics: {exc}", markup=False, highlight=False)
        return 1
    for plan, what in report:
        shape = f"{plan.partitions} partitions, replication {args.replication_factor}"
        extra = "".join(f", {k}={v}" for k, v in plan.configs.items())
        note = f"{shape}{extra}" if what == "created" else ""
        console.print(f"{plan.name}: {what}{f' ({note})' if note else ''}", markup=False)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("topics", help="create the production topics")
    actions = parser.add_subparsers(dest="topics_action", required=True)
    create_parser = actions.add_parser(
        "create", help="create the command, output, dead-letter (and states) topics"
    )
    create_parser.add_argument(
        "--partitions", type=int, default=12, help="partitions per topic (default 12)"
    )
    create_parser.add_argument(
        "--dlq-partitions", type=int, help="partitions of the dead-letter topic (default: same)"
    )
    create_parser.add_argument(
        "--replication-factor", type=int, default=3, help="replicas per partition (default 3)"
    )
    create_parser.add_argument(
        "--states", help="the instance-state topic, compacted (default: BRIDGE_TOPICS__STATES)"
    )
    add_kafka_arguments(create_parser)
    create_parser.set_defaults(handler=_create)
