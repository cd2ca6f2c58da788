"""The Workflows API's own input rules, checked before any request is spent.

These are facts about the API (see the reference notes, "Limits"), shared by the command
contract, the API client and the emulator so that every layer refuses the same inputs.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

#: Instance ids, workflow names and event types share one pattern.
NAME_PATTERN = r"^[a-zA-Z0-9_][a-zA-Z0-9-_]*$"
NAME_RE = re.compile(NAME_PATTERN)

MAX_WORKFLOW_NAME = 64
MAX_INSTANCE_ID = 100
MAX_EVENT_TYPE = 100
MAX_COMMAND_ID = 200

#: ``params`` and event payloads, serialised as JSON.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Instances in one ``/instances/batch`` call (and ids in the other bulk calls).
MAX_BATCH = 100
#: Instances in one page of ``GET /instances``.
MAX_PER_PAGE = 100
#: Re-serialising a JSON text (``1e15`` becomes ``1000000000000000.0``) never makes it this many
#: times longer: a record this much under a limit cannot hold a value over it.
SERIALISED_GROWTH = 8

#: ``cf_`` + 64 lowercase hex is reserved by Cloudflare; the sub-path names collide with routes.
RESERVED_ID_RE = re.compile(r"^cf_[0-9a-f]{64}$")
RESERVED_IDS = frozenset({"batch", "terminate", "terminateAll"})

RETENTION_PATTERN = r"^(\d+)\s+(second|minute|hour|day|week|month|year)s?$"
RETENTION_RE = re.compile(RETENTION_PATTERN)

STATUS_ACTIONS = ("pause", "resume", "terminate", "restart")

#: ``errors[].code`` of a 404 for an unknown workflow (``workflows.api.error.workflow.not_found``)
#: and for an unknown instance (``…instance.not_found``; also in ``batch/delete`` results).
WORKFLOW_NOT_FOUND_CODE = 10200
INSTANCE_NOT_FOUND_CODE = 10400

#: Instance statuses REST reports today; parsers accept any string, as the set has grown before.
Status = Literal[
    "queued",
    "running",
    "paused",
    "errored",
    "terminated",
    "complete",
    "waitingForPause",
    "waiting",
    "rollingBack",
]
INSTANCE_STATUSES: frozenset[str] = frozenset(get_args(Status))
#: Once here, an instance only moves again by ``restart``.
FINAL_STATUSES = frozenset({"complete", "errored", "terminated"})
#: The ``status`` filters "terminate all" (``PUT …/instances/terminate?status=``) accepts; these
#: are the live statuses wrangler's ``terminate-all`` allows.
TERMINABLE_STATUSES = ("queued", "running", "paused", "waitingForPause", "waiting")
#: The order of a ``GET /instances/{id}`` step log and the direction of a cursor listing.
ORDERS = ("asc", "desc")
LOCATION_HINTS = (
    "wnam",
    "weur",
    "enam",
    "eeur",
    "apac",
    "apac-ne",
    "apac-se",
    "oc",
    "sam",
    "afr",
    "me",
)


def name_problem(value: str, *, what: str, max_length: int) -> str | None:
    """Say why ``value`` is not a valid API name of kind ``what``, or None when it is."""
    if not value:
        return f"{what} must not be empty"
    if len(value) > max_length:
        return f"{what} is {len(value)} characters; the API allows at most {max_length}"
    if NAME_RE.match(value) is None:
        return f"{what} {value!r} does not match {NAME_PATTERN}"
    return None


def instance_id_problem(value: str) -> str | None:
    """Say why ``value`` cannot be an instance id, or None when it can."""
    problem = name_problem(value, what="instance id", max_length=MAX_INSTANCE_ID)
    if problem is not None:
        return problem
    if RESERVED_ID_RE.match(value) or value in RESERVED_IDS:
        return f"instance id {value!r} is reserved by Cloudflare"
    return None
