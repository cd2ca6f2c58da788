"""``workflows-bridge check`` against the emulator: a good setup is good; a revoked token, a
missing topic and an unknown workflow each get their own line and exit code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from bridge.cli import main
from bridge.local.emulator import Emulator, EmulatorConfig, WorkflowBehaviour
from tests.support.bridge_harness import NewTopic, Topics, make_topics

pytestmark = pytest.mark.usefixtures("operator_env")


def _environment(
    env: pytest.MonkeyPatch, bootstrap: str, emulator: Emulator, topics: Topics, **more: str
) -> None:
    values = {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_TOPICS__COMMANDS": topics.commands,
        "BRIDGE_TOPICS__OUTPUT": topics.output,
        "BRIDGE_TOPICS__DLQ": topics.dlq,
        "BRIDGE_CLOUDFLARE__ACCOUNT_ID": "acct",
        "BRIDGE_CLOUDFLARE__API_TOKEN": emulator.config.token,
        "BRIDGE_CLOUDFLARE__BASE_URL": emulator.base_url,
        "BRIDGE_CLOUDFLARE__WORKFLOWS": "orders,billing",
        **more,
    }
    for name, value in values.items():
        env.setenv(name, value)


def _config() -> EmulatorConfig:
    return EmulatorConfig(workflows={"orders": WorkflowBehaviour(), "billing": WorkflowBehaviour()})


async def _check(*args: str) -> tuple[int, str]:
    return await asyncio.to_thread(_run, list(args))


def _run(args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", *args])
    return code, out.getvalue()


async def test_a_good_setup_is_reported_good(
    operator_env: pytest.MonkeyPatch, kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topics = await make_topics(new_topic, 3)
    async with Emulator(_config()) as emulator:
        _environment(operator_env, kafka_bootstrap, emulator, topics)
        code, out = await _check()
        assert code == 0, out
        assert f"ok    topic {topics.commands}: 3 partition(s)" in out
        assert "ok    api token: accepted" in out
        assert "ok    workflow orders: exists" in out
        assert "ok    workflow billing: exists" in out
        assert "all checks passed (exit code 0)" in out
        code, text = await _check("--json")
        report = json.loads(text)
        assert code == 0
        assert report["ok"] is True
        assert {c["name"] for c in report["checks"]} >= {"config", "broker", "api token"}
        # Two listings: one per workflow of the allow-list (the first verifies the token too).
        assert emulator.stats.requests["list"] == 4


async def test_a_revoked_token(
    operator_env: pytest.MonkeyPatch, kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topics = await make_topics(new_topic, 1)
    async with Emulator(_config()) as emulator:
        _environment(operator_env, kafka_bootstrap, emulator, topics)
        emulator.config.revoked = True
        code, out = await _check()
    assert code == 5, out
    assert "FAIL  api token: refused" in out
    assert "workflow orders" not in out  # nothing else is asked of a refused token


async def test_a_missing_topic(
    operator_env: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    new_topic: NewTopic,
    unique_name: Callable[[str], str],
) -> None:
    topics = await make_topics(new_topic, 1)
    absent = unique_name("absent-dlq")
    async with Emulator(_config()) as emulator:
        _environment(operator_env, kafka_bootstrap, emulator, topics, BRIDGE_TOPICS__DLQ=absent)
        code, out = await _check()
        assert code == 4, out
        assert f"FAIL  topic {absent}: missing" in out
        assert "ok    api token: accepted" in out
        # The check created nothing (a Metadata request naming it could have).
        assert (await _check())[0] == 4


async def test_an_unknown_workflow(
    operator_env: pytest.MonkeyPatch, kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topics = await make_topics(new_topic, 1)
    async with Emulator(_config()) as emulator:
        _environment(
            operator_env,
            kafka_bootstrap,
            emulator,
            topics,
            BRIDGE_CLOUDFLARE__WORKFLOWS="orders,payrol",
        )
        code, out = await _check()
    assert code == 6, out
    assert "ok    workflow orders: exists" in out
    assert "FAIL  workflow payrol: not found" in out


async def test_an_invalid_configuration(operator_env: pytest.MonkeyPatch) -> None:
    operator_env.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    code, out = await _check()
    assert code == 2
    assert "FAIL  config: unknown variable BRIDGE_KAFKA__BOOTSTRAP_SERVER" in out


async def test_an_unreachable_broker(operator_env: pytest.MonkeyPatch, new_topic: NewTopic) -> None:
    topics = await make_topics(new_topic, 1)
    async with Emulator(_config()) as emulator:
        _environment(operator_env, "127.0.0.1:9", emulator, topics)
        code, out = await _check()
    assert code == 3, out
    assert "FAIL  broker: cannot connect to the broker" in out
