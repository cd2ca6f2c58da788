"""What the fault runs do to the world: the broker (stop, restart, pause) and the bridge replicas.

The broker is Apache Kafka from ``scripts/kafka/start-kafka.sh``, controlled through the same
script (``--stop``, ``--restart`` on the data kept on disk, ``--pause``/``--resume`` for a broker
that is up but answers nothing). Each replica is ``python -m bridge run`` configured only by
``BRIDGE_*`` variables, run as a :class:`bench.procs.Contestant`; a :class:`Replica` slot keeps
one incarnation at a time, restarts it after a kill, and restarts it (counting it) if it exits
on its own, as an orchestrator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, python_env
from bench.procs import Contestant

SCRIPT = Path(ROOT) / "scripts" / "kafka" / "start-kafka.sh"


def say(message: str) -> None:
    """One line of progress on stderr, stamped by the caller's clock."""
    print(f"[faults] {message}", file=sys.stderr, flush=True)


class Broker:
    """A broker started by the script into ``state_dir``; stopped (and its state kept) on exit."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.bootstrap_servers = ""

    async def _script(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(SCRIPT),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"start-kafka.sh {' '.join(args)} failed:\n{err.decode()[-2000:]}")
        return out.decode().strip()

    async def start(self) -> str:
        self.bootstrap_servers = await self._script(str(self.state_dir))
        return self.bootstrap_servers

    async def stop(self) -> None:
        await self._script("--stop", str(self.state_dir))

    async def restart(self) -> None:
        await self._script("--restart", str(self.state_dir))

    async def pause(self) -> None:
        await self._script("--pause", str(self.state_dir))

    async def resume(self) -> None:
        await self._script("--resume", str(self.state_dir))


@contextlib.asynccontextmanager
async def running_broker(state_dir: Path) -> AsyncIterator[Broker]:
    broker = Broker(state_dir)
    await broker.start()
    try:
        yield broker
    finally:
        with contextlib.suppress(RuntimeError):
            await broker.stop()


def bridge_env(settings: dict[str, str]) -> dict[str, str]:
    """A child's environment: this one without any ``BRIDGE_*`` variable, plus ``settings``."""
    env = {k: v for k, v in python_env().items() if not k.startswith("BRIDGE_")}
    env.update(settings)
    return env


@dataclass
class Replica:
    """One replica slot: at most one running incarnation, each with a log of its own."""

    name: str
    env: dict[str, str]
    logs: Path
    incarnations: int = 0
    #: Exits nobody asked for (the slot restarted the replica after each).
    unplanned_exits: list[int] = field(default_factory=list)
    peak_rss_kb: int = 0
    current: Contestant | None = None
    _watch: asyncio.Task[None] | None = None
    _planned: bool = False
    #: Left the group for good (SIGTERM, not restarted).
    left: bool = False
    log_paths: list[Path] = field(default_factory=list)

    async def start(self) -> None:
        self.incarnations += 1
        path = self.logs / f"{self.name}.{self.incarnations}.log"
        self.log_paths.append(path)
        contestant = Contestant(
            f"{self.name}#{self.incarnations}",
            ["-m", "bridge", "run"],
            env=self.env,
            log_path=path,
        )
        await contestant.__aenter__()
        self.current, self._planned = contestant, False
        self._watch = asyncio.create_task(self._supervise(contestant))

    async def wait_running(self, within: float = 60.0) -> None:
        """Until the log says the bridge runs."""
        async with asyncio.timeout(within):
            while True:
                current = self.current
                log = current.log_path if current is not None else None
                if log is not None and log.exists() and b'"bridge_started"' in log.read_bytes():
                    return
                await asyncio.sleep(0.1)

    async def _supervise(self, contestant: Contestant) -> None:
        code = await contestant.wait()
        self._sample(contestant)
        if self._planned or contestant is not self.current:
            return
        self.unplanned_exits.append(code)
        say(
            f"{contestant.name} exited on its own with {code}; restarting:\n"
            + contestant.log_tail(8)
        )
        await asyncio.sleep(1.0)
        if contestant is self.current and not self._planned:
            await self.start()

    def _sample(self, contestant: Contestant) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, contestant.sample_rss())

    def sample(self) -> None:
        if self.current is not None:
            self._sample(self.current)

    async def kill(self) -> None:
        """SIGKILL the running incarnation."""
        current = self._stop_watching()
        if current is not None:
            self._sample(current)
            await current.kill()

    async def terminate(self, within: float = 60.0) -> int:
        """SIGTERM and wait for the drain; its exit code."""
        current = self._stop_watching()
        if current is None:
            return 0
        self._sample(current)
        return await current.stop(within)

    def _stop_watching(self) -> Contestant | None:
        self._planned = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        return self.current

    async def close(self) -> None:
        current = self._stop_watching()
        if current is not None:
            await current.__aexit__(None, None, None)


def token_found(token: str, paths: list[Path]) -> int:
    """Lines of these files that carry ``token``."""
    needle = token.encode()
    found = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError), path.open("rb") as lines:
            found += sum(1 for line in lines if needle in line)
    return found
