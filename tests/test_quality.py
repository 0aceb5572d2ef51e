"""The repository's own standards, enforced by the suite: ruff and mypy --strict clean.

They run here rather than only in the GitHub workflow so that `.ci/run` (which runs
exactly the README's test command) fails on a lint or type error too.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "."), ("ruff", "format", "--check", ".")],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff_is_clean(command: tuple[str, ...]) -> None:
    if shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    result = _run(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    # The files and strictness come from [tool.mypy] in pyproject.toml.
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


CLI_ONLY = ("d1deploy.cli", "click", "rich")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (`from a import b` as a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_core_module_imports_the_cli() -> None:
    """The one direction of imports: d1deploy/cli/ uses the core, never the reverse (ruff's
    banned-api says so too, but client.py is exempt from it for httpx)."""
    package = ROOT / "d1deploy"
    core = [p for p in package.rglob("*.py") if "cli" not in p.relative_to(package).parts]
    core = [p for p in core if p.name != "__main__.py"]
    assert package / "migrations.py" in core and package / "client.py" in core
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in core
        for name in _imports(path)
        if any(name == banned or name.startswith(banned + ".") for banned in CLI_ONLY)
    }
    assert offending == set()
