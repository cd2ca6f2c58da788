"""Helpers for tests that talk to a Kafka broker.

Which broker the suite runs against is decided from the environment (see :func:`broker_settings`):

``KAFKA_BOOTSTRAP_SERVERS``
    Use this already-running broker. Unset or empty: start an embedded Tansu for the session.
``KAFKA_FLAVOUR`` = ``tansu`` | ``apache``
    What that broker is. Defaults to ``apache`` when ``KAFKA_BOOTSTRAP_SERVERS`` is set and to
    ``tansu`` otherwise. Tests marked ``full_kafka`` run only on ``apache``.
``REQUIRE_FULL_KAFKA=1``
    A ``full_kafka`` test may not be skipped: where it would be, it fails instead (CI sets it so
    a broker misconfiguration cannot pass as green).

Tests get the broker through the ``kafka_bootstrap`` fixture, names through ``unique_name``, and
clients through :func:`producer` / :func:`group_consumer`, which own the client for the duration
of an ``async with`` block and start it with :data:`CONSUMER_SETTINGS`.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

BOOTSTRAP_ENV: Final = "KAFKA_BOOTSTRAP_SERVERS"
FLAVOUR_ENV: Final = "KAFKA_FLAVOUR"
REQUIRE_FULL_ENV: Final = "REQUIRE_FULL_KAFKA"

#: Consumer settings every test consumer starts from. The short session timeout makes group
#: joins and rebalances take about a second on Tansu; the Apache test broker allows it through
#: ``group.min.session.timeout.ms=1000``. Offsets are committed explicitly, as the bridge does.
CONSUMER_SETTINGS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
)

#: Producer settings every test producer starts from.
PRODUCER_SETTINGS: Final[Mapping[str, Any]] = MappingProxyType({"acks": "all"})

#: How long a test waits for records or an assignment before giving up, in seconds.
WAIT_TIMEOUT: Final = 20.0


class Flavour(StrEnum):
    TANSU = "tansu"
    APACHE = "apache"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """The broker the environment asks for."""

    #: ``None``: start an embedded Tansu.
    bootstrap_servers: str | None
    flavour: Flavour
    require_full_kafka: bool

    @property
    def full_kafka(self) -> bool:
        """Whether ``full_kafka`` tests can run on this broker."""
        return self.flavour is Flavour.APACHE


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def broker_settings(environ: Mapping[str, str] | None = None) -> BrokerSettings:
    """Read :data:`BOOTSTRAP_ENV`, :data:`FLAVOUR_ENV` and :data:`REQUIRE_FULL_ENV`."""
    env = os.environ if environ is None else environ
    bootstrap = env.get(BOOTSTRAP_ENV, "").strip() or None
    raw_flavour = env.get(FLAVOUR_ENV, "").strip().lower()
    if raw_flavour:
        try:
            flavour = Flavour(raw_flavour)
        except ValueError:
            choices = ", ".join(f.value for f in Flavour)
            raise ValueError(f"{FLAVOUR_ENV}={raw_flavour!r}: expected one of {choices}") from None
    else:
        flavour = Flavour.APACHE if bootstrap else Flavour.TANSU
    if flavour is Flavour.APACHE and bootstrap is None:
        raise ValueError(f"{FLAVOUR_ENV}=apache needs {BOOTSTRAP_ENV} to point at the broker")
    return BrokerSettings(
        bootstrap_servers=bootstrap,
        flavour=flavour,
        require_full_kafka=_truthy(env.get(REQUIRE_FULL_ENV)),
    )


@dataclass(frozen=True, slots=True)
class KafkaBroker:
    """The broker a test session runs against."""

    bootstrap_servers: str
    flavour: Flavour


# -- names --------------------------------------------------------------------------------------


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Room for the prefix and suffix under Kafka's 249-character topic limit, and readable in logs.
_MAX_TEST_PART = 80


def unique_name(request: pytest.FixtureRequest | str, prefix: str) -> str:
    """``<prefix>.<test name>.<random hex>``: a topic or group name no other test run shares.

    ``request`` is pytest's ``request`` fixture (or a test name). Only ``[A-Za-z0-9._-]`` is
    kept, so the result is a valid topic name on every broker.
    """
    test_name = request if isinstance(request, str) else str(request.node.name)
    test_part = _UNSAFE.sub("-", test_name).strip("-.")[:_MAX_TEST_PART] or "test"
    prefix_part = _UNSAFE.sub("-", prefix).strip("-.") or "t"
    return f"{prefix_part}.{test_part}.{secrets.token_hex(4)}"


# -- clients ------------------------------------------------------------------------------------


def consumer_settings(**overrides: Any) -> dict[str, Any]:
    """:data:`CONSUMER_SETTINGS` with ``overrides`` applied."""
    return {**CONSUMER_SETTINGS, **overrides}


@asynccontextmanager
async def producer(bootstrap_servers: str, **settings: Any) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer (:data:`PRODUCER_SETTINGS` plus ``settings``), stopped on exit."""
    client = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, **{**PRODUCER_SETTINGS, **settings}
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


class AssignmentWatcher(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Rebalance listener that lets a test wait for the group to hand out partitions."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self._changed = asyncio.Condition()

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        async with self._changed:
            self.assigned -= set(revoked)
            self._changed.notify_all()

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        async with self._changed:
            self.assigned = set(assigned)
            self._changed.notify_all()

    async def wait_for(
        self, expected: Collection[TopicPartition] | None = None, within: float = WAIT_TIMEOUT
    ) -> set[TopicPartition]:
        """Wait until the assignment is ``expected`` (any non-empty one if ``None``)."""
        want = None if expected is None else set(expected)

        def done() -> bool:
            return bool(self.assigned) if want is None else self.assigned == want

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(done)
            return set(self.assigned)


@asynccontextmanager
async def group_consumer(
    bootstrap_servers: str,
    topics: Collection[str],
    *,
    group_id: str,
    wait_for_assignment: bool = True,
    watcher: AssignmentWatcher | None = None,
    **settings: Any,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer subscribed to ``topics`` in ``group_id``, stopped on exit.

    Uses :data:`CONSUMER_SETTINGS` plus ``settings``. With ``wait_for_assignment`` it returns
    only once the group has assigned it partitions. Pass a ``watcher`` to follow later
    rebalances.
    """
    client = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, **consumer_settings(**settings)
    )
    watcher = watcher or AssignmentWatcher()
    client.subscribe(topics=list(topics), listener=watcher)
    await client.start()
    try:
        if wait_for_assignment:
            await watcher.wait_for()
        yield client
    finally:
        await client.stop()


async def consume(
    consumer: AIOKafkaConsumer, count: int, *, within: float = WAIT_TIMEOUT
) -> list[ConsumerRecord[bytes, bytes]]:
    """Fetch until ``count`` records arrived; fails after ``within`` seconds with what it got.

    Returns exactly ``count`` records; later ones stay for the next call. To show that a record
    was *not* delivered, produce a sentinel after it and consume up to the sentinel.
    """
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + within
    while len(records) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"got {len(records)} of {count} records within {within}s: "
                f"{[(r.topic, r.partition, r.offset) for r in records]}"
            )
        batches = await consumer.getmany(
            timeout_ms=int(min(remaining, 1.0) * 1000), max_records=count - len(records)
        )
        for batch in batches.values():
            records.extend(batch)
    return records


# -- broker checks ------------------------------------------------------------------------------

#: The cluster id Tansu always reports (``tansu broker --cluster-id`` default).
TANSU_CLUSTER_ID: Final = "tansu_cluster"


async def check_broker(broker: KafkaBroker, *, within: float = 30.0) -> None:
    """Fail fast, with one clear message, if an external broker is unreachable or mislabelled."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=broker.bootstrap_servers,
        client_id="test-broker-check",
        request_timeout_ms=int(within * 1000),
    )
    try:
        async with asyncio.timeout(within):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, TimeoutError) as exc:
        raise RuntimeError(
            f"cannot reach the Kafka broker at {BOOTSTRAP_ENV}={broker.bootstrap_servers}: {exc!r}"
        ) from exc
    finally:
        await admin.close()
    if broker.flavour is Flavour.APACHE and cluster.get("cluster_id") == TANSU_CLUSTER_ID:
        raise RuntimeError(
            f"{broker.bootstrap_servers} is a Tansu broker; set {FLAVOUR_ENV}=tansu "
            f"or point {BOOTSTRAP_ENV} at Apache Kafka"
        )
