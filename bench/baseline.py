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
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.common import ROOT, BenchError

#: The last commit of main before issue #9 changed anything (its first change is 697656c).
BASELINE_REV = "cd0264e"
#: The label of the baseline contestant in the table.
BEFORE = "before #9"
#: ``BRIDGE_*`` variables that did not exist before issue #9: the baseline would refuse them.
NEW_VARIABLES = frozenset({"BRIDGE_TOPICS__BUDGET"})


@contextlib.contextmanager
def baseline_tree(rev: str = BASELINE_REV) -> Iterator[Path]:
    """A directory holding the ``bridge`` package as of ``rev``; removed on exit."""
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
        yield Path(where)


def baseline_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    """``env`` for the baseline: its own ``bridge`` package first, no variable it cannot know."""
    adapted = {k: v for k, v in env.items() if k not in NEW_VARIABLES}
    adapted["PYTHONPATH"] = str(tree)
    return adapted
