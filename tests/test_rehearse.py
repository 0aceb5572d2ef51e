"""`rehearse`: migrate -> rollback -> migrate on a local copy, never touching the target."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from d1deploy import backups, migrations, sqlsplit
from d1deploy.backend import Statement
from d1deploy.local import LocalBackend
from d1deploy.project import Project
from d1deploy.rehearse import RehearsalFailed, rehearse, row_counts
from tests.emulator import D1Emulator
from tests.helpers import REALISTIC_DATA, REBUILT_PARENT, SEED, remote_backend


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(SEED, target)
    return target


def production(path: Path, migrations_dir: Path, *, extra_sql: str = "") -> LocalBackend:
    """A database holding the base schema (baselined) and realistic rows: 001 pending."""
    db = LocalBackend(path)
    base = sqlsplit.read_sql_file(migrations_dir / "000_base_schema.sql")
    db.run(sqlsplit.split(base) + sqlsplit.split(REALISTIC_DATA + extra_sql))
    migrations.baseline(db, Project(migrations_dir, actor="test"), "000_base_schema.sql")
    return db


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_a_rehearsal_runs_migrate_rollback_migrate_on_a_copy(
    tmp_path: Path, migrations_dir: Path
) -> None:
    source = production(tmp_path / "prod.sqlite", migrations_dir)
    before = file_bytes(tmp_path / "prod.sqlite")

    report = rehearse(source, Project(migrations_dir, actor="test"), workdir=tmp_path / "work")

    assert report.ok
    assert [s.name for s in report.steps] == ["copy", "migrate", "rollback", "migrate again"]
    assert all(s.ok for s in report.steps)
    assert report.applied == ("001_schema_enhancements.sql",)
    assert report.rows_before == {"deposit_transactions": 5, "user_deposits": 3, "users": 3}
    assert report.rows_after == {**report.rows_before, "audit_logs": 0}
    assert report.checks and all(c.ok for c in report.checks)
    # The target was only exported: same bytes, still nothing applied.
    assert file_bytes(tmp_path / "prod.sqlite") == before
    status = migrations.status(source, Project(migrations_dir))
    assert status.pending == ("001_schema_enhancements.sql",)


def test_a_failing_precheck_fails_the_rehearsal_with_exit_5_and_leaves_the_source(
    tmp_path: Path, migrations_dir: Path
) -> None:
    source = production(
        tmp_path / "prod.sqlite",
        migrations_dir,
        extra_sql="UPDATE user_deposits SET balance = -700 WHERE id = 2;",
    )
    before = file_bytes(tmp_path / "prod.sqlite")

    with pytest.raises(RehearsalFailed) as caught:
        rehearse(source, Project(migrations_dir, actor="test"))

    failed = caught.value
    assert failed.exit_code == 5
    assert not failed.report.ok
    assert [(s.name, s.ok) for s in failed.report.steps] == [("copy", True), ("migrate", False)]
    bad = [c for c in failed.report.checks if not c.ok]
    assert bad and bad[0].rows and -700 in bad[0].rows[0]
    assert file_bytes(tmp_path / "prod.sqlite") == before


def test_a_rehearsal_can_start_from_a_verified_backup(tmp_path: Path, migrations_dir: Path) -> None:
    source = production(tmp_path / "prod.sqlite", migrations_dir)
    taken = backups.backup(source, dest=tmp_path / "prod.sql", backup_dir=tmp_path)
    source.run([Statement("DELETE FROM deposit_transactions")])  # the backup is what counts

    report = rehearse(source, Project(migrations_dir, actor="test"), from_backup=taken.path)

    assert report.ok
    assert report.source == str(taken.path)
    assert report.rows_before["deposit_transactions"] == 5


def test_a_rehearsal_of_a_d1_database_reads_it_and_changes_nothing(
    emulator: D1Emulator, migrations_dir: Path
) -> None:
    target = remote_backend(emulator)
    base = sqlsplit.read_sql_file(migrations_dir / "000_base_schema.sql")
    target.run(sqlsplit.split(base) + sqlsplit.split(REALISTIC_DATA))
    migrations.baseline(target, Project(migrations_dir, actor="test"), "000_base_schema.sql")
    emulator.reset_log()

    report = rehearse(target, Project(migrations_dir, actor="test"))

    assert report.ok
    assert report.applied == ("001_schema_enhancements.sql",)
    assert [s.name for s in report.steps] == ["copy", "migrate", "rollback", "migrate again"]
    assert report.rows_before == {"deposit_transactions": 5, "user_deposits": 3, "users": 3}
    assert emulator.auth_leaks == 0
    posts = [r for r in emulator.requests if r.method == "POST"]
    # The export, and the backup's reads of the schema and row counts around it.
    queries = [r.json for r in posts if r.path.endswith("/query")]
    assert any(r.path.endswith("/export") for r in posts)
    assert all(r.path.endswith(("/export", "/query")) for r in posts)
    assert all(item["sql"].startswith("SELECT ") for q in queries for item in q["batch"])
    with sqlite3.connect(emulator.db_path(emulator.default_db.name)) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        ledger = [row[0] for row in db.execute("SELECT name FROM d1_migrations")]
    assert "audit_logs" not in names and ledger == ["000_base_schema.sql"]


def test_a_migration_without_rollback_sql_limits_what_is_rehearsed_back(
    tmp_path: Path, migrations_dir: Path
) -> None:
    report = rehearse(LocalBackend(tmp_path / "new.sqlite"), Project(migrations_dir, actor="test"))

    assert report.ok
    assert report.applied == ("000_base_schema.sql", "001_schema_enhancements.sql")
    # 000 has no rollback SQL: only 001 is rehearsed back, and the report says why.
    assert [s.name for s in report.steps] == [
        "copy",
        "migrate",
        "rollback limit",
        "rollback",
        "migrate again",
    ]
    assert "000_base_schema.sql has no rollback SQL" in report.steps[2].detail


def test_row_counts_leave_out_the_ledger_and_d1deploy_tables(tmp_path: Path) -> None:
    db = LocalBackend(tmp_path / "x.sqlite")
    db.run(
        [
            Statement("CREATE TABLE t (a)"),
            Statement("INSERT INTO t VALUES (1), (2)"),
            Statement("CREATE TABLE d1_migrations (id)"),
            Statement("CREATE TABLE _d1deploy_history (id)"),
        ]
    )
    assert row_counts(db, "d1_migrations") == {"t": 2}


def test_a_database_whose_parent_table_was_rebuilt_can_be_rehearsed(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    # Its history is a migration (recorded, so the live schema is what it leaves)...
    (folder / "0001_parent_child.sql").write_text(";\n".join(REBUILT_PARENT) + ";\n")
    # ...and the one to rehearse.
    (folder / "0002_note.sql").write_text("ALTER TABLE child ADD COLUMN note TEXT;\n")
    source = LocalBackend(tmp_path / "prod.sqlite")
    source.run([Statement(s) for s in REBUILT_PARENT])
    migrations.baseline(source, Project(folder, actor="test"), "0001_parent_child")

    report = rehearse(source, Project(folder, actor="test"))

    assert report.ok
    assert report.rows_before["child"] == 2 and report.rows_after["child"] == 2
