"""Reading Cloudflare's rate-limit headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from bridge.cloudflare.headers import parse_ratelimit, parse_retry_after


def test_ratelimit_documented_example() -> None:
    info = parse_ratelimit(
        {"ratelimit": '"default";r=50;t=30', "ratelimit-policy": '"burst";q=100;w=60'}
    )
    assert info is not None
    assert (info.remaining, info.reset_seconds, info.quota, info.window_seconds) == (
        50,
        30.0,
        100,
        60.0,
    )


def test_ratelimit_takes_the_tightest_policy() -> None:
    info = parse_ratelimit(
        {
            "ratelimit": '"a";r=900;t=200, "b";r=3;t=1',
            "ratelimit-policy": '"a";q=1200;w=300, "b";q=10;w=1',
        }
    )
    assert info is not None
    assert (info.remaining, info.reset_seconds) == (3, 1.0)
    assert (info.quota, info.window_seconds) == (1200, 300.0)  # 4/s is tighter than 10/s


def test_ratelimit_absent_or_garbled() -> None:
    assert parse_ratelimit({}) is None
    info = parse_ratelimit({"ratelimit": "nonsense;r=x"})
    assert info is not None
    assert info.remaining is None


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after({"retry-after": "300"}) == 300.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    when = datetime.now(UTC) + timedelta(seconds=90)
    seconds = parse_retry_after({"retry-after": format_datetime(when, usegmt=True)})
    assert seconds is not None
    assert 85 < seconds <= 90
