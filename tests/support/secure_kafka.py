"""The secured listeners of an Apache Kafka broker started with ``start-kafka.sh --secure DIR``.

``KAFKA_SECURE_DIR`` names DIR. Tests that need it use the ``secure_kafka`` fixture, which skips
without it — unless ``REQUIRE_SECURE_KAFKA=1`` (CI), where a missing broker fails the test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SECURE_DIR_ENV: Final = "KAFKA_SECURE_DIR"
REQUIRE_SECURE_ENV: Final = "REQUIRE_SECURE_KAFKA"


@dataclass(frozen=True, slots=True)
class SecureKafka:
    """Addresses, users and files of the secured broker."""

    dir: Path
    plaintext: str
    sasl_ssl: str
    mtls: str
    sasl_plaintext: str
    scram_user: str
    plain_user: str
    tls: Path

    @classmethod
    def load(cls, directory: Path) -> SecureKafka:
        info = json.loads((directory / "secure.json").read_text())
        return cls(
            dir=directory,
            plaintext=info["plaintext"],
            sasl_ssl=info["sasl_ssl"],
            mtls=info["mtls"],
            sasl_plaintext=info["sasl_plaintext"],
            scram_user=info["scram_user"],
            plain_user=info["plain_user"],
            tls=Path(info["tls"]),
        )

    def secret(self, name: str) -> str:
        """A generated secret, e.g. ``scram.password``."""
        return (self.tls / name).read_text().strip()

    def env_file(self, name: str) -> dict[str, str]:
        """The ``BRIDGE_KAFKA__*`` lines of ``DIR/<name>.env`` as a mapping."""
        pairs = {}
        for line in (self.dir / f"{name}.env").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                pairs[key] = value
        return pairs


def secure_dir() -> Path | None:
    value = os.environ.get(SECURE_DIR_ENV)
    return Path(value) if value else None


def secure_required() -> bool:
    return os.environ.get(REQUIRE_SECURE_ENV, "").strip().lower() in ("1", "true", "yes")
