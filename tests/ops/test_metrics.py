"""``/metrics`` on the health port: every metric is fed by the running bridge, and ``/readyz``
is ready only with partitions assigned and the token verified."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.ops.metrics import Metrics, sample_names, status_class
from tests.support.bridge_harness import (
    NewTopic,
    OutputReader,
    bridge_settings,
    make_topics,
    running_bridge,
    send_commands,
)
from tests.support.kafka_harness import KafkaBroker
from tests.support.state_harness import StateReader, fast_states

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 404, 429, 503, None)] == [
        "2xx",
        "4xx",
        "4xx",
        "5xx",
        "none",
    ]


def test_events_become_samples() -> None:
    metrics = Metrics()
    metrics.api_exchange("create_batch", 200, 0.03)
    metrics.api_exchange("edit_status", 429, 0.01)
    metrics.api_exchange("send_event", None, 5.0)
    metrics.api_retry("TransportError")
    metrics.answered(
        [("create", "ok"), ("pause", "rejected")],
        [{"workflows_bridge.errors.class_name": b"NotFound"}],
        None,
    )
    metrics.set_lag({("cmd", 0): 7})
    samples = _samples(metrics.exposition().decode())
    assert (
        _value(
            samples,
            "workflows_bridge_api_requests_total",
            endpoint="edit_status",
            status_class="4xx",
        )
        == 1
    )
    assert (
        _value(
            samples,
            "workflows_bridge_api_requests_total",
            endpoint="send_event",
            status_class="none",
        )
        == 1
    )
    assert _value(samples, "workflows_bridge_api_rate_limited_total") == 1
    assert _value(samples, "workflows_bridge_api_retries_total", error_class="TransportError") == 1
    assert (
        _value(samples, "workflows_bridge_commands_total", action="pause", outcome="rejected") == 1
    )
    assert _value(samples, "workflows_bridge_dead_letters_total", reason="NotFound") == 1
    assert _value(samples, "workflows_bridge_consumer_lag", topic="cmd", partition="0") == 7
    metrics.set_lag({})
    assert (
        "workflows_bridge_consumer_lag",
        frozenset({("topic", "cmd"), ("partition", "0")}),
    ) not in _samples(metrics.exposition().decode())


async def test_a_running_bridge_feeds_every_metric(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 1)
    async with Emulator() as emulator, OutputReader(kafka_broker.bootstrap_servers, topics) as out:
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        settings = settings.model_copy(update={"health_port": _free_port()})
        async with running_bridge(settings), httpx.AsyncClient() as http:
            base = f"http://127.0.0.1:{settings.health_port}"
            await send_commands(
                kafka_broker.bootstrap_servers,
                topics.commands,
                [
                    {"action": "create", "workflow": "wf", "instance_id": "m-1"},
                    {"action": "pause", "workflow": "wf", "instance_id": "absent"},
                    b"{not json",
                ],
            )
            await out.until(results=3, dead_letters=2)
            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["partitions"] == 1
            assert ready.json()["api_token_verified"] is True
            # The lag is observed at the commit interval: wait for its sample.
            async with asyncio.timeout(30):
                while True:
                    response = await http.get(f"{base}/metrics")
                    text = response.text
                    if "workflows_bridge_consumer_lag{" in text:
                        break
                    await asyncio.sleep(0.1)
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(text)
    assert _value(samples, "workflows_bridge_commands_total", action="create", outcome="ok") == 1
    assert (
        _value(samples, "workflows_bridge_commands_total", action="pause", outcome="rejected") == 1
    )
    assert _value(samples, "workflows_bridge_dead_letters_total", reason="NotFound") == 1
    assert _value(samples, "workflows_bridge_dead_letters_total", reason="ContractError") == 1
    assert (
        _value(
            samples,
            "workflows_bridge_api_requests_total",
            endpoint="create_batch",
            status_class="2xx",
        )
        == 1
    )
    assert (
        _value(
            samples,
            "workflows_bridge_api_requests_total",
            endpoint="edit_status",
            status_class="4xx",
        )
        == 1
    )
    # The token check at start: one listing.
    assert (
        _value(samples, "workflows_bridge_api_requests_total", endpoint="list", status_class="2xx")
        == 1
    )
    assert (
        _value(
            samples, "workflows_bridge_api_request_duration_seconds_count", endpoint="create_batch"
        )
        == 1
    )
    assert _value(samples, "workflows_bridge_command_age_seconds_count") == 3
    assert _value(samples, "workflows_bridge_ready") == 1
    assert _value(samples, "workflows_bridge_api_token_ok") == 1
    assert _value(samples, "workflows_bridge_partitions_assigned") == 1
    assert _value(samples, "workflows_bridge_budget_capacity_requests") > 0
    # Alone in its group, with little to do: what it uses plus its headroom (2 %), not all.
    assert 0 < _value(samples, "workflows_bridge_budget_share") < 0.5
    assert _value(samples, "workflows_bridge_budget_used_requests") >= 3
    assert (
        _value(samples, "workflows_bridge_consumer_lag", topic=topics.commands, partition="0") == 0
    )
    exposed = {name for name, _ in samples} | {name.removesuffix("_created") for name, _ in samples}
    for name in sample_names() - {
        "workflows_bridge_api_rate_limited_total",
        "workflows_bridge_api_retries_total",
    }:
        if name.startswith("workflows_bridge_states_"):
            continue  # the state stream is off here: see the next test
        assert name in exposed, f"{name} is never exposed by a running bridge"


async def test_the_state_follower_feeds_its_metrics(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 1)
    config = EmulatorConfig(event_queue="q")
    async with (
        Emulator(config) as emulator,
        StateReader(kafka_broker.bootstrap_servers, topics.output) as reader,
    ):
        settings = bridge_settings(
            kafka_broker,
            emulator,
            topics,
            group=unique_name("g"),
            states=fast_states(queue_id="q"),
            budget_requests=6000,
            budget_window_seconds=60,
        )
        settings = settings.model_copy(update={"health_port": _free_port()})
        async with running_bridge(settings), httpx.AsyncClient() as http:
            create = {"action": "create", "workflow": "wf", "instance_id": "s-1"}
            await send_commands(kafka_broker.bootstrap_servers, topics.commands, [create])
            await reader.until_final(["s-1"])
            samples = _samples(
                (await http.get(f"http://127.0.0.1:{settings.health_port}/metrics")).text
            )
    assert _value(samples, "workflows_bridge_states_following") == 1
    published = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "workflows_bridge_states_published_total"
    }
    assert sum(published.values()) == len(reader.records)  # every record, counted by source
    assert _value(samples, "workflows_bridge_states_requests_total", kind="get") >= 1
    assert _value(samples, "workflows_bridge_states_live_instances") == 0
    assert _value(samples, "workflows_bridge_states_pending") >= 0
    assert _value(samples, "workflows_bridge_states_queue_backlog") >= 0
    exposed = {name for name, _ in samples} | {name.removesuffix("_created") for name, _ in samples}
    for name in sample_names():
        if name.startswith("workflows_bridge_states_"):
            assert name in exposed, f"{name} is never exposed by a following replica"


async def test_a_refused_token_is_not_ready_before_the_first_command(
    kafka_broker: KafkaBroker, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topics = await make_topics(new_topic, 1)
    async with Emulator(EmulatorConfig(revoked=True)) as emulator:
        settings = bridge_settings(kafka_broker, emulator, topics, group=unique_name("g"))
        settings = settings.model_copy(update={"health_port": _free_port()})
        async with running_bridge(settings) as bridge, httpx.AsyncClient() as http:
            base = f"http://127.0.0.1:{settings.health_port}"
            async with asyncio.timeout(30):
                while not bridge.readiness()[1].get("partitions"):
                    await asyncio.sleep(0.05)
            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 503
            assert ready.json()["api_token_ok"] is False
            assert "403" in ready.json()["api_error"] or "refused" in ready.json()["api_error"]
            samples = _samples((await http.get(f"{base}/metrics")).text)
            assert _value(samples, "workflows_bridge_api_token_ok") == 0
            assert _value(samples, "workflows_bridge_ready") == 0
        assert emulator.stats.requests == {"list": 1}  # no command, one check
