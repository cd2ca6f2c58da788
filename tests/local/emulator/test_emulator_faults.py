"""Fault injection and authentication: what a client must survive."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import ValidationError

from bridge.local.emulator import Emulator, EmulatorConfig, Faults
from bridge.local.emulator.testing import ClientFactory, error_of, result_of


async def test_error_fault_answers_500_without_applying(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    emu.config.faults.error_ratio = 1.0
    response = await api.post("orders/instances", json={"instance_id": "e"})
    assert error_of(response) == (500, 10001, "workflows.api.error.internal_server")
    assert "cf-ray" in response.headers
    assert emu.instance("orders", "e") is None
    assert emu.stats.faults == {"error": 1}


async def test_soft_error_is_a_200_with_success_false(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    emu.config.faults.soft_error_ratio = 1.0
    response = await api.post("orders/instances", json={"instance_id": "s"})
    assert error_of(response) == (200, 10001, "workflows.api.error.internal_server")
    assert emu.instance("orders", "s") is None


async def test_drop_closes_the_connection_without_applying(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    emu.config.faults.drop_ratio = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        await api.post("orders/instances", json={"instance_id": "d"})
    assert emu.instance("orders", "d") is None
    emu.config.faults.drop_ratio = 0.0
    result_of(await api.get("orders/instances"))  # the client recovers on a new connection
    assert emu.stats.faults == {"drop": 1}
    assert emu.stats.responses == {200: 1}


async def test_timeout_holds_the_request_and_applies_only_if_the_client_waits(
    emu: Emulator, client_for: ClientFactory
) -> None:
    emu.config.faults.timeout_ratio = 1.0
    emu.config.faults.timeout_seconds = 0.5
    async with client_for(emu, timeout=0.15) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("orders/instances", json={"instance_id": "gone"})
    async with client_for(emu, timeout=3) as patient:
        started = time.monotonic()
        result_of(await patient.post("orders/instances", json={"instance_id": "kept"}))
        assert time.monotonic() - started >= 0.5
    assert emu.instance("orders", "gone") is None  # its hold ended long ago
    assert emu.instance("orders", "kept") is not None


async def test_apply_then_error_creates_and_the_retry_sees_a_duplicate(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    emu.config.faults.apply_then_error_ratio = 1.0
    first = await api.post("orders/instances", json={"instance_id": "a"})
    assert error_of(first)[0] == 500
    assert emu.instance("orders", "a") is not None
    emu.config.faults.apply_then_error_ratio = 0.0
    retry = await api.post("orders/instances", json={"instance_id": "a"})
    assert error_of(retry)[:2] == (409, 10405)
    assert emu.stats.created["orders"] == 1


async def test_apply_then_drop_applies_batches_and_status_edits(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    result_of(await api.post("orders/instances", json={"instance_id": "p"}))
    emu.config.faults.apply_then_drop_ratio = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        await api.post("orders/instances/batch", json=[{"instance_id": "b1"}])
    with pytest.raises(httpx.RemoteProtocolError):
        await api.patch("orders/instances/p/status", json={"status": "terminate"})
    assert emu.instance("orders", "b1") is not None
    assert emu.instance("orders", "p").status == "terminated"  # type: ignore[union-attr]
    result_of(await api.get("orders/instances/p"))  # reads are never "applied then" spoiled
    assert emu.stats.faults == {"apply_then_drop": 2}


async def test_faults_can_be_limited_to_routes(emu: Emulator, api: httpx.AsyncClient) -> None:
    emu.config.faults = Faults(error_ratio=1.0, routes=frozenset({"create"}))
    result_of(await api.get("orders/instances"))
    assert error_of(await api.post("orders/instances", json={}))[0] == 500


async def test_fault_draws_are_seeded(client_for: ClientFactory) -> None:
    async def statuses(seed: int) -> list[int]:
        config = EmulatorConfig(seed=seed, faults=Faults(error_ratio=0.5))
        async with Emulator(config) as emu, client_for(emu) as api:
            return [(await api.get("orders/instances")).status_code for _ in range(30)]

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again
    assert first != other
    assert 5 < first.count(500) < 25


def test_fault_ratios_cannot_exceed_one() -> None:
    faults = Faults(error_ratio=0.6)
    with pytest.raises(ValidationError):
        faults.drop_ratio = 0.5
    with pytest.raises(ValidationError):
        Faults(error_ratio=1.5)


async def test_ratio_changes_take_effect_mid_run(emu: Emulator, api: httpx.AsyncClient) -> None:
    emu.config.faults.error_ratio = 0.5
    results = await asyncio.gather(*(api.get("orders/instances") for _ in range(40)))
    codes = {response.status_code for response in results}
    assert codes == {200, 500}
    emu.config.faults.error_ratio = 0.0
    assert all(
        r.status_code == 200
        for r in await asyncio.gather(*(api.get("orders/instances") for _ in range(10)))
    )


async def test_authentication_and_the_revoke_switch(
    emu: Emulator, client_for: ClientFactory
) -> None:
    async with client_for(emu, token="wrong") as wrong, client_for(emu) as right:
        assert error_of(await wrong.get("orders/instances")) == (401, 10000, "Authentication error")
        wrong.headers.pop("Authorization")
        assert error_of(await wrong.get("orders/instances"))[:2] == (401, 10000)
        emu.config.revoked = True
        assert error_of(await right.get("orders/instances")) == (403, 10000, "Authentication error")
        assert error_of(await right.post("orders/instances", json={}))[0] == 403
        emu.config.revoked = False
        result_of(await right.get("orders/instances"))
    assert emu.instances("orders") == []
    assert emu.stats.responses == {401: 2, 403: 2, 200: 1}


async def test_a_configured_account_refuses_others() -> None:
    async with (
        Emulator(EmulatorConfig(account_id="acct-1")) as emu,
        httpx.AsyncClient(
            base_url=f"{emu.base_url}/accounts/",
            headers={"Authorization": f"Bearer {emu.token}"},
        ) as api,
    ):
        assert emu.account_id == "acct-1"
        result_of(await api.get("acct-1/workflows/orders/instances"))
        assert error_of(await api.get("acct-2/workflows/orders/instances"))[:2] == (403, 9109)


async def test_leaving_the_block_ends_held_requests_and_refuses_reuse(
    client_for: ClientFactory,
) -> None:
    emulator = Emulator(EmulatorConfig(faults=Faults(timeout_ratio=1.0, timeout_seconds=30)))
    async with emulator as emu:
        api = client_for(emu, timeout=10)
        held = asyncio.create_task(api.get("orders/instances"))
        await asyncio.sleep(0.1)
        closing_at = time.monotonic()
    assert time.monotonic() - closing_at < 15  # the 0.5 s shutdown timeout, not the 30 s hold
    try:
        with pytest.raises(httpx.TransportError):
            await held
    finally:
        await api.aclose()
    with pytest.raises(RuntimeError):
        emu.instances("orders")
    with pytest.raises(RuntimeError):
        async with emulator:
            pass
