"""The conformance run's view of the API: every call counted, every answer kept as observed.

:class:`Probe` wraps the project's own client. Its transport counts the requests that go out (so
the run can prove it kept to the cost it announced) and notes two things about the answers: a
``cf-engine-shim`` header (the answer came from Cloudflare's local engine through the test shim,
which defines no HTTP statuses or codes of production's) and the ``Ratelimit`` header.
:meth:`Probe.call` turns a call into an :class:`Observed`, success or error alike.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport

from bridge.cloudflare.client import DEFAULT_LIMITS, Answer, WorkflowsClient
from bridge.errors import ApiError

T = TypeVar("T")

#: ``workflows.api.error.instance.not_found`` → ``instance.not_found``; the engine's ``(slug)``.
_SLUG_RE = re.compile(r"(?:workflows\.api\.error\.|\()([a-z_]+\.[a-z_]+)")


class _CountingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.requests = 0
        self.local_engine = False
        self.ratelimit: str | None = None
        self.last_headers: httpx.Headers = httpx.Headers()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = await self._inner.handle_async_request(request)
        self.last_headers = response.headers
        if response.headers.get("cf-engine-shim") == "1":
            self.local_engine = True
        if "ratelimit" in response.headers:
            self.ratelimit = response.headers["ratelimit"]
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class Observed(Generic[T]):
    """One call's answer: the result, or the error's status, code and text."""

    result: T | None = None
    error: ApiError | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> int | None:
        return 200 if self.error is None else self.error.http_status

    @property
    def code(self) -> int | None:
        return None if self.error is None else self.error.code

    @property
    def slug(self) -> str:
        """The error's slug (``instance.not_found``) when its text carries one, else ``""``."""
        found = None if self.error is None else _SLUG_RE.search(self.error.message)
        return found[1] if found else ""

    @property
    def text(self) -> str:
        """The error's message as the API worded it (without the client's prefix)."""
        if self.error is None:
            return ""
        return self.error.message.split(": HTTP ", 1)[-1].split(": ", 1)[-1]

    def describe(self) -> str:
        """``HTTP 404 code 10400 "workflows.api.error.instance.not_found"`` or ``HTTP 200``."""
        if self.error is None:
            return "HTTP 200"
        status = "no answer" if self.status is None else f"HTTP {self.status}"
        return f'{status} code {self.code} "{self.text}"'


class Probe:
    """The project's client aimed at one account, counting what it spends."""

    def __init__(self, *, account_id: str, api_token: str, base_url: str) -> None:
        self._transport = _CountingTransport(AiohttpTransport(limits=DEFAULT_LIMITS))
        self.client = WorkflowsClient(
            account_id=account_id,
            api_token=api_token,
            base_url=base_url,
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=self._transport,
        )

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.__aexit__(exc_type, exc, tb)

    @property
    def requests(self) -> int:
        """Requests sent so far."""
        return self._transport.requests

    @property
    def local_engine(self) -> bool:
        """Whether an answer came from Cloudflare's local engine through the test shim."""
        return self._transport.local_engine

    @property
    def ratelimit(self) -> str | None:
        """The last ``Ratelimit`` header seen, if any answer carried one."""
        return self._transport.ratelimit

    async def call(self, make: Callable[[], Awaitable[Answer[T]]]) -> Observed[T]:
        """Make the call; its result, or the API error it raised, as observed."""
        try:
            answer = await make()
        except ApiError as exc:
            return Observed(error=exc, headers=dict(self._transport.last_headers))
        return Observed(result=answer.result, headers=dict(self._transport.last_headers))

    async def raw(self, make: Callable[[], Awaitable[Any]]) -> Observed[Any]:
        """Like :meth:`call` for a call that returns something other than an ``Answer``."""
        try:
            value = await make()
        except ApiError as exc:
            return Observed(error=exc, headers=dict(self._transport.last_headers))
        return Observed(result=value, headers=dict(self._transport.last_headers))
