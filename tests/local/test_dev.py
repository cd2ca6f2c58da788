"""``workflows-bridge dev``: the one-command demo runs its scenario to the end and stops on ^C."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _done_commands(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    lines = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") in ("command_done", "command_rejected"):
            lines.append(record)
    return lines


async def test_dev_plays_the_scenario_and_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "dev",
        "--emulator-port",
        "0",
        "--log-file",
        str(log),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(90):
            while not any(
                r.get("action") == "delete" and r.get("instance_id") == "order-3"
                for r in _done_commands(log)
            ):
                assert process.returncode is None
                await asyncio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode(errors="replace")
    done = _done_commands(log)
    outcomes = {(r["action"], r.get("instance_id")): r["outcome"] for r in done}
    assert outcomes[("create_batch", "order-1")] == "ok"
    assert outcomes[("terminate", "order-3")] == "ok"
    assert outcomes[("resume", "order-2")] == "ok"
    assert outcomes[("send_event", "order-2")] == "ok"
    assert outcomes[("get", "order-1")] == "ok"
    assert outcomes[("delete", "order-3")] == "ok"
    assert [r for r in done if r["event"] == "command_rejected"]  # the malformed one
    text = output.decode(errors="replace")
    assert "order-2" in text
    # the table is drawn from the state stream on Kafka: timelines of state records
    assert "queued → running" in text
    assert '"state_following_started"' in log.read_text()
    assert "workflows-bridge send --bootstrap" in text
