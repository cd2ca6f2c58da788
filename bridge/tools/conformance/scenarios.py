"""The behaviours the conformance run checks, in the order of one run.

Every scenario declares the most requests it may make, so the run can announce its cost before
it starts. Instances are named ``<prefix>-<letter>`` (``a``: lives to the end; ``b``: terminated,
then probed as a finished instance; ``c``: deleted and created again; ``d``: string params, then
batch-deleted; ``e``: rollback) and the cleanup deletes them all with ``batch/delete``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge.tools.conformance import bulk, instances
from bridge.tools.conformance.judging import Run


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    #: The most requests it may make.
    cost: int
    run: Callable[[Run], Awaitable[None]]
    optional: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("create", 2, instances.create_and_duplicate),
    Scenario("batch", 2, instances.batch_skips),
    Scenario("params", 2, instances.params_as_text),
    Scenario("errors", 3, instances.errors),
    Scenario("finished", 4, instances.finished_instances),
    Scenario("steps", 5, instances.steps),
    Scenario("direction", 3, bulk.direction),
    Scenario("delete", 3, bulk.deletes),
    Scenario("terminate", 3, bulk.terminates),
    Scenario("rollback", 2, instances.rollback),
    Scenario("ratelimit", 0, bulk.ratelimit_headers),
    Scenario("creation-rate", 2, bulk.creation_rate, optional=True),
)
#: The final ``batch/delete`` calls of the cleanup: 100 ids each.
CLEANUP_COST = 1
CLEANUP_COST_WITH_RATE = 3


def cost(*, with_rate: bool) -> int:
    """The most requests a run may make, cleanup included."""
    chosen = [s for s in SCENARIOS if with_rate or not s.optional]
    return sum(s.cost for s in chosen) + (CLEANUP_COST_WITH_RATE if with_rate else CLEANUP_COST)
