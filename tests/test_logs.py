"""Log lines never carry the token."""

from __future__ import annotations

import io
import json

import structlog

from bridge.logs import configure, register_secret


def test_token_redacted_everywhere() -> None:
    stream = io.StringIO()
    configure(fmt="json", level="info", stream=stream)
    try:
        _log_and_check(stream)
    finally:
        structlog.reset_defaults()


def _log_and_check(stream: io.StringIO) -> None:
    register_secret("tok-123456")
    log = structlog.get_logger("t")
    log.info(
        "calling", url="http://x", header="Authorization: Bearer abc.def", api_token="tok-123456"
    )
    log.info("oops tok-123456 leaked into the message", detail="also tok-123456 here")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "tok-123456" not in text
    assert "abc.def" not in text
    assert lines[0]["api_token"] == "[redacted]"
    assert lines[1]["detail"] == "also [redacted] here"
    assert lines[1]["event"] == "oops [redacted] leaked into the message"
