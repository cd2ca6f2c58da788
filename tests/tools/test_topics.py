"""``workflows-bridge topics create``: the production topics with their partitions, the states
topic compacted; existing topics are reported and left alone."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge.cli import main

pytestmark = pytest.mark.usefixtures("operator_env")


def _create(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["topics", "create", *args])
    return code, err.getvalue()


async def test_creates_the_topics_once(
    operator_env: pytest.MonkeyPatch, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = {
        "BRIDGE_TOPICS__COMMANDS": unique_name("cmd"),
        "BRIDGE_TOPICS__OUTPUT": unique_name("out"),
        "BRIDGE_TOPICS__DLQ": unique_name("dlq"),
    }
    states = unique_name("states")
    operator_env.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    for name, value in names.items():
        operator_env.setenv(name, value)
    args = ("--partitions", "3", "--dlq-partitions", "1", "--replication-factor", "1")
    code, report = await asyncio.to_thread(_create, *args, "--states", states)
    assert code == 0, report
    for topic in names.values():
        assert f"{topic}: created" in report
    assert f"{states}: created (3 partitions, replication 1, cleanup.policy=compact)" in report
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([*names.values(), states])
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        [configs] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, states, None)]
        )
    finally:
        await admin.close()
    assert partitions == {
        names["BRIDGE_TOPICS__COMMANDS"]: 3,
        names["BRIDGE_TOPICS__OUTPUT"]: 3,
        names["BRIDGE_TOPICS__DLQ"]: 1,
        states: 3,
    }
    policy = {entry[0]: entry[1] for entry in configs.resources[0][4]}
    assert policy["cleanup.policy"] == "compact"
    code, again = await asyncio.to_thread(_create, *args, "--states", states)
    assert code == 0, again
    assert f"{names['BRIDGE_TOPICS__COMMANDS']}: exists (3 partitions)" in again
    assert "created" not in again
