"""Log lines never carry the token, and library lines come out in the same format."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

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


def test_library_lines_share_the_format_and_the_redaction() -> None:
    stream = io.StringIO()
    configure(fmt="json", level="info", stream=stream)
    register_secret("sasl-pass-42")
    library = logging.getLogger("aiokafka.consumer.group_coordinator")
    library.info("chatty detail nobody needs")  # below WARNING: libraries stay quiet
    library.warning("Heartbeat failed for group %s: password sasl-pass-42", "g1")
    library.error("Unexpected error in coordinator", exc_info=ConnectionError("broker gone"))
    structlog.get_logger("bridge").info("command_done", outcome="ok")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["warning", "error", "info"]
    warning, error, ours = lines
    assert warning["event"] == "Heartbeat failed for group g1: password [redacted]"
    assert warning["logger"] == "aiokafka.consumer.group_coordinator"
    assert "timestamp" in warning
    assert "ConnectionError: broker gone" in error["exception"]
    assert ours["event"] == "command_done"
    assert set(warning) >= {"event", "level", "timestamp"}


_EMITTED = re.compile(r"""log\.(?:debug|info|warning|error|exception)\(\s*"([^"]+)\"""")
ROOT = Path(__file__).resolve().parents[1]


def test_every_event_name_is_snake_case_and_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    names = {
        name
        for path in (ROOT / "bridge").rglob("*.py")
        for name in _EMITTED.findall(path.read_text())
    }
    assert {"command_done", "api_retry", "budget", "bridge_started"} <= names
    for name in names:
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name
        assert f"`{name}`" in readme, f"log event {name} is not in the README"


def test_every_configured_secret_is_redacted_sasl_password_included() -> None:
    from bridge.config import CloudflareSettings, KafkaSettings, Settings, secret_values

    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers="b:9094",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="bridge",
            sasl_password="sasl-pw-98765",
            ssl_certfile="/c.pem",
            ssl_key_password="key-pw-4321",
        ),
        cloudflare=CloudflareSettings(account_id="a", api_token="cf-token-1111"),
    )
    assert set(secret_values(settings)) == {"sasl-pw-98765", "key-pw-4321", "cf-token-1111"}
    stream = io.StringIO()
    configure(fmt="json", level="info", stream=stream)
    try:
        for secret in secret_values(settings):
            register_secret(secret)
        structlog.get_logger("t").error(
            "bridge_failed", error="login sasl-pw-98765 / key-pw-4321 / cf-token-1111 refused"
        )
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue())
    assert line["error"] == "login [redacted] / [redacted] / [redacted] refused"
