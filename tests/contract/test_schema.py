"""The published schemas match the models, and they accept and refuse what the models do."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bridge.cli import main
from bridge.contract.schema import documents, stale
from tests.contract.test_commands import GOOD

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schemas_directory_is_up_to_date() -> None:
    assert stale(SCHEMAS) == [], "run `workflows-bridge schema --write schemas` and commit"


def test_stale_detects_drift(tmp_path: Path) -> None:
    (tmp_path / "command.schema.json").write_text("{}\n")
    assert "command.schema.json" in stale(tmp_path)
    assert "asyncapi.json" in stale(tmp_path)


@pytest.mark.parametrize("data", GOOD)
def test_command_schema_accepts_good_commands(data: dict[str, object]) -> None:
    jsonschema.validate(data, documents()["command.schema.json"])


@pytest.mark.parametrize(
    "data",
    [
        {"action": "explode", "workflow": "w"},
        {"action": "pause", "workflow": "w"},
        {"action": "pause", "workflow": "w", "instance_id": "has space"},
        {"action": "pause", "workflow": "w", "instance_id": "i", "extra": 1},
        {"action": "create_batch", "workflow": "w", "instances": []},
    ],
)
def test_command_schema_refuses_bad_commands(data: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, documents()["command.schema.json"])


def test_asyncapi_names_the_four_channels() -> None:
    doc = documents()["asyncapi.json"]
    assert doc["asyncapi"].startswith("3.")
    assert set(doc["channels"]) == {"commands", "output", "states", "deadLetters"}
    assert set(doc["channels"]["states"]["messages"]) == {"state"}
    assert "state" in doc["channels"]["output"]["messages"]
    refs = json.dumps(doc)
    for name in ("Command", "ResultRecord", "StateRecord"):
        assert f"#/components/schemas/{name}" in refs
        assert name in doc["components"]["schemas"]


def test_cli_prints_and_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["schema", "command.schema.json"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Command"
    assert main(["schema", "--check", str(tmp_path)]) == 1
    assert main(["schema", "--write", str(tmp_path)]) == 0
    assert main(["schema", "--check", str(tmp_path)]) == 0


def test_a_state_record_is_part_of_the_output_contract() -> None:
    schema = documents()["output.schema.json"]
    state = {
        "kind": "state",
        "workflow": "orders",
        "instance_id": "order-1",
        "status": "complete",
        "previous_status": "running",
        "at": "2026-11-30T10:00:01.500Z",
        "event_at": "2026-11-30T10:00:01.123Z",
        "source": "event",
        "version_id": "v1",
        "output": {"shipped": True},
        "error": None,
        "inferred": False,
    }
    jsonschema.validate(state, schema)
    for bad in (
        {**state, "source": "guess"},
        {**state, "error": {"name": "E"}},
        {**state, "extra": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
