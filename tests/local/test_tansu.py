"""EmbeddedTansu: starts a usable broker, and leaves no process behind whatever happens."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bridge.local import EmbeddedTansu, TansuStartError, ensure_topics, find_tansu_binary, free_port
from tests.support.kafka_harness import consume, group_consumer, producer


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _live_group_members(pgid: int) -> list[int]:
    """Processes in group ``pgid`` that are not zombies (zombies wait only to be reaped)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after the ')'.
        fields = stat_line.rpartition(")")[2].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


async def _wait_until_group_gone(pgid: int, within: float = 5.0) -> None:
    """Orphans killed with their group die and are reaped by init shortly after the kill."""
    async with asyncio.timeout(within):
        while _live_group_members(pgid):
            await asyncio.sleep(0.02)


async def _port_accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_start_serves_kafka_and_stop_leaves_nothing() -> None:
    async with EmbeddedTansu() as broker:
        pid = broker.pid
        assert pid is not None
        assert _process_exists(pid)
        # Its own session: a Ctrl-C to the test run's process group does not reach it directly.
        assert os.getsid(pid) == pid
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        assert cluster["cluster_id"] == "tansu_cluster"
        port = broker.port

    assert not _process_exists(pid)
    assert not _live_group_members(pid)
    assert not await _port_accepts(port)
    assert broker.pid is None
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.bootstrap_servers


async def test_explicit_port_and_topics_round_trip() -> None:
    port = free_port()
    async with EmbeddedTansu(port=port) as broker:
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        first = await ensure_topics(broker.bootstrap_servers, {"cmd": 3, "out": 1})
        assert {n: (s.partitions, s.created) for n, s in first.items()} == {
            "cmd": (3, True),
            "out": (1, True),
        }
        again = await ensure_topics(broker.bootstrap_servers, {"cmd": 3})
        assert (again["cmd"].partitions, again["cmd"].created) == (3, False)

        async with producer(broker.bootstrap_servers) as prod:
            await prod.send_and_wait("cmd", b"hello", key=b"k", headers=[("h", b"v")])
        async with group_consumer(broker.bootstrap_servers, ["cmd"], group_id="g") as consumer:
            (record,) = await consume(consumer, 1)
        assert (record.key, record.value, list(record.headers)) == (b"k", b"hello", [("h", b"v")])


async def test_broker_that_dies_at_start_up_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'address in use' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedTansu(binary=str(fake), start_attempts=2)
    with pytest.raises(TansuStartError, match="exited with code 3") as info:
        async with broker:
            pytest.fail("must not get here")
    assert "address in use" in str(info.value)
    assert broker.pid is None


async def test_broker_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    """The stop timeout escalates to SIGKILL for the whole process group."""
    wrapper = tmp_path / "stubborn-tansu"
    # The shell ignores SIGTERM (and so does its `sleep`), while the real broker underneath
    # exits on it: after SIGTERM the group lives on until SIGKILL.
    wrapper.write_text(
        "#!/bin/sh\n"
        "trap '' TERM\n"
        f"'{find_tansu_binary()}' \"$@\" &\n"
        "wait\n"
        "while :; do sleep 1; done\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    async with EmbeddedTansu(binary=str(wrapper), stop_timeout=0.5) as broker:
        pgid = broker.pid
        assert pgid is not None
        assert len(_live_group_members(pgid)) >= 2
    await _wait_until_group_gone(pgid)


async def test_cancelled_start_leaves_nothing(tmp_path: Path) -> None:
    """Cancelling the start (here: a broker that never listens) still stops the process."""
    silent = tmp_path / "silent-tansu"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedTansu(binary=str(silent))
    started = asyncio.Event()
    seen: list[int] = []

    async def run() -> None:
        async with broker:
            pytest.fail("must not get here")

    async def watch() -> None:
        # Wait for the process to exist, then remember its pid.
        while broker._process is None:
            await asyncio.sleep(0.01)
        seen.append(broker._process.pid)
        started.set()

    task = asyncio.create_task(run())
    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(started.wait(), 10)
    await watcher
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _process_exists(seen[0])
    assert not _live_group_members(seen[0])
