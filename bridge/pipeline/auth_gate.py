"""The auth gate: while the API refuses the token (401/403) no job may spend a request.

One refused call closes the gate; every job then waits at it, consumption pauses, ``/readyz``
says why, and a single probe per interval checks whether the token works again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bridge.errors import ApiError, AuthError, TransportError

log = structlog.get_logger(__name__)


class AuthGate:
    """Closed while the API refuses the token; every job waits at it until a probe succeeds."""

    def __init__(self, probe: Callable[[], Awaitable[object]], *, interval: float) -> None:
        self._probe = probe
        self._interval = interval
        self._open = asyncio.Event()
        self._open.set()
        self._prober: asyncio.Task[None] | None = None
        self.last_error: AuthError | None = None
        #: Whether a request has shown the token works (the probe at start, or a later one).
        self.verified = False

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def verify(self) -> None:
        """One request at start: a refused token parks the replica before its first command;
        an API that does not answer leaves it unverified and probing."""
        try:
            await self._probe()
        except AuthError as exc:
            self.close(exc)
            return
        except TransportError as exc:
            log.warning("auth_unverified", error=str(exc), next_probe_in=self._interval)
            self._prober = asyncio.create_task(self._probe_until_open(), name="auth-probe")
            return
        except ApiError:
            pass  # any answer but 401/403 (a 404 for the probe's workflow) shows the token works
        self.verified = True
        log.info("auth_verified")

    async def wait(self) -> None:
        await self._open.wait()

    def close(self, error: AuthError) -> None:
        self.last_error = error
        if not self._open.is_set():
            return
        self._open.clear()
        log.error("auth_parked", error=str(error))
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe_until_open(), name="auth-probe")

    async def _probe_until_open(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._probe()
            except AuthError as exc:
                self.last_error = exc
                log.warning("auth_probe_refused", error=str(exc), next_probe_in=self._interval)
                continue
            except TransportError as exc:
                log.warning("auth_probe_unanswered", error=str(exc), next_probe_in=self._interval)
                continue
            except ApiError as exc:
                log.info("auth_probe_answered", error=str(exc))
            self.last_error = None
            self.verified = True
            self._open.set()
            log.info("auth_restored")
            return

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
