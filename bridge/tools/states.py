"""``workflows-bridge states subscribe``: the event subscriptions feeding the state stream's queue.

For each workflow followed — ``--workflow`` (repeatable), else ``BRIDGE_STATES__WORKFLOWS`` and
the allow-list ``BRIDGE_CLOUDFLARE__WORKFLOWS`` — it makes sure one event subscription sends the
six instance events (``instance.queued`` … ``instance.completed``) to the queue
(``--queue``, else ``BRIDGE_STATES__QUEUE_ID``): existing ones are listed first and left alone,
missing ones are created (``POST …/event_subscriptions/subscriptions``, source
``workflows.workflow``, destination ``queues.queue``). These are ordinary API calls: a handful,
once. The token needs the Queues and Event Subscriptions permissions besides Workflows.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httpx
from rich.console import Console

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.queues import EventSubscription, Subscriptions
from bridge.config import ApiToolSettings, load_api_tool_settings, secret_values
from bridge.errors import ApiError, ConfigError
from bridge.logs import register_secret
from bridge.states.events import SUBSCRIPTION_EVENTS

#: Pages of subscriptions read at most (50 a page).
_MAX_PAGES = 100


async def subscribe(
    settings: ApiToolSettings, workflows: list[str], queue_id: str, console: Console
) -> int:
    """Create the missing subscriptions; returns how many were created."""
    cf = settings.cloudflare
    async with WorkflowsClient(
        account_id=cf.account_id,
        api_token=cf.api_token.get_secret_value(),
        base_url=cf.base_url,
        timeout=httpx.Timeout(cf.request_timeout_seconds, connect=5.0),
    ) as client:
        subscriptions = Subscriptions(client)
        existing: list[EventSubscription] = []
        page, pages = 1, 1
        while page <= min(pages, _MAX_PAGES):
            found, pages = await subscriptions.list_page(page)
            existing.extend(found)
            page += 1
        created = 0
        for workflow in workflows:
            mine = [s for s in existing if s.workflow == workflow and s.queue_id == queue_id]
            if mine:
                missing = sorted(set(SUBSCRIPTION_EVENTS) - set(mine[0].events))
                note = f"; it lacks {', '.join(missing)}" if missing else ""
                state = "" if mine[0].enabled is not False else " (disabled)"
                console.print(f"{workflow}: subscribed already ({mine[0].id}){state}{note}")
                continue
            made = await subscriptions.create(
                name=f"workflows-bridge-{workflow}",
                workflow=workflow,
                queue_id=queue_id,
                events=list(SUBSCRIPTION_EVENTS),
            )
            created += 1
            console.print(f"{workflow}: subscription {made.id} created → queue {queue_id}")
        return created


def _subscribe(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        settings = load_api_tool_settings(args.config)
    except ConfigError as exc:
        console.print(f"workflows-bridge states subscribe: {exc}", markup=False)
        return 2
    for secret in secret_values(settings):
        register_secret(secret)
    workflows = args.workflow or sorted(
        set(settings.states.workflows) | set(settings.cloudflare.workflows)
    )
    queue_id = args.queue or settings.states.queue_id
    if not workflows:
        console.print(
            "no workflow to subscribe: name them with --workflow or BRIDGE_STATES__WORKFLOWS"
        )
        return 2
    if not queue_id:
        console.print("no queue: pass --queue or set BRIDGE_STATES__QUEUE_ID")
        return 2
    try:
        created = asyncio.run(subscribe(settings, workflows, queue_id, console))
    except ApiError as exc:
        console.print(f"workflows-bridge states subscribe: {exc}", markup=False)
        return 1
    console.print(f"{created} subscription(s) created, {len(workflows) - created} already there")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "states", help="the instance-state stream: set up its event subscriptions"
    )
    actions = parser.add_subparsers(dest="states_command", required=True)
    sub = actions.add_parser(
        "subscribe",
        help="create the event subscription of each followed workflow to the queue",
        description="Creates, for each workflow, an event subscription that sends the six "
        "Workflows instance events to the queue the bridge pulls; existing ones are kept.",
    )
    sub.add_argument(
        "--workflow",
        action="append",
        metavar="NAME",
        help="a workflow to subscribe (repeatable; default: BRIDGE_STATES__WORKFLOWS and "
        "BRIDGE_CLOUDFLARE__WORKFLOWS)",
    )
    sub.add_argument(
        "--queue", metavar="ID", help="the queue id (default: BRIDGE_STATES__QUEUE_ID)"
    )
    sub.add_argument(
        "--config", type=Path, help="TOML file, as for run; BRIDGE_* variables win over it"
    )
    sub.set_defaults(handler=_subscribe)
