"""Fast start: `d1deploy --version` and `--help` never import the HTTP stack, rich or the
migration engine (they are imported inside the commands that use them).

Structural, not timed: each case runs the real entry point in a fresh interpreter with
`-X importtime`, which lists every module imported, and checks the list.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from d1deploy import __version__

HEAVY = (
    "httpx",
    "httpcore",
    "tenacity",
    "rich",
    "d1deploy.client",
    "d1deploy.remote",
    "d1deploy.migrations",
    "d1deploy.ledger",
    "d1deploy.checks",
)


def imported(*args: str) -> tuple[str, set[str]]:
    """Run `python -X importtime -m d1deploy ARGS`: its stdout and the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "d1deploy", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
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


@pytest.mark.parametrize("args", [("--help",), ("migrate", "--help")])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    out, modules = imported(*args)
    assert "Usage:" in out
    assert "d1deploy.cli" in modules
    assert heavy(modules) == []
