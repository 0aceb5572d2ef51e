"""Fast start: `d1deploy --version` and `--help`, and a command up to its first request,
import only what they use: never the HTTP stack, rich, the migration engine, nor typer or
pydantic (a typer release that coerces every option through pydantic cost ~80 ms a run).

Structural, not timed: each case runs the real entry point in a fresh interpreter with
`-X importtime`, which lists every module imported, and checks the list.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from d1deploy import __version__

HEAVY = (
    "httpx",
    "httpcore",
    "tenacity",
    "rich",
    "typer",
    "pydantic",
    "d1deploy.client",
    "d1deploy.remote",
    "d1deploy.migrations",
    "d1deploy.ledger",
    "d1deploy.checks",
    "d1deploy.cli.render",
)


def imported(*args: str, cwd: Path | None = None, code: int = 0) -> tuple[str, set[str]]:
    """Run `python -X importtime -m d1deploy ARGS`: its stdout and the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "d1deploy", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=cwd,
    )
    assert done.returncode == code, done.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }
    return done.stdout, modules


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_version_imports_nothing_heavy() -> None:
    out, modules = imported("--version")
    assert out == f"d1deploy {__version__}\n"
    assert "d1deploy.cli" in modules  # the listing works: the entry point is in it
    assert heavy(modules) == []


@pytest.mark.parametrize("args", [("--help",), ("migrate", "--help"), ("restore", "--help")])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    out, modules = imported(*args)
    assert "Usage:" in out
    assert "d1deploy.cli" in modules
    assert heavy(modules) == []


def test_a_local_command_imports_no_http_stack(tmp_path: Path) -> None:
    """`status --local` uses the engine but never the API: its path (here up to the
    missing file it stops at) imports neither HTTP nor the client, typer nor pydantic."""
    _, modules = imported("status", "--local=missing.sqlite", cwd=tmp_path, code=3)
    assert "d1deploy.config" in modules  # it got as far as resolving the settings
    engine = ("d1deploy.migrations", "d1deploy.ledger", "d1deploy.checks", "d1deploy.cli.render")
    assert heavy(modules - set(engine)) == []
