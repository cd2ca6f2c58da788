"""Project-wide fixtures and hooks: the Kafka broker, unique names, and the ``full_kafka`` rule.

See ``tests/support/kafka_harness.py`` for the environment variables that choose the broker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping

import hypothesis
import pytest
import pytest_asyncio
import structlog

from bridge.local import EmbeddedTansu, ensure_topics
from bridge.local.topics import TopicState
from tests.support import hermetic, kafka_harness
from tests.support import secure_kafka as secure_kafka_harness
from tests.support.kafka_harness import BrokerSettings, Flavour, KafkaBroker

pytest_plugins = ("pytester",)

# Property tests must not depend on the machine's speed: no per-example deadline, and no health
# check that fails a test because another process kept the cores busy while it generated data.
hypothesis.settings.register_profile(
    "suite",
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.load_profile("suite")

_SETTINGS = pytest.StashKey[BrokerSettings]()


# -- the full_kafka rule ------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    # The whole suite runs with every BRIDGE_* variable exported and pointing nowhere: a fixture
    # or tool that read them instead of its own broker and emulator fails (tests/support/hermetic).
    os.environ.update(hermetic.hostile_environment())
    try:
        config.stash[_SETTINGS] = kafka_harness.broker_settings()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _full_kafka_reason(settings: BrokerSettings) -> str:
    return (
        f"needs Apache Kafka (idempotent/transactional producers, read_committed, durability) "
        f"but the broker is {settings.flavour.value}; start one with scripts/kafka/start-kafka.sh "
        f"and set {kafka_harness.BOOTSTRAP_ENV}"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("full_kafka") is None:
        return
    settings = item.config.stash[_SETTINGS]
    if settings.full_kafka:
        return
    reason = _full_kafka_reason(settings)
    if settings.require_full_kafka:
        pytest.fail(f"{kafka_harness.REQUIRE_FULL_ENV}=1 and this test {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under REQUIRE_FULL_KAFKA=1, turn any skip of a ``full_kafka`` test into a failure."""
    report: pytest.TestReport = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("full_kafka") is not None
        and item.config.stash[_SETTINGS].require_full_kafka
    ):
        skip_reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{kafka_harness.REQUIRE_FULL_ENV}=1: a full_kafka test may not be skipped "
            f"(skip reason: {skip_reason})"
        )
    return report


# -- the broker ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_settings(pytestconfig: pytest.Config) -> BrokerSettings:
    return pytestconfig.stash[_SETTINGS]


@pytest_asyncio.fixture(scope="session")
async def kafka_broker(kafka_settings: BrokerSettings) -> AsyncIterator[KafkaBroker]:
    """The session's broker: ``$KAFKA_BOOTSTRAP_SERVERS``, else an embedded Tansu."""
    if kafka_settings.bootstrap_servers is None:
        async with EmbeddedTansu() as tansu:
            yield KafkaBroker(tansu.bootstrap_servers, Flavour.TANSU)
        return
    broker = KafkaBroker(kafka_settings.bootstrap_servers, kafka_settings.flavour)
    await kafka_harness.check_broker(broker)
    yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``HOST:PORT`` of the session's broker."""
    return kafka_broker.bootstrap_servers


# -- names and topics ---------------------------------------------------------------------------


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name("cmd")`` -> ``cmd.<test name>.<random>``, for topics and groups."""

    def make(prefix: str) -> str:
        return kafka_harness.unique_name(request, prefix)

    return make


@pytest.fixture
def create_topics(
    kafka_bootstrap: str,
) -> Callable[[Mapping[str, int]], Awaitable[dict[str, TopicState]]]:
    """``await create_topics({name: partitions})`` on the session's broker."""

    def create(topics: Mapping[str, int]) -> Awaitable[dict[str, TopicState]]:
        return ensure_topics(kafka_bootstrap, topics)

    return create


@pytest.fixture
def new_topic(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Callable[..., Awaitable[str]]:
    """``await new_topic("cmd", partitions=3)`` creates a uniquely named topic, returns its name."""

    async def create(prefix: str = "topic", *, partitions: int = 1) -> str:
        name = unique_name(prefix)
        await ensure_topics(kafka_bootstrap, {name: partitions})
        return name

    return create


# -- isolation ----------------------------------------------------------------------------------


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``BRIDGE_*`` variable set, for a test that runs a tool in-process: tools read the
    operator's variables as ``run`` does, and the suite's hostile ones would stop them."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Generator[None, None, None]:
    """A test that configures logging (``main(["run"])`` does) must not leak it into the next."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers = handlers
    root.setLevel(level)


# -- the secured broker -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def secure_kafka() -> secure_kafka_harness.SecureKafka:
    """The secured listeners of ``start-kafka.sh --secure DIR`` (``$KAFKA_SECURE_DIR``)."""
    directory = secure_kafka_harness.secure_dir()
    if directory is None or not (directory / "secure.json").exists():
        reason = (
            f"needs the secured Apache Kafka listeners: start the broker with "
            f"scripts/kafka/start-kafka.sh --secure DIR and set "
            f"{secure_kafka_harness.SECURE_DIR_ENV}=DIR"
        )
        if secure_kafka_harness.secure_required():
            pytest.fail(f"{secure_kafka_harness.REQUIRE_SECURE_ENV}=1 and this test {reason}")
        pytest.skip(reason)
    return secure_kafka_harness.SecureKafka.load(directory)
