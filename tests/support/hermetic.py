"""Every ``BRIDGE_*`` variable pointing nowhere: the suite runs under it, to prove it hermetic.

An operator who exported ``BRIDGE_KAFKA__BOOTSTRAP_SERVERS=prod:9092`` must be able to run the
tests, ``dev`` and the benchmark without any of them reaching production: everything they start
is configured in code (``Settings(...)``) or with an environment built from scratch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bridge.config import ENV_PREFIX, environment_variables

#: Where the hostile variables point: an address that refuses connections at once.
NOWHERE_HOST = "127.0.0.1:9"


def hostile_value(name: str) -> str:
    """A value for ``name`` that would break anything that used it."""
    if name.endswith("BOOTSTRAP_SERVERS"):
        return NOWHERE_HOST
    if name.endswith("BASE_URL"):
        return f"http://{NOWHERE_HOST}/client/v4"
    if name.endswith(("TOKEN", "ACCOUNT_ID", "PASSWORD", "USERNAME")):
        return "not-for-tests"
    if name.startswith(ENV_PREFIX + "TOPICS__"):
        return "production.topic"
    return "1"


def hostile_environment() -> dict[str, str]:
    return {name: hostile_value(name) for name in environment_variables()}


def without_bridge_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment for a child process, with no ``BRIDGE_*`` variable inherited."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(ENV_PREFIX)}
