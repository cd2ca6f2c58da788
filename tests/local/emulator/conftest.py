"""Fixtures of the emulator tests: a running emulator and an httpx client aimed at it.

``api`` has ``base_url`` ``…/accounts/<account>/workflows/``, so tests write
``await api.post("orders/instances", json=...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.local.emulator import Emulator, EmulatorConfig
from bridge.local.emulator.testing import ClientFactory, api_client


@pytest.fixture
def client_for() -> ClientFactory:
    """``client_for(emu, token=..., timeout=...)`` for tests that run their own emulator."""
    return api_client


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=1)) as running:
        yield running


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(emu) as client:
        yield client
