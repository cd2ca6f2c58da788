"""``Emulator``: the engine and the HTTP server on a real socket, as one async context manager."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bridge.local.emulator.config import DEFAULT_ACCOUNT_ID, EmulatorConfig
from bridge.local.emulator.engine import Engine
from bridge.local.emulator.instance import InstanceView, TriggerSource
from bridge.local.emulator.queues import Queue
from bridge.local.emulator.server import API_ROOT, ApiServer
from bridge.local.emulator.stats import Stats
from bridge.local.emulator.subscriptions import EventHub

__all__ = ["DEFAULT_ACCOUNT_ID", "Emulator"]


class Emulator:
    """A local Workflows REST API; usable once::

        async with Emulator(EmulatorConfig(), port=0) as emu:
            client = httpx.AsyncClient(base_url=emu.base_url, headers=...)

    ``config`` and ``stats`` are live: change the first and read the second while it runs.
    Leaving the block closes the listening socket, cancels requests still being held (after
    ``shutdown_timeout`` seconds) and cancels every instance timer.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 0.5,
        limits_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``limits_clock`` times the request budget and the creation limits (tests pass a
        clock they advance themselves instead of sleeping)."""
        self._config = config if config is not None else EmulatorConfig()
        self._limits_clock = limits_clock
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._stats = Stats()
        self._stack: AsyncExitStack | None = None
        self._engine: Engine | None = None
        self._hub: EventHub | None = None
        self._used = False

    async def __aenter__(self) -> Self:
        if self._used:
            raise RuntimeError("an Emulator can only be started once; create a new one")
        self._used = True
        async with AsyncExitStack() as stack:
            hub = EventHub(self._config, time.time)
            engine = Engine(self._config, asyncio.get_running_loop(), observer=hub)
            stack.callback(engine.close)
            server = ApiServer(self._config, engine, hub, self._stats, clock=self._limits_clock)
            runner = web.AppRunner(
                server.app, access_log=None, shutdown_timeout=self._shutdown_timeout
            )
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._engine = engine
            self._hub = hub
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._engine, self._hub = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    # -- what clients need -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port/client/v4``, the equivalent of ``https://api.cloudflare.com/client/v4``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}{API_ROOT}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def account_id(self) -> str:
        """An account id the emulator accepts."""
        return self._config.account_id or DEFAULT_ACCOUNT_ID

    @property
    def token(self) -> str:
        return self._config.token

    @property
    def config(self) -> EmulatorConfig:
        """The live configuration; assignments to its fields take effect at once."""
        return self._config

    @property
    def stats(self) -> Stats:
        return self._stats

    # -- what tests assert on ----------------------------------------------------------------

    def instances(self, workflow: str) -> list[InstanceView]:
        """Every instance of ``workflow`` created and not deleted, oldest first."""
        flow = self._running().known_flow(workflow)
        return [] if flow is None else [inst.view() for inst in flow.order if not inst.deleted]

    def instance(self, workflow: str, instance_id: str) -> InstanceView | None:
        """One instance, or None if it does not exist."""
        flow = self._running().known_flow(workflow)
        found = None if flow is None else flow.instances.get(instance_id)
        return None if found is None else found.view()

    async def wait_for_status(
        self, workflow: str, instance_id: str, *statuses: str
    ) -> InstanceView:
        """Wait until the instance reports one of ``statuses``; bound it with ``asyncio.timeout``.

        The instance must exist already (``LookupError`` otherwise).
        """
        engine = self._running()
        flow = engine.known_flow(workflow)
        inst = None if flow is None else flow.instances.get(instance_id)
        if inst is None:
            raise LookupError(f"no instance {instance_id!r} of workflow {workflow!r}")
        await engine.wait_for(inst, statuses)
        return inst.view()

    def add_instance(
        self,
        workflow: str,
        instance_id: str,
        params: Any = None,
        *,
        trigger: TriggerSource = "cron",
    ) -> InstanceView:
        """Create an instance the way a cron trigger or a Worker binding would.

        No id rules apply (cron ids hold spaces, ``*`` and ``/``) and no limit is charged; the
        instance then runs like any other. ``LookupError`` if the id is taken.
        """
        engine = self._running()
        if self._config.behaviour_for(workflow) is None:
            raise LookupError(f"workflow {workflow!r} is not configured")
        flow = engine.flow(workflow)
        if instance_id in flow.instances:
            raise LookupError(f"instance {instance_id!r} of workflow {workflow!r} exists")
        [inst] = engine.create(flow, [(instance_id, params)], trigger)
        return inst.view()

    def queue(self, queue_id: str) -> Queue:
        """The emulated queue ``queue_id`` (``KeyError`` when it does not exist)."""
        if self._hub is None:
            raise RuntimeError("the emulator is not running")
        return self._hub.queues[queue_id]

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every event subscription, as the API renders it."""
        if self._hub is None:
            raise RuntimeError("the emulator is not running")
        return [s.render() for s in self._hub.subscriptions.values()]

    def _running(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the emulator is not running")
        return self._engine
