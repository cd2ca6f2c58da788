"""Today's behaviour as a contestant: the bridge as it was before issue #9, from git.

The rows of issue #9 compare this bridge with the same service before the issue changed it —
confirmation ``GET``s after retried creates, budget shares fixed by partitions — run the same
way (``python -m bridge run`` with ``BRIDGE_*`` variables) from the commit before the issue's
first change, unpacked with ``git archive`` into a temporary directory. It runs on this
checkout's virtual environment: its dependencies are a subset of today's.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, BenchError

#: The last commit of main before issue #9 changed anything (its first change is 697656c).
BASELINE_REV = "cd0264e"
#: The label of the baseline contestant in the table.
BEFORE = "before #9"


@dataclass(frozen=True, slots=True)
class Baseline:
    """The unpacked package, and the ``BRIDGE_*`` variables it knows (it refuses others)."""

    path: Path
    variables: frozenset[str]


@contextlib.contextmanager
def baseline_tree(rev: str = BASELINE_REV) -> Iterator[Baseline]:
    """The ``bridge`` package as of ``rev`` in a temporary directory (removed on exit)."""
    try:
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", rev, "bridge"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if hasattr(exc, "stderr") else exc
        raise BenchError(f"cannot unpack the baseline {rev} from git: {detail}") from None
    with tempfile.TemporaryDirectory(prefix="bench-before-9-") as where:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(where, filter="data")
        yield Baseline(Path(where), _variables(Path(where)))


def _variables(tree: Path) -> frozenset[str]:
    """Ask the baseline's own settings which ``BRIDGE_*`` variables it reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PYTHONPATH"] = str(tree)
    script = "from bridge.config import environment_variables as e; print(*e(), sep='\\n')"
    try:
        listed = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"the baseline's settings cannot be read: {exc}") from None
    return frozenset(line.strip() for line in listed.splitlines() if line.strip())


def baseline_env(env: dict[str, str], baseline: Baseline) -> dict[str, str]:
    """``env`` for the baseline: its own ``bridge`` package first, and of the ``BRIDGE_*``
    variables only those it knows (settings added since would stop it)."""
    adapted = {
        k: v for k, v in env.items() if not k.startswith("BRIDGE_") or k in baseline.variables
    }
    adapted["PYTHONPATH"] = str(baseline.path)
    return adapted
