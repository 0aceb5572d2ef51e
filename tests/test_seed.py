"""The seed deployment in migrations/: the bot's base schema, migration 001 with its
rollback, prechecks and verification, on fresh and realistic databases."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from d1deploy import checks, defaults, errors, ledger, lint, migrations, planning, sqlsplit
from d1deploy.backend import Backend, SqlValue, Statement
from d1deploy.local import LocalBackend
from d1deploy.migrations import MigrateOptions
from d1deploy.project import Project
from tests.emulator import D1Emulator
from tests.helpers import FIFTEEN_ASCII, FIFTEEN_KOREAN, REALISTIC_DATA, remote_backend

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
BASE = MIGRATIONS / "000_base_schema.sql"
M001 = MIGRATIONS / "001_schema_enhancements.sql"
ROLLBACK = MIGRATIONS / "001_schema_enhancements" / "rollback.sql"
PRECHECK = MIGRATIONS / "001_schema_enhancements" / "precheck.sql"
VERIFY = MIGRATIONS / "001_schema_enhancements" / "verify.sql"

USER_TABLES = ("users", "user_deposits", "deposit_transactions")
INDEXES = {
    "idx_deposit_transactions_user",
    "idx_deposit_transactions_status",
    "sqlite_autoindex_user_deposits_1",
    "sqlite_autoindex_users_1",
}
AUDIT_INDEXES = {"idx_audit_logs_telegram_created", "idx_audit_logs_action_created"}


def apply(backend: Backend, path: Path) -> None:
    """Apply a migration file as one batch, one statement per item, as d1deploy sends it."""
    backend.run(sqlsplit.split(sqlsplit.read_sql_file(path), file=path.name))


def query(backend: Backend, sql: str) -> list[tuple[SqlValue, ...]]:
    return list(backend.run([Statement(sql)], read_only=True)[0].rows)


# The bot's own objects: not d1deploy's ledger, history, lock and scratch tables.
BOT_OBJECTS = (
    "tbl_name NOT LIKE '\\_d1deploy%' ESCAPE '\\'"
    " AND tbl_name NOT IN ('d1_migrations', 'sqlite_sequence')"
)


def schema(backend: Backend) -> set[tuple[SqlValue, ...]]:
    """The user schema, with whitespace and identifier quoting normalised (a renamed
    table's CREATE TABLE reads `"name"`)."""
    rows = query(
        backend,
        f"SELECT type, name, tbl_name, sql FROM sqlite_master WHERE {BOT_OBJECTS}",
    )
    return {
        (kind, name, table, None if sql is None else " ".join(str(sql).replace('"', "").split()))
        for kind, name, table, sql in rows
    }


def data(backend: Backend) -> dict[str, list[tuple[SqlValue, ...]]]:
    return {t: query(backend, f"SELECT * FROM {t} ORDER BY id") for t in USER_TABLES}


def index_names(backend: Backend) -> set[SqlValue]:
    sql = f"SELECT name FROM sqlite_master WHERE type = 'index' AND {BOT_OBJECTS}"
    return {row[0] for row in query(backend, sql)}


def run_file(backend: Backend, path: Path) -> list[checks.CheckResult]:
    """Run a check file on the database as it is (as `verify` does)."""
    inside = path.is_relative_to(MIGRATIONS)
    shown = path.relative_to(MIGRATIONS).as_posix() if inside else path.name
    with planning.model_of(ledger.read_state(backend, defaults.MIGRATIONS_TABLE)) as live:
        found = checks.parse_check_file(path, display_name=shown, schema=live, strict=False)
    return checks.run_checks(backend, found)


def model_after(*files: Path) -> lint.SchemaModel:
    """The schema `files` leave on an empty database."""
    model = lint.SchemaModel(known=True)
    for path in files:
        lint.lint_statements(sqlsplit.split(path.read_text(encoding="utf-8")), schema=model)
    return model


def failures(results: list[checks.CheckResult]) -> list[str]:
    return [r.check.label for r in results if not r.ok]


@pytest.fixture(params=["local", "emulator"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty bot database, as a local file and on the D1 emulator."""
    backend: Backend
    if request.param == "local":
        backend = LocalBackend(tmp_path / "bot.sqlite")
    else:
        backend = remote_backend(request.getfixturevalue("emulator"))
    yield backend
    backend.close()


@pytest.fixture
def base(db: Backend) -> Backend:
    apply(db, BASE)
    # IF NOT EXISTS: applying it over the schema it describes changes nothing.
    apply(db, BASE)
    return db


@pytest.fixture
def populated(base: Backend) -> Backend:
    base.run(sqlsplit.split(REALISTIC_DATA))
    return base


def test_every_seed_file_parses() -> None:
    prechecks = checks.parse_check_file(PRECHECK, schema=model_after(BASE))
    verify = checks.parse_check_file(VERIFY, schema=model_after(BASE, M001))
    assert [c.label for c in prechecks] == [
        "no negative balances",
        "no depositor names over 15 characters",
        "audit_logs does not exist yet",
    ]
    probes = [c for c in verify if c.writes]
    assert [c.sql.splitlines()[0] for c in probes] == [
        "INSERT INTO user_deposits (user_id, balance) VALUES (999999, -1000);",
        "INSERT INTO deposit_transactions (user_id, amount, depositor_name)",
        "INSERT INTO deposit_transactions (user_id, amount, depositor_name)",
    ]
    assert [c.expect.describe() for c in probes] == [
        "error ~ CHECK constraint failed: balance >= 0",
        "error ~ CHECK constraint failed: length(depositor_name) <= 15",
        "succeeds",
    ]


def test_fresh_database_takes_the_whole_deployment(base: Backend) -> None:
    assert not failures(run_file(base, PRECHECK))
    apply(base, M001)
    assert index_names(base) == INDEXES | AUDIT_INDEXES
    results = run_file(base, VERIFY)
    assert not failures(results)
    assert {r.probe for r in results if r.check.writes} == {"abort"}
    assert query(base, "SELECT count(*) FROM user_deposits") == [(0,)]
    assert query(base, "SELECT count(*) FROM deposit_transactions") == [(0,)]


def test_001_keeps_every_row_and_index(populated: Backend) -> None:
    before = data(populated)
    assert not failures(run_file(populated, PRECHECK))
    apply(populated, M001)
    assert data(populated) == before
    assert index_names(populated) == INDEXES | AUDIT_INDEXES
    assert not failures(run_file(populated, VERIFY))
    # The constraints are live for the bot's own writes, not only for the probes.
    names = query(populated, "SELECT depositor_name FROM deposit_transactions ORDER BY id")
    assert (FIFTEEN_KOREAN,) in names
    assert (FIFTEEN_ASCII,) in names


def test_the_audit_log_answers_the_seeds_queries(populated: Backend) -> None:
    apply(populated, M001)
    populated.run(
        [
            Statement(
                "INSERT INTO audit_logs (user_id, telegram_id, action, resource_type,"
                " resource_id, details) VALUES (1, '123456', 'deposit_confirmed',"
                " 'deposit_transaction', '1', json_object('amount', 5000,"
                " 'depositor_name', '홍길동'))"
            )
        ]
    )
    today = query(
        populated,
        "SELECT COUNT(*), SUM(json_extract(details, '$.amount')) FROM audit_logs"
        " WHERE action = 'deposit_confirmed' AND date(created_at) = date('now')",
    )
    assert today == [(1, 5000)]
    plan = query(
        populated,
        "EXPLAIN QUERY PLAN SELECT action, details, created_at FROM audit_logs"
        " WHERE telegram_id = '123456' ORDER BY created_at DESC LIMIT 10",
    )
    assert any("idx_audit_logs_telegram_created" in str(row[-1]) for row in plan)


def test_rollback_restores_the_exact_pre_001_schema_and_data(populated: Backend) -> None:
    schema_before, data_before = schema(populated), data(populated)
    apply(populated, M001)
    assert schema(populated) != schema_before
    apply(populated, ROLLBACK)
    assert schema(populated) == schema_before
    assert data(populated) == data_before
    # The seed's own rollback checks: audit_logs gone, negative balances accepted again.
    assert query(populated, "SELECT COUNT(*) FROM sqlite_master WHERE name='audit_logs'") == [(0,)]
    populated.run([Statement("INSERT INTO user_deposits (user_id, balance) VALUES (999, -500)")])


def test_a_negative_balance_blocks_the_deployment_until_fixed(populated: Backend) -> None:
    populated.run([Statement("UPDATE user_deposits SET balance = -300 WHERE id = 2")])
    results = run_file(populated, PRECHECK)
    assert failures(results) == ["no negative balances"]
    failed = results[0]
    assert failed.outcome == "1 row"
    assert failed.columns == ("id", "user_id", "balance")
    assert failed.rows == ((2, 2, -300),)
    assert failed.check.location == "001_schema_enhancements/precheck.sql:6"
    populated.run([Statement("UPDATE user_deposits SET balance = 0 WHERE id = 2")])
    assert not failures(run_file(populated, PRECHECK))


def test_a_16_character_name_blocks_the_deployment_until_fixed(populated: Backend) -> None:
    long_name = FIFTEEN_KOREAN + "너"
    populated.run(
        [Statement("UPDATE deposit_transactions SET depositor_name = ? WHERE id = 2", (long_name,))]
    )
    results = run_file(populated, PRECHECK)
    assert failures(results) == ["no depositor names over 15 characters"]
    failed = results[1]
    assert failed.columns == ("id", "depositor_name", "len")
    assert failed.rows == ((2, long_name, 16),)
    populated.run(
        [Statement("UPDATE deposit_transactions SET depositor_name = ? WHERE id = 2", ("홍길동",))]
    )
    assert not failures(run_file(populated, PRECHECK))


def test_prechecks_refuse_a_second_run_of_001(populated: Backend) -> None:
    apply(populated, M001)
    assert failures(run_file(populated, PRECHECK)) == ["audit_logs does not exist yet"]


def without_checks(tmp_path: Path) -> Path:
    """Migration 001 as someone might have botched it, in `tmp_path`: the balance CHECK
    left out."""
    text = M001.read_text(encoding="utf-8")
    broken = text.replace(" CHECK (balance >= 0)", "")
    assert broken != text
    path = tmp_path / "001_schema_enhancements.sql"
    path.write_text(broken, encoding="utf-8")
    shutil.copy(VERIFY, tmp_path / VERIFY.name)
    return path


def assert_verify_catches_the_missing_check(backend: Backend, tmp_path: Path) -> None:
    apply(backend, BASE)
    backend.run(sqlsplit.split(REALISTIC_DATA))
    apply(backend, without_checks(tmp_path))
    results = run_file(backend, tmp_path / VERIFY.name)
    assert failures(results) == ["a negative balance is refused"]
    (probe,) = [r for r in results if not r.ok]
    assert probe.outcome.startswith("succeeded (probe")
    assert probe.check.location == "verify.sql:7"
    # The probe that succeeded left nothing behind.
    assert query(backend, "SELECT count(*) FROM user_deposits WHERE balance = -1000") == [(0,)]
    assert query(backend, "SELECT count(*) FROM user_deposits WHERE user_id = 999999") == [(0,)]
    assert query(backend, "SELECT count(*) FROM deposit_transactions WHERE user_id = 999999") == [
        (0,)
    ]


def test_verify_fails_when_001_omits_the_check(db: Backend, tmp_path: Path) -> None:
    assert_verify_catches_the_missing_check(db, tmp_path)


def test_verify_fails_without_a_trace_where_batches_are_not_atomic(
    emulator: D1Emulator, tmp_path: Path
) -> None:
    emulator.atomic_batches = False
    backend = remote_backend(emulator)
    try:
        assert_verify_catches_the_missing_check(backend, tmp_path)
        assert checks.read_proof(backend) is False
    finally:
        backend.close()


# --- through the engine, as `d1deploy migrate` runs it -------------------------------


def applied(backend: Backend) -> list[SqlValue]:
    return [row[0] for row in query(backend, "SELECT name FROM d1_migrations ORDER BY id")]


def test_the_engine_deploys_the_seed_on_a_fresh_database(db: Backend) -> None:
    report = migrations.migrate(db, Project(MIGRATIONS, actor="test"))
    assert report.ok
    assert [m.name for m in report.applied] == [BASE.name, M001.name]
    assert report.checks and all(r.ok for r in report.checks)
    assert {r.probe for r in report.checks if r.check.writes} == {"abort"}
    assert applied(db) == [BASE.name, M001.name]
    assert index_names(db) == INDEXES | AUDIT_INDEXES


def test_production_is_baselined_migrated_and_rolled_back(populated: Backend) -> None:
    schema_before, data_before = schema(populated), data(populated)
    migrations.baseline(populated, Project(MIGRATIONS, actor="test"), BASE.stem)
    report = migrations.migrate(populated, Project(MIGRATIONS, actor="test"))
    assert [m.name for m in report.applied] == [M001.name]
    assert data(populated) == data_before
    assert migrations.verify(populated, Project(MIGRATIONS)).ok
    undone = migrations.rollback(populated, Project(MIGRATIONS, actor="test"))
    assert [m.name for m in undone.rolled_back] == [M001.name]
    assert schema(populated) == schema_before
    assert data(populated) == data_before
    assert applied(populated) == [BASE.name]


def test_the_engine_refuses_001_over_a_negative_balance(populated: Backend) -> None:
    migrations.baseline(populated, Project(MIGRATIONS, actor="test"), BASE.stem)
    populated.run([Statement("UPDATE user_deposits SET balance = -300 WHERE id = 2")])
    schema_before = schema(populated)
    with pytest.raises(errors.PrecheckFailed) as info:
        migrations.migrate(populated, Project(MIGRATIONS, actor="test"))
    assert info.value.exit_code == 5
    assert info.value.location == f"{PRECHECK}:6"
    assert schema(populated) == schema_before
    assert applied(populated) == [BASE.name]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "nonatomic"])
def test_the_engine_undoes_a_001_without_its_check_on_the_emulator(
    emulator: D1Emulator, tmp_path: Path, atomic: bool
) -> None:
    emulator.atomic_batches = atomic
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    without_checks(folder)
    backend = remote_backend(emulator)
    try:
        migrations.migrate(backend, Project(folder, actor="test"), MigrateOptions(to=BASE.stem))
        backend.run(sqlsplit.split(REALISTIC_DATA))
        schema_before, data_before = schema(backend), data(backend)
        with pytest.raises(migrations.DeployFailed) as info:
            migrations.migrate(backend, Project(folder, actor="test"))
        report = info.value.report
        assert isinstance(report, migrations.MigrateReport)
        assert [m.name for m in report.rolled_back] == [M001.name]
        (failed,) = [r for r in report.checks if not r.ok]
        assert failed.check.label == "a negative balance is refused"
        assert failed.probe == ("abort" if atomic else "shadow")
        assert schema(backend) == schema_before
        assert data(backend) == data_before  # and so no -1000 balance
        assert applied(backend) == [BASE.name]
    finally:
        backend.close()
