"""The suite is hermetic: it runs with every BRIDGE_* variable pointing nowhere, and its fixtures
use their own broker and emulator anyway."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.config import environment_variables
from bridge.local.emulator import Emulator
from tests.support.bridge_harness import Topics, bridge_settings
from tests.support.hermetic import hostile_value
from tests.support.kafka_harness import KafkaBroker
from tests.support.process_harness import BridgeProcess

TOPICS = Topics(commands="c", output="o", dlq="d")


def test_the_suite_runs_under_a_hostile_environment() -> None:
    for name in environment_variables():
        assert os.environ.get(name) == hostile_value(name), name


async def test_the_fixtures_use_their_own_broker_and_emulator(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    async with Emulator(port=0) as emulator:
        settings = bridge_settings(kafka_broker, emulator, TOPICS, group="g")
        assert settings.kafka.bootstrap_servers == kafka_broker.bootstrap_servers
        assert settings.cloudflare.base_url == emulator.base_url
        assert settings.topics.commands == ["c"]
        process = BridgeProcess(
            kafka_broker, emulator, TOPICS, group="g", log_path=tmp_path / "log"
        )
        # The child process gets the harness's variables only, none inherited from this one.
        assert process.env["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"] == kafka_broker.bootstrap_servers
        assert process.env["BRIDGE_CLOUDFLARE__BASE_URL"] == emulator.base_url
        for inherited in ("BRIDGE_KAFKA__SASL_PASSWORD", "BRIDGE_KAFKA__TRANSACTIONAL_ID"):
            assert inherited not in process.env
