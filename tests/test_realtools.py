"""The real tools install and run as the suites that use them expect (tests/realtools.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import realtools


@pytest.mark.wrangler
def test_the_pinned_wrangler_runs_on_the_node_it_ships_with(wrangler: realtools.Wrangler) -> None:
    assert realtools.WRANGLER_VERSION in wrangler.version
    node = subprocess.run([str(wrangler.node), "--version"], capture_output=True, text=True)
    assert node.stdout.strip() == f"v{realtools.NODE_VERSION}"


@pytest.mark.workerd
def test_workerd_answers_through_wrangler_d1_execute_local(
    wrangler: realtools.Wrangler, tmp_path: Path
) -> None:
    (tmp_path / "wrangler.toml").write_text(
        'name = "probe"\n[[d1_databases]]\nbinding = "DB"\ndatabase_name = "probe"\n'
        'database_id = "00000000-0000-4000-8000-000000000001"\n'
    )
    done = wrangler.run(
        ["d1", "execute", "DB", "--local", "--json", "--command", "SELECT 41 + 1 AS answer"],
        cwd=tmp_path,
    )
    (answer,) = json.loads(done.stdout)
    assert answer["success"] is True
    assert answer["results"] == [{"answer": 42}]
    # Its state lives in the project, not in the user's home.
    assert (tmp_path / ".wrangler" / "state").is_dir()


@pytest.mark.act
def test_act_is_installed_by_the_dev_extra(act_binary: Path) -> None:
    done = subprocess.run([str(act_binary), "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "act version" in done.stdout
