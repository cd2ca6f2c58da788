"""Counters the emulator keeps for tests: what arrived, what was answered, what was created."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Plain counters, updated by the server as requests are handled; ``reset()`` zeroes them.

    Keys: routes are the names of ``config.Route`` (``list``, ``create``, ``batch``, ``get``,
    ``step``, ``status``, ``event``, ``delete``, ``batch_delete``, ``batch_terminate``,
    ``terminate_all``, ``terminate_status``) and ``unknown``; ``throttled`` kinds are
    ``budget`` (the request that used up the budget), ``blocked`` (refused during the block
    that followed) and ``creation`` (creation rate); ``faults`` kinds are the ``Faults`` field
    names without ``_ratio``.
    """

    #: Requests received, by route name.
    requests: Counter[str] = field(default_factory=Counter)
    #: Requests received, by HTTP method.
    methods: Counter[str] = field(default_factory=Counter)
    #: Answers sent, by HTTP status (dropped connections are not answers).
    responses: Counter[int] = field(default_factory=Counter)
    #: 429 answers, by cause.
    throttled: Counter[str] = field(default_factory=Counter)
    #: Faults injected, by kind.
    faults: Counter[str] = field(default_factory=Counter)
    #: Instances created (single and batch), by workflow.
    created: Counter[str] = field(default_factory=Counter)
    #: Restarts performed, by workflow.
    restarts: Counter[str] = field(default_factory=Counter)
    #: Single creates refused because the id was taken, by workflow.
    duplicates_rejected: Counter[str] = field(default_factory=Counter)
    #: Batch items skipped because the id was taken or repeated in the batch, by workflow.
    batch_skipped: Counter[str] = field(default_factory=Counter)
    #: Events accepted, by workflow.
    events: Counter[str] = field(default_factory=Counter)
    #: Instances deleted (single and batch), by workflow.
    deleted: Counter[str] = field(default_factory=Counter)
    #: Instances terminated by ``/batch/terminate`` calls, by workflow.
    batch_terminated: Counter[str] = field(default_factory=Counter)
    #: Events an instance had already received (same type and payload): delivered twice.
    events_repeated: Counter[str] = field(default_factory=Counter)
    #: 429 answers by cause and the client's ``User-Agent`` product, e.g.
    #: ``budget:workflows-bridge``: whose request broke a limit.
    throttled_agents: Counter[str] = field(default_factory=Counter)
    #: Faults injected, by kind and route (``apply_then_error:event``).
    faults_by_route: Counter[str] = field(default_factory=Counter)
    #: ``list`` requests by the ``per_page`` they asked for (a token check asks for 1).
    list_page_sizes: Counter[int] = field(default_factory=Counter)

    @property
    def rate_limited(self) -> int:
        """All 429 answers sent."""
        return self.throttled.total()

    def reset(self) -> None:
        """Zero every counter."""
        for counter in (
            self.requests,
            self.methods,
            self.responses,
            self.throttled,
            self.faults,
            self.created,
            self.restarts,
            self.duplicates_rejected,
            self.batch_skipped,
            self.events,
            self.deleted,
            self.batch_terminated,
            self.events_repeated,
            self.throttled_agents,
            self.faults_by_route,
            self.list_page_sizes,
        ):
            counter.clear()
