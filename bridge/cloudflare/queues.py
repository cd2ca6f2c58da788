"""Event Subscriptions and a queue's HTTP pull consumer, over :class:`WorkflowsClient`'s plumbing.

- ``POST /accounts/{id}/queues/{queue_id}/messages/pull`` ``{batch_size, visibility_timeout_ms}``
  and ``…/messages/ack`` ``{acks: [{lease_id}], retries: [{lease_id, delay_seconds}]}``: outside
  the API's request budget (Cloudflare's Queues limits, footnote "pulls, acknowledgements, and
  retries over HTTP are not subject to the API rate limit"), so the client used for them must
  not report to the budget;
- ``/accounts/{id}/event_subscriptions/subscriptions``: list and create, ordinary API calls.

Shapes follow the official SDK (``cloudflare`` 5.9): every pull field optional, ``warnings``
either a map of lease id to text (5.9) or a list (4.3).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bridge.cloudflare.client import WorkflowsClient, segment

MAX_PULL_BATCH = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class QueueMessage(_Model):
    id: str | None = None
    body: Any = None
    timestamp_ms: float | None = None
    attempts: int | None = None
    lease_id: str
    metadata: dict[str, Any] | None = None


class PullResult(_Model):
    messages: list[QueueMessage] = Field(default_factory=list)
    message_backlog_count: int | None = None
    metadata: dict[str, Any] | None = None


class AckResult(_Model):
    ack_count: int | None = Field(default=None, alias="ackCount")
    retry_count: int | None = Field(default=None, alias="retryCount")
    warnings: dict[str, Any] | list[Any] | None = None


class EventSubscription(_Model):
    id: str
    name: str | None = None
    enabled: bool | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    destination: dict[str, Any] = Field(default_factory=dict)
    events: list[str] = Field(default_factory=list)

    @property
    def workflow(self) -> str | None:
        name = self.source.get("workflow_name")
        return name if isinstance(name, str) else None

    @property
    def queue_id(self) -> str | None:
        queue = self.destination.get("queue_id")
        return queue if isinstance(queue, str) else None


_SUBSCRIPTIONS: TypeAdapter[list[EventSubscription]] = TypeAdapter(list[EventSubscription])


class QueueConsumer:
    """Pull and acknowledge one queue's messages."""

    def __init__(self, client: WorkflowsClient, queue_id: str) -> None:
        self._client = client
        self._path = f"queues/{segment(queue_id)}/messages"

    async def pull(self, *, batch_size: int, visibility_timeout_ms: int) -> PullResult:
        body = {"batch_size": batch_size, "visibility_timeout_ms": visibility_timeout_ms}
        answer, _ = await self._client.account_call(
            "POST", f"{self._path}/pull", PullResult, json_body=body
        )
        return answer.result

    async def ack(
        self, acks: list[str], retries: list[tuple[str, float]] | None = None
    ) -> AckResult:
        body: dict[str, Any] = {"acks": [{"lease_id": lease} for lease in acks]}
        if retries:
            body["retries"] = [
                {"lease_id": lease, "delay_seconds": delay} for lease, delay in retries
            ]
        answer, _ = await self._client.account_call(
            "POST", f"{self._path}/ack", AckResult, json_body=body
        )
        return answer.result


class Subscriptions:
    """List and create event subscriptions (budgeted calls: the caller holds the slot)."""

    def __init__(self, client: WorkflowsClient) -> None:
        self._client = client

    async def list_page(self, page: int, per_page: int = 50) -> tuple[list[EventSubscription], int]:
        """One page and the number of pages."""
        answer, info = await self._client.account_call(
            "GET",
            "event_subscriptions/subscriptions",
            _SUBSCRIPTIONS,
            params={"page": str(page), "per_page": str(per_page)},
        )
        pages = info.get("total_pages") if isinstance(info, dict) else None
        return answer.result, int(pages) if isinstance(pages, int) else page

    async def create(
        self, *, name: str, workflow: str, queue_id: str, events: list[str]
    ) -> EventSubscription:
        body = {
            "name": name,
            "enabled": True,
            "source": {"type": "workflows.workflow", "workflow_name": workflow},
            "destination": {"type": "queues.queue", "queue_id": queue_id},
            "events": events,
        }
        answer, _ = await self._client.account_call(
            "POST", "event_subscriptions/subscriptions", EventSubscription, json_body=body
        )
        return answer.result
