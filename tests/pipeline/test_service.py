"""The bridge end to end: a real broker, the emulator over real HTTP, the real service."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bridge.local.emulator import Emulator, EmulatorConfig, WorkflowBehaviour
from bridge.local.emulator.config import DoStep, WaitForEventStep
from bridge.local.topics import ensure_topics
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


def _waiting() -> WorkflowBehaviour:
    return WorkflowBehaviour(
        steps=(DoStep(name="a", duration_ms=10), WaitForEventStep(name="w", event_type="go"))
    )


async def test_every_action_end_to_end(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    # One partition: the batch (keyed by nothing) and later commands on its items keep their order.
    topics = await make_topics(new_topic, 1)
    wf = "orders"
    commands: list[dict[str, Any] | bytes] = [
        {
            "action": "create",
            "workflow": wf,
            "instance_id": "a-1",
            "params": {"n": 1},
            "command_id": "c1",
        },
        {"action": "create", "workflow": wf, "command_id": "c2"},
        {
            "action": "create_batch",
            "workflow": wf,
            "command_id": "c3",
            "instances": [{"instance_id": "b-1"}, {"instance_id": "b-2", "params": {"x": True}}],
        },
        {"action": "pause", "workflow": wf, "instance_id": "a-1", "command_id": "c4"},
        {"action": "resume", "workflow": wf, "instance_id": "a-1", "command_id": "c5"},
        {
            "action": "send_event",
            "workflow": wf,
            "instance_id": "a-1",
            "event_type": "go",
            "payload": {"ok": 1},
            "command_id": "c6",
        },
        {"action": "terminate", "workflow": wf, "instance_id": "b-1", "command_id": "c7"},
        {"action": "restart", "workflow": wf, "instance_id": "b-1", "command_id": "c8"},
        {"action": "create", "workflow": wf, "instance_id": "a-1", "command_id": "c9"},
        {"action": "pause", "workflow": wf, "instance_id": "missing", "command_id": "c10"},
        b"\xff not json",
    ]
    config = EmulatorConfig(workflows={wf: _waiting()})
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=12, dead_letters=2)
        results = reader.by_command()
        assert results["c1"][0]["outcome"] == "ok"
        assert results["c1"][0]["status"] in ("queued", "running")
        derived = results["c2"][0]["instance_id"]
        assert derived.startswith("wb-")
        assert emulator.instance(wf, derived) is not None
        assert sorted(r["instance_id"] for r in results["c3"]) == ["b-1", "b-2"]
        for cid in ("c4", "c5", "c6", "c7", "c8"):
            assert results[cid][0]["outcome"] == "ok", results[cid]
        assert results["c4"][0]["status"] in ("paused", "waitingForPause")
        assert results["c7"][0]["status"] == "terminated"
        assert results["c9"][0]["outcome"] == "already_exists"
        assert results["c9"][0]["status"] is not None
        assert results["c10"][0]["outcome"] == "rejected"
        assert results["c10"][0]["error"]["http_status"] == 404
        invalid = [r for r in reader.results if r["action"] is None]
        assert len(invalid) == 1
        assert invalid[0]["outcome"] == "rejected"
        assert invalid[0]["error"]["type"] == "ContractError"
        # dead letters keep the original bytes and say why in headers
        values = sorted(record.value for record in reader.dead_letters)
        assert b"\xff not json" in values
        missing = next(r for r in reader.dead_letters if r.value != b"\xff not json")
        assert json.loads(missing.value)["command_id"] == "c10"
        headers = dict(missing.headers)
        assert headers["workflows_bridge.errors.class_name"] == b"NotFound"
        assert headers["workflows_bridge.errors.http_status"] == b"404"
        # every result carries its source
        assert all(r["source"]["topic"] == topics.commands for r in reader.results)
        assert emulator.stats.created[wf] == 4
        event_target = emulator.instance(wf, "a-1")
        assert event_target is not None
        assert [e[0] for e in event_target.events] == ["go"]


async def test_every_kind_of_bad_input_is_answered_and_consumption_continues(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    # The command topic takes records over 1 MiB, so an oversized payload reaches the bridge.
    topics = await make_topics(new_topic, 1)
    commands_topic = unique_name("cmd-large")
    await ensure_topics(
        kafka_broker.bootstrap_servers,
        {commands_topic: 1},
        configs={commands_topic: {"max.message.bytes": str(4 * 1024 * 1024)}},
    )
    topics = Topics(commands=commands_topic, output=topics.output, dlq=topics.dlq)
    bad: list[dict[str, Any] | bytes] = [
        b"\xc3\x28",  # not UTF-8
        b"{nope",  # not JSON
        b"[1,2,3]",  # not an object
        b"",  # empty
        {"action": "launch", "workflow": "wf"},  # unknown action
        {"action": "pause", "workflow": 12, "instance_id": "i"},  # wrong type
        {"action": "pause", "workflow": "wf", "instance_id": "spaces are bad"},  # id rule
        {"action": "pause", "workflow": "wf", "instance_id": "cf_" + "0" * 64},  # reserved id
        {
            "action": "create",
            "workflow": "wf",
            "params": {"blob": "x" * (1024 * 1024)},
        },  # oversized
        {"action": "pause", "workflow": "wf", "instance_id": "i", "colour": "red"},  # unknown field
    ]
    valid: dict[str, Any] = {"action": "create", "workflow": "wf", "instance_id": "after-the-bad"}
    async with (
        Emulator(EmulatorConfig()) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, [*bad, valid])
            await reader.until(results=len(bad) + 1, dead_letters=len(bad))
        rejected = [r for r in reader.results if r["outcome"] == "rejected"]
        assert len(rejected) == len(bad)
        assert all(r["error"]["type"] == "ContractError" for r in rejected)
        assert sorted(r["source"]["offset"] for r in rejected) == list(range(len(bad)))
        assert [r["instance_id"] for r in reader.results if r["outcome"] == "ok"] == [
            "after-the-bad"
        ]
        stages = {dict(d.headers)["workflows_bridge.errors.stage"] for d in reader.dead_letters}
        assert stages == {b"decode", b"validate"}
        omitted = "workflows_bridge.errors.value_omitted"
        [huge] = [d for d in reader.dead_letters if omitted in dict(d.headers)]
        assert not huge.value
        assert int(dict(huge.headers)[omitted]) > 1024 * 1024
        copied = {d.value for d in reader.dead_letters}
        assert b"\xc3\x28" in copied
        assert b"{nope" in copied
        # No budget spent on bad input: the one create, besides the token check at start.
        assert emulator.stats.requests == {"list": 1, "batch": 1}


async def test_delete_get_and_coalesced_terminates_end_to_end(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 1)
    wf = "orders"
    ids = [f"t-{n}" for n in range(6)]
    setup: list[dict[str, Any] | bytes] = [
        {
            "action": "create_batch",
            "workflow": wf,
            "command_id": "made",
            "instances": [{"instance_id": i, "params": {"i": i}} for i in [*ids, "gone", "seen"]],
        },
        {
            "action": "send_event",
            "workflow": wf,
            "instance_id": "t-5",
            "event_type": "go",
            "command_id": "finish-t5",
        },
    ]
    later: list[dict[str, Any] | bytes] = [
        *(
            {"action": "terminate", "workflow": wf, "instance_id": i, "command_id": f"term-{i}"}
            for i in ids
        ),
        {"action": "get", "workflow": wf, "instance_id": "seen", "steps": True, "command_id": "g1"},
        {"action": "get", "workflow": wf, "instance_id": "t-5", "command_id": "g2"},
        {"action": "get", "workflow": wf, "instance_id": "nobody", "command_id": "g3"},
        {"action": "delete", "workflow": wf, "instance_id": "gone", "command_id": "d1"},
        {"action": "delete", "workflow": wf, "instance_id": "gone", "command_id": "d2"},
        {
            "action": "create",
            "workflow": wf,
            "instance_id": "gone",
            "command_id": "again",
            "params": {"round": 2},
        },
    ]
    config = EmulatorConfig(workflows={wf: _waiting()})
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, setup)
            await reader.until(results=9)
            await emulator.wait_for_status(wf, "t-5", "complete")
            for instance_id in ("seen", *ids[:5]):
                await emulator.wait_for_status(wf, instance_id, "waiting")
            emulator.stats.reset()
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, later)
            await reader.until(results=9 + len(later), dead_letters=2)
        results = {cid: found[0] for cid, found in reader.by_command().items()}
        recreated = emulator.instance(wf, "gone")

    # Six terminates, one of a complete instance: one batch call, then a look at each id,
    # and the complete one answered on its own.
    for instance_id in ids[:5]:
        assert (
            results[f"term-{instance_id}"]["outcome"],
            results[f"term-{instance_id}"]["status"],
        ) == (
            "ok",
            "terminated",
        )
    refused = results["term-t-5"]
    assert refused["outcome"] == "rejected"
    assert refused["error"]["type"] == "Conflict"
    assert emulator.stats.requests["batch_terminate"] == 1
    assert emulator.stats.requests["status"] == 1  # only the complete one was sent alone

    # get: the current state, with output/error, and the step log only when asked
    seen = results["g1"]
    assert (seen["outcome"], seen["status"]) == ("ok", "waiting")
    assert seen["instance"]["params"] == {"i": "seen"}
    assert [s["name"] for s in seen["instance"]["steps"]] == ["a-1", "w-1"]
    assert seen["instance"]["omitted"] == []
    done = results["g2"]["instance"]
    assert done["status"] == "complete"
    assert done["output"] == {"params": {"i": "t-5"}}
    assert done["steps"] is None
    assert done["ended_at"] is not None
    assert (results["g3"]["outcome"], results["g3"]["error"]["code"]) == ("rejected", 10400)

    # delete: coalesced, idempotent on redelivery, and the id is free again
    assert results["d1"]["outcome"] == "ok"
    assert results["d2"]["outcome"] == "ok"
    assert results["again"]["outcome"] == "ok"
    assert recreated is not None
    assert recreated.params == {"round": 2}
    assert emulator.stats.deleted[wf] == 1


async def test_an_undeployed_workflow_is_rejected_without_retrying(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 1)
    absent = "not-deployed"
    commands: list[dict[str, Any] | bytes] = [
        {"action": "create", "workflow": absent, "instance_id": "x", "command_id": "create"},
        {"action": "pause", "workflow": absent, "instance_id": "x", "command_id": "pause"},
        {"action": "terminate", "workflow": absent, "instance_id": "x", "command_id": "terminate"},
        {"action": "delete", "workflow": absent, "instance_id": "x", "command_id": "delete"},
        {"action": "get", "workflow": absent, "instance_id": "x", "command_id": "get"},
        {
            "action": "send_event",
            "workflow": absent,
            "instance_id": "x",
            "event_type": "go",
            "command_id": "event",
        },
    ]
    config = EmulatorConfig(workflows={"deployed": _waiting()})
    async with (
        Emulator(config) as emulator,
        OutputReader(kafka_broker.bootstrap_servers, topics) as reader,
    ):
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        async with running_bridge(settings):
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, commands)
            await reader.until(results=len(commands), dead_letters=len(commands))
        for result in reader.results:
            assert result["outcome"] == "rejected", result
            assert result["attempts"] == 1, result
            assert (result["error"]["http_status"], result["error"]["code"]) == (404, 10200)
        # Nothing retried: one request per command, plus the token check at start (which lists
        # a workflow that does not exist either, and learns from the 404 that the token works).
        assert emulator.stats.requests.total() == len(commands) + 1
        assert emulator.stats.requests["list"] == 1
        assert emulator.stats.responses == {404: len(commands) + 1}


async def test_a_workflow_outside_the_allow_list_costs_no_request(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 1)
    async with Emulator() as emulator, OutputReader(kafka_broker.bootstrap_servers, topics) as out:
        settings = bridge_settings(
            kafka_broker, emulator, topics, group=unique_name("g"), workflows=["orders"]
        )
        async with running_bridge(settings):
            await send_commands(
                kafka_broker.bootstrap_servers,
                topics.commands,
                [
                    {"action": "terminate", "workflow": "payroll", "instance_id": "p-1"},
                    {"action": "create", "workflow": "orders", "instance_id": "o-1"},
                ],
            )
            await out.until(results=2, dead_letters=1)
        # The token check at start and the one create; nothing for the refused workflow.
        assert emulator.stats.requests == {"list": 1, "batch": 1}
    refused = next(r for r in out.results if r["workflow"] == "payroll")
    assert refused["outcome"] == "rejected"
    headers = dict(out.dead_letters[0].headers)
    assert headers["workflows_bridge.errors.rule"] == b"workflow_not_allowed"
