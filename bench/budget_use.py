"""How the API budget is spent (issue #9): under faults, and by replicas under skewed load.

Each scenario runs this bridge and the bridge before issue #9 (:mod:`bench.baseline`) on the same
commands against a fresh emulator each.

* faults: creates while the API fails 30 % of requests, half of them after taking effect; the
  requests by route, and the share that is not a command's own call (``create`` or ``batch``);
* skew and uniform: three replicas in one group with a budget of ``budget`` per ``window``, all
  the commands on one replica's partition, or spread over all three: the share of the budget
  the emulator accepted over ``windows`` windows, and the 429s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench import workload
from bench.baseline import BEFORE
from bench.common import say
from bench.measure import OutputWatcher
from bench.runner import BRIDGE, Budget, Context, Measurement, Plan, measure
from bridge.local.emulator import EmulatorConfig
from bridge.local.emulator.config import Faults, RequestBudget, WaitForEventStep, WorkflowBehaviour
from bridge.local.topics import ensure_topics

if TYPE_CHECKING:
    from bench.scenarios import Sizes

#: Instances wait for an event nobody sends, so they stay live.
WAITING = WorkflowBehaviour(
    steps=(WaitForEventStep(name="wait", event_type=workload.NEVER_SENT_EVENT),)
)
#: 30 % of requests fail: half before anything is done, half after the change was made.
FAULTS = Faults(
    error_ratio=0.075,
    drop_ratio=0.075,
    apply_then_error_ratio=0.075,
    apply_then_drop_ratio=0.075,
)
#: One partition per replica: "one replica's partitions" is then partition 0.
REPLICAS = 3
SLACK = 60.0
#: The default session timeout, so that a busy machine does not make a group rebalance mid-run
#: (a rebalance answers some commands twice, and the counts must be exact).
STEADY_GROUP = {
    "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "10000",
    "BRIDGE_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
}
#: partitions_assigned is logged at info: the runner waits for the group to settle on it.
REPLICA_SETTINGS = {"BRIDGE_LOG_LEVEL": "info", **STEADY_GROUP}


async def faults(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    n = sizes.faulty_creates
    topic = ctx.names("f", run, "commands")
    await ensure_topics(ctx.broker.bootstrap_servers, {topic: 4})
    await workload.publish(
        ctx.broker.bootstrap_servers,
        topic,
        workload.creates(n, prefix=f"f{run}").records,
        within=SLACK + n / 5_000,
    )
    say(f"f run {run}: published {n:,} creates to {topic}")

    def emulator() -> EmulatorConfig:
        return EmulatorConfig(default_behaviour=WAITING, faults=FAULTS, seed=run)

    # Retries back off up to 30 s; 30 % faults make a few chains of four or five failures.
    within = SLACK + n / 50
    return [
        await measure(
            ctx,
            Plan(
                "f",
                run,
                BEFORE,
                topic,
                n,
                within,
                emulator=emulator(),
                # Today's bridge answers an item its own retry found taken "already_exists".
                also_allowed=frozenset({"already_exists"}),
                bridge_settings=STEADY_GROUP,
            ),
        ),
        await measure(
            ctx,
            Plan(
                "f",
                run,
                BRIDGE,
                topic,
                n,
                within,
                emulator=emulator(),
                bridge_settings=STEADY_GROUP,
            ),
        ),
    ]


async def skew(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    return await _replicas(ctx, sizes, run, "s", skewed=True)


async def uniform(ctx: Context, sizes: Sizes, run: int) -> list[Measurement]:
    return await _replicas(ctx, sizes, run, "u", skewed=False)


async def _replicas(
    ctx: Context, sizes: Sizes, run: int, key: str, *, skewed: bool
) -> list[Measurement]:
    budget, window = sizes.budget, sizes.window
    # More than the whole group could do in the measured windows, so the backlog never runs dry.
    n = budget * (sizes.windows + 1)
    work = workload.events(n, instances=2 * budget, prefix=f"{key}{run}")
    measurements = []
    for contestant in (BEFORE, BRIDGE):
        topic = ctx.names(key, run, contestant.replace(" ", "").replace("#", ""), "commands")
        await ensure_topics(ctx.broker.bootstrap_servers, {topic: REPLICAS})

        async def feed(watcher: OutputWatcher, topic: str = topic) -> dict[str, int]:
            # Published once every replica holds its partition: the load starts on a settled
            # group, as it would in production long after a rebalance.
            await workload.publish(
                ctx.broker.bootstrap_servers,
                topic,
                work.records,
                within=SLACK + n / 5_000,
                partition=0 if skewed else None,
            )
            return {}

        emulator = EmulatorConfig(
            default_behaviour=WAITING,
            budget=RequestBudget(requests=budget, window_seconds=window, block_seconds=window),
        )
        measurements.append(
            await measure(
                ctx,
                Plan(
                    key,
                    run,
                    contestant,
                    topic,
                    n,
                    SLACK * 2 + (sizes.windows + 1) * window * 1.5,
                    emulator=emulator,
                    existing_instances=work.existing_instances,
                    bridge_budget=Budget(budget, window),
                    bridge_settings=REPLICA_SETTINGS,
                    budget_windows=sizes.windows,
                    windows_only=True,
                    replicas=REPLICAS,
                    partitions=REPLICAS,
                    feed=feed,
                ),
            )
        )
    return measurements
