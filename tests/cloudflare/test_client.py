"""The API client against the emulator over real HTTP: every endpoint and every error class."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import trustme
from aiohttp import web

from bridge.cloudflare.bodies import create_body
from bridge.cloudflare.client import WorkflowsClient
from bridge.errors import (
    AlreadyExists,
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
    RateLimitInfo,
    Rejected,
    ServerError,
    TransportError,
)
from bridge.local.emulator import Emulator, EmulatorConfig, WorkflowBehaviour
from bridge.local.emulator.config import DoStep, Faults, RequestBudget, WaitForEventStep


def _waiting() -> WorkflowBehaviour:
    return WorkflowBehaviour(
        steps=(DoStep(name="a", duration_ms=5), WaitForEventStep(name="w", event_type="go"))
    )


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(workflows={"wf": _waiting()})) as emu:
        yield emu


@pytest_asyncio.fixture
async def client(emulator: Emulator) -> AsyncIterator[WorkflowsClient]:
    async with WorkflowsClient(
        account_id="acct", api_token=emulator.config.token, base_url=emulator.base_url
    ) as c:
        yield c


async def test_create_get_edit_event_and_list(client: WorkflowsClient, emulator: Emulator) -> None:
    created = await client.create("wf", instance_id="one", params={"a": 1})
    assert created.result.id == "one"
    assert created.result.status == "queued"
    assert created.cf_ray
    got = await client.get("wf", "one", simple=False)
    assert got.result.params == {"a": 1}
    assert got.result.version_id
    async with asyncio.timeout(10):
        await emulator.wait_for_status("wf", "one", "waiting")
    paused = await client.edit_status("wf", "one", "pause")
    assert paused.result.status in ("paused", "waitingForPause")
    resumed = await client.edit_status("wf", "one", "resume")
    assert resumed.result.status in ("running", "waiting", "queued")
    sent = await client.send_event("wf", "one", "go", {"ok": True})
    assert sent.result.instance_id == "one"
    async with asyncio.timeout(10):
        await emulator.wait_for_status("wf", "one", "complete")
    restarted = await client.edit_status("wf", "one", "restart")
    assert restarted.result.status in ("queued", "running")
    terminated = await client.edit_status("wf", "one", "terminate", rollback=False)
    assert terminated.result.status == "terminated"
    batch = await client.create_batch("wf", [create_body(f"b-{n}", {"n": n}) for n in range(5)])
    assert sorted(i.id for i in batch.result) == [f"b-{n}" for n in range(5)]
    listed = [item.id async for item in client.list_instances("wf", per_page=2)]
    assert sorted(listed) == sorted(["one", *(f"b-{n}" for n in range(5))])


async def test_batch_leaves_out_existing_ids(client: WorkflowsClient) -> None:
    await client.create("wf", instance_id="taken")
    batch = await client.create_batch("wf", [create_body("taken"), create_body("fresh")])
    assert [i.id for i in batch.result] == ["fresh"]


async def test_error_classes(client: WorkflowsClient, emulator: Emulator) -> None:
    await client.create("wf", instance_id="dup")
    with pytest.raises(AlreadyExists) as dup:
        await client.create("wf", instance_id="dup")
    assert dup.value.http_status in (400, 409)
    assert dup.value.cf_ray
    with pytest.raises(NotFound) as missing:
        await client.get("wf", "nope")
    assert missing.value.code == 10400
    with pytest.raises(Rejected) as invalid:
        await client.create("wf", instance_id="bad id!")
    assert invalid.value.http_status == 400
    assert not invalid.value.retriable
    await client.edit_status("wf", "dup", "terminate")
    with pytest.raises(Conflict):
        await client.edit_status("wf", "dup", "terminate")
    emulator.config.revoked = True
    with pytest.raises(AuthError) as refused:
        await client.get("wf", "dup")
    assert refused.value.http_status == 403
    emulator.config.revoked = False


async def test_wrong_token_is_an_auth_error_and_never_echoes_the_token(emulator: Emulator) -> None:
    secret = "not-the-token-0123456789"
    async with WorkflowsClient(
        account_id="acct", api_token=secret, base_url=emulator.base_url
    ) as c:
        with pytest.raises(AuthError) as caught:
            await c.get("wf", "x")
    assert caught.value.http_status == 401
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)


async def test_faults_map_to_retriable_errors(emulator: Emulator, client: WorkflowsClient) -> None:
    emulator.config.faults = Faults(error_ratio=1.0)
    with pytest.raises(ServerError) as server:
        await client.get("wf", "x")
    assert server.value.retriable
    assert server.value.http_status == 500
    emulator.config.faults = Faults(soft_error_ratio=1.0)
    with pytest.raises(ServerError, match="success=false"):
        await client.get("wf", "x")
    emulator.config.faults = Faults(drop_ratio=1.0)
    with pytest.raises(TransportError) as dropped:
        await client.get("wf", "x")
    assert dropped.value.retriable
    emulator.config.faults = Faults()


async def test_timeouts_are_transport_errors(emulator: Emulator) -> None:
    emulator.config.faults = Faults(timeout_ratio=1.0, timeout_seconds=2.0)
    async with WorkflowsClient(
        account_id="acct",
        api_token=emulator.config.token,
        base_url=emulator.base_url,
        timeout=httpx.Timeout(0.3),
    ) as c:
        with pytest.raises(TransportError, match="Timeout"):
            await c.get("wf", "x")
    emulator.config.faults = Faults()


async def test_rate_limit_headers_and_429(emulator: Emulator) -> None:
    emulator.config.budget = RequestBudget(requests=3, window_seconds=5, block_seconds=5)
    seen: list[tuple[int, RateLimitInfo | None, float | None]] = []
    async with WorkflowsClient(
        account_id="acct",
        api_token=emulator.config.token,
        base_url=emulator.base_url,
        on_response=lambda *args: seen.append(args),
    ) as c:
        first = await c.create("wf", instance_id="r1")
        assert first.ratelimit is not None
        assert first.ratelimit.remaining == 2
        assert first.ratelimit.quota == 3
        await c.get("wf", "r1")
        await c.get("wf", "r1")
        with pytest.raises(RateLimited) as limited:
            await c.get("wf", "r1")
    assert limited.value.retry_after is not None
    assert limited.value.retry_after > 0
    assert [status for status, *_ in seen] == [200, 200, 200, 429]


async def test_path_segments_are_percent_encoded(
    emulator: Emulator, client: WorkflowsClient
) -> None:
    cron_id = "*/30 * * * *-2026-11-29"
    emulator.add_instance("wf", cron_id)
    got = await client.get("wf", cron_id)
    assert got.result.status


async def test_unexpected_bodies_are_server_errors() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/html"):
            return httpx.Response(502, text="<html>bad gateway</html>")
        if request.url.path.endswith("/shape"):
            return httpx.Response(
                200, json={"success": True, "errors": [], "messages": [], "result": {"no": 1}}
            )
        return httpx.Response(200, content=b"not json")

    async with WorkflowsClient(
        account_id="acct",
        api_token="t",
        base_url="http://api.test",
        transport=httpx.MockTransport(answer),
    ) as c:
        with pytest.raises(ServerError, match="HTTP 502"):
            await c.get("wf", "html")
        with pytest.raises(ServerError, match="unexpected result shape"):
            await c.get("wf", "shape")
        with pytest.raises(ServerError, match="envelope"):
            await c.get("wf", "plain")


async def test_requests_carry_bearer_and_json(emulator: Emulator) -> None:
    captured: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(
            200,
            json={
                "success": True,
                "errors": [],
                "messages": [],
                "result": {"instanceId": "i", "timestamp": None},
            },
        )

    async with WorkflowsClient(
        account_id="a/b",
        api_token="tok",
        base_url="http://api.test/client/v4",
        transport=httpx.MockTransport(answer),
    ) as c:
        await c.send_event("wf", "i d", "go", [1, 2])
    request = captured[0]
    assert request.headers["authorization"] == "Bearer tok"
    assert (
        request.url.raw_path == b"/client/v4/accounts/a%2Fb/workflows/wf/instances/i%20d/events/go"
    )
    assert json.loads(request.content) == [1, 2]


async def test_bulk_calls_check_their_size_before_spending_a_request(
    client: WorkflowsClient, emulator: Emulator
) -> None:
    for call in (client.delete_batch, client.terminate_batch):
        with pytest.raises(ValueError, match="1 to 100"):
            await call("wf", [])
        with pytest.raises(ValueError, match="1 to 100"):
            await call("wf", [f"i{n}" for n in range(101)])
        with pytest.raises(ValueError, match="1 to 100"):
            await call("wf", "one-string-is-not-a-list")
    with pytest.raises(ValueError, match="per_page"):
        await client.list_page("wf", per_page=101)
    assert emulator.stats.requests.total() == 0


async def test_not_emulated_is_rejected_not_retried(client: WorkflowsClient) -> None:
    await client.create("wf", instance_id="rb")
    with pytest.raises(Rejected) as refused:
        await client.edit_status("wf", "rb", "terminate", rollback=True)
    assert refused.value.http_status == 501
    assert not refused.value.retriable
    assert "not emulated" in str(refused.value)


async def test_delete_then_create_again_and_missing_ids(
    client: WorkflowsClient, emulator: Emulator
) -> None:
    await client.create("wf", instance_id="again", params={"round": 1})
    assert (await client.delete("wf", "again")).result.instance_id == "again"
    with pytest.raises(NotFound) as missing:
        await client.delete("wf", "again")
    assert missing.value.code == 10400
    await client.create("wf", instance_id="again", params={"round": 2})
    assert (await client.get("wf", "again", simple=False)).result.params == {"round": 2}
    with pytest.raises(NotFound) as no_workflow:
        await client.delete_batch("undeployed", ["again"])
    assert no_workflow.value.code == 10200


def test_date_filters_are_utc_with_a_z() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from bridge.cloudflare.client import _date

    assert _date(datetime(2026, 1, 2, 3, 4, 5, 678000)) == "2026-01-02T03:04:05.678Z"
    east = timezone(timedelta(hours=2))
    assert _date(datetime(2026, 1, 2, 5, 4, 5, tzinfo=east)) == "2026-01-02T03:04:05.000Z"
    assert _date(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000Z"
    assert _date("2026-01-02") == "2026-01-02"


def test_endpoint_names_carry_no_workflow_or_instance() -> None:
    from bridge.cloudflare.client import endpoint_name

    base = "/accounts/a/workflows/orders/instances"
    cases = {
        ("GET", ""): "list",
        ("POST", ""): "create",
        ("POST", "/batch"): "create_batch",
        ("POST", "/batch/delete"): "batch_delete",
        ("POST", "/batch/terminate"): "batch_terminate",
        ("PUT", "/terminate"): "terminate_all",
        ("GET", "/terminate"): "terminate_all_status",
        ("GET", "/order-42"): "get",
        ("DELETE", "/order-42"): "delete",
        ("GET", "/order-42/step"): "get_step",
        ("PATCH", "/order-42/status"): "edit_status",
        ("POST", "/order-42/events/approval"): "send_event",
    }
    for (method, tail), name in cases.items():
        assert endpoint_name(method, base + tail) == name, (method, tail)
    account = "/accounts/a"
    assert endpoint_name("POST", f"{account}/queues/q-1/messages/pull") == "queue_pull"
    assert endpoint_name("POST", f"{account}/queues/q-1/messages/ack") == "queue_ack"
    subscriptions = f"{account}/event_subscriptions/subscriptions"
    assert endpoint_name("GET", subscriptions) == "list_subscriptions"
    assert endpoint_name("POST", subscriptions) == "create_subscription"


async def test_tls_certificates_are_verified() -> None:
    """A server whose certificate no trusted authority signed is refused, not talked to."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)

    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "errors": [], "messages": [], "result": []})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        base_url = f"https://127.0.0.1:{port}/client/v4"
        trusting = ssl.create_default_context()
        authority.configure_trust(trusting)
        async with httpx.AsyncClient(verify=trusting) as direct:  # the server itself works
            assert (await direct.get(base_url + "/x")).status_code == 200
        async with WorkflowsClient(account_id="a", api_token="t", base_url=base_url) as client:
            with pytest.raises(TransportError, match=r"(?i)certificate"):
                await client.list_page("wf")
    finally:
        await runner.cleanup()
