"""A minimal HTTP health endpoint for orchestrators: ``/livez`` and ``/readyz``.

``/readyz`` answers 503 while the bridge cannot do its work: before it has joined the group, and
while the API refuses its token (then the body says so). It speaks just enough HTTP/1.1 for
probes and ``curl``; it is not a web server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from bridge.errors import ConfigError

Check = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serve ``/livez`` and ``/readyz`` on ``host:port`` while the context is open."""

    def __init__(self, ready: Check, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        self._ready = ready
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            raise ConfigError(
                f"BRIDGE_HEALTH_PORT: cannot listen on {self._host}:{self._port}: "
                f"{exc.strerror or exc}"
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)).strip():
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            body: dict[str, Any]
            if path == "/livez":
                status, body = 200, {"live": True}
            elif path == "/readyz":
                ok, detail = self._ready()
                status, body = (200 if ok else 503), {"ready": ok, **detail}
            else:
                status, body = 404, {"error": "try /livez or /readyz"}
            payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
