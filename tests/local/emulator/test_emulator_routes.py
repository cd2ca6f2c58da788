"""Every route of the emulated REST surface: happy paths, the envelope and input errors."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

import httpx
import pytest

from bridge.local.emulator import (
    DoStep,
    Emulator,
    EmulatorConfig,
    SleepStep,
    WaitForEventStep,
    WorkflowBehaviour,
)
from bridge.local.emulator.testing import ClientFactory, error_of, result_of

UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RAY_RE = re.compile(r"^[0-9a-f]{16}-EMU$")
INVALID_ID = "Provided Workflow ID is not valid."


async def test_create_answers_queued_and_the_instance_completes(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    response = await api.post(
        "orders/instances",
        json={
            "instance_id": "order-1",
            "params": {"sku": "A", "qty": 2},
            "instance_retention": {"success_retention": "1 day", "error_retention": 86400000},
            "location_hint": "weur",
            "some_future_field": True,
        },
    )
    assert RAY_RE.match(response.headers["cf-ray"])
    result = result_of(response)
    assert result["id"] == "order-1"
    assert result["status"] == "queued"
    assert result["trigger_source"] == "api"
    assert UUID_RE.match(result["workflow_id"])
    assert UUID_RE.match(result["version_id"])
    assert result["version_id"] != result["workflow_id"]

    async with asyncio.timeout(3):
        view = await emu.wait_for_status("orders", "order-1", "complete")
    assert view.output == {"params": {"sku": "A", "qty": 2}}
    got = result_of(await api.get("orders/instances/order-1"))
    assert got["status"] == "complete"
    assert got["output"] == {"params": {"sku": "A", "qty": 2}}
    assert got["success"] is True
    assert got["versionId"] == result["version_id"]
    assert [step["name"] for step in got["steps"]] == ["prepare-1", "nap-1", "finish-1"]


async def test_create_without_an_id_generates_a_uuid(emu: Emulator, api: httpx.AsyncClient) -> None:
    first = result_of(await api.post("orders/instances", json={"params": {"n": 1}}))
    second = result_of(await api.post("orders/instances"))
    assert UUID4_RE.match(first["id"]), first["id"]
    assert UUID4_RE.match(second["id"])
    assert second["id"] != first["id"]
    assert {view.id for view in emu.instances("orders")} == {first["id"], second["id"]}
    assert emu.instance("orders", second["id"]) is not None


async def test_create_with_a_taken_id_fails_even_after_completion(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    result_of(await api.post("orders/instances", json={"instance_id": "dup", "params": {"v": 1}}))
    status, code, message = error_of(
        await api.post("orders/instances", json={"instance_id": "dup", "params": {"v": 2}})
    )
    assert (status, code, message) == (409, 10405, "workflows.api.error.instance.already_exists")

    async with asyncio.timeout(3):
        await emu.wait_for_status("orders", "dup", "complete")
    assert error_of(await api.post("orders/instances", json={"instance_id": "dup"}))[0] == 409
    view = emu.instance("orders", "dup")
    assert view is not None
    assert view.params == {"v": 1}
    assert view.duplicate_attempts == 2
    assert emu.stats.duplicates_rejected["orders"] == 2
    assert emu.stats.created["orders"] == 1
    assert len(emu.instances("orders")) == 1


async def test_duplicate_status_is_configurable(emu: Emulator, api: httpx.AsyncClient) -> None:
    emu.config.duplicate_status = 400
    result_of(await api.post("orders/instances", json={"instance_id": "x"}))
    status, code, _ = error_of(await api.post("orders/instances", json={"instance_id": "x"}))
    assert (status, code) == (400, 10405)


@pytest.mark.parametrize(
    "bad_id",
    ["bad id", "-lead", "x" * 101, "cf_" + "a" * 64, "batch", "terminate", "", 42, ["a"]],
)
async def test_create_refuses_invalid_ids(
    emu: Emulator, api: httpx.AsyncClient, bad_id: object
) -> None:
    response = await api.post("orders/instances", json={"instance_id": bad_id})
    assert error_of(response) == (400, 10002, INVALID_ID)
    assert emu.instances("orders") == []


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        (b"{not json", "Malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"location_hint": "mars"}', "location_hint"),
        (b'{"instance_retention": {"success_retention": "3 fortnights"}}', "success_retention"),
        (b'{"instance_retention": "forever"}', "instance_retention"),
    ],
)
async def test_create_refuses_bad_bodies(
    emu: Emulator, api: httpx.AsyncClient, body: bytes, message_part: str
) -> None:
    status, _, message = error_of(await api.post("orders/instances", content=body))
    assert status == 400
    assert message_part in message
    assert emu.instances("orders") == []


async def test_create_refuses_params_over_one_mebibyte(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    big = {"blob": "x" * (1024 * 1024)}
    response = await api.post("orders/instances", json={"instance_id": "big", "params": big})
    status, _, message = error_of(response)
    assert status == 400
    assert "params" in message
    assert emu.instance("orders", "big") is None


async def test_batch_skips_existing_and_repeated_ids(emu: Emulator, api: httpx.AsyncClient) -> None:
    result_of(
        await api.post("orders/instances", json={"instance_id": "old", "params": {"v": "old"}})
    )
    body = [
        {"instance_id": "old", "params": {"v": "new"}},
        {"instance_id": "a", "params": {"v": 1}},
        {"instance_id": "b"},
        {"instance_id": "a", "params": {"v": 2}},
        {"params": {"v": "generated"}},
    ]
    result = result_of(await api.post("orders/instances/batch", json=body))
    ids = [item["id"] for item in result]
    assert ids[:2] == ["a", "b"]
    assert len(ids) == 3
    assert UUID4_RE.match(ids[2])
    assert all(item["status"] == "queued" and item["version_id"] for item in result)
    assert emu.instance("orders", "a") is not None
    assert emu.instance("orders", "a").params == {"v": 1}  # type: ignore[union-attr]
    assert emu.instance("orders", "old").params == {"v": "old"}  # type: ignore[union-attr]
    assert len(emu.instances("orders")) == 4
    assert emu.stats.batch_skipped["orders"] == 2
    assert emu.stats.created["orders"] == 4


async def test_batch_with_one_invalid_item_creates_nothing(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    body = [{"instance_id": "fine"}, {"instance_id": "not fine"}]
    response = await api.post("orders/instances/batch", json=body)
    assert error_of(response) == (400, 10002, INVALID_ID)
    assert emu.instances("orders") == []


@pytest.mark.parametrize("body", [[], [{"instance_id": f"i{n}"} for n in range(101)], {"a": 1}])
async def test_batch_size_must_be_1_to_100(
    emu: Emulator, api: httpx.AsyncClient, body: object
) -> None:
    status, code, _ = error_of(await api.post("orders/instances/batch", json=body))
    assert (status, code) == (400, 10002)
    assert emu.instances("orders") == []


async def test_batch_of_exactly_100_is_accepted(emu: Emulator, api: httpx.AsyncClient) -> None:
    body = [{"instance_id": f"i{n}"} for n in range(100)]
    assert len(result_of(await api.post("orders/instances/batch", json=body))) == 100
    assert len(emu.instances("orders")) == 100


async def test_get_shapes_steps_simple_and_order(client_for: ClientFactory) -> None:
    behaviour = WorkflowBehaviour(
        steps=(
            DoStep(name="work", duration_ms=1, output={"done": 1}),
            SleepStep(name="rest", duration_ms=1),
            WaitForEventStep(name="approval", event_type="approve"),
        )
    )
    async with (
        Emulator(EmulatorConfig(workflows={"flow": behaviour})) as emu,
        client_for(emu) as api,
    ):
        result_of(await api.post("flow/instances", json={"instance_id": "g", "params": [1, 2]}))
        result_of(await api.post("flow/instances/g/events/approve", json={"ok": True}))
        async with asyncio.timeout(3):
            await emu.wait_for_status("flow", "g", "complete")

        full = result_of(await api.get("flow/instances/g"))
        assert full["params"] == [1, 2]
        assert full["error"] is None
        assert full["trigger"] == {"source": "api"}
        assert full["rollback"] is None
        assert full["schedule"] is None
        for key in ("queued", "start", "end"):
            assert ISO_RE.match(full[key]), full[key]
        assert full["step_count"] == 3
        do, sleep, wait = full["steps"]
        assert do["type"] == "step"
        assert do["success"] is True
        assert do["output"] == {"done": 1}
        assert do["attempts"][0]["success"] is True
        assert do["config"]["retries"]["limit"] == 5
        assert sleep == {
            "type": "sleep",
            "name": "rest-1",
            "start": sleep["start"],
            "end": sleep["end"],
            "finished": True,
            "error": None,
        }
        assert wait["type"] == "waitForEvent"
        assert wait["event_type"] == "approve"
        assert wait["finished"] is True
        assert wait["output"]["type"] == "approve"
        assert wait["output"]["payload"] == {"ok": True}
        assert ISO_RE.match(wait["output"]["timestamp"])

        simple = result_of(await api.get("flow/instances/g", params={"simple": "true"}))
        assert "steps" not in simple
        assert simple["step_count"] == 3
        newest_first = result_of(await api.get("flow/instances/g", params={"order": "desc"}))
        assert [s["name"] for s in newest_first["steps"]] == ["approval-1", "rest-1", "work-1"]
        bad = await api.get("flow/instances/g", params={"order": "sideways"})
        assert error_of(bad)[0] == 400


async def test_unknown_instance_is_404(api: httpx.AsyncClient) -> None:
    expected = (404, 10400, "workflows.api.error.instance.not_found")
    assert error_of(await api.get("orders/instances/missing")) == expected
    assert error_of(await api.get("orders/instances/not%20valid")) == expected
    pause = await api.patch("orders/instances/missing/status", json={"status": "pause"})
    assert error_of(pause) == expected
    event = await api.post("orders/instances/missing/events/go", json={})
    assert error_of(event) == expected


async def test_unknown_workflow_is_404_when_names_are_restricted(
    client_for: ClientFactory,
) -> None:
    config = EmulatorConfig(workflows={"known": WorkflowBehaviour()})
    async with Emulator(config) as emu, client_for(emu) as api:
        expected = (404, 10200, "workflows.api.error.workflow.not_found")
        assert error_of(await api.get("unknown/instances")) == expected
        assert error_of(await api.post("unknown/instances", json={})) == expected
        assert error_of(await api.post("unknown/instances/batch", json=[{}])) == expected
        assert error_of(await api.get("unknown/instances/x")) == expected
        assert result_of(await api.get("known/instances")) == []
        assert emu.instances("unknown") == []


async def test_invalid_workflow_name_is_400(api: httpx.AsyncClient) -> None:
    assert error_of(await api.get("bad%20name/instances"))[:2] == (400, 10002)


async def test_list_follows_the_cursor_over_every_instance_once(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    ids = [f"item-{n:02d}" for n in range(25)]
    result_of(await api.post("orders/instances/batch", json=[{"instance_id": i} for i in ids]))
    late = 0
    for direction, expected in (("desc", ids[::-1]), ("asc", ids)):
        seen: list[str] = []
        params: dict[str, str | int] = {"per_page": 10, "direction": direction}
        pages = 0
        while True:
            response = await api.get("orders/instances", params=params)
            body = response.json()
            assert body["success"] is True
            info = body["result_info"]
            assert info["total_count"] == 25 + late
            assert info["per_page"] == 10
            assert info["count"] == len(body["result"])
            seen += [item["id"] for item in body["result"]]
            pages += 1
            if "cursor" not in info:
                break
            params = {"per_page": 10, "cursor": info["cursor"]}
            if pages == 2:  # instances created meanwhile do not disturb the walk
                result_of(
                    await api.post("orders/instances", json={"instance_id": f"late-{direction}"})
                )
                late += 1
        assert pages == 3
        if direction == "desc":
            assert seen == expected
        else:
            assert seen == [*expected, "late-desc", "late-asc"]  # asc reaches new instances
    item = result_of(await api.get("orders/instances", params={"per_page": 1}))[0]
    assert set(item) == {
        "id",
        "created_on",
        "modified_on",
        "started_on",
        "ended_on",
        "status",
        "version_id",
        "workflow_id",
        "trigger_source",
    }
    assert ISO_RE.match(item["created_on"])
    assert item["trigger_source"] == "api"
    # Lists are counted by the page size asked for: 3 + 3 pages of 10, then one of 1.
    assert emu.stats.list_page_sizes == {10: 6, 1: 1}


async def test_list_filters_pages_and_rejects_bad_queries(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    result_of(
        await api.post("orders/instances/batch", json=[{"instance_id": f"s{n}"} for n in range(5)])
    )
    result_of(await api.patch("orders/instances/s3/status", json={"status": "terminate"}))
    terminated = result_of(await api.get("orders/instances", params={"status": "terminated"}))
    assert [item["id"] for item in terminated] == ["s3"]

    page2 = await api.get("orders/instances", params={"page": 2, "per_page": 2})
    body = page2.json()
    assert [item["id"] for item in body["result"]] == ["s2", "s1"]
    assert body["result_info"]["page"] == 2
    assert body["result_info"]["total_pages"] == 3
    assert result_of(await api.get("orders/instances", params={"page": 4, "per_page": 2})) == []

    default = (await api.get("orders/instances")).json()["result_info"]
    assert default["per_page"] == 50
    assert "cursor" not in default
    for params in (
        {"per_page": "0"},
        {"per_page": "101"},
        {"per_page": "ten"},
        {"cursor": "not-a-cursor"},
        {"status": "sleeping"},
        {"direction": "up"},
        {"date_start": "yesterday"},
    ):
        response = await api.get("orders/instances", params=params)
        assert error_of(response)[:2] == (400, 10002), params
    future = result_of(
        await api.get("orders/instances", params={"date_start": "2999-01-01T00:00:00"})
    )
    assert future == []


async def test_status_edit_validates_its_body(emu: Emulator, api: httpx.AsyncClient) -> None:
    result_of(await api.post("orders/instances", json={"instance_id": "s"}))
    for body in ({"status": "explode"}, {}, {"status": "terminate", "rollback": "yes"}):
        assert error_of(await api.patch("orders/instances/s/status", json=body))[0] == 400
    assert error_of(await api.patch("orders/instances/s/status", content=b"{"))[:2] == (400, 6007)
    restart_bad_from = {"status": "restart", "from": {"name": "prepare", "count": 0}}
    assert error_of(await api.patch("orders/instances/s/status", json=restart_bad_from))[0] == 400
    assert emu.instance("orders", "s").restarts == 0  # type: ignore[union-attr]


async def test_event_route_answers_instance_id_and_timestamp(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    result_of(await api.post("orders/instances", json={"instance_id": "e"}))
    result = result_of(await api.post("orders/instances/e/events/my-event", json={"k": [1, 2]}))
    assert result["instanceId"] == "e"
    assert ISO_RE.match(result["timestamp"])
    result_of(await api.post("orders/instances/e/events/empty"))
    assert emu.instance("orders", "e").events == (  # type: ignore[union-attr]
        ("my-event", {"k": [1, 2]}),
        ("empty", None),
    )
    assert error_of(await api.post("orders/instances/e/events/bad%20type", json={}))[0] == 400
    assert error_of(await api.post("orders/instances/e/events/t", content=b"{x"))[1] == 6007
    too_big = b'"' + b"x" * (1024 * 1024) + b'"'
    assert error_of(await api.post("orders/instances/e/events/t", content=too_big))[0] == 400
    assert emu.stats.events["orders"] == 2


async def test_percent_encoded_cron_ids_are_decoded(emu: Emulator, api: httpx.AsyncClient) -> None:
    cron_id = "*/30 * * * *-1764400000000"
    emu.add_instance("orders", cron_id, {"tick": 1})
    path = f"orders/instances/{quote(cron_id, safe='')}"
    assert "%2F" in path
    assert "%20" in path
    got = result_of(await api.get(path))
    assert got["params"] == {"tick": 1}
    assert got["trigger"] == {"source": "cron"}
    listed = result_of(await api.get("orders/instances"))
    assert [(i["id"], i["trigger_source"]) for i in listed] == [(cron_id, "cron")]
    assert result_of(await api.post(f"{path}/events/ping", json=1))["instanceId"] == cron_id
    assert result_of(await api.patch(f"{path}/status", json={"status": "terminate"}))["status"] == (
        "terminated"
    )
    assert emu.instance("orders", cron_id).status == "terminated"  # type: ignore[union-attr]


async def test_unknown_routes_and_methods(api: httpx.AsyncClient) -> None:
    assert error_of(await api.get("orders/instances/a/b/c/d"))[:2] == (404, 7003)
    assert error_of(await api.get("orders/elsewhere"))[:2] == (404, 7003)
    assert error_of(await api.put("orders/instances"))[:2] == (405, 7001)
    assert error_of(await api.get("orders/instances/a/status"))[:2] == (405, 7001)
    # Fixed sub-paths are never taken for instance ids: a method they lack is 405.
    assert error_of(await api.get("orders/instances/batch"))[:2] == (405, 7001)
    assert error_of(await api.delete("orders/instances/terminate"))[:2] == (405, 7001)
    assert error_of(await api.get("orders/instances/batch/delete"))[:2] == (405, 7001)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "orders"),
        ("PUT", "orders"),
        ("DELETE", "orders"),
        ("GET", "orders/versions"),
        ("GET", "orders/versions/v1/dag"),
        ("GET", "settings"),
    ],
)
async def test_production_routes_the_emulator_lacks_answer_not_emulated(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    status, code, message = error_of(await api.request(method, path))
    assert (status, code) == (501, 7501)
    assert message.startswith(f"not emulated: {method} /accounts/{{account_id}}/workflows")


async def test_counters_track_routes_statuses_and_creations(
    emu: Emulator, api: httpx.AsyncClient
) -> None:
    result_of(await api.post("orders/instances", json={"instance_id": "c1"}))
    error_of(await api.post("orders/instances", json={"instance_id": "c1"}))
    result_of(
        await api.post(
            "orders/instances/batch", json=[{"instance_id": "c1"}, {"instance_id": "c2"}]
        )
    )
    result_of(await api.get("orders/instances"))
    error_of(await api.get("orders/instances/nope"))
    result_of(await api.post("payments/instances", json={}))
    stats = emu.stats
    assert stats.requests == {"create": 3, "batch": 1, "list": 1, "get": 1}
    assert stats.methods == {"POST": 4, "GET": 2}
    assert stats.responses == {200: 4, 409: 1, 404: 1}
    assert stats.created == {"orders": 2, "payments": 1}
    assert stats.duplicates_rejected == {"orders": 1}
    assert stats.batch_skipped == {"orders": 1}
    assert stats.rate_limited == 0
    stats.reset()
    assert stats.requests.total() == 0
    assert stats.created.total() == 0
