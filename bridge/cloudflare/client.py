"""An async client for the Workflows *instances* REST API.

It speaks the API exactly: Cloudflare's envelope is decoded (``success: false`` on HTTP 200
included), path parameters are percent-encoded, and every failure leaves as one of the errors in
:mod:`bridge.errors`. It never retries: the pipeline owns retries, because only it knows the
request budget and what a command may cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from httpx_aiohttp import AiohttpTransport
from pydantic import TypeAdapter

from bridge import __version__
from bridge.cloudflare.bodies import DEFAULT_BASE_URL, create_body
from bridge.cloudflare.headers import parse_ratelimit, parse_retry_after
from bridge.cloudflare.models import (
    BatchDeleteResponse,
    BatchTerminateResponse,
    EventCreateResponse,
    InstanceBulkResponse,
    InstanceCreateResponse,
    InstanceDeleteResponse,
    InstanceGetResponse,
    InstanceListResponse,
    InstanceStepResponse,
    StatusEditResponse,
    TerminateAllResponse,
    TerminateJobStatus,
)
from bridge.contract.rules import MAX_BATCH, MAX_PER_PAGE
from bridge.errors import (
    AlreadyExists,
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
    RateLimitInfo,
    Rejected,
    ServerError,
    TransportError,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64)


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """A successful API result with what the response said about limits and tracing."""

    result: T
    http_status: int
    cf_ray: str | None
    ratelimit: RateLimitInfo | None


#: Called after every HTTP answer, success or not: the request budget listens here.
ResponseHook = Callable[[int, RateLimitInfo | None, float | None], None]
#: Told of every request once it ends: endpoint name, HTTP status (None: no answer), seconds.
ExchangeHook = Callable[[str, int | None, float], None]


def endpoint_name(method: str, path: str) -> str:
    """A low-cardinality name for a request (no account, workflow, queue or instance names):
    for metrics."""
    path = path.rstrip("/")
    if "/instances" not in path:  # account-level APIs beside Workflows
        if path.endswith(("/pull", "/ack")):
            return "queue_" + path.rsplit("/", 1)[-1]
        if "/event_subscriptions/" in path:
            return "list_subscriptions" if method == "GET" else "create_subscription"
        return "other"
    tail = path.rsplit("/instances", 1)[-1]
    fixed = {
        ("GET", ""): "list",
        ("POST", ""): "create",
        ("POST", "/batch"): "create_batch",
        ("POST", "/batch/delete"): "batch_delete",
        ("POST", "/batch/terminate"): "batch_terminate",
        ("PUT", "/terminate"): "terminate_all",
        ("GET", "/terminate"): "terminate_all_status",
    }
    if (method, tail) in fixed:
        return fixed[(method, tail)]
    # /{id}[/...]: ids are single path segments (quoted), so the rest names the route.
    parts = tail.split("/")[2:]
    if not parts:
        return {"GET": "get", "DELETE": "delete"}.get(method, method.lower())
    if parts[0] == "events":
        return "send_event"
    return {"status": "edit_status", "step": "get_step"}.get(parts[0], parts[0])


def segment(value: str) -> str:
    """``value`` as one percent-encoded path segment."""
    return quote(value, safe="")


_segment = segment


def _is_duplicate(errors: Sequence[Mapping[str, Any]]) -> bool:
    text = " ".join(str(e.get("message", "")) for e in errors).lower()
    return "already_exists" in text or "already exists" in text


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
    # Production never answers 501; the emulator does for a route it does not emulate, and
    # asking again cannot change that.
    501: Rejected,
}

#: A listing's or step log's date filter: a datetime (naive ones are taken as UTC) or the text.
DateFilter = datetime | str


class WorkflowsClient:
    """One account's Workflows instances API; use as ``async with WorkflowsClient(...) as c``."""

    def __init__(
        self,
        *,
        account_id: str,
        api_token: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        on_response: ResponseHook | None = None,
        on_exchange: ExchangeHook | None = None,
    ) -> None:
        if not account_id:
            raise ValueError("account_id must not be empty")
        self._account = f"/accounts/{_segment(account_id)}"
        self._prefix = f"{self._account}/workflows"
        self._on_response = on_response
        self._on_exchange = on_exchange
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_token}",
                "User-Agent": f"workflows-bridge/{__version__}",
            },
            timeout=timeout,
            limits=limits,
            # httpx's own connection pool costs milliseconds of CPU per request under concurrency
            # (encode/httpcore#1035); aiohttp's connector does the same work in a tenth of that.
            transport=transport if transport is not None else AiohttpTransport(limits=limits),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- operations ------------------------------------------------------------------------

    async def create(
        self,
        workflow: str,
        *,
        instance_id: str | None = None,
        params: Any = None,
        instance_retention: Mapping[str, Any] | None = None,
    ) -> Answer[InstanceCreateResponse]:
        """``POST /instances``. An id in use raises :class:`AlreadyExists`."""
        body = create_body(instance_id, params, instance_retention)
        return await self._call(
            "POST", self._instances(workflow), InstanceCreateResponse, json_body=body
        )

    async def create_batch(
        self, workflow: str, items: Sequence[Mapping[str, Any]]
    ) -> Answer[list[InstanceBulkResponse]]:
        """``POST /instances/batch`` with 1–100 create bodies; existing ids are left out."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} instances, not {len(items)}")
        return await self._call(
            "POST",
            self._instances(workflow) + "/batch",
            _BULK_ADAPTER,
            json_body=list(items),
        )

    async def get(
        self,
        workflow: str,
        instance_id: str,
        *,
        simple: bool = True,
        order: str | None = None,
    ) -> Answer[InstanceGetResponse]:
        """``GET /instances/{id}``; ``simple`` leaves the step log out, ``order`` (``asc`` or
        ``desc``) sorts it."""
        query = {"simple": "true" if simple else "false"}
        if order is not None:
            query["order"] = order
        return await self._call(
            "GET", self._instance(workflow, instance_id), InstanceGetResponse, params=query
        )

    async def step(
        self,
        workflow: str,
        instance_id: str,
        name: str,
        *,
        step_type: str = "step",
        attempt: int | None = None,
    ) -> Answer[InstanceStepResponse]:
        """``GET /instances/{id}/step``: one step's full output. ``name`` carries the counter
        suffix the step log shows (``prepare-1``); ``step_type`` is ``step`` or
        ``waitForEvent``."""
        query = {"name": name, "type": step_type}
        if attempt is not None:
            query["attempt"] = str(attempt)
        return await self._call(
            "GET",
            self._instance(workflow, instance_id) + "/step",
            InstanceStepResponse,
            params=query,
        )

    async def delete(self, workflow: str, instance_id: str) -> Answer[InstanceDeleteResponse]:
        """``DELETE /instances/{id}``: stop the instance (no rollback) and forget it."""
        return await self._call(
            "DELETE", self._instance(workflow, instance_id), InstanceDeleteResponse
        )

    async def delete_batch(
        self, workflow: str, instance_ids: Sequence[str]
    ) -> Answer[BatchDeleteResponse]:
        """``POST /instances/batch/delete`` with 1–100 ids; each lands in ``deleted`` or
        ``errors``."""
        _check_ids(instance_ids)
        return await self._call(
            "POST",
            self._instances(workflow) + "/batch/delete",
            BatchDeleteResponse,
            json_body={"instances": list(instance_ids)},
        )

    async def terminate_batch(
        self, workflow: str, instance_ids: Sequence[str]
    ) -> Answer[BatchTerminateResponse]:
        """``POST /instances/batch/terminate`` with 1–100 ids: says how many it terminated."""
        _check_ids(instance_ids)
        return await self._call(
            "POST",
            self._instances(workflow) + "/batch/terminate",
            BatchTerminateResponse,
            json_body=list(instance_ids),
        )

    async def terminate_all(
        self, workflow: str, *, status: str | None = None
    ) -> Answer[TerminateAllResponse]:
        """``PUT /instances/terminate[?status=]``: start a job terminating every live instance
        (of one status); ``already_running`` when one is running."""
        return await self._call(
            "PUT",
            self._instances(workflow) + "/terminate",
            TerminateAllResponse,
            params=None if status is None else {"status": status},
        )

    async def terminate_all_status(self, workflow: str) -> Answer[TerminateJobStatus]:
        """``GET /instances/terminate``: whether a terminate-all job is ``running``."""
        return await self._call("GET", self._instances(workflow) + "/terminate", TerminateJobStatus)

    async def edit_status(
        self,
        workflow: str,
        instance_id: str,
        status: str,
        *,
        rollback: bool | None = None,
        from_: Mapping[str, Any] | None = None,
    ) -> Answer[StatusEditResponse]:
        """``PATCH /instances/{id}/status``: pause, resume, terminate or restart."""
        body: dict[str, Any] = {"status": status}
        if rollback is not None:
            body["rollback"] = rollback
        if from_ is not None:
            body["from"] = dict(from_)
        return await self._call(
            "PATCH",
            self._instance(workflow, instance_id) + "/status",
            StatusEditResponse,
            json_body=body,
        )

    async def send_event(
        self, workflow: str, instance_id: str, event_type: str, payload: Any
    ) -> Answer[EventCreateResponse]:
        """``POST /instances/{id}/events/{type}``; the payload is the raw body."""
        return await self._call(
            "POST",
            f"{self._instance(workflow, instance_id)}/events/{_segment(event_type)}",
            EventCreateResponse,
            json_body=payload,
        )

    async def list_page(
        self,
        workflow: str,
        *,
        status: str | None = None,
        per_page: int = 50,
        cursor: str | None = None,
        direction: str | None = None,
        date_start: DateFilter | None = None,
        date_end: DateFilter | None = None,
    ) -> tuple[Answer[list[InstanceListResponse]], str | None]:
        """One page of ``GET /instances`` and the cursor of the next page (None at the end).

        ``direction`` (``asc``: oldest first, ``desc``: newest first) applies to cursor
        pagination; ``date_start``/``date_end`` bound the creation time.
        """
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1 to {MAX_PER_PAGE}, not {per_page}")
        query: dict[str, str] = {"per_page": str(per_page)}
        if status is not None:
            query["status"] = status
        if cursor is not None:
            query["cursor"] = cursor
        if direction is not None:
            query["direction"] = direction
        if date_start is not None:
            query["date_start"] = _date(date_start)
        if date_end is not None:
            query["date_end"] = _date(date_end)
        answer, info = await self._call_with_info(
            "GET", self._instances(workflow), _LIST_ADAPTER, params=query
        )
        next_cursor = info.get("cursor") if isinstance(info, dict) else None
        return answer, (str(next_cursor) if next_cursor else None)

    async def list_instances(
        self,
        workflow: str,
        *,
        status: str | None = None,
        per_page: int = 50,
        direction: str | None = None,
        date_start: DateFilter | None = None,
        date_end: DateFilter | None = None,
    ) -> AsyncIterator[InstanceListResponse]:
        """Every instance, following ``result_info.cursor`` (page numbers are best effort)."""
        cursor: str | None = None
        while True:
            answer, cursor = await self.list_page(
                workflow,
                status=status,
                per_page=per_page,
                cursor=cursor,
                direction=direction,
                date_start=date_start,
                date_end=date_end,
            )
            for item in answer.result:
                yield item
            if cursor is None:
                return

    async def account_call(
        self,
        method: str,
        path: str,
        model: type[T] | TypeAdapter[T],
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Answer[T], Any]:
        """Another account-level API (``path`` under ``/accounts/{id}/``, segments already
        encoded): the answer and ``result_info``. Used by :mod:`bridge.cloudflare.queues`."""
        return await self._call_with_info(
            method, f"{self._account}/{path}", model, json_body=json_body, params=params
        )

    # -- plumbing --------------------------------------------------------------------------

    def _instances(self, workflow: str) -> str:
        return f"{self._prefix}/{_segment(workflow)}/instances"

    def _instance(self, workflow: str, instance_id: str) -> str:
        return f"{self._instances(workflow)}/{_segment(instance_id)}"

    async def _call(
        self,
        method: str,
        path: str,
        model: type[T] | TypeAdapter[T],
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer[T]:
        answer, _ = await self._call_with_info(
            method, path, model, json_body=json_body, params=params
        )
        return answer

    async def _call_with_info(
        self,
        method: str,
        path: str,
        model: type[T] | TypeAdapter[T],
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Answer[T], Any]:
        where = f"{method} {path}"
        bodiless = json_body is None and method in ("GET", "DELETE", "PUT")
        content = None if bodiless else _dumps(json_body)
        started = time.monotonic()
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                params=params,
                headers={"Content-Type": "application/json"} if content is not None else None,
            )
        except (httpx.TransportError, TimeoutError) as exc:
            if self._on_exchange is not None:
                self._on_exchange(endpoint_name(method, path), None, time.monotonic() - started)
            raise TransportError(f"{where}: no answer ({_cause(exc)})") from exc
        if self._on_exchange is not None:
            self._on_exchange(
                endpoint_name(method, path), response.status_code, time.monotonic() - started
            )

        cf_ray = response.headers.get("cf-ray")
        ratelimit = parse_ratelimit(response.headers)
        retry_after = parse_retry_after(response.headers)
        if self._on_response is not None:
            self._on_response(response.status_code, ratelimit, retry_after)
        meta: dict[str, Any] = {
            "http_status": response.status_code,
            "cf_ray": cf_ray,
            "retry_after": retry_after,
            "ratelimit": ratelimit,
        }

        envelope = _envelope(response)
        _raise_for_failure(where, response, envelope, meta)
        try:
            if isinstance(model, TypeAdapter):
                result = model.validate_python(envelope["result"])
            else:
                result = TypeAdapter(model).validate_python(envelope["result"])
        except pydantic.ValidationError as exc:
            raise ServerError(
                f"{where}: unexpected result shape: {exc.error_count()} problems, first: "
                f"{exc.errors(include_url=False)[0]['msg']}",
                **meta,
            ) from None
        answer = Answer(
            result=result, http_status=response.status_code, cf_ray=cf_ray, ratelimit=ratelimit
        )
        return answer, envelope.get("result_info")


_BULK_ADAPTER: TypeAdapter[list[InstanceBulkResponse]] = TypeAdapter(list[InstanceBulkResponse])
_LIST_ADAPTER: TypeAdapter[list[InstanceListResponse]] = TypeAdapter(list[InstanceListResponse])


def _check_ids(instance_ids: Sequence[str]) -> None:
    if isinstance(instance_ids, str) or not 1 <= len(instance_ids) <= MAX_BATCH:
        raise ValueError(f"give 1 to {MAX_BATCH} instance ids, not {len(instance_ids)}")


def _date(value: DateFilter) -> str:
    """ISO 8601 in UTC with a ``Z``, as the API's date filters take them."""
    if isinstance(value, str):
        return value
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cause(exc: BaseException) -> str:
    """The most specific description of a transport failure (the aiohttp error, if any)."""
    root = exc.__cause__ or exc
    text = str(root)
    return f"{type(root).__name__}: {text}" if text else type(root).__name__


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _envelope(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _raise_for_failure(
    where: str, response: httpx.Response, envelope: Any, meta: dict[str, Any]
) -> None:
    """Raise the bridge error for an HTTP failure or a failed envelope; return when it's fine."""
    errors = envelope.get("errors") if isinstance(envelope, dict) else None
    errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    code = errors[0].get("code") if errors else None
    code = code if isinstance(code, int) else None
    detail = "; ".join(str(e.get("message", "")) for e in errors) or response.reason_phrase
    status = response.status_code
    if not response.is_success:
        error_type: type[ApiError]
        if status in (400, 409) and _is_duplicate(errors):
            error_type = AlreadyExists
        elif status in _ERRORS_BY_STATUS:
            error_type = _ERRORS_BY_STATUS[status]
        elif status >= 500:
            error_type = ServerError
        else:
            error_type = Rejected
        raise error_type(f"{where}: HTTP {status}: {detail}", code=code, **meta)
    if not isinstance(envelope, dict) or "result" not in envelope:
        raise ServerError(f"{where}: HTTP {status} without a Cloudflare envelope", **meta)
    if envelope.get("success") is not True:
        raise ServerError(f"{where}: success=false on HTTP {status}: {detail}", code=code, **meta)
