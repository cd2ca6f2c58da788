"""Dead-letter records: the original record, untouched, plus headers that say what went wrong.

The value, key and original headers are copied byte for byte so the record can be replayed;
the error is described in headers under one prefix (in the manner of Kafka Connect's
``__connect.errors.*``), so consumers of the DLQ need no envelope parser.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

HEADER_PREFIX = "workflows_bridge.errors."
_MAX_MESSAGE_BYTES = 4096


class DeadLetterHeaders(BaseModel):
    """The error headers added to a dead-lettered record (all values UTF-8 strings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(description="Topic of the original command record.")
    partition: int
    offset: int
    command_id: str | None = None
    stage: str = Field(
        description="Where the command stopped: `decode`, `validate` (bad input), `api` (refused "
        "or failed by the API), or `plan`, `execute`, `answer` (an unexpected error in the bridge)."
    )
    class_name: str = Field(description="The bridge error class, e.g. `ContractError`, `Rejected`.")
    message: str
    outcome: str = Field(description="The outcome of the matching result record.")
    field: str | None = Field(default=None, description="The command field at fault, if any.")
    rule: str | None = None
    http_status: int | None = None
    code: int | None = None
    cf_ray: str | None = None
    attempts: int = 0
    at: str = Field(description="ISO-8601 UTC time the command was given up.")
    value_omitted: int | None = Field(
        default=None,
        description="Set (to the value's size) when the value was too large to copy; the "
        "original stays in the command topic at `topic`/`partition`/`offset`.",
    )

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers, prefixed; absent values are left out."""
        headers: list[tuple[str, bytes]] = []
        for name, value in self.model_dump(exclude_none=True).items():
            text = str(value)
            if name == "message":
                text = text.encode()[:_MAX_MESSAGE_BYTES].decode(errors="ignore")
            headers.append((HEADER_PREFIX + name, text.encode()))
        return headers


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]], error: DeadLetterHeaders
) -> list[tuple[str, bytes]]:
    """The original headers, minus stale error headers from an earlier pass, plus ``error``'s."""
    kept = [(k, v) for k, v in original if not k.startswith(HEADER_PREFIX)]
    return kept + error.to_headers()
