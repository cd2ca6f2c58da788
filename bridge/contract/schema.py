"""The published message contract: JSON Schemas and an AsyncAPI 3.0 document, from the models.

``schemas/`` in the repository holds :func:`documents` as written by ``workflows-bridge schema
--write schemas``; a test fails when the two drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from bridge.contract.commands import COMMAND_ADAPTER, CONTRACT_VERSION
from bridge.contract.deadletter import HEADER_PREFIX, DeadLetterHeaders
from bridge.contract.results import OUTPUT_ADAPTER, ResultRecord, StateRecord

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _standalone(adapter: TypeAdapter[Any], title: str, description: str) -> dict[str, Any]:
    schema = adapter.json_schema(mode="validation")
    return {"$schema": _DIALECT, "title": title, "description": description, **schema}


def _dead_letter_headers_schema() -> dict[str, Any]:
    model = DeadLetterHeaders.model_json_schema()
    required = set(model.get("required", []))
    properties = {
        HEADER_PREFIX + name: {
            "type": "string",
            "description": field.get("description", f"{name} (as text)"),
        }
        for name, field in model["properties"].items()
    }
    return {
        "type": "object",
        "description": "Error headers added to the original headers; values are UTF-8 text.",
        "properties": properties,
        "required": sorted(HEADER_PREFIX + name for name in required),
        "additionalProperties": {"type": "string"},
    }


def _asyncapi() -> dict[str, Any]:
    key_map, definitions = TypeAdapter.json_schemas(
        [
            ("command", "validation", COMMAND_ADAPTER),
            ("result", "validation", TypeAdapter(ResultRecord)),
            ("state", "validation", TypeAdapter(StateRecord)),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    schemas["Command"] = key_map[("command", "validation")]
    instance_key = {
        "type": "string",
        "description": "The instance id: records of one instance share a partition, so an order.",
    }
    messages = {
        "Command": {
            "name": "command",
            "title": "Command",
            "summary": "One call on the Workflows instances API.",
            "payload": {"$ref": "#/components/schemas/Command"},
            "bindings": {"kafka": {"key": instance_key, "bindingVersion": "0.5.0"}},
        },
        "Result": {
            "name": "result",
            "title": "Result",
            "summary": (
                "The answer to one command, or to one item of a create_batch; the answer to a "
                "get carries the instance's state in `instance`."
            ),
            "payload": {"$ref": "#/components/schemas/ResultRecord"},
            "bindings": {"kafka": {"key": instance_key, "bindingVersion": "0.5.0"}},
        },
        "State": {
            "name": "state",
            "title": "State",
            "summary": "An observed change of an instance's status (the instance-state stream).",
            "description": (
                "One record per change, published once, never going backwards; "
                "`previous_status` chains the records of one instance and a final status "
                "(`complete`, `errored`, `terminated`) ends it. On the output topic, or on "
                "the states topic when `BRIDGE_TOPICS__STATES` is set."
            ),
            "payload": {"$ref": "#/components/schemas/StateRecord"},
            "bindings": {"kafka": {"key": instance_key, "bindingVersion": "0.5.0"}},
        },
        "DeadLetter": {
            "name": "dead_letter",
            "title": "Dead letter",
            "summary": "A command the bridge gave up on: the original key, value and headers.",
            "headers": _dead_letter_headers_schema(),
            "payload": {"description": "The original command value, byte for byte."},
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "workflows-bridge",
            "version": str(CONTRACT_VERSION),
            "description": (
                "Kafka command topics drive Cloudflare Workflows instances; every command is "
                "answered on the output topic, and commands that cannot be applied are also "
                "copied to the dead-letter topic. Every change of an instance's status is "
                "published as a state record. Topic names are the defaults and configurable."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "commands": {
                "address": "workflows.commands",
                "messages": {"command": {"$ref": "#/components/messages/Command"}},
            },
            "output": {
                "address": "workflows.instances",
                "messages": {
                    "result": {"$ref": "#/components/messages/Result"},
                    "state": {"$ref": "#/components/messages/State"},
                },
            },
            "states": {
                "address": None,
                "description": (
                    "The topic named by BRIDGE_TOPICS__STATES (for example a compacted one); "
                    "when it is unset, state records share the output channel."
                ),
                "messages": {"state": {"$ref": "#/components/messages/State"}},
            },
            "deadLetters": {
                "address": "workflows.commands.dlq",
                "messages": {"deadLetter": {"$ref": "#/components/messages/DeadLetter"}},
            },
        },
        "operations": {
            "consumeCommands": {
                "action": "receive",
                "channel": {"$ref": "#/channels/commands"},
                "messages": [{"$ref": "#/channels/commands/messages/command"}],
            },
            "publishOutput": {
                "action": "send",
                "channel": {"$ref": "#/channels/output"},
                "messages": [
                    {"$ref": "#/channels/output/messages/result"},
                    {"$ref": "#/channels/output/messages/state"},
                ],
            },
            "publishStates": {
                "action": "send",
                "channel": {"$ref": "#/channels/states"},
                "messages": [{"$ref": "#/channels/states/messages/state"}],
            },
            "publishDeadLetters": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
            },
        },
        "components": {"messages": messages, "schemas": schemas},
    }


def documents() -> dict[str, dict[str, Any]]:
    """File name → document, for every published schema."""
    return {
        "command.schema.json": _standalone(
            COMMAND_ADAPTER, "Command", "A workflows-bridge command record value (contract v1)."
        ),
        "output.schema.json": _standalone(
            OUTPUT_ADAPTER, "Output", "A record on the output topic: a result or a state change."
        ),
        "dead-letter-headers.schema.json": {
            "$schema": _DIALECT,
            "title": "DeadLetterHeaders",
            **_dead_letter_headers_schema(),
        },
        "asyncapi.json": _asyncapi(),
    }


def render(document: dict[str, Any]) -> str:
    """The canonical text of a document, as stored in ``schemas/``."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every document into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in documents().items():
        path = directory / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of documents in ``directory`` that are missing or differ from the models."""
    return [
        name
        for name, document in documents().items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != render(document)
    ]
