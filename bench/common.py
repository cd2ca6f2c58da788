"""What every part of the benchmark shares: its error, bounded waits, names, the broker."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass

_STARTED = time.monotonic()

#: Where the repository is: contestant processes run from here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def say(message: str) -> None:
    """One line of progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A scenario could not be measured: a timeout, a crashed contestant, a wrong count."""


async def stop_within(closing: Awaitable[object], seconds: float, what: str) -> None:
    """Await a shutdown step, but never longer than ``seconds`` (it is then abandoned)."""
    try:
        await asyncio.wait_for(closing, seconds)
    except TimeoutError:
        say(f"{what} did not stop within {seconds:g} s; abandoned")


@dataclass(frozen=True, slots=True)
class Broker:
    bootstrap_servers: str
    #: Embedded Tansu has no idempotent producer, so the bridge must not ask for one.
    tansu: bool
    description: str


class Names:
    """Topic and group names no other run shares: ``bench.<parts>.<run token>``."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)

    def __call__(self, *parts: str | int) -> str:
        return ".".join(["bench", *(str(part) for part in parts), self.token])


def python_env() -> dict[str, str]:
    """The environment for a child Python process that imports ``bridge`` and ``bench``."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = ROOT if not path else f"{ROOT}{os.pathsep}{path}"
    return env
