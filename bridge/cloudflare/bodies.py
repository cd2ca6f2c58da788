"""Request bodies and constants of the Workflows API, free of any I/O import.

The translator builds create bodies ahead of the call (to size ``/batch`` calls); keeping them
here, apart from the HTTP client, keeps the translator pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"


def create_body(
    instance_id: str | None, params: Any = None, instance_retention: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A create body: for ``POST /instances``, and each item of a ``/batch`` body."""
    body: dict[str, Any] = {}
    if instance_id is not None:
        body["instance_id"] = instance_id
    if params is not None:
        body["params"] = params
    if instance_retention is not None:
        body["instance_retention"] = dict(instance_retention)
    return body
