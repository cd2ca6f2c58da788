"""``workflows-bridge states subscribe``: one subscription per followed workflow, once."""

from __future__ import annotations

import asyncio

import pytest

from bridge.cli import main
from bridge.local.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.usefixtures("operator_env")


async def test_subscribe_creates_what_is_missing_and_keeps_what_is_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Emulator(EmulatorConfig(queues=["states-q"])) as emu:
        monkeypatch.setenv("BRIDGE_CLOUDFLARE__ACCOUNT_ID", emu.account_id)
        monkeypatch.setenv("BRIDGE_CLOUDFLARE__API_TOKEN", emu.token)
        monkeypatch.setenv("BRIDGE_CLOUDFLARE__BASE_URL", emu.base_url)
        argv = ["states", "subscribe", "--queue", "states-q", "--workflow", "orders"]
        assert await asyncio.to_thread(main, [*argv, "--workflow", "refunds"]) == 0
        assert "2 subscription(s) created" in capsys.readouterr().err
        made = emu.subscriptions()
        assert sorted(s["source"]["workflow_name"] for s in made) == ["orders", "refunds"]
        assert {s["destination"]["queue_id"] for s in made} == {"states-q"}
        assert all(len(s["events"]) == 6 for s in made)

        # from the variables, as the bridge reads them: orders is there, imports is new
        monkeypatch.setenv("BRIDGE_STATES__QUEUE_ID", "states-q")
        monkeypatch.setenv("BRIDGE_STATES__WORKFLOWS", "orders,imports")
        assert await asyncio.to_thread(main, ["states", "subscribe"]) == 0
        err = capsys.readouterr().err
        assert "orders: subscribed already" in err
        assert "1 subscription(s) created" in err
        assert len(emu.subscriptions()) == 3
        # an event of a new instance reaches the queue
        emu.add_instance("imports", "i-1")
        assert len(emu.queue("states-q")) >= 1


async def test_subscribe_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["states", "subscribe", "--workflow", "w"]) == 2
    assert "BRIDGE_CLOUDFLARE__ACCOUNT_ID" in capsys.readouterr().err
    monkeypatch.setenv("BRIDGE_CLOUDFLARE__ACCOUNT_ID", "a")
    monkeypatch.setenv("BRIDGE_CLOUDFLARE__API_TOKEN", "t")
    assert await asyncio.to_thread(main, ["states", "subscribe", "--workflow", "w"]) == 2
    assert "no queue" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["states", "subscribe", "--queue", "q"]) == 2
    assert "no workflow" in capsys.readouterr().err
