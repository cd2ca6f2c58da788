"""One bridge process on a broker, with the emulator and a reader: the fuzz run's and the soak's
world. The broker is ``$KAFKA_BOOTSTRAP_SERVERS`` when set (Apache Kafka), else one started with
``scripts/kafka/start-kafka.sh`` for the run."""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.local.topics import ensure_topics
from faults.audit import OutputReader
from faults.cluster import Replica, bridge_env, running_broker, say

PARTITIONS = 4


@dataclass
class Solo:
    bootstrap: str
    emulator: Emulator
    replica: Replica
    reader: OutputReader
    producer: AIOKafkaProducer
    topics: dict[str, str]
    token: str


@contextlib.asynccontextmanager
async def broker(logs: Path) -> AsyncIterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        say(f"broker: {external} (KAFKA_BOOTSTRAP_SERVERS)")
        yield external
        return
    async with running_broker(logs / "kafka") as started:
        say(f"broker: Apache Kafka at {started.bootstrap_servers}, started for this run")
        yield started.bootstrap_servers


@contextlib.asynccontextmanager
async def solo(
    name: str, logs: Path, config: EmulatorConfig, settings: dict[str, str]
) -> AsyncIterator[Solo]:
    """Topics, the emulator, one replica (started and running), a reader and a producer."""
    tag = secrets.token_hex(3)
    topics = {
        "commands": f"{name}.cmd.{tag}",
        "output": f"{name}.out.{tag}",
        "dlq": f"{name}.dlq.{tag}",
    }
    token = config.token
    async with broker(logs) as bootstrap, Emulator(config) as emulator:
        await ensure_topics(
            bootstrap,
            {topics["commands"]: PARTITIONS, topics["output"]: PARTITIONS, topics["dlq"]: 1},
        )
        env = {
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "BRIDGE_KAFKA__GROUP_ID": f"{name}.{tag}",
            "BRIDGE_KAFKA__CLIENT_ID": name,
            "BRIDGE_TOPICS__COMMANDS": topics["commands"],
            "BRIDGE_TOPICS__OUTPUT": topics["output"],
            "BRIDGE_TOPICS__DLQ": topics["dlq"],
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": f"{name}-account",
            "BRIDGE_CLOUDFLARE__API_TOKEN": token,
            "BRIDGE_CLOUDFLARE__BASE_URL": emulator.base_url,
            "BRIDGE_CLOUDFLARE__BUDGET_REQUESTS": "1000000",
            "BRIDGE_CLOUDFLARE__BUDGET_WINDOW_SECONDS": "1",
            "BRIDGE_CLOUDFLARE__CREATIONS_PER_SECOND_PER_WORKFLOW": "1000000",
            "BRIDGE_CLOUDFLARE__CREATIONS_PER_SECOND_PER_ACCOUNT": "1000000",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_LOG_LEVEL": "info",  # wait_running looks for bridge_started
            "BRIDGE_HEALTH_PORT": "0",
            **settings,
        }
        replica = Replica(name, bridge_env(env), logs)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
        )
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(replica.close)
            await replica.start()
            await replica.wait_running()
            await producer.start()
            stack.push_async_callback(producer.stop)
            reader = await stack.enter_async_context(
                OutputReader(bootstrap, **topics, isolation_level="read_uncommitted", token=token)
            )
            yield Solo(bootstrap, emulator, replica, reader, producer, topics, token)


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` samples, per minute."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [t for t, _ in samples], [v for _, v in samples]
    return statistics.linear_regression(xs, ys).slope * 60


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
