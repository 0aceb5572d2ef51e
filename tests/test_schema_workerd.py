"""The schema comparison against D1's own engine: workerd, as `wrangler d1 execute
--local` runs it, applies the seed the runbook's way and changes it by hand; d1deploy
reads the SQLite file workerd wrote. Its SQLite (a different version from Python's)
writes the definitions the replay is compared with, so this is where "formatting and
quoting do not count" is held to the real thing. A database migrated by `wrangler d1
migrations apply` (ledger rows, no d1deploy history) compares clean from its files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from d1deploy import migrations
from d1deploy.discovery import discover
from d1deploy.local import LocalBackend
from d1deploy.project import Project
from tests import realtools

pytestmark = pytest.mark.workerd

SEED = Path(__file__).resolve().parent.parent / "migrations"
M000 = "000_base_schema.sql"
M001 = "001_schema_enhancements.sql"
WRANGLER_TOML = (
    'name = "seed"\n[[d1_databases]]\nbinding = "DB"\ndatabase_name = "telegram-conversations"\n'
    'database_id = "00000000-0000-4000-8000-000000000016"\n'
)


def project(root: Path) -> Path:
    """A wrangler project whose migrations folder holds only the two migrations (wrangler
    would run any other .sql file in it as a migration)."""
    root.mkdir()
    (root / "wrangler.toml").write_text(WRANGLER_TOML)
    (root / "migrations").mkdir()
    for m in discover(SEED):
        shutil.copy(m.path, root / "migrations" / m.name)
    return root


def workerd_file(root: Path) -> Path:
    (found,) = [
        p
        for p in (root / ".wrangler" / "state").rglob("*.sqlite")
        if "D1DatabaseObject" in str(p) and p.name != "metadata.sqlite"
    ]
    return found


def execute(wrangler: realtools.Wrangler, root: Path, *args: str) -> None:
    wrangler.run(["d1", "execute", "DB", "--local", "--yes", *args], cwd=root)


def test_the_runbook_on_workerd_is_adopted_and_a_hand_change_shown(
    wrangler: realtools.Wrangler, tmp_path: Path
) -> None:
    root = project(tmp_path / "runbook")
    execute(wrangler, root, "--file", f"migrations/{M000}")
    execute(wrangler, root, "--file", f"migrations/{M001}")
    db = LocalBackend(workerd_file(root))
    try:
        found = migrations.status(db, Project(root / "migrations")).schema
        assert found is not None
        assert found.matches_up_to == M001 and found.baseline_records == (M000, M001)
        migrations.baseline(db, Project(root / "migrations", actor="test"), M001)
        assert migrations.status(db, Project(root / "migrations")).schema_drift == ()
    finally:
        db.close()

    execute(wrangler, root, "--command", "ALTER TABLE users ADD COLUMN nickname TEXT")
    db = LocalBackend(workerd_file(root))
    try:
        drift = migrations.status(db, Project(root / "migrations")).schema_drift
    finally:
        db.close()
    assert [d.describe() for d in drift] == ["table users changed (added column nickname TEXT)"]


def test_migrations_applied_by_wrangler_compare_clean(
    wrangler: realtools.Wrangler, tmp_path: Path
) -> None:
    root = project(tmp_path / "applied")
    wrangler.run(["d1", "migrations", "apply", "DB", "--local"], cwd=root)
    db = LocalBackend(workerd_file(root))
    try:
        report = migrations.status(db, Project(root / "migrations"))
    finally:
        db.close()
    assert report.applied == (M000, M001)
    assert report.schema is not None and report.schema.compared
    assert report.schema_drift == ()
