"""Running a long-lived coroutine as a process: signals set a stop event, exit codes mean things."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from bridge.errors import BridgeError, ConfigError

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """Run ``main(stop)``; SIGTERM/SIGINT set ``stop`` (a second one cancels outright)."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            if stop.is_set() and task is not None:
                log.warning("stop_forced", signal=signal.Signals(signum).name)
                task.cancel()
                return
            log.info("stop_requested", signal=signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await main(stop)

    try:
        asyncio.run(wrapper())
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return EXIT_CONFIG
    except BridgeError as exc:
        log.error("bridge_failed", error=str(exc), error_type=type(exc).__name__)
        return EXIT_FAILED
    except asyncio.CancelledError:
        return EXIT_FAILED
    return EXIT_OK
