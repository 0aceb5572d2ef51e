"""The migration engine, on a local SQLite file and on the D1 emulator over REST."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from d1deploy import errors, ledger, lock, migrations, planning, sqlsplit
from d1deploy.backend import SqlValue, Statement
from d1deploy.migrations import MigrateReport
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests import helpers
from tests.helpers import ONE_EACH, USER_TABLES, Db, deploy, remote_backend, three, write

# The engine's fixtures (tests/helpers.py): a database on a local file and on the
# emulator, the emulator alone, a migrations folder, a copy of the seed.
db, remote, mdir, seed = helpers.db, helpers.remote, helpers.mdir, helpers.seed

# --- the deploy ------------------------------------------------------------------------


def test_fresh_database_gets_every_migration_and_a_second_run_does_nothing(
    db: Db, seed: Path
) -> None:
    lines: list[str] = []
    report = deploy(db, seed, notify=lines.append, before_change=lambda: {"file": "b.sql"})
    names = ["000_base_schema.sql", "001_schema_enhancements.sql"]
    assert report.ok and [a.name for a in report.applied] == names
    assert report.backup == {"file": "b.sql"} and report.bookmark_before
    assert all(r.ok for r in report.checks) and any(r.probe == "abort" for r in report.checks)
    assert db.ledger() == names
    assert db.events() == [(names[0], "apply", 1), (names[1], "apply", 1)]
    assert any(line.startswith("applied 001_schema_enhancements.sql in ") for line in lines)
    assert db.rows("SELECT count(*) FROM user_deposits WHERE user_id = 999999") == [(0,)]
    assert db.rows(f"SELECT count(*) FROM {lock.LOCK_TABLE}") == [(0,)]

    if db.emulator:
        db.emulator.reset_log()
    again = deploy(db, seed)
    assert again.ok and again.applied == () and again.bookmark_before is None
    if db.emulator:
        # One request reads everything; with nothing pending it takes no lock.
        assert db.emulator.count("POST", "/query") == 1
    assert db.ledger() == names


@pytest.mark.parametrize(("limits", "changes"), [(ledger.Limits(), 1), (ONE_EACH, 3)])
def test_consecutive_migrations_share_a_request_as_far_as_they_fit(
    remote: Db, mdir: Path, limits: ledger.Limits, changes: int
) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.reset_log()
    report = deploy(remote, mdir, limits=limits)
    assert [a.statements for a in report.applied] == [1, 1, 1]
    # setup+lock+read, the bookmark, then the migrations in as few requests as fit (the
    # last one also releases the lock).
    assert remote.emulator.count("POST", "/query") == 1 + changes
    assert remote.emulator.count("GET", "/time_travel/bookmark") == 1
    assert remote.count(lock.LOCK_TABLE) == 0
    assert remote.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]


def test_editing_an_applied_file_is_drift(db: Db, mdir: Path) -> None:
    three(mdir)
    deploy(db, mdir)
    write(mdir, "002_b.sql", "CREATE TABLE b (id INTEGER PRIMARY KEY, x TEXT);\n")
    write(mdir, "004_d.sql", "CREATE TABLE d (id INTEGER PRIMARY KEY);\n")
    report = migrations.status(db.backend, Project(mdir))
    assert report.drifted == ("002_b.sql",) and report.pending == ("004_d.sql",)
    with pytest.raises(errors.DriftDetected) as info:
        deploy(db, mdir)
    assert info.value.exit_code == 5 and "002_b.sql" in str(info.value)
    with pytest.raises(errors.DriftDetected):
        migrations.refuse_drift(report)
    assert db.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]
    assert db.count(lock.LOCK_TABLE) == 0
    assert [a.name for a in deploy(db, mdir, allow_drift=True).applied] == ["004_d.sql"]


def test_status_reports_missing_and_out_of_order(db: Db, mdir: Path) -> None:
    three(mdir)
    deploy(db, mdir)
    (mdir / "002_b.sql").unlink()
    (mdir / "002_b" / "rollback.sql").unlink()
    write(mdir, "002_late.sql", "CREATE TABLE late (id INTEGER);\n")
    report = migrations.status(db.backend, Project(mdir))
    assert report.missing == ("002_b.sql",)
    assert report.out_of_order == ("002_late.sql",) and report.pending == ("002_late.sql",)
    assert report.applied == ("001_a.sql", "003_c.sql")


def unquoted(schema: list[tuple[SqlValue, ...]]) -> list[tuple[SqlValue, ...]]:
    """The schema with `CREATE TABLE "x"` written `CREATE TABLE x`, as SQLite's ALTER TABLE
    RENAME quotes the new name."""
    return [
        (kind, name, re.sub(r'^CREATE TABLE "([^"]+)"', r"CREATE TABLE \1", str(sql)))
        for kind, name, sql in schema
    ]


def test_rollback_then_migrate_round_trips_schema_and_data(db: Db, seed: Path) -> None:
    deploy(db, seed, to="000_base_schema")
    before_001 = unquoted(db.rows(USER_TABLES))
    deploy(db, seed)
    db.exec(
        "INSERT INTO user_deposits (id, user_id, balance) VALUES (1, 10, 500), (2, 11, 0)",
        "INSERT INTO deposit_transactions (id, user_id, amount, depositor_name)"
        " VALUES (1, 10, 500, '홍길동'), (2, 11, 20, NULL)",
    )
    after_001 = db.rows(USER_TABLES)
    data = (
        "SELECT * FROM user_deposits"
        " UNION ALL SELECT id, user_id, amount, 0, 0 FROM deposit_transactions"
    )
    rows = db.rows(data)

    report = migrations.rollback(db.backend, Project(seed, actor="tester"))
    assert [(r.name, r.source) for r in report.rolled_back] == [
        ("001_schema_enhancements.sql", "file")
    ]
    assert unquoted(db.rows(USER_TABLES)) == before_001 and db.rows(data) == rows
    assert db.ledger() == ["000_base_schema.sql"]

    deploy(db, seed)
    assert db.rows(USER_TABLES) == after_001 and db.rows(data) == rows
    assert [e[1] for e in db.events()] == ["apply", "apply", "rollback", "apply"]


def test_a_failing_statement_leaves_nothing_of_its_migration(db: Db, mdir: Path) -> None:
    write(
        mdir, "001_ok.sql", "CREATE TABLE ok (id INTEGER NOT NULL);\nINSERT INTO ok VALUES (1);\n"
    )
    write(mdir, "001_ok/rollback.sql", "DROP TABLE ok;\n")
    # Fails on the row 001 inserts, so only when it runs for real.
    write(
        mdir,
        "002_bad.sql",
        "CREATE TABLE first (id INTEGER);\n\nUPDATE ok SET id = NULL;\n"
        "CREATE TABLE third (id INTEGER);\n",
    )
    with pytest.raises(errors.ChangeFailed) as info:
        deploy(db, mdir, limits=ONE_EACH)
    err = info.value
    assert isinstance(err, migrations.DeployFailed)
    assert "002_bad.sql failed and was not applied" in err.message
    assert "NOT NULL constraint failed: ok.id" in err.message
    if not db.backend.is_remote:  # D1's REST answer does not say which batch item failed
        assert err.file is not None and err.file.endswith("002_bad.sql") and err.line == 3
    # This run's earlier migration was undone with its rollback SQL.
    assert [r.name for r in err.report.rolled_back] == ["001_ok.sql"]
    assert db.ledger() == []
    tables = {r[1] for r in db.rows(USER_TABLES)}
    assert not tables & {"ok", "first", "third"}
    assert db.count(lock.LOCK_TABLE) == 0


def test_a_trigger_migration_applies(db: Db, mdir: Path) -> None:
    write(
        mdir,
        "0001_trigger.sql",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, updated TEXT);\n"
        "create trigger t_touch after update on t\nbegin\n"
        "  update t set updated = 'yes' where id = new.id;\n"
        "  select case when new.id < 0 then raise(abort, 'negative; id') end;\nend;\n"
        "INSERT INTO t (id) VALUES (1);\nUPDATE t SET id = 1 WHERE id = 1;\n",
    )
    report = deploy(db, mdir)
    assert report.applied[0].statements == 4
    assert report.applied[0].rows_written == 3
    assert db.rows("SELECT updated FROM t") == [("yes",)]


def test_verify_failure_after_3_of_3_rolls_back_this_run_only(db: Db, mdir: Path) -> None:
    write(mdir, "000_base.sql", "CREATE TABLE base (id INTEGER);\n")
    deploy(db, mdir)
    three(mdir)
    write(
        mdir, "003_c/verify.sql", "-- check: c has a row\n-- expect: rows >= 1\nSELECT * FROM c;\n"
    )
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, mdir, limits=ONE_EACH)
    report = info.value.report
    assert isinstance(report, MigrateReport) and not report.ok
    assert "verification failed after 003_c.sql: c has a row (no rows)" in info.value.message
    # The check ran inside 003's own request: its failure aborted 003 with it (#19).
    assert [a.name for a in report.applied] == ["001_a.sql", "002_b.sql"]
    assert [r.name for r in report.rolled_back] == ["002_b.sql", "001_a.sql"]
    assert [c.ok for c in report.checks] == [False]
    assert db.ledger() == ["000_base.sql"]
    assert {r[1] for r in db.rows(USER_TABLES)} == {"base"}
    assert info.value.exit_code == 1


def test_verify_failure_without_rollback_sql_names_the_restore_command(db: Db, mdir: Path) -> None:
    three(mdir, rollbacks=False)
    write(mdir, "003_c/verify.sql", "-- expect: value = 1\nSELECT count(*) FROM c;\n")
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, mdir, limits=ONE_EACH)
    report = info.value.report
    assert report.bookmark_before is not None
    assert (
        info.value.hint
        == f"restore it with `d1deploy restore --bookmark {report.bookmark_before} --yes`"
    )
    # 003's failing check aborted 003 itself (#19); 002 is where undoing stops.
    assert "002_b.sql has no rollback SQL" in info.value.message
    assert db.ledger() == ["001_a.sql", "002_b.sql"]


def test_on_failure_restore_uses_the_bookmark(db: Db, mdir: Path) -> None:
    three(mdir, rollbacks=False)
    write(mdir, "003_c/verify.sql", "-- expect: value = 1\nSELECT count(*) FROM c;\n")
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, mdir, on_failure="restore", limits=ONE_EACH)
    report = info.value.report
    assert isinstance(report, MigrateReport)
    assert report.restored_to == report.bookmark_before is not None
    assert db.ledger() == [] and db.rows(USER_TABLES) == []


def test_the_seed_verify_catches_a_missing_check_without_leaving_the_probe_row(
    db: Db, seed: Path
) -> None:
    deploy(db, seed, to="000_base_schema")
    altered = (seed / "001_schema_enhancements.sql").read_text(encoding="utf-8")
    altered = altered.replace(" CHECK (balance >= 0)", "")
    write(seed, "001_schema_enhancements.sql", altered)
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, seed)
    report = info.value.report
    assert isinstance(report, MigrateReport)
    (failed,) = [r for r in report.checks if not r.ok]
    assert failed.check.label == "a negative balance is refused"
    assert failed.outcome.startswith("succeeded") and failed.probe in ("abort", "shadow")
    assert "verification failed after 001_schema_enhancements.sql" in info.value.message
    assert [r.name for r in report.rolled_back] == ["001_schema_enhancements.sql"]
    assert db.ledger() == ["000_base_schema.sql"]
    assert db.rows("SELECT count(*) FROM user_deposits WHERE balance < 0") == [(0,)]
    assert "CHECK" not in str(db.rows(USER_TABLES))


def test_prechecks_refuse_before_anything_changes(db: Db, seed: Path) -> None:
    deploy(db, seed, to="000_base_schema.sql")
    db.exec(
        "INSERT INTO user_deposits (user_id, balance) VALUES (7, -5)",
        "INSERT INTO deposit_transactions (user_id, amount, depositor_name)"
        " VALUES (7, 1, 'ABCDEFGHIJKLMNOP')",
    )
    with pytest.raises(migrations.PrechecksFailed) as info:
        deploy(db, seed)
    assert info.value.exit_code == 5
    failed = [r for r in info.value.results if not r.ok]
    assert [r.check.label for r in failed] == [
        "no negative balances",
        "no depositor names over 15 characters",
    ]
    assert failed[0].rows == ((1, 7, -5),)
    assert db.ledger() == ["000_base_schema.sql"]
    assert db.count(lock.LOCK_TABLE) == 0

    db.exec(
        "UPDATE user_deposits SET balance = 0",
        "UPDATE deposit_transactions SET depositor_name = 'ABC'",
    )
    assert deploy(db, seed).ok


def test_not_null_column_without_default_is_refused_only_on_a_table_with_rows(
    db: Db, mdir: Path
) -> None:
    write(mdir, "001_users.sql", "CREATE TABLE users (id INTEGER PRIMARY KEY);\n")
    write(mdir, "002_email.sql", "-- required\nALTER TABLE users ADD COLUMN email TEXT NOT NULL;\n")
    deploy(db, mdir, to="001_users.sql")
    db.exec("INSERT INTO users (id) VALUES (1), (2)")

    # The count is one more precheck: read with the others, before anything changes.
    planned = planning.plan(db.backend, Project(mdir))
    (failed,) = planned.precheck_failures
    assert failed.check.label.startswith("users must be empty")
    assert (failed.check.file, failed.check.line) == (str(mdir / "002_email.sql"), 2)
    assert failed.outcome == "value 2"
    with pytest.raises(migrations.PrechecksFailed) as info:
        deploy(db, mdir)
    assert info.value.exit_code == 5
    assert "users must be empty" in info.value.message
    assert db.ledger() == ["001_users.sql"]

    db.exec("DELETE FROM users")
    assert planning.plan(db.backend, Project(mdir)).ok
    assert deploy(db, mdir).ok
    assert db.ledger() == ["001_users.sql", "002_email.sql"]


def test_to_stops_after_the_named_migration(db: Db, mdir: Path) -> None:
    three(mdir)
    report = deploy(db, mdir, to="002_b")
    assert [a.name for a in report.applied] == ["001_a.sql", "002_b.sql"]
    assert report.skipped == ("003_c.sql",)
    with pytest.raises(errors.UsageError, match="already applied"):
        deploy(db, mdir, to="001_a.sql")
    with pytest.raises(errors.UsageError, match="no migration named"):
        deploy(db, mdir, to="009_nope")


def test_a_database_migrated_by_wrangler_reads_correctly(db: Db, mdir: Path) -> None:
    three(mdir)
    db.exec(
        ledger.create_ledger_sql("d1_migrations"),
        "CREATE TABLE a (id INTEGER PRIMARY KEY)",
        "CREATE TABLE b (id INTEGER PRIMARY KEY)",
        "INSERT INTO \"d1_migrations\" (name) values ('001_a.sql')",
        "INSERT INTO \"d1_migrations\" (name) values ('002_b.sql')",
    )
    report = migrations.status(db.backend, Project(mdir))
    assert report.applied == ("001_a.sql", "002_b.sql") and report.pending == ("003_c.sql",)
    assert report.drifted == () and report.migrations[0].applied_sha256 is None
    assert [a.name for a in deploy(db, mdir).applied] == ["003_c.sql"]
    assert db.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]


def test_the_ledger_is_wranglers(db: Db, mdir: Path) -> None:
    three(mdir)
    deploy(db, mdir)
    (sql,) = db.rows("SELECT sql FROM sqlite_master WHERE name = 'd1_migrations'")[0]
    assert sql == ledger.create_ledger_sql("d1_migrations").removeprefix(
        "CREATE TABLE IF NOT EXISTS "
    ).join(["CREATE TABLE ", ""]).removesuffix(";")
    assert db.rows("SELECT typeof(applied_at) FROM d1_migrations LIMIT 1") == [("text",)]


def test_a_custom_ledger_table_name_is_quoted(db: Db, mdir: Path) -> None:
    three(mdir)
    migrations.migrate(db.backend, Project(mdir, actor="me", table='my "ledger"'))
    assert db.rows('SELECT count(*) FROM "my ""ledger"""') == [(3,)]
    assert migrations.status(db.backend, Project(mdir, table='my "ledger"')).pending == ()


# --- plan and dry-run write nothing --------------------------------------------------


def test_plan_writes_nothing(db: Db, seed: Path) -> None:
    deploy(db, seed, to="000_base_schema")
    write(
        seed,
        "001_schema_enhancements/precheck.sql",
        "-- expect: error\nINSERT INTO user_deposits (user_id, balance) VALUES (1, 1), (1, 2);\n",
    )
    db.backend.run([Statement("SELECT 1")])  # settle any lazy work before measuring
    before = db.path.read_bytes()
    if db.emulator:
        db.emulator.reset_log()
    report = migrations.plan(db.backend, Project(seed))
    assert [p.name for p in report.pending] == ["001_schema_enhancements.sql"]
    assert report.ok and report.prechecks[0].probe == "shadow"
    planned = report.pending[0]
    assert "user_deposits" in planned.guarded_tables and planned.dropped_tables == ()
    assert planned.statements[0].line == 10
    dry = deploy(db, seed, dry_run=True)
    assert dry.plan is not None and dry.applied == ()
    assert db.path.read_bytes() == before
    if db.emulator:
        sent = [
            item["sql"]
            for r in db.emulator.requests
            if r.method == "POST"
            for item in (r.json.get("batch") or [r.json])
        ]
        assert sent and all(s.lstrip().upper().startswith("SELECT") for s in sent)


def test_status_and_plan_on_an_empty_database_create_nothing(db: Db, mdir: Path) -> None:
    three(mdir)
    assert migrations.status(db.backend, Project(mdir)).pending == (
        "001_a.sql",
        "002_b.sql",
        "003_c.sql",
    )
    assert migrations.plan(db.backend, Project(mdir)).ok
    assert db.rows("SELECT name FROM sqlite_master WHERE name NOT LIKE '_cf%'") == []


# --- the row-loss guard ----------------------------------------------------------------

PARENT_CHILD = """\
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parent(id) ON DELETE CASCADE
);
"""

REBUILD_PARENT = """\
CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');
INSERT INTO parent_new (id, name) SELECT id, coalesce(name, '') FROM parent;
DROP TABLE parent;
ALTER TABLE parent_new RENAME TO parent;
"""


def test_the_guard_stops_a_cascading_parent_rebuild(db: Db, mdir: Path) -> None:
    write(mdir, "001_tables.sql", PARENT_CHILD)
    deploy(db, mdir)
    db.exec(
        "INSERT INTO parent VALUES (1, 'a'), (2, NULL)",
        "INSERT INTO child (parent_id) VALUES (1), (1), (2)",
    )
    write(mdir, "002_rebuild.sql", REBUILD_PARENT)
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, mdir)
    message = info.value.message
    assert "row-loss guard: table child had 3 rows before this migration and 0 after" in message
    assert "allow-row-loss child" in message
    assert db.count("child") == 3 and db.ledger() == ["001_tables.sql"]

    write(mdir, "002_rebuild.sql", "-- d1deploy: allow-row-loss child\n" + REBUILD_PARENT)
    assert deploy(db, mdir).ok
    assert db.count("child") == 0 and db.count("parent") == 2


def test_the_guard_refuses_to_drop_a_table_with_rows(db: Db, mdir: Path) -> None:
    write(mdir, "001_t.sql", "CREATE TABLE keep (id INTEGER);\nCREATE TABLE gone (id INTEGER);\n")
    deploy(db, mdir)
    db.exec("INSERT INTO gone VALUES (1), (2)")
    write(mdir, "002_drop.sql", "DROP TABLE gone;\n")
    with pytest.raises(
        migrations.DeployFailed, match="table gone had 2 rows before this migration, which drops it"
    ):
        deploy(db, mdir)
    assert db.count("gone") == 2


def test_guard_tables_limit_the_counts(db: Db, mdir: Path) -> None:
    write(mdir, "001_tables.sql", PARENT_CHILD)
    write(mdir, "002_rebuild.sql", REBUILD_PARENT)
    report = migrations.plan(db.backend, Project(mdir, guard_tables=("parent",)))
    assert [p.guarded_tables for p in report.pending] == [(), ("parent",)]


# --- failures the REST API can produce ------------------------------------------------


def test_an_answer_lost_after_the_write_is_read_from_the_ledger(remote: Db, mdir: Path) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.faults.add("POST", r"/query$", body="CREATE TABLE b", drop_after=True, times=1)
    lines: list[str] = []
    report = deploy(remote, mdir, notify=lines.append)
    assert [a.name for a in report.applied] == ["001_a.sql", "002_b.sql", "003_c.sql"]
    lost = report.applied[1]
    assert lost.answer_lost and lost.rows_written is None and lost.duration_ms is not None
    assert any("answer was lost" in line for line in lines)
    assert remote.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]
    assert [e[0] for e in remote.events()] == ["001_a.sql", "002_b.sql", "003_c.sql"]
    assert remote.count(lock.LOCK_TABLE) == 0


def test_a_request_lost_before_the_write_is_not_applied(remote: Db, mdir: Path) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.faults.add("POST", r"/query$", body="CREATE TABLE b", drop_before=True)
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(remote, mdir)
    assert "002_b.sql failed and was not applied" in info.value.message
    assert remote.ledger() == []


def test_when_the_ledger_cannot_be_read_after_a_lost_answer_the_run_stops(
    remote: Db, mdir: Path
) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.faults.add("POST", r"/query$", body="CREATE TABLE b", drop_after=True, times=1)
    # Everything after the lost answer fails: the lock and read requests before it pass.
    remote.emulator.faults.add("POST", r"/query$", status=503, after=2)
    lines: list[str] = []
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(remote, mdir, notify=lines.append, limits=ONE_EACH)
    err = info.value
    assert "could not tell whether 002_b.sql was applied" in err.message
    assert err.hint is not None and "d1deploy restore --bookmark" in err.hint
    assert any("could not release the deploy lock" in line for line in lines)
    remote.emulator.faults.rules.clear()
    assert remote.ledger() == ["001_a.sql", "002_b.sql"]


def test_a_torn_batch_is_reported_as_partly_applied(remote: Db, mdir: Path) -> None:
    assert remote.emulator is not None
    write(
        mdir,
        "001_torn.sql",
        "CREATE TABLE one (id INTEGER);\nCREATE TABLE two (id INTEGER);\n"
        "INSERT INTO missing VALUES (1);\nCREATE TABLE four (id INTEGER);\n",
    )
    remote.emulator.atomic_batches = False
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(remote, mdir)
    err = info.value
    bookmark = err.report.bookmark_before
    assert bookmark is not None
    assert "001_torn.sql was partly applied" in err.message and bookmark in err.message
    assert err.hint == f"restore it with `d1deploy restore --bookmark {bookmark} --yes`"
    assert remote.ledger() == []
    assert {r[1] for r in remote.rows(USER_TABLES)} == {"one", "two"}
    remote.emulator.atomic_batches = True
    assert remote.count(lock.LOCK_TABLE) == 0

    remote.backend.restore(bookmark)
    # The bookmark was taken under this run's (short) lease; the user would wait for it
    # to expire or `d1deploy unlock --force`.
    held = lock.current(remote.backend)
    assert held is not None and held.holder.startswith("tester (run ")
    released = lock.force_release(remote.backend)
    assert released is not None and released.token == held.token
    remote.emulator.atomic_batches = False
    with pytest.raises(migrations.DeployFailed, match="the database was restored to") as again:
        deploy(remote, mdir, on_failure="restore")
    assert isinstance(again.value.report, MigrateReport)
    assert again.value.report.restored_to is not None
    remote.emulator.atomic_batches = True
    assert remote.rows(USER_TABLES) == [] and remote.ledger() == []


def test_concurrent_deploys_apply_each_migration_once(remote: Db, mdir: Path) -> None:
    three(mdir)
    assert remote.emulator is not None
    outcomes: list[object] = []

    def second_deploy() -> None:
        other = remote_backend_for(remote)
        try:
            outcomes.append(deploy(Db(other, None, remote.path), mdir))
        except errors.LockHeld as exc:
            outcomes.append(exc)
        finally:
            other.close()

    def while_holding_the_lock() -> None:
        worker = threading.Thread(target=second_deploy)
        worker.start()
        worker.join()

    report = deploy(remote, mdir, before_change=while_holding_the_lock)
    assert len(report.applied) == 3
    (held,) = outcomes
    assert isinstance(held, errors.LockHeld) and held.exit_code == 5
    assert "tester" in str(held) and "until" in str(held)
    assert remote.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]


def remote_backend_for(db: Db) -> RemoteBackend:
    assert db.emulator is not None and db.emulator.default_db is not None
    return remote_backend(db.emulator)


def test_racing_deploys_never_apply_twice(remote: Db, mdir: Path) -> None:
    three(mdir)
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def run() -> None:
        backend = remote_backend_for(remote)
        start.wait()
        try:
            outcomes.append(deploy(Db(backend, None, remote.path), mdir))
        except errors.LockHeld as exc:
            outcomes.append(exc)
        finally:
            backend.close()

    workers = [threading.Thread(target=run) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    applied = [a.name for o in outcomes if isinstance(o, MigrateReport) for a in o.applied]
    assert sorted(applied) == ["001_a.sql", "002_b.sql", "003_c.sql"]
    assert remote.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]
    assert len(remote.events()) == 3


def test_a_lease_taken_over_stops_the_run(db: Db, mdir: Path) -> None:
    three(mdir)

    def steal() -> None:
        db.exec(f"UPDATE {lock.LOCK_TABLE} SET token = 'someone else', holder = 'thief'")

    with pytest.raises(migrations.DeployFailed, match="held by thief") as info:
        deploy(db, mdir, before_change=steal)
    assert info.value.report.rolled_back == ()
    assert db.ledger() == []


# --- rollback, baseline, verify, new ---------------------------------------------------


def test_rollback_steps_and_to(db: Db, mdir: Path) -> None:
    three(mdir)
    deploy(db, mdir)
    report = migrations.rollback(
        db.backend, Project(mdir, actor="me"), migrations.RollbackOptions(steps=2)
    )
    assert [r.name for r in report.rolled_back] == ["003_c.sql", "002_b.sql"]
    assert db.ledger() == ["001_a.sql"]
    deploy(db, mdir)
    migrations.rollback(
        db.backend, Project(mdir, actor="me"), migrations.RollbackOptions(to="001_a")
    )
    assert db.ledger() == ["001_a.sql"]
    assert (
        migrations.rollback(
            db.backend, Project(mdir, actor="me"), migrations.RollbackOptions(to="001_a")
        ).rolled_back
        == ()
    )
    with pytest.raises(errors.UsageError):
        migrations.rollback(
            db.backend, Project(mdir, actor="me"), migrations.RollbackOptions(to="003_c")
        )
    with pytest.raises(errors.UsageError):
        migrations.rollback(
            db.backend, Project(mdir, actor="me"), migrations.RollbackOptions(to="001_a", steps=1)
        )


def test_rollback_uses_the_stored_sql_when_the_file_changed_or_is_gone(db: Db, mdir: Path) -> None:
    three(mdir)
    deploy(db, mdir)
    write(mdir, "003_c/rollback.sql", "SELECT 'a broken edit' FROM nowhere;\n")
    (mdir / "002_b.sql").unlink()
    (mdir / "002_b" / "rollback.sql").unlink()
    report = migrations.rollback(
        db.backend, Project(mdir, actor="me"), migrations.RollbackOptions(steps=2)
    )
    assert [(r.name, r.source) for r in report.rolled_back] == [
        ("003_c.sql", "history"),
        ("002_b.sql", "history"),
    ]
    assert {r[1] for r in db.rows(USER_TABLES)} == {"a"}


def test_rollback_without_rollback_sql_points_to_the_bookmark(db: Db, mdir: Path) -> None:
    three(mdir, rollbacks=False)
    applied = deploy(db, mdir)
    with pytest.raises(migrations.RollbackRefused) as info:
        migrations.rollback(db.backend, Project(mdir, actor="me"))
    assert info.value.exit_code == 5  # refused before changing anything
    assert info.value.hint is not None
    assert f"d1deploy restore --bookmark {applied.bookmark_before}" in info.value.hint
    assert "nothing was rolled back" in info.value.message
    assert db.ledger() == ["001_a.sql", "002_b.sql", "003_c.sql"]


def test_an_unfilled_rollback_template_is_no_rollback(db: Db, tmp_path: Path) -> None:
    folder = tmp_path / "new"
    sql, rollback_file, _ = migrations.new_migration(folder, "first")
    sql.write_text("CREATE TABLE first (id INTEGER);\n")
    deploy(db, folder)
    with pytest.raises(migrations.RollbackRefused, match="has no rollback SQL"):
        migrations.rollback(db.backend, Project(folder, actor="me"))
    rollback_file.write_text("DROP TABLE first;\n")
    assert (
        migrations.rollback(db.backend, Project(folder, actor="me")).rolled_back[0].source == "file"
    )


def test_baseline_records_without_running(db: Db, seed: Path) -> None:
    # Production before d1deploy: the base schema made by hand, spelt its own way.
    base = (seed / "000_base_schema.sql").read_text(encoding="utf-8")
    hand = [" ".join(s.sql.split()) for s in sqlsplit.split(base)]
    db.exec(
        *(sql.replace("CREATE TABLE IF NOT EXISTS users", 'create table "USERS"') for sql in hand)
    )
    report = migrations.baseline(db.backend, Project(seed, actor="me"), "000_base_schema")
    assert report.recorded == ("000_base_schema.sql",) and report.forced_over == ()
    assert db.ledger() == ["000_base_schema.sql"]
    assert db.events() == [("000_base_schema.sql", "baseline", 1)]
    again = migrations.baseline(db.backend, Project(seed, actor="me"), "000_base_schema")
    assert again.recorded == () and again.already_applied == ("000_base_schema.sql",)
    assert migrations.status(db.backend, Project(seed)).pending == ("001_schema_enhancements.sql",)


def test_verify_on_demand(db: Db, seed: Path) -> None:
    deploy(db, seed)
    report = migrations.verify(db.backend, Project(seed))
    assert report.ok and report.migrations == ("001_schema_enhancements.sql",)
    db.exec("INSERT INTO user_deposits (user_id, balance) VALUES (3, 5)")
    only = migrations.verify(db.backend, Project(seed), name="001_schema_enhancements")
    assert len(only.checks) == len(report.checks)
    with pytest.raises(errors.UsageError):
        migrations.verify(db.backend, Project(seed), name="nope")


def test_lint_errors_block_the_deploy(db: Db, mdir: Path) -> None:
    write(mdir, "001_tx.sql", "BEGIN TRANSACTION;\nCREATE TABLE t (id INTEGER);\nCOMMIT;\n")
    with pytest.raises(migrations.LintFailed) as info:
        deploy(db, mdir)
    assert info.value.exit_code == 2 and info.value.line == 1
    assert db.count(lock.LOCK_TABLE) == 0


def test_with_nothing_pending_no_lock_is_taken_but_a_held_one_still_refuses(
    db: Db, mdir: Path
) -> None:
    """The first request takes the lock only when a migration is missing from the
    ledger (#19); another run's lease is still named, as before."""
    three(mdir)
    deploy(db, mdir)
    again = deploy(db, mdir)
    assert again.ok and again.applied == () and again.lock_held is None
    assert db.rows(f"SELECT count(*) FROM {lock.LOCK_TABLE}") == [(0,)]
    other = helpers.take_lock(db.backend, "another run", 900)
    with pytest.raises(errors.LockHeld, match="another deploy holds the lock: another run"):
        deploy(db, mdir)
    # Its lease is untouched; once it is gone, a new migration takes the lock again.
    assert db.rows(f"SELECT token FROM {lock.LOCK_TABLE}") == [(other.token,)]
    lock.release(db.backend, other)
    write(mdir, "004_d.sql", "CREATE TABLE d (id INTEGER);\n")
    assert [a.name for a in deploy(db, mdir).applied] == ["004_d.sql"]
    assert db.rows(f"SELECT count(*) FROM {lock.LOCK_TABLE}") == [(0,)]
