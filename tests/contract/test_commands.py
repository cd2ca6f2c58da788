"""The command contract: good commands decode, bad ones name the field and the rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.contract.commands import (
    CreateBatchCommand,
    CreateCommand,
    RestartCommand,
    SendEventCommand,
    TerminateCommand,
    command_to_json,
)
from bridge.contract.decode import decode_command, salvage
from bridge.errors import ContractError


def _decode(data: Any) -> Any:
    return decode_command(json.dumps(data).encode())


GOOD = [
    {"action": "create", "workflow": "orders"},
    {"action": "create", "workflow": "orders", "instance_id": "o-1", "params": {"a": [1, None]}},
    {
        "action": "create",
        "workflow": "orders",
        "instance_retention": {"success_retention": "1 day", "error_retention": 604800000},
    },
    {"action": "create_batch", "workflow": "w", "instances": [{"instance_id": "a"}, {}, {}]},
    {"action": "pause", "workflow": "w", "instance_id": "i"},
    {"action": "resume", "workflow": "w", "instance_id": "i", "command_id": "c-1"},
    {"action": "terminate", "workflow": "w", "instance_id": "i", "rollback": True},
    {"action": "restart", "workflow": "w", "instance_id": "i", "from": {"name": "s", "count": 2}},
    {"action": "send_event", "workflow": "w", "instance_id": "i", "event_type": "approval"},
    {"action": "create", "workflow": "w", "instance_id": "x" * 100},
    {"action": "create", "workflow": "w" * 64},
    {"action": "delete", "workflow": "w", "instance_id": "i"},
    {"action": "get", "workflow": "w", "instance_id": "i"},
    {"action": "get", "workflow": "w", "instance_id": "i", "steps": True},
]


@pytest.mark.parametrize("data", GOOD)
def test_good_commands_decode_and_round_trip(data: dict[str, Any]) -> None:
    command = _decode(data)
    assert command.action == data["action"]
    assert _decode(command_to_json(command)) == command


def test_defaults_and_aliases() -> None:
    event = _decode(GOOD[8])
    assert isinstance(event, SendEventCommand)
    assert event.payload == {}
    restart = _decode(GOOD[7])
    assert isinstance(restart, RestartCommand)
    assert restart.from_ is not None
    assert restart.from_.count == 2
    assert command_to_json(restart)["from"] == {"name": "s", "count": 2}
    terminate = _decode(GOOD[6])
    assert isinstance(terminate, TerminateCommand)
    assert terminate.rollback is True
    batch = _decode(GOOD[3])
    assert isinstance(batch, CreateBatchCommand)
    assert len(batch.instances) == 3
    assert isinstance(_decode(GOOD[0]), CreateCommand)


BAD = [
    # (value, field, words the message must contain)
    (b"\xff\xfe", None, "not UTF-8"),
    (b"{not json", None, "not JSON"),
    (b"NaN", None, "not JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b"", None, "not JSON"),
    ({"workflow": "w"}, "action", "missing"),
    ({"action": "explode", "workflow": "w"}, "action", "unknown action 'explode'"),
    ({"action": "create"}, "workflow", "Field required"),
    ({"action": "create", "workflow": 7}, "workflow", "valid string"),
    ({"action": "create", "workflow": "w" * 65}, "workflow", "at most 64"),
    ({"action": "create", "workflow": "bad name"}, "workflow", "pattern"),
    ({"action": "pause", "workflow": "w"}, "instance_id", "Field required"),
    ({"action": "pause", "workflow": "w", "instance_id": "-lead"}, "instance_id", "pattern"),
    ({"action": "pause", "workflow": "w", "instance_id": "x" * 101}, "instance_id", "at most 100"),
    (
        {"action": "pause", "workflow": "w", "instance_id": "cf_" + "a" * 64},
        "instance_id",
        "reserved",
    ),
    ({"action": "pause", "workflow": "w", "instance_id": "batch"}, "instance_id", "reserved"),
    ({"action": "pause", "workflow": "w", "instance_id": 12}, "instance_id", "valid string"),
    (
        {"action": "pause", "workflow": "w", "instance_id": "i", "extra": 1},
        "extra",
        "not permitted",
    ),
    (
        {"action": "terminate", "workflow": "w", "instance_id": "i", "rollback": "yes"},
        "rollback",
        "bool",
    ),
    ({"action": "create_batch", "workflow": "w", "instances": []}, "instances", "at least 1"),
    (
        {"action": "create_batch", "workflow": "w", "instances": [{}] * 101},
        "instances",
        "at most 100",
    ),
    (
        {
            "action": "create_batch",
            "workflow": "w",
            "instances": [{"instance_id": "a"}, {"instance_id": "a"}],
        },
        "instances",
        "repeats",
    ),
    (
        {"action": "send_event", "workflow": "w", "instance_id": "i", "event_type": "has space"},
        "event_type",
        "pattern",
    ),
    (
        {
            "action": "send_event",
            "workflow": "w",
            "instance_id": "i",
            "event_type": "e",
            "payload": "x" * (1 << 20),
        },
        "payload",
        "1048576",
    ),
    (
        {"action": "create", "workflow": "w", "params": {"big": "y" * (1 << 20)}},
        "params",
        "1048576",
    ),
    (
        {
            "action": "create",
            "workflow": "w",
            "instance_retention": {"success_retention": "forever"},
        },
        "instance_retention",
        "does not match",
    ),
    ({"action": "create", "workflow": "w", "command_id": "c" * 201}, "command_id", "200"),
    (
        {"action": "restart", "workflow": "w", "instance_id": "i", "from": {"count": 1}},
        "from.name",
        "required",
    ),
    ({"action": "delete", "workflow": "w"}, "instance_id", "required"),
    ({"action": "delete", "workflow": "w", "instance_id": "terminate"}, "instance_id", "reserved"),
    ({"action": "get", "workflow": "w", "instance_id": "i", "steps": "yes"}, "steps", "bool"),
    (
        {"action": "get", "workflow": "w", "instance_id": "i", "order": "desc"},
        "order",
        "Extra inputs",
    ),
]


@pytest.mark.parametrize(("value", "field", "words"), BAD)
def test_bad_commands_name_field_and_rule(
    value: bytes | dict[str, Any], field: str | None, words: str
) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    with pytest.raises(ContractError) as caught:
        decode_command(raw)
    error = caught.value
    assert words in str(error)
    if field is not None:
        assert error.field is not None
        assert error.field.startswith(field)
        assert error.stage == "validate"
    else:
        assert error.stage == "decode"


def test_tombstone_is_rejected() -> None:
    with pytest.raises(ContractError, match="tombstone"):
        decode_command(None)


def test_salvage_reads_what_it_can() -> None:
    raw = json.dumps(
        {"action": "pause", "workflow": "w", "instance_id": "bad id", "command_id": 5}
    ).encode()
    assert salvage(raw) == {"action": "pause", "workflow": "w", "instance_id": "bad id"}
    assert salvage(b"\xff") == {}
    assert salvage(b"[]") == {}


def test_schema_registry_framing_is_recognised() -> None:
    command = {"action": "pause", "workflow": "w", "instance_id": "i"}
    framed = b"\x00" + (42).to_bytes(4, "big") + json.dumps(command).encode()
    assert decode_command(framed).model_dump(exclude_none=True)["instance_id"] == "i"
    avro = b"\x00" + (42).to_bytes(4, "big") + b"\x02\x0cpause"
    try:
        decode_command(avro)
    except ContractError as exc:
        error = exc
    else:
        raise AssertionError("decoded Avro bytes as a command")
    assert error.rule == "schema_registry"
    assert "schema registry's wire format (magic byte 0, schema id 42)" in str(error)
    assert salvage(framed)["instance_id"] == "i"
