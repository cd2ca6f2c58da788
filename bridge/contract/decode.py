"""Turn the bytes of one Kafka record into a :data:`Command`, or say precisely why not."""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic

from bridge.contract.commands import ACTIONS, COMMAND_ADAPTER, Command
from bridge.errors import ContractError

_MAX_REPORTED_ERRORS = 5
#: Confluent-style schema-registry framing: magic byte 0, then a 4-byte big-endian schema id.
_REGISTRY_MAGIC = b"\x00"
_REGISTRY_PREFIX = 5


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def _describe(error: pydantic.ValidationError) -> tuple[str, str | None, str | None]:
    parts: list[str] = []
    first_field: str | None = None
    first_rule: str | None = None
    for detail in error.errors(include_url=False)[:_MAX_REPORTED_ERRORS]:
        loc = [str(p) for p in detail["loc"]]
        # The discriminated union puts the action name first in the location; drop it.
        if loc and loc[0] in ACTIONS:
            loc = loc[1:]
        field = ".".join(loc) or "(command)"
        message = str(detail["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
        if first_field is None:
            first_field, first_rule = field, str(detail["type"])
    if error.error_count() > _MAX_REPORTED_ERRORS:
        parts.append(f"... and {error.error_count() - _MAX_REPORTED_ERRORS} more")
    return "; ".join(parts), first_field, first_rule


def unframe(value: bytes) -> bytes:
    """The payload of a value in a schema registry's wire format, if it is one and holds JSON.

    JSON text never starts with a NUL byte, so the framing (magic byte 0 + 4-byte schema id) is
    recognised without doubt. A JSON payload behind it (the registry's JSON Schema serializer) is
    decoded; anything else (Avro, Protobuf) is answered with what the bytes are.
    """
    if not value.startswith(_REGISTRY_MAGIC):
        return value
    if len(value) < _REGISTRY_PREFIX:
        raise ContractError(
            "value starts with a NUL byte but is too short for a schema registry's framing",
            stage="decode",
            rule="schema_registry",
        )
    schema_id = int.from_bytes(value[1:_REGISTRY_PREFIX], "big")
    payload = value[_REGISTRY_PREFIX:]
    if payload.lstrip()[:1] == b"{":
        return payload
    raise ContractError(
        f"value is in a schema registry's wire format (magic byte 0, schema id {schema_id}) "
        "and its payload is not JSON (Avro or Protobuf?); the bridge reads JSON commands: "
        "produce plain JSON, or use the registry's JSON Schema serializer",
        stage="decode",
        rule="schema_registry",
    )


def parse_json_object(value: bytes | None) -> dict[str, Any]:
    """Decode record bytes as one strict UTF-8 JSON object (also behind registry framing)."""
    if value is None:
        raise ContractError("record has no value (tombstone)", stage="decode", rule="not_null")
    value = unframe(value)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(
            f"value is not UTF-8: {exc.reason} at byte {exc.start}", stage="decode", rule="utf8"
        ) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ContractError(f"value is not JSON: {exc}", stage="decode", rule="json") from None
    if not isinstance(data, dict):
        raise ContractError(
            f"value must be a JSON object, not {type(data).__name__}",
            stage="decode",
            rule="json_object",
        )
    return data


def decode_command(value: bytes | None) -> Command:
    """Decode and validate one command; raises :class:`ContractError` naming field and rule."""
    data = parse_json_object(value)
    action = data.get("action")
    if action is None:
        raise ContractError(
            f"action: missing; expected one of {', '.join(ACTIONS)}",
            stage="validate",
            field="action",
            rule="missing",
        )
    if action not in ACTIONS:
        raise ContractError(
            f"action: unknown action {action!r}; expected one of {', '.join(ACTIONS)}",
            stage="validate",
            field="action",
            rule="unknown_action",
        )
    try:
        return COMMAND_ADAPTER.validate_python(data, context={"raw_size": len(value or b"")})
    except pydantic.ValidationError as exc:
        message, field, rule = _describe(exc)
        raise ContractError(message, stage="validate", field=field, rule=rule) from None
    except RecursionError:
        raise ContractError("value is nested too deeply", stage="validate", rule="depth") from None


def salvage(value: bytes | None) -> dict[str, str]:
    """Best-effort ``action``/``workflow``/``instance_id``/``command_id`` of a bad command.

    Used to address a ``rejected`` result when the command as a whole is invalid.
    """
    try:
        data = parse_json_object(value)
    except ContractError:
        return {}
    return {
        key: data[key]
        for key in ("action", "workflow", "instance_id", "command_id")
        if isinstance(data.get(key), str) and len(data[key]) <= 1000
    }
