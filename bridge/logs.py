"""Logging: JSON lines off a terminal, readable console output on one; secrets never printed.

The bridge logs with structlog; libraries (aiokafka, aiohttp) log with the standard library.
Both go through the same processors and renderer, so every line has one format, carries the
same fields (``event``, ``level``, ``timestamp``, plus ``logger`` for library lines) and is
redacted the same way. Event names are stable snake_case words (README, "Log events").
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = re.compile(r"token|password|secret|authorization", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Redact ``value`` wherever it would appear in a log line."""
    if value:
        _secrets.add(value)


def _scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "[redacted]")
    return _BEARER.sub(r"\1[redacted]", text)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secret-named fields and any registered secret value."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = _scrub(value)
    return event


def configure(*, fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog, and route the standard library's logging into it, once at start-up."""
    out = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    exceptions: Any = (
        structlog.processors.format_exc_info if not console else structlog.dev.set_exc_info
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            exceptions,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Library records: the same fields, redaction and renderer as the bridge's own lines.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # Libraries are chatty at info; their warnings and errors are what an operator needs.
    root.setLevel(max(numeric, logging.WARNING))
