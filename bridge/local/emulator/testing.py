"""Helpers for tests that talk to a running ``Emulator`` over HTTP.

``api_client(emu)`` gives an ``httpx.AsyncClient`` rooted at the account's ``workflows/`` path
and carrying the bearer token (``account_client(emu)``: one rooted at the account itself);
``result_of`` and ``error_of`` unwrap the Cloudflare envelope and raise ``AssertionError`` with
the response text when it is not the expected kind::

    async with api_client(emu) as api:
        created = result_of(await api.post("orders/instances", json={"instance_id": "a"}))
        assert error_of(await api.get("orders/instances/b"))[:2] == (404, 10400)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from bridge.local.emulator.emulator import Emulator

#: The type of ``api_client``, for fixtures that hand it out.
ClientFactory = Callable[..., httpx.AsyncClient]


def api_client(
    emu: Emulator, *, token: str | None = None, timeout: float = 5.0
) -> httpx.AsyncClient:
    """A client for ``emu`` sending ``token`` (default: the emulator's own)."""
    return httpx.AsyncClient(
        base_url=f"{emu.base_url}/accounts/{emu.account_id}/workflows/",
        headers={"Authorization": f"Bearer {emu.token if token is None else token}"},
        timeout=timeout,
    )


def account_client(
    emu: Emulator, *, token: str | None = None, timeout: float = 5.0
) -> httpx.AsyncClient:
    """A client rooted at the account (``queues/…``, ``event_subscriptions/…``)."""
    return httpx.AsyncClient(
        base_url=f"{emu.base_url}/accounts/{emu.account_id}/",
        headers={"Authorization": f"Bearer {emu.token if token is None else token}"},
        timeout=timeout,
    )


def result_of(response: httpx.Response) -> Any:
    """The ``result`` of a 200 success envelope."""
    body = _envelope(response)
    if response.status_code != 200 or body["success"] is not True or body["errors"]:
        raise AssertionError(f"expected success, got {response.status_code}: {response.text}")
    return body["result"]


def error_of(response: httpx.Response) -> tuple[int, int, str]:
    """``(HTTP status, errors[0].code, errors[0].message)`` of an error envelope."""
    body = _envelope(response)
    errors = body["errors"]
    if body["success"] is not False or body["result"] is not None or len(errors) != 1:
        raise AssertionError(f"expected one error, got {response.status_code}: {response.text}")
    return response.status_code, errors[0]["code"], errors[0]["message"]


def _envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict) or set(body) - {"result_info"} != {
        "success",
        "errors",
        "messages",
        "result",
    }:
        raise AssertionError(f"not a Cloudflare envelope: {response.text}")
    if body["messages"] != [] or not response.headers.get("cf-ray", "").endswith("-EMU"):
        raise AssertionError(f"unexpected messages or cf-ray: {response.headers} {response.text}")
    return body
