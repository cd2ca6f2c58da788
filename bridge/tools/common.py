"""What every operator tool shares: the same Kafka settings as ``run`` (security included),
read from ``BRIDGE_*`` variables, secret files and ``--config``, and clients started with a clear
error instead of a traceback."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bridge.config import KafkaSettings, ToolSettings, load_tool_settings, secret_values
from bridge.logs import register_secret
from bridge.pipeline.kafka_io import client_options, explained


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--bootstrap``; everything else comes from the ``BRIDGE_*`` variables."""
    parser.add_argument(
        "--config", type=Path, help="TOML file, as for run; BRIDGE_* variables win over it"
    )
    parser.add_argument(
        "--bootstrap",
        help="broker host:port (default: BRIDGE_KAFKA__BOOTSTRAP_SERVERS); security settings "
        "come from the BRIDGE_KAFKA__* variables, as for run",
    )


def tool_settings(args: argparse.Namespace) -> ToolSettings:
    """The broker and topics as ``run`` would see them; raises ``ConfigError``."""
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap}
    settings = load_tool_settings(getattr(args, "config", None), **overrides)
    for secret in secret_values(settings):
        register_secret(secret)
    return settings


@contextlib.asynccontextmanager
async def started_producer(kafka: KafkaSettings, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(acks="all", **options, **client_options(kafka))
    try:
        with explained(kafka, "cannot connect the producer"):
            await producer.start()
        yield producer
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def started_consumer(
    kafka: KafkaSettings, *topics: str, **options: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(*topics, **options, **client_options(kafka))
    try:
        with explained(kafka, "cannot connect the consumer"):
            await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def started_admin(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    try:
        with explained(kafka, "cannot connect to the broker"):
            await admin.start()
        yield admin
    finally:
        await admin.close()
