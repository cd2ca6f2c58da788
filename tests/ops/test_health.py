"""``/livez`` and ``/readyz``; a taken port is one clear line and exit code 2, not a traceback."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import httpx

from bridge.ops.health import HealthServer
from tests.support.hermetic import without_bridge_variables


async def test_livez_readyz_and_unknown_paths() -> None:
    state: dict[str, Any] = {"ok": False}

    def ready() -> tuple[bool, dict[str, Any]]:
        return state["ok"], {"reason": "testing"}

    async with HealthServer(ready, host="127.0.0.1", port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/livez")).status_code == 200
            not_ready = await http.get(f"{base}/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json() == {"ready": False, "reason": "testing"}
            state["ok"] = True
            assert (await http.get(f"{base}/readyz")).status_code == 200
            assert (await http.get(f"{base}/nope")).status_code == 404


async def test_a_taken_health_port_exits_2_naming_the_variable() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **without_bridge_variables(),
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": "acct",
            "BRIDGE_CLOUDFLARE__API_TOKEN": "token",
            "BRIDGE_HEALTH_PORT": str(port),
            "BRIDGE_LOG_FORMAT": "json",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 2
    lines = [line for line in (out + err).decode().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["event"] == "config_error"
    assert "BRIDGE_HEALTH_PORT" in record["error"]
    assert str(port) in record["error"]
    assert "Traceback" not in lines[0]
