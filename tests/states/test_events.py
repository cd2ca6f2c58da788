"""Queue messages into observations: both body encodings, the six types, and refusals."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.states.events import EVENT_STATUS, BadEvent, decode_body, observation

AT = datetime(2026, 11, 30, 12, tzinfo=UTC)


def envelope(kind: str = "completed", **changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": f"cf.workflows.workflow.instance.{kind}",
        "source": {"type": "workflows.workflow", "workflowName": "orders"},
        "payload": {"versionId": "v1", "instanceId": "order-1"},
        "metadata": {
            "accountId": "acct",
            "eventSubscriptionId": "sub",
            "eventSchemaVersion": 1,
            "eventTimestamp": "2026-11-30T10:00:00.123Z",
        },
    }
    value.update(changes)
    return value


def test_bodies_in_every_encoding_decode_alike() -> None:
    text = json.dumps(envelope())
    encoded = base64.b64encode(text.encode()).decode()
    assert decode_body(encoded) == decode_body(text) == decode_body(envelope()) == envelope()


@pytest.mark.parametrize("body", ["not json", base64.b64encode(b"[1]").decode(), "[]", 7, None])
def test_bodies_that_are_not_envelopes_are_refused(body: Any) -> None:
    with pytest.raises(BadEvent):
        decode_body(body)


@pytest.mark.parametrize(("kind", "status"), sorted(EVENT_STATUS.items()))
def test_each_event_type_announces_its_rest_status(kind: str, status: str) -> None:
    seen = observation(envelope(kind), at=AT)
    assert (seen.workflow, seen.instance_id, seen.status) == ("orders", "order-1", status)
    assert seen.source == "event"
    assert seen.version_id == "v1"
    assert seen.at == AT
    assert seen.event_at == datetime(2026, 11, 30, 10, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        envelope(type="cf.r2.bucket.created"),
        envelope("waiting"),
        envelope(source={"type": "workflows.workflow"}),
        envelope(payload={"versionId": "v1"}),
        envelope(metadata={"eventTimestamp": "yesterday"}),
        envelope(payload="x"),
    ],
)
def test_envelopes_missing_what_matters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(BadEvent):
        observation(bad, at=AT)


def _result(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "kind": "result",
        "command_id": "c",
        "action": "create",
        "workflow": "orders",
        "instance_id": "o-1",
        "outcome": "ok",
        "status": "queued",
        "at": "2026-11-30T10:00:00.5Z",
    }
    value.update(changes)
    return value


def test_command_results_are_weak_observations_of_their_kind() -> None:
    from bridge.states.results import result_observation
    from bridge.states.tracker import Kind

    born = result_observation(_result())
    assert born is not None
    assert (born.kind, born.source, born.status, born.event_at) == (
        Kind.BIRTH,
        "command",
        "queued",
        None,
    )
    assert born.at == datetime(2026, 11, 30, 10, 0, 0, 500000, tzinfo=UTC)
    taken = result_observation(_result(outcome="already_exists", status="running"))
    assert taken is not None
    assert taken.kind is Kind.BIRTH
    restarted = result_observation(_result(action="restart"))
    assert restarted is not None
    assert restarted.kind is Kind.RESTART
    paused = result_observation(_result(action="pause", status="waitingForPause"))
    assert paused is not None
    assert paused.kind is Kind.SIGHTING
    snapshot = {"status": "complete", "output": {"x": 1}, "error": None, "version_id": "v9"}
    got = result_observation(_result(action="get", status="complete", instance=snapshot))
    assert got is not None
    assert (got.kind, got.output, got.version_id, got.fetched) == (
        Kind.SIGHTING,
        {"x": 1},
        "v9",
        True,
    )
    for says_nothing in (
        _result(kind="state"),
        _result(action="send_event", status=None),
        _result(outcome="rejected", status=None),
        _result(outcome="failed"),
        _result(action="delete", status="terminated"),
        _result(at="not a time"),
        _result(workflow=None),
    ):
        assert result_observation(says_nothing) is None
