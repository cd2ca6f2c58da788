"""The bridge's own command results, read as observations (pure): ``source: command``.

A result says what the API answered right after a command, so it is a change the stream can
publish at once (before the queue or a poll sees it) — and, being an observation like the others,
it is never published twice:

* a create's ``queued`` (or the status an ``already_exists`` reported) only introduces an
  instance the tracker has not seen (:attr:`Kind.BIRTH`);
* a restart's ``queued`` may reopen a final instance (:attr:`Kind.RESTART`);
* pause, resume and terminate report where the instance went; a ``get`` where it is (with its
  output or error, which then cost the stream no request of its own).

Results without a status (events, refused or failed commands) say nothing about the instance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.contract.results import InstanceError
from bridge.states.tracker import Kind, Observation, as_utc

_BIRTHS = frozenset({"create", "create_batch"})
_EDITS = frozenset({"pause", "resume", "terminate", "get"})


def result_observation(value: dict[str, Any]) -> Observation | None:
    """The observation a record of the output topic makes, or None."""
    if value.get("kind") != "result":
        return None
    workflow, instance_id = value.get("workflow"), value.get("instance_id")
    status, action, outcome = value.get("status"), value.get("action"), value.get("outcome")
    if not (isinstance(workflow, str) and isinstance(instance_id, str) and isinstance(status, str)):
        return None
    if outcome == "already_exists" or (outcome == "ok" and action in _BIRTHS):
        kind = Kind.BIRTH
    elif outcome == "ok" and action == "restart":
        kind = Kind.RESTART
    elif outcome == "ok" and action in _EDITS:
        kind = Kind.SIGHTING
    else:
        return None
    try:
        at = as_utc(datetime.fromisoformat(str(value.get("at")).replace("Z", "+00:00")))
    except ValueError:
        return None
    obs = Observation(workflow, instance_id, status, "command", at=at, kind=kind)
    snapshot = value.get("instance")
    if action == "get" and isinstance(snapshot, dict) and status in ("complete", "errored"):
        error = snapshot.get("error")
        return obs.with_details(
            version_id=snapshot.get("version_id"),
            output=snapshot.get("output"),
            error=InstanceError.model_validate(error) if isinstance(error, dict) else None,
        )
    return obs
