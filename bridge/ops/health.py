"""The operations endpoint for orchestrators and Prometheus: ``/livez``, ``/readyz``, ``/metrics``.

``/readyz`` answers 503 while the bridge cannot do its work: before it has partitions assigned
and the API token verified, and while the API refuses its token (then the body says so).
``/metrics`` is the Prometheus text format of :mod:`bridge.ops.metrics`. Served by
``aiohttp.web`` on ``BRIDGE_HEALTH_PORT``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bridge.errors import ConfigError

Check = Callable[[], tuple[bool, dict[str, Any]]]
Exposition = Callable[[], bytes]

#: Prometheus' text exposition format.
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthServer:
    """Serve ``/livez``, ``/readyz`` and (given ``metrics``) ``/metrics`` while open."""

    def __init__(
        self,
        ready: Check,
        *,
        host: str = "0.0.0.0",
        port: int = 8080,
        metrics: Exposition | None = None,
    ) -> None:
        self._ready = ready
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        assert self._runner is not None
        address = self._runner.addresses[0]
        port: int = address[1]
        return port

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._expose)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=False)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or str(exc)
            raise ConfigError(
                f"BRIDGE_HEALTH_PORT: cannot listen on {self._host}:{self._port}: {reason}"
            ) from None
        self._runner = runner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _livez(self, _: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, detail = self._ready()
        return web.json_response({"ready": ok, **detail}, status=200 if ok else 503)

    async def _expose(self, _: web.Request) -> web.Response:
        assert self._metrics is not None
        return web.Response(body=self._metrics(), headers={"Content-Type": _METRICS_TYPE})
