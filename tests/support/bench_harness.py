"""The benchmark run as users run it: ``python -m bench --quick`` in its own process, on the
suite's broker, writing its JSON report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.kafka_harness import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]


def run_quick_bench(
    broker: KafkaBroker, only: str, report: Path, *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run the quick scenarios ``only`` on ``broker``; the report goes to ``report``."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_FLAVOUR": broker.flavour.value,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", only, "--json", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
