"""Prometheus metrics: one thin layer the pipeline calls at a few points.

The pipeline reports events — an API exchange, a retry, a command answered, the lag it saw —
through :class:`Metrics`' methods; values that already live somewhere (the budget, commands in
flight, readiness) are read when ``/metrics`` is scraped instead of being copied on every change.
Each :class:`~bridge.pipeline.service.Bridge` has its own registry, so replicas in one process
(tests) do not mix their counts. Every name is listed in the README with an example alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from bridge.contract.deadletter import HEADER_PREFIX

PREFIX = "workflows_bridge_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: API latency buckets (seconds): the API answers in tens of milliseconds, timeouts are 30 s.
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Command age buckets (seconds): from a fast pass to an hour-long backlog.
_AGE = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

_CLASS_HEADER = HEADER_PREFIX + "class_name"


def status_class(status: int | None) -> str:
    """``2xx`` … ``5xx``, or ``none`` when no answer came (connection failure, timeout)."""
    return "none" if status is None else f"{status // 100}xx"


class Metrics:
    """The bridge's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands = Counter(
            PREFIX + "commands",
            "Commands (batch items count one each) answered, by action and outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.api_requests = Counter(
            PREFIX + "api_requests",
            "Workflows API requests, by endpoint and status class (none: no answer).",
            ["endpoint", "status_class"],
            registry=r,
        )
        self.api_latency = Histogram(
            PREFIX + "api_request_duration_seconds",
            "Workflows API request latency, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY,
            registry=r,
        )
        self.api_retries = Counter(
            PREFIX + "api_retries",
            "API calls retried after a transient error, by error class.",
            ["error_class"],
            registry=r,
        )
        self.rate_limited = Counter(
            PREFIX + "api_rate_limited",
            "API answers with status 429 (each blocks the token's calls for a while).",
            registry=r,
        )
        self.command_age = Histogram(
            PREFIX + "command_age_seconds",
            "From the command record's timestamp to its result, in seconds.",
            buckets=_AGE,
            registry=r,
        )
        self.dead_letters = Counter(
            PREFIX + "dead_letters",
            "Records written to the dead-letter topic, by reason (the error class).",
            ["reason"],
            registry=r,
        )
        self.states_published = Counter(
            PREFIX + "states_published",
            "State records published by this replica's follower, by source.",
            ["source"],
            registry=r,
        )
        self.states_requests = Counter(
            PREFIX + "states_requests",
            "API requests spent on state tracking (from the budget's background lane), by kind.",
            ["kind"],
            registry=r,
        )
        self.lag = Gauge(
            PREFIX + "consumer_lag",
            "Records in each assigned command partition not yet fetched by this replica.",
            ["topic", "partition"],
            registry=r,
        )

    # -- events from the pipeline --------------------------------------------------------------

    def api_exchange(self, endpoint: str, status: int | None, seconds: float) -> None:
        """One API request finished (``status`` None: no answer)."""
        self.api_requests.labels(endpoint, status_class(status)).inc()
        self.api_latency.labels(endpoint).observe(seconds)
        if status == 429:
            self.rate_limited.inc()

    def state_published(self, source: str) -> None:
        self.states_published.labels(source).inc()

    def state_request(self, kind: str) -> None:
        self.states_requests.labels(kind).inc()

    def api_retry(self, error_class: str) -> None:
        self.api_retries.labels(error_class).inc()

    def answered(
        self,
        outcomes: Iterable[tuple[str | None, str]],
        dead_letters: Iterable[Mapping[str, bytes]],
        record_timestamp_ms: int | None,
    ) -> None:
        """A command (or one batch item) was answered: its results and dead letters."""
        for action, outcome in outcomes:
            self.commands.labels(action or "unknown", outcome).inc()
        for headers in dead_letters:
            reason = headers.get(_CLASS_HEADER, b"unknown").decode(errors="replace")
            self.dead_letters.labels(reason).inc()
        if record_timestamp_ms is not None and record_timestamp_ms > 0:
            self.command_age.observe(max(0.0, time.time() - record_timestamp_ms / 1000))

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag of every assigned partition (revoked ones disappear)."""
        self.lag.clear()
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)

    # -- values read at scrape time -------------------------------------------------------------

    def watch(self, read: Callable[[], Mapping[str, float]], helps: Mapping[str, str]) -> None:
        """Gauges read from ``read()`` at each scrape: ``{name: value}``; ``helps`` names them."""
        self.registry.register(_Live(read, helps))

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _Live(Collector):
    def __init__(self, read: Callable[[], Mapping[str, float]], helps: Mapping[str, str]):
        self._read = read
        self._helps = dict(helps)

    def describe(self) -> Iterator[Metric]:
        for name, help_text in self._helps.items():
            if name.endswith("_total"):
                yield CounterMetricFamily(PREFIX + name.removesuffix("_total"), help_text)
            else:
                yield GaugeMetricFamily(PREFIX + name, help_text)

    def collect(self) -> Iterator[Metric]:
        values: Mapping[str, Any] = self._read()
        for name, help_text in self._helps.items():
            if name not in values:
                continue
            if name.endswith("_total"):  # only ever grows: a counter
                yield CounterMetricFamily(
                    PREFIX + name.removesuffix("_total"), help_text, value=float(values[name])
                )
            else:
                yield GaugeMetricFamily(PREFIX + name, help_text, value=float(values[name]))


#: The gauges a running bridge reads at each scrape (see ``Bridge.live_values``).
LIVE_GAUGES: Mapping[str, str] = {
    "ready": "1 while /readyz says ready (partitions assigned, token verified).",
    "api_token_ok": "0 while the API refuses the token (the replica is parked).",
    "partitions_assigned": "Command partitions assigned to this replica.",
    "commands_in_flight": "Commands consumed and not yet settled (results written, offset done).",
    "budget_capacity_requests": "Requests this replica may make per budget window (its share).",
    "budget_share": (
        "This replica's part of the group's budget: its demand's share, agreed through the "
        "budget topic (or its part of all partitions without one)."
    ),
    "budget_used_requests": "Requests made in the current budget window.",
    "budget_remaining_requests": "Requests left in the current budget window.",
    "budget_blocked_seconds": "Seconds until calls may resume after a 429 (0: not blocked).",
    "budget_blocked_seconds_total": "Seconds spent blocked by 429s since the start.",
    "states_following": "1 while this replica follows instance states (one replica of the group).",
    "states_live_instances": "Instances the follower holds live (not in a final state).",
    "states_pending": "Observations the follower holds or works on, and records not yet acked.",
    "states_queue_backlog": "Messages in the state queue, as its last pull reported.",
}


def sample_names() -> set[str]:
    """Every sample name ``/metrics`` can show (``_total``, ``_bucket``, … included)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    names = {PREFIX + name for name in LIVE_GAUGES}
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names
