"""The two baselines, each run as its own process: ``python -m bench.contestants raw|naive``.

* ``raw`` — the raw pipe: a group consumer forwarding every record to a producer (acks=all),
  a whole fetched batch at a time, committing after each batch is acknowledged. No API call:
  the ceiling for a Python bridge on this machine.
* ``naive`` — the naive bridge: per record, one HTTP call with httpx (create → ``POST
  /instances``, event → ``POST …/events/{type}``, pause/resume/terminate → ``PATCH …/status``),
  produce the result, wait for its ack, commit; strictly sequential. A 429 is waited out
  (``Retry-After``) and the call repeated, so that no command is lost.

Both take at most ``--limit`` records, then idle until SIGTERM or SIGINT and exit cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

STATUS_ACTIONS = frozenset({"pause", "resume", "terminate", "restart"})


def _consumer(args: argparse.Namespace) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=f"bench-{args.kind}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )


def _producer(args: argparse.Namespace) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, client_id=f"bench-{args.kind}", acks="all"
    )


async def raw_pipe(args: argparse.Namespace, stop: asyncio.Event) -> None:
    consumer, producer = _consumer(args), _producer(args)
    await producer.start()
    await consumer.start()
    try:
        forwarded = 0
        while forwarded < args.limit and not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=100, max_records=min(1000, args.limit - forwarded)
            )
            acks = []
            for records in batches.values():
                for record in records:
                    acks.append(await producer.send(args.output, record.value, key=record.key))
            if acks:
                await asyncio.gather(*acks)
                await consumer.commit()
                forwarded += len(acks)
        await stop.wait()
    finally:
        await consumer.stop()
        await producer.stop()


class _Api:
    """The few Workflows API calls the naive bridge makes, one at a time."""

    def __init__(self, base_url: str, token: str, account: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
        self._account = quote(account, safe="")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, command: dict[str, Any]) -> int:
        """Carry out one command; returns the final HTTP status (429s are waited out)."""
        action = command["action"]
        base = (
            f"/accounts/{self._account}/workflows/{quote(command['workflow'], safe='')}/instances"
        )
        instance = f"{base}/{quote(command['instance_id'], safe='')}"
        while True:
            if action == "create":
                body = {"instance_id": command["instance_id"], "params": command.get("params")}
                response = await self._http.post(base, json=body)
            elif action == "send_event":
                path = f"{instance}/events/{quote(command['event_type'], safe='')}"
                response = await self._http.post(path, json=command.get("payload", {}))
            elif action in STATUS_ACTIONS:
                response = await self._http.patch(f"{instance}/status", json={"status": action})
            else:
                return 400
            if response.status_code != 429:
                return response.status_code
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def naive_bridge(args: argparse.Namespace, stop: asyncio.Event) -> None:
    consumer, producer = _consumer(args), _producer(args)
    api = _Api(args.base_url, args.token, args.account)
    await producer.start()
    await consumer.start()
    try:
        done = 0
        while done < args.limit and not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1)
            for tp, records in batches.items():
                for record in records:
                    await _naive_one(
                        args, api, producer=producer, consumer=consumer, tp=tp, record=record
                    )
                    done += 1
        await stop.wait()
    finally:
        await consumer.stop()
        await producer.stop()
        await api.aclose()


async def _naive_one(
    args: argparse.Namespace,
    api: _Api,
    *,
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    record: Any,
) -> None:
    command = json.loads(record.value)
    status = await api.call(command)
    result = {
        "kind": "result",
        "command_id": f"{record.topic}-{record.partition}-{record.offset}",
        "action": command.get("action"),
        "instance_id": command.get("instance_id"),
        "outcome": "ok" if 200 <= status < 300 else "rejected",
        "http_status": status,
    }
    await producer.send_and_wait(
        args.output, json.dumps(result).encode(), key=str(command.get("instance_id")).encode()
    )
    await consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "")})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.contestants")
    parser.add_argument("kind", choices=("raw", "naive"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--limit", type=int, required=True, help="records to take, then idle")
    parser.add_argument("--base-url", help="the emulator's /client/v4 URL (naive)")
    parser.add_argument("--token", default="", help="API token (naive)")
    parser.add_argument("--account", default="bench-account", help="account id (naive)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.kind == "raw":
        await raw_pipe(args, stop)
    else:
        await naive_bridge(args, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.kind == "naive" and not args.base_url:
        print("naive needs --base-url", file=sys.stderr)
        return 2
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
