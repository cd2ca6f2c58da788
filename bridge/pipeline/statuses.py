"""What the bridge already knows about instances' statuses, without asking the API.

The executor consults an :class:`InstanceStatuses` before it spends a request on learning a
status. The instance-state stream is the source that knows; until one is wired in,
:data:`KNOWS_NOTHING` answers ``None`` for every instance.
"""

from __future__ import annotations

from typing import Protocol


class InstanceStatuses(Protocol):
    """A source of instance statuses the bridge has already learnt (no API request)."""

    def known(self, workflow: str, instance_id: str) -> str | None:
        """The latest status known for the instance, or None when nothing is known."""
        ...


class _KnowsNothing:
    def known(self, workflow: str, instance_id: str) -> str | None:
        return None


#: The default source: it knows no instance.
KNOWS_NOTHING: InstanceStatuses = _KnowsNothing()
