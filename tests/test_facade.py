"""The library's front door: `import d1deploy` offers the operations, backends, options
and errors by name, imports none of them until used, and deploys the seed migrations on
a local file and on the emulator (judged from the SQLite file)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import d1deploy
from tests.emulator import D1Emulator
from tests.helpers import SEED

SEED_NAMES = ["000_base_schema.sql", "001_schema_enhancements.sql"]


def test_import_d1deploy_imports_nothing_until_a_name_is_used() -> None:
    code = (
        "import sys, d1deploy; d1deploy.__version__;"
        " print(sorted(m for m in sys.modules if m.startswith(('d1deploy', 'httpx'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['d1deploy']"


@pytest.mark.parametrize("name", d1deploy.__all__)
def test_every_name_resolves(name: str) -> None:
    assert getattr(d1deploy, name) is not None
    assert name in dir(d1deploy)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        d1deploy.nothing  # noqa: B018


def test_the_errors_are_the_errors_module_s() -> None:
    from d1deploy import errors

    assert d1deploy.errors is errors
    assert d1deploy.SqlError is errors.SqlError and d1deploy.D1DeployError is errors.D1DeployError


def deploy_through_the_facade(backend: d1deploy.Backend, seed: Path) -> None:
    """What a Python user would write: status, plan, migrate, verify, status again."""
    project = d1deploy.Project(seed, actor="python")
    before = d1deploy.status(backend, project)
    assert list(before.pending) == SEED_NAMES and not before.applied
    assert d1deploy.plan(backend, project).status.pending == before.pending
    report = d1deploy.migrate(backend, project, d1deploy.MigrateOptions())
    assert report.ok and [a.name for a in report.applied] == SEED_NAMES
    assert d1deploy.verify(backend, project).ok
    after = d1deploy.status(backend, project)
    assert list(after.applied) == SEED_NAMES and not after.pending


def ledger_and_tables(path: Path) -> tuple[list[str], set[str]]:
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM d1_migrations ORDER BY id")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return names, tables


def test_a_deploy_through_the_facade_on_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    backend = d1deploy.LocalBackend(path)
    try:
        deploy_through_the_facade(backend, SEED)
    finally:
        backend.close()
    names, tables = ledger_and_tables(path)
    assert names == SEED_NAMES and {"users", "audit_logs"} <= tables


def test_a_deploy_through_the_facade_on_the_emulator(emulator: D1Emulator) -> None:
    ref = emulator.default_db
    assert ref is not None
    client = d1deploy.D1Client(
        token=emulator.token,
        account_id=emulator.account_id,
        base_url=emulator.base_url,
        transport=emulator.transport(),
    )
    info = d1deploy.DatabaseInfo(uuid=ref.uuid, name=ref.name)
    backend = d1deploy.RemoteBackend(client, info)
    try:
        deploy_through_the_facade(backend, SEED)
    finally:
        backend.close()
    names, tables = ledger_and_tables(emulator.db_path(ref.uuid))
    assert names == SEED_NAMES and {"users", "audit_logs"} <= tables
