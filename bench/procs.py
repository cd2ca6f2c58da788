"""A contestant as an operating-system process: started, watched through /proc, and stopped.

Each contestant (raw pipe, naive bridge, this bridge) runs in a process of its own, so the
emulator and the result reader in the benchmark's process never share its interpreter lock;
its log goes to a file whose tail is shown when something goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.common import ROOT, BenchError

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Contestant:
    """``python <args>`` in its own session, with ``env``; output appended to ``log_path``."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str],
        log_path: Path,
        cwd: Path | str = ROOT,
    ) -> None:
        self.name = name
        self._args = list(args)
        self._env = env
        self._cwd = cwd
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self.peak_rss_kb = 0

    async def __aenter__(self) -> Self:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self._args,
                env=self._env,
                cwd=self._cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    def check_alive(self) -> None:
        """Raise with the log's tail if the process has ended on its own."""
        code = self.returncode
        if code is not None:
            raise BenchError(f"{self.name} exited early with code {code}:\n{self.log_tail()}")

    def sample_rss(self) -> int:
        """Read the process's peak resident set (VmHWM, kB) so far; keeps the maximum."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
                        break
        except (FileNotFoundError, ProcessLookupError):
            pass
        return self.peak_rss_kb

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used, or None once it is gone."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM (the contestants drain and exit), SIGKILL after ``within`` seconds."""
        process = self._process
        if process is None:
            raise RuntimeError(f"{self.name} was not started")
        if process.returncode is None:
            self.sample_rss()
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), within)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise BenchError(
                    f"{self.name} did not stop within {within:g} s of SIGTERM; killed:\n"
                    f"{self.log_tail()}"
                ) from None
        return process.returncode if process.returncode is not None else -1

    async def kill(self) -> None:
        """SIGKILL, as a crash would end it; returns once it is gone."""
        process = self._process
        if process is None:
            raise RuntimeError(f"{self.name} was not started")
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()

    async def wait(self) -> int:
        """Until the process ends on its own (or by a signal); its exit code."""
        process = self._process
        if process is None:
            raise RuntimeError(f"{self.name} was not started")
        return await process.wait()

    def open_files(self) -> int | None:
        """How many file descriptors the process holds now, or None once it is gone."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except (FileNotFoundError, ProcessLookupError):
            return None

    def current_rss_kb(self) -> int | None:
        """The resident set now (VmRSS, kB), or None once the process is gone."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        tail = text.splitlines()[-lines:]
        return "\n".join("    " + line[:300] for line in tail) or "    (empty log)"
