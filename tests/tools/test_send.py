"""``workflows-bridge send``: commands from arguments and JSONL files, keyed by instance id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from bridge.cli import main
from tests.support.kafka_harness import consume, consumer_settings

NewTopic = Callable[..., Awaitable[str]]

pytestmark = pytest.mark.usefixtures("operator_env")


async def _read(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, **consumer_settings(group_id=None)
    )
    await consumer.start()
    try:
        return [(r.key, r.value) for r in await consume(consumer, count)]
    finally:
        await consumer.stop()


async def test_send_arguments_and_file(
    kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await new_topic("cmd", partitions=1)
    lines = [{"action": "pause", "workflow": "wf", "instance_id": f"i-{n}"} for n in range(3)]
    path = tmp_path / "commands.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n{broken\n")
    argument = json.dumps({"action": "create", "workflow": "wf"})
    code = await asyncio.to_thread(
        main,
        ["send", "--bootstrap", kafka_bootstrap, "--topic", topic, "--file", str(path), argument],
    )
    err = capsys.readouterr().err
    assert code == 1  # one line was invalid and was skipped
    assert "sent 4 command(s)" in err
    assert "commands.jsonl:5" in err
    records = await _read(kafka_bootstrap, topic, 4)
    assert records[0] == (None, argument.encode())
    assert [key for key, _ in records[1:]] == [b"i-0", b"i-1", b"i-2"]


async def test_send_no_validate_passes_bad_lines_through(
    kafka_bootstrap: str, new_topic: NewTopic, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await new_topic("cmd", partitions=1)
    code = await asyncio.to_thread(
        main, ["send", "--bootstrap", kafka_bootstrap, "--topic", topic, "--no-validate", "{broken"]
    )
    assert code == 0
    assert await _read(kafka_bootstrap, topic, 1) == [(None, b"{broken")]


def test_send_needs_something_and_somewhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "nothing to send" in capsys.readouterr().err


async def test_send_knows_delete_and_get(
    kafka_bootstrap: str, new_topic: NewTopic, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = await new_topic("cmd", partitions=1)
    commands = [
        {"action": "delete", "workflow": "wf", "instance_id": "d-1"},
        {"action": "get", "workflow": "wf", "instance_id": "g-1", "steps": True},
        {"action": "get", "workflow": "wf", "instance_id": "g-2", "steps": "all"},  # invalid
    ]
    code = await asyncio.to_thread(
        main,
        ["send", "--bootstrap", kafka_bootstrap, "--topic", topic, *map(json.dumps, commands)],
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "sent 2 command(s)" in err
    assert "argument 3" in err
    assert [key for key, _ in await _read(kafka_bootstrap, topic, 2)] == [b"d-1", b"g-1"]


def test_send_help_lists_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["send", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for action in ("create_batch", "send_event", "delete", "get"):
        assert action in text
