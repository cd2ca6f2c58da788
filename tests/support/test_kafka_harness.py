"""The Kafka test harness against the session's broker (embedded Tansu or Apache Kafka).

These are the behaviours the bridge's own tests rely on: records keep their keys and headers, a
consumer group resumes at the committed offset, and — on Apache Kafka only — idempotent and
transactional producers work and ``read_committed`` hides aborted records.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from tests.support.kafka_harness import (
    AssignmentWatcher,
    consume,
    group_consumer,
    producer,
    unique_name,
)

NewTopic = Callable[..., Awaitable[str]]


async def test_round_trip_keeps_keys_values_and_headers(
    kafka_bootstrap: str, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic("roundtrip", partitions=3)
    sent = [
        (b"order-1", b'{"n": 1}', [("trace-id", b"abc"), ("empty", b"")]),
        (b"order-2", b'{"n": 2}', [("trace-id", b"def")]),
        (b"order-1", b'{"n": 3}', []),
        (None, b'{"n": 4}', [("dup", b"1"), ("dup", b"2")]),
        (b"order-3", None, [("kind", b"tombstone")]),
    ]
    partitions: dict[bytes | None, int] = {}
    async with producer(kafka_bootstrap) as prod:
        for key, value, headers in sent:
            meta = await prod.send_and_wait(topic, value=value, key=key, headers=headers)
            if key is not None:
                partitions.setdefault(key, meta.partition)
                assert meta.partition == partitions[key], "one key must stay on one partition"

    async with group_consumer(kafka_bootstrap, [topic], group_id=unique_name("g")) as consumer:
        records = await consume(consumer, len(sent))

    got = sorted(
        ((r.key, r.value, list(r.headers)) for r in records),
        key=lambda item: item[1] or b"",
    )
    want = sorted(
        ((key, value, headers) for key, value, headers in sent), key=lambda item: item[1] or b""
    )
    assert got == want
    # Per-partition order is kept: order-1's two records arrive in the order they were sent.
    order_1 = [r.value for r in records if r.key == b"order-1"]
    assert order_1 == [b'{"n": 1}', b'{"n": 3}']


async def test_group_resumes_at_committed_offset(
    kafka_bootstrap: str, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic("commits", partitions=2)
    group = unique_name("g")
    per_partition = 6
    async with producer(kafka_bootstrap) as prod:
        for partition in (0, 1):
            for i in range(per_partition):
                await prod.send_and_wait(topic, f"p{partition}-{i}".encode(), partition=partition)

    tps = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    async with group_consumer(kafka_bootstrap, [topic], group_id=group) as first:
        records = await consume(first, 2 * per_partition)
        assert {(r.partition, r.offset) for r in records} == {
            (p, o) for p in (0, 1) for o in range(per_partition)
        }
        # Commit part-way, as a consumer that processed only the first records would.
        await first.commit({TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 4})
        assert await first.committed(TopicPartition(topic, 0)) == 2
        assert await first.committed(TopicPartition(topic, 1)) == 4

    watcher = AssignmentWatcher()
    async with group_consumer(kafka_bootstrap, [topic], group_id=group, watcher=watcher) as second:
        assert watcher.assigned == tps
        resumed = await consume(second, (per_partition - 2) + (per_partition - 4))
        firsts = {p: min(r.offset for r in resumed if r.partition == p) for p in (0, 1)}
        assert firsts == {0: 2, 1: 4}
        assert sorted(r.value for r in resumed if r.partition == 1) == [b"p1-4", b"p1-5"]
        # The metadata form of commit works too, and the next member would resume there.
        await second.commit({TopicPartition(topic, 0): OffsetAndMetadata(per_partition, "")})
        assert await second.committed(TopicPartition(topic, 0)) == per_partition


def test_unique_name_is_unique_and_valid(request: pytest.FixtureRequest) -> None:
    names = {unique_name(request, "cmd") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith("cmd.test_unique_name_is_unique_and_valid.")
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name)
    parametrized = unique_name("test_x[a/b c-" + "y" * 300 + "]", "out put")
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,120}", parametrized)
    assert parametrized.startswith("out-put.test_x-a-b-c-")


# -- Apache Kafka only --------------------------------------------------------------------------


@pytest.mark.full_kafka
async def test_idempotent_producer(
    kafka_bootstrap: str, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic("idem")
    async with producer(kafka_bootstrap, enable_idempotence=True) as prod:
        for i in range(10):
            await prod.send_and_wait(topic, f"{i}".encode(), key=b"k")
    async with group_consumer(kafka_bootstrap, [topic], group_id=unique_name("g")) as consumer:
        records = await consume(consumer, 10)
    assert [r.value for r in records] == [f"{i}".encode() for i in range(10)]


@pytest.mark.full_kafka
async def test_read_committed_hides_aborted_transactions(
    kafka_bootstrap: str, new_topic: NewTopic, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic("txn")
    async with producer(kafka_bootstrap, transactional_id=unique_name("tx")) as prod:
        async with prod.transaction():
            await prod.send_and_wait(topic, b"committed-1")
        await prod.begin_transaction()
        await prod.send_and_wait(topic, b"aborted")
        await prod.abort_transaction()
        async with prod.transaction():
            # The sentinel: once it has arrived, anything before it has been decided on.
            await prod.send_and_wait(topic, b"committed-2")

    async with group_consumer(
        kafka_bootstrap, [topic], group_id=unique_name("rc"), isolation_level="read_committed"
    ) as consumer:
        committed = await consume(consumer, 2)
    assert [r.value for r in committed] == [b"committed-1", b"committed-2"]

    # The aborted record was written: read_uncommitted sees all three.
    async with group_consumer(
        kafka_bootstrap, [topic], group_id=unique_name("ru"), isolation_level="read_uncommitted"
    ) as consumer:
        everything = await consume(consumer, 3)
    assert [r.value for r in everything] == [b"committed-1", b"aborted", b"committed-2"]


# -- the full_kafka rule itself -----------------------------------------------------------------

_INNER_TESTS = """
import pytest

@pytest.mark.full_kafka
def test_needs_kafka():
    pass

@pytest.mark.full_kafka
def test_skips_itself():
    pytest.skip("skipped from inside")

def test_plain():
    pass
"""


@pytest.mark.parametrize(
    ("env", "outcomes"),
    [
        pytest.param({}, {"passed": 1, "skipped": 2}, id="tansu-skips"),
        pytest.param({"REQUIRE_FULL_KAFKA": "1"}, {"passed": 1, "errors": 2}, id="tansu-required"),
        pytest.param(
            {"REQUIRE_FULL_KAFKA": "1", "KAFKA_FLAVOUR": "apache"},
            {"passed": 2, "failed": 1},
            id="apache-required",
        ),
    ],
)
def test_full_kafka_marker_rule(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    outcomes: dict[str, int],
) -> None:
    """``full_kafka`` tests skip on Tansu, and under REQUIRE_FULL_KAFKA=1 every skip fails."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_FLAVOUR", "REQUIRE_FULL_KAFKA"):
        monkeypatch.delenv(name, raising=False)
    if env.get("KAFKA_FLAVOUR") == "apache":
        # Never contacted: these inner tests use no broker fixture.
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The inner run imports this suite's conftest from the project root.
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    pytester.makeini(
        textwrap.dedent(
            """
            [pytest]
            markers = full_kafka: needs Apache Kafka
            asyncio_default_fixture_loop_scope = session
            """
        )
    )
    pytester.makeconftest(
        "from tests.conftest import *  # noqa: F403\n"
        "from tests.conftest import pytest_configure, pytest_runtest_setup,"
        " pytest_runtest_makereport  # noqa: F401\n"
    )
    pytester.makepyfile(test_inner=_INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(**outcomes)
    if env.get("REQUIRE_FULL_KAFKA"):
        result.stdout.fnmatch_lines(["*REQUIRE_FULL_KAFKA=1*"])
