"""The bridge as a real operating-system process, configured only through its environment."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from bridge.local.emulator import Emulator
from tests.support.bridge_harness import Topics
from tests.support.hermetic import without_bridge_variables
from tests.support.kafka_harness import Flavour, KafkaBroker


class BridgeProcess:
    """``python -m bridge run`` with ``BRIDGE_*`` variables; its log goes to ``log_path``."""

    def __init__(
        self,
        broker: KafkaBroker,
        emulator: Emulator,
        topics: Topics,
        *,
        group: str,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.env = {
            **without_bridge_variables(),
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "BRIDGE_KAFKA__GROUP_ID": group,
            "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "2000",
            "BRIDGE_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER": "false"
            if broker.flavour is Flavour.TANSU
            else "true",
            "BRIDGE_TOPICS__COMMANDS": topics.commands,
            "BRIDGE_TOPICS__OUTPUT": topics.output,
            "BRIDGE_TOPICS__DLQ": topics.dlq,
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": "test-account",
            "BRIDGE_CLOUDFLARE__API_TOKEN": emulator.config.token,
            "BRIDGE_CLOUDFLARE__BASE_URL": emulator.base_url,
            "BRIDGE_PIPELINE__BACKOFF_INITIAL_SECONDS": "0.05",
            "BRIDGE_PIPELINE__COMMIT_INTERVAL_SECONDS": "0.2",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_HEALTH_PORT": "0",
            # Off unless a test turns it on (see bridge_settings).
            "BRIDGE_STATES__ENABLED": "false",
            **(extra_env or {}),
        }
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BridgeProcess:
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "run",
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def wait_running(self, within: float = 30.0) -> None:
        """Until the log says the bridge runs (its consumer has started)."""
        async with asyncio.timeout(within):
            while b'"bridge_started"' not in self.log_path.read_bytes():
                assert self.process is not None
                assert self.process.returncode is None, self.log_path.read_text()
                await asyncio.sleep(0.05)

    async def terminate(self, within: float = 60.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), within)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
