"""``workflows-bridge dlq replay``: dead letters go back with their original command id, so a
replayed create without an instance id never makes a second instance."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable

import pytest

from bridge.cli import main
from bridge.config import PipelineSettings
from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.local.emulator.config import Faults
from bridge.pipeline.translate import derived_instance_id
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    Topics,
    bridge_settings,
    make_topics,
    running_bridge,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker

pytestmark = pytest.mark.usefixtures("operator_env")


def _replay(env: pytest.MonkeyPatch, bootstrap: str, topics: Topics, *args: str) -> tuple[int, str]:
    for name, value in {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_TOPICS__COMMANDS": topics.commands,
        "BRIDGE_TOPICS__DLQ": topics.dlq,
    }.items():
        env.setenv(name, value)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["dlq", "replay", *args])
    return code, err.getvalue()


async def test_replayed_create_keeps_its_id_and_makes_no_second_instance(
    operator_env: pytest.MonkeyPatch,
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
) -> None:
    topics = await make_topics(new_topic, 1)
    bootstrap = kafka_broker.bootstrap_servers
    # Every create fails (500, nothing applied) until the short deadline: failed + dead letter.
    config = EmulatorConfig(faults=Faults(error_ratio=1.0, routes=frozenset({"create", "batch"})))
    pipeline = PipelineSettings(
        retry_deadline_seconds=0.5, backoff_initial_seconds=0.05, backoff_max_seconds=0.1
    )
    async with (
        Emulator(config) as emulator,
        OutputReader(bootstrap, topics) as out,
    ):
        settings = bridge_settings(
            kafka_broker, emulator, topics, group=unique_name("g"), pipeline=pipeline
        )
        async with running_bridge(settings):
            await send_commands(
                bootstrap,
                topics.commands,
                [{"action": "create", "workflow": "wf", "params": {"n": 1}}, b"{not json"],
            )
            await out.until(results=2, dead_letters=2)
            failed = next(r for r in out.results if r["outcome"] == "failed")
            original_id = failed["command_id"]
            assert original_id == f"{topics.commands}-0-0"
            assert emulator.instances("wf") == []

            emulator.config.faults = Faults()
            code, report = await asyncio.to_thread(
                _replay, operator_env, bootstrap, topics, "--outcome", "failed", "--dry-run"
            )
            assert code == 0, report
            assert "2 dead letter(s)" in report
            assert "1 matched (ServerError 1); would replay 1" in report

            # Replay twice: the second is a redelivery of the first, as a careless operator's
            # second run would be. Both keep the original command id.
            for round_ in (1, 2):
                code, report = await asyncio.to_thread(
                    _replay, operator_env, bootstrap, topics, "--outcome", "failed"
                )
                assert code == 0, report
                assert "replayed 1" in report
                await out.until(results=2 + round_, dead_letters=2)
        instances = [view.id for view in emulator.instances("wf")]
    replayed = out.results[2:]
    assert [r["command_id"] for r in replayed] == [original_id, original_id]
    assert [r["outcome"] for r in replayed] == ["ok", "already_exists"]
    instance_id = derived_instance_id(original_id)
    assert {r["instance_id"] for r in replayed} == {instance_id}
    assert instances == [instance_id]
    assert [r["source"]["offset"] for r in replayed] == [2, 3]  # new offsets, same id


async def test_filters_by_time_and_class(
    operator_env: pytest.MonkeyPatch,
    kafka_broker: KafkaBroker,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
) -> None:
    topics = await make_topics(new_topic, 1)
    bootstrap = kafka_broker.bootstrap_servers
    async with Emulator() as emulator, OutputReader(bootstrap, topics) as out:
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(
                bootstrap,
                topics.commands,
                [b"{not json", {"action": "pause", "workflow": "wf", "instance_id": "absent"}],
            )
            await out.until(results=2, dead_letters=2)
    code, report = await asyncio.to_thread(
        _replay, operator_env, bootstrap, topics, "--error-class", "NotFound", "--dry-run"
    )
    assert code == 0
    assert "1 matched (NotFound 1); would replay 1" in report
    code, report = await asyncio.to_thread(
        _replay, operator_env, bootstrap, topics, "--since", "2999-01-01T00:00:00Z", "--dry-run"
    )
    assert code == 0
    assert "0 matched" in report
    code, report = await asyncio.to_thread(
        _replay, operator_env, bootstrap, topics, "--until", "2000-01-01", "--dry-run"
    )
    assert "0 matched" in report
