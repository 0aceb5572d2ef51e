"""Shared pytest fixtures: a clean environment and the D1 emulator (tests/emulator)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator import D1Emulator, ServedEmulator


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
