"""`migrate --atomic`: every pending migration in one request, judged by the ledger when
that request fails or its answer is lost; and undoing a failed deploy in one request.

Each test runs on a local SQLite file and on the D1 emulator (in process) unless it needs
an emulator fault. `Recording` wraps the backend to count the requests that change the
ledger, whatever the transport.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from d1deploy import ledger, lock, migrations
from d1deploy.backend import (
    Statement,
)
from d1deploy.local import LocalBackend
from d1deploy.migrations import DeployFailed, MigrateReport
from d1deploy.project import Project
from tests import helpers
from tests.emulator import D1Emulator
from tests.helpers import (
    SEED,
    USER_TABLES,
    Db,
    deploy,
    remote_backend,
    three,
    write,
)

APPLY_ROW = 'INSERT INTO "d1_migrations"'
UNDO_ROW = 'DELETE FROM "d1_migrations"'
NAMES = ["001_a.sql", "002_b.sql", "003_c.sql"]


class Recording(helpers.Recording):
    """The shared recording Backend, counting the requests that hold a statement."""

    @property
    def sent(self) -> list[list[str]]:
        return [batch for batch, _ in self.requests]

    def requests_with(self, sql_start: str) -> int:
        return sum(any(sql.startswith(sql_start) for sql in batch) for batch in self.sent)


def recording(db: Db) -> Recording:
    assert isinstance(db.backend, Recording)
    return db.backend


@pytest.fixture(params=["local", "emulator"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "local":
        path = tmp_path / "local.sqlite"
        found = Db(Recording(LocalBackend(path)), None, path)
    else:
        emulator: D1Emulator = request.getfixturevalue("emulator")
        found = Db(Recording(remote_backend(emulator)), emulator, emulator.default_db.path)
    yield found
    found.backend.close()


@pytest.fixture
def remote(emulator: D1Emulator) -> Iterator[Db]:
    found = Db(Recording(remote_backend(emulator)), emulator, emulator.default_db.path)
    yield found
    found.backend.close()


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


def tables(db: Db) -> set[str]:
    return {str(r[1]) for r in db.rows(USER_TABLES)}


def third_fails(folder: Path) -> None:
    """Three migrations with rollbacks; the third's second statement fails."""
    write(folder, "001_a.sql", "CREATE TABLE a (id INTEGER NOT NULL);\nINSERT INTO a VALUES (1);\n")
    write(folder, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")
    write(folder, "003_c.sql", "CREATE TABLE c (id INTEGER);\nUPDATE a SET id = NULL;\n")
    for name, table in (("001_a", "a"), ("002_b", "b"), ("003_c", "c")):
        write(folder, f"{name}/rollback.sql", f"DROP TABLE {table};\n")


# --- all in one request ----------------------------------------------------------------


def test_every_pending_migration_goes_in_one_request(db: Db, mdir: Path) -> None:
    names = [f"00{n}_t{n}.sql" for n in range(1, 6)]
    for n, name in enumerate(names, 1):
        write(mdir, name, f"CREATE TABLE t{n} (id INTEGER);\nINSERT INTO t{n} VALUES (1);\n")
    lines: list[str] = []
    report = deploy(db, mdir, atomic=True, notify=lines.append)
    # Lock and read; then every migration, with the lock's release.
    assert len(recording(db).sent) == 2 and recording(db).requests_with(APPLY_ROW) == 1
    if db.emulator:
        assert db.emulator.count("POST", "/query") == 2
        assert db.emulator.count("GET", "/time_travel/bookmark") == 1
    assert report.ok and [a.name for a in report.applied] == names
    assert all(a.rows_written == 1 and a.duration_ms is not None for a in report.applied)
    assert "--atomic: applying 5 migration(s) in one request" in lines
    assert db.ledger() == names
    assert db.events() == [(n, "apply", 1) for n in names]
    assert db.count(lock.LOCK_TABLE) == 0


def test_a_failing_third_migration_leaves_nothing_of_any(db: Db, mdir: Path) -> None:
    third_fails(mdir)
    with pytest.raises(DeployFailed) as info:
        deploy(db, mdir, atomic=True)
    err = info.value
    assert "NOT NULL constraint failed: a.id" in err.message
    if db.backend.is_remote:  # D1's REST answer does not say which batch item failed
        assert "the one request applying the 3 migrations 001_a.sql to 003_c.sql" in err.message
    else:
        assert "003_c.sql failed, so none of the 3 migrations" in err.message
        assert err.file is not None and err.file.endswith("003_c.sql") and err.line == 2
    assert isinstance(err.report, MigrateReport)
    assert err.report.rolled_back == () and err.report.applied == ()
    assert err.report.skipped == tuple(NAMES)
    assert recording(db).requests_with(APPLY_ROW) == 1
    assert db.ledger() == [] and db.events() == [] and tables(db) == set()
    assert db.count(lock.LOCK_TABLE) == 0


def test_a_lost_answer_is_read_from_the_ledger_and_not_sent_again(remote: Db, mdir: Path) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.faults.add("POST", r"/query$", body="CREATE TABLE c", drop_after=True, times=1)
    lines: list[str] = []
    report = deploy(remote, mdir, atomic=True, notify=lines.append)
    assert [a.name for a in report.applied] == NAMES
    assert all(a.answer_lost and a.rows_written is None for a in report.applied)
    assert all(a.duration_ms is not None for a in report.applied)
    assert sum("answer was lost" in line for line in lines) == 3
    assert recording(remote).requests_with(APPLY_ROW) == 1
    assert remote.ledger() == NAMES and len(remote.events()) == 3
    assert remote.count(lock.LOCK_TABLE) == 0


def test_a_request_lost_before_it_ran_applies_nothing(remote: Db, mdir: Path) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.faults.add("POST", r"/query$", body="CREATE TABLE c", drop_before=True)
    with pytest.raises(DeployFailed, match="none of them was applied"):
        deploy(remote, mdir, atomic=True)
    assert remote.ledger() == [] and tables(remote) == set()


def test_non_atomic_batches_are_reported_partly_applied(remote: Db, mdir: Path) -> None:
    third_fails(mdir)
    assert remote.emulator is not None
    remote.emulator.atomic_batches = False
    with pytest.raises(DeployFailed) as info:
        deploy(remote, mdir, atomic=True)
    err = info.value
    bookmark = err.report.bookmark_before
    assert bookmark is not None
    # The ledger tells which of them landed whole: those are named as applied.
    assert "003_c.sql was partly applied" in err.message
    assert "still applied by this deploy: 001_a.sql, 002_b.sql" in err.message
    assert err.report.still_applied == tuple(NAMES[:2])
    assert [a.name for a in err.report.applied] == NAMES[:2]
    assert bookmark in err.message
    assert err.hint == f"restore it with `d1deploy restore --bookmark {bookmark} --yes`"
    # Each statement committed on its own: the first two are complete, the third torn.
    assert remote.ledger() == NAMES[:2] and tables(remote) == {"a", "b", "c"}
    assert remote.count(lock.LOCK_TABLE) == 0


def test_partly_applied_is_restored_when_asked(remote: Db, mdir: Path) -> None:
    third_fails(mdir)
    assert remote.emulator is not None
    remote.emulator.atomic_batches = False
    with pytest.raises(DeployFailed, match="the database was restored to") as info:
        deploy(remote, mdir, atomic=True, on_failure="restore")
    report = info.value.report
    assert isinstance(report, MigrateReport)
    assert report.restored_to == report.bookmark_before is not None
    remote.emulator.atomic_batches = True
    # The bookmark may predate the ledger tables (taken beside the lock): read-only reads.
    assert (
        migrations.status(remote.backend, Project(mdir)).applied == () and tables(remote) == set()
    )
    assert lock.current(remote.backend) is None


def test_a_restore_is_reported_even_when_the_lock_cannot_be_read_after_it(
    remote: Db, mdir: Path
) -> None:
    third_fails(mdir)
    assert remote.emulator is not None
    remote.emulator.atomic_batches = False
    # lock.current's first read, after the restore, keeps failing.
    remote.emulator.faults.add("POST", r"/query$", body="FROM sqlite_master WHERE type", status=503)
    with pytest.raises(DeployFailed, match="the database was restored to"):
        deploy(remote, mdir, atomic=True, on_failure="restore")
    remote.emulator.faults.clear()
    remote.emulator.atomic_batches = True
    assert tables(remote) == set()


def test_a_verify_failure_aborts_everything_in_its_own_request(db: Db, mdir: Path) -> None:
    write(mdir, "000_base.sql", "CREATE TABLE base (id INTEGER);\n")
    deploy(db, mdir)
    three(mdir)
    write(
        mdir,
        "002_b/verify.sql",
        "-- check: b has a row\n-- expect: value = 1\nSELECT count(*) FROM b;\n",
    )
    with pytest.raises(DeployFailed) as info:
        deploy(db, mdir, atomic=True)
    err = info.value
    assert (
        "verification failed after the 3 migrations 001_a.sql to 003_c.sql: b has a row (value 0)"
        in err.message
    )
    # The read check is an assertion inside the one request (#19): failing, it aborted
    # all three with it, so nothing needed undoing.
    assert err.report.applied == () and err.report.rolled_back == ()
    assert [(r.check.label, r.ok) for r in err.report.checks] == [("b has a row", False)]
    assert recording(db).requests_with(APPLY_ROW) == 2
    assert recording(db).requests_with(UNDO_ROW) == 0
    assert db.ledger() == ["000_base.sql"] and tables(db) == {"base"}
    assert db.events()[1:] == []
    assert db.count(lock.LOCK_TABLE) == 0


def test_undoing_a_failed_default_deploy_takes_one_request(db: Db, mdir: Path) -> None:
    three(mdir)
    # A check expecting nothing but success runs after its migration's request, so 002
    # ends one: 001 and 002 share it, 003 goes alone.
    write(mdir, "002_b/verify.sql", "SELECT id FROM b;\n")
    write(mdir, "003_c/verify.sql", "-- expect: rows >= 1\nSELECT * FROM c;\n")
    with pytest.raises(DeployFailed, match=r"verification failed after 003_c\.sql") as info:
        deploy(db, mdir)
    # 003's check aborted 003 in its own request (#19); 001 and 002 are undone together.
    assert [r.name for r in info.value.report.rolled_back] == ["002_b.sql", "001_a.sql"]
    assert recording(db).requests_with(APPLY_ROW) == 2
    assert recording(db).requests_with(UNDO_ROW) == 1
    assert db.ledger() == [] and tables(db) == set()


def test_a_failing_statement_takes_its_whole_request_with_it(db: Db, mdir: Path) -> None:
    third_fails(mdir)
    lines: list[str] = []
    with pytest.raises(DeployFailed) as info:
        deploy(db, mdir, notify=lines.append)
    err = info.value
    if db.emulator is None:
        # SQLite says which statement failed: none of the request landed, nothing to undo.
        assert "003_c.sql failed, so none of the 3 migrations 001_a.sql to 003_c.sql" in err.message
        assert err.file is not None and err.file.endswith("003_c.sql") and err.line == 2
        assert err.report.applied == () and err.report.rolled_back == ()
        assert recording(db).requests_with(APPLY_ROW) == 1
    else:
        # D1's answer does not say which: they go again one per request, and the one that
        # fails is named as when it went alone; the ones before it are undone.
        assert any("applying them one per request" in line for line in lines)
        assert "003_c.sql failed and was not applied" in err.message
        assert [r.name for r in err.report.rolled_back] == ["002_b.sql", "001_a.sql"]
        assert recording(db).requests_with(APPLY_ROW) == 4
    assert db.ledger() == [] and tables(db) == set() and db.count(lock.LOCK_TABLE) == 0


def refuse_the_shared_request(db: Db, status: int, code: int, message: str) -> None:
    """The emulator answers the request carrying 001 to 003 with an API error, once."""
    assert db.emulator is not None
    reply = {"success": False, "errors": [{"code": code, "message": message}]}
    db.emulator.faults.add(
        "POST", r"/query$", body="CREATE TABLE c", status=status, reply=reply, times=1
    )


@pytest.mark.parametrize("atomic", [False, True])
def test_a_request_too_big_for_d1_goes_again_one_migration_each(
    remote: Db, mdir: Path, atomic: bool
) -> None:
    three(mdir)
    refuse_the_shared_request(remote, 413, 7400, "Request body too large")
    lines: list[str] = []
    if atomic:  # all or none, as asked: nothing applied, nothing to undo
        with pytest.raises(DeployFailed, match="none of them was applied") as info:
            deploy(remote, mdir, notify=lines.append, atomic=True)
        assert info.value.report.rolled_back == () and remote.ledger() == []
        return
    report = deploy(remote, mdir, notify=lines.append)
    assert any("none of them was applied; applying them one per request" in x for x in lines)
    assert [a.name for a in report.applied] == NAMES and remote.ledger() == NAMES
    assert remote.count(lock.LOCK_TABLE) == 0


def test_a_refused_token_is_not_tried_again_one_migration_each(remote: Db, mdir: Path) -> None:
    three(mdir)
    refuse_the_shared_request(remote, 403, 10000, "Authentication error")
    lines: list[str] = []
    with pytest.raises(DeployFailed, match="the API token was refused") as info:
        deploy(remote, mdir, notify=lines.append)
    assert not any("one per request" in line for line in lines)
    assert info.value.report.applied == () and info.value.report.rolled_back == ()
    assert remote.ledger() == [] and remote.count(lock.LOCK_TABLE) == 0


def test_packing_counts_the_verify_checks_a_request_carries(db: Db, mdir: Path) -> None:
    three(mdir)
    for name, table in (("001_a", "a"), ("002_b", "b"), ("003_c", "c")):
        long = "x" * 20_000
        check = f"-- expect: value = 0\nSELECT count(*) FROM {table} WHERE id = length('{long}');\n"
        write(mdir, f"{name}/verify.sql", check)
    # The migrations alone fit in 30 KB; each with its ~40 KB of assertions does not.
    assert deploy(db, mdir, limits=ledger.Limits(max_body_bytes=30_000)).ok
    assert recording(db).requests_with(APPLY_ROW) == 3
    assert db.ledger() == NAMES


@pytest.mark.parametrize("atomic", [False, True])
def test_verify_checks_see_the_state_their_migration_leaves(
    db: Db, mdir: Path, atomic: bool
) -> None:
    write(mdir, "001_a.sql", "CREATE TABLE a (id INTEGER PRIMARY KEY);\n")
    write(
        mdir, "001_a/verify.sql", "-- check: a starts empty\n-- expect: no rows\nSELECT * FROM a;\n"
    )
    write(mdir, "002_b.sql", "INSERT INTO a VALUES (1);\n")
    if not atomic:  # right after 001, in the one request that carries both
        assert deploy(db, mdir).ok and db.ledger() == ["001_a.sql", "002_b.sql"]
        assert recording(db).requests_with(APPLY_ROW) == 1
        return
    # --atomic verifies the final state, once
    with pytest.raises(DeployFailed, match="verification failed after the 2 migrations"):
        deploy(db, mdir, atomic=True)
    assert db.ledger() == []


# --- the bookmark, fetched while the lock is taken --------------------------------------


def test_the_bookmark_is_fetched_beside_the_lock_unless_a_deploy_just_ran(
    remote: Db, mdir: Path
) -> None:
    assert remote.emulator is not None
    three(mdir)
    deploy(remote, mdir, atomic=True)
    write(mdir, "004_d.sql", "CREATE TABLE d (id INTEGER);\n")
    remote.emulator.reset_log()
    report = deploy(remote, mdir, atomic=True)
    # The deploy above started its events moments ago: the parallel bookmark might
    # predate its batch, so it is dropped and taken again under the lock.
    assert remote.emulator.count("GET", "/time_travel/bookmark") == 2
    assert report.bookmark_before is not None

    write(mdir, "005_e.sql", "CREATE TABLE e (id INTEGER);\n")
    remote.exec(f"UPDATE {ledger.HISTORY_TABLE} SET at = '2000-01-01T00:00:00.000Z'")
    remote.emulator.reset_log()
    report = deploy(remote, mdir, atomic=True)
    assert remote.emulator.count("GET", "/time_travel/bookmark") == 1
    assert remote.emulator.count("POST", "/query") == 2
    assert [a.name for a in report.applied] == ["005_e.sql"]
    assert report.bookmark_before is not None


def test_a_backup_or_the_default_mode_takes_the_bookmark_under_the_lock(
    remote: Db, mdir: Path
) -> None:
    emulator = remote.emulator
    assert emulator is not None
    three(mdir)
    seen: list[int] = []
    deploy(remote, mdir, atomic=True, before_change=lambda: seen.append(len(emulator.requests)))
    # The backup came right after the lock request, and the bookmark after the backup.
    assert [r.method for r in emulator.requests][seen[0] - 1 : seen[0] + 1] == ["POST", "GET"]
    assert emulator.requests[seen[0]].path.endswith("/time_travel/bookmark")

    write(mdir, "004_d.sql", "CREATE TABLE d (id INTEGER);\n")
    emulator.reset_log()
    deploy(remote, mdir)
    assert [r.path.rsplit("/", 1)[-1] for r in emulator.requests[:3]] == [
        "query",
        "bookmark",
        "query",
    ]


def test_quiet_needs_readable_times(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "db.sqlite")
    session = ledger.Session(
        backend,
        Project(
            table="d1_migrations", actor="me", lock_ttl=60, guard_tables=None, notify=lambda _: None
        ),
    )
    session.open()
    assert session.last_event_at is None and session.quiet_for(3600)
    session.last_event_at = "2000-01-01T00:00:00.000Z"
    assert session.quiet_for(3600)
    session.last_event_at = "yesterday"
    assert not session.quiet_for(1)
    session.close()
    backend.close()


# --- when they do not fit one request --------------------------------------------------


def big(folder: Path, n: int, *, fail: bool = False) -> None:
    """A migration carrying about 20 KB of data, with its rollback."""
    value = "x" * 20_000
    last = "INSERT INTO nowhere VALUES (1);\n" if fail else ""
    write(
        folder,
        f"00{n}_big{n}.sql",
        f"CREATE TABLE big{n} (v TEXT);\nINSERT INTO big{n} VALUES ('{value}');\n{last}",
    )
    write(folder, f"00{n}_big{n}/rollback.sql", f"DROP TABLE big{n};\n")


def test_migrations_too_big_for_one_request_go_in_as_few_as_fit(db: Db, mdir: Path) -> None:
    for n in (1, 2, 3):
        big(mdir, n)
    big(mdir, 4, fail=True)
    limits = ledger.Limits(max_body_bytes=50_000)
    lines: list[str] = []
    with pytest.raises(DeployFailed) as info:
        deploy(db, mdir, atomic=True, limits=limits, notify=lines.append)
    (said,) = [line for line in lines if line.startswith("--atomic:")]
    assert "do not fit in one request" in said and "go in 2 requests" in said
    assert "with 003_big3.sql the request would exceed 50,000 bytes" in said
    # The first request (1 and 2) landed; the second failed whole; 1 and 2 were undone.
    assert "none of" in info.value.message and "no such table: nowhere" in info.value.message
    assert [r.name for r in info.value.report.rolled_back] == ["002_big2.sql", "001_big1.sql"]
    assert recording(db).requests_with(APPLY_ROW) == 2
    assert db.ledger() == [] and tables(db) == set()

    big(mdir, 4)
    recording(db).requests.clear()
    report = deploy(db, mdir, atomic=True, limits=limits)
    assert len(report.applied) == 4 and recording(db).requests_with(APPLY_ROW) == 2


def test_deferred_prechecks_run_between_requests(db: Db, mdir: Path) -> None:
    write(mdir, "001_a.sql", "CREATE TABLE a (id INTEGER);\nINSERT INTO a VALUES (1);\n")
    write(mdir, "001_a/rollback.sql", "DROP TABLE a;\n")
    write(mdir, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")
    # It cannot run before 001 creates `a`, so it runs right before 002, and fails.
    write(
        mdir, "002_b/precheck.sql", "-- check: a is empty\n-- expect: no rows\nSELECT * FROM a;\n"
    )
    lines: list[str] = []
    with pytest.raises(DeployFailed, match=r"prechecks of 002_b\.sql failed: a is empty") as info:
        deploy(db, mdir, atomic=True, notify=lines.append)
    assert any("the prechecks of 002_b.sql can only run once" in line for line in lines)
    assert [r.name for r in info.value.report.rolled_back] == ["001_a.sql"]
    # 001's request, then 002's, whose precheck at its head aborted it (#19).
    assert recording(db).requests_with(APPLY_ROW) == 2
    assert db.ledger() == [] and tables(db) == set()


def test_the_seed_deploys_atomically(db: Db, tmp_path: Path) -> None:
    folder = tmp_path / "seed"
    shutil.copytree(SEED, folder, ignore=shutil.ignore_patterns("*.md"))
    lines: list[str] = []
    report = deploy(db, folder, atomic=True, notify=lines.append)
    assert report.ok and [a.name for a in report.applied] == [
        "000_base_schema.sql",
        "001_schema_enhancements.sql",
    ]
    assert all(r.ok for r in report.checks) and any(r.probe == "abort" for r in report.checks)
    # 001's prechecks read tables that 000 creates: they wait for it.
    assert recording(db).requests_with(APPLY_ROW) == 2
    assert any("the prechecks of 001_schema_enhancements.sql" in line for line in lines)
    assert db.count(lock.LOCK_TABLE) == 0


def test_packing_follows_the_guard_budget(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "db.sqlite")
    session = ledger.Session(
        backend,
        Project(
            table="d1_migrations", actor="me", lock_ttl=60, guard_tables=None, notify=lambda _: None
        ),
    )
    session.open()
    size = backend.info.file_size
    assert size
    one = (Statement("SELECT 1"),)
    changes = [
        ledger.Change("1.sql", "apply", one, None, watched=("t",)),
        ledger.Change("2.sql", "apply", one, None),  # watches nothing: costs no scan
        ledger.Change("3.sql", "apply", one, None, watched=("t",)),
        ledger.Change("4.sql", "apply", one, None, watched=("t",), allowed=("t",)),
        ledger.Change("5.sql", "apply", one, None, watched=("t",)),
    ]
    packing = session.pack(changes, "b", limits=ledger.Limits(max_guard_scan_bytes=3 * size))
    assert packing.groups == (range(2), range(2, 4), range(4, 5))
    assert all("row-loss guard would read over" in cut for cut in packing.cuts)
    everything = session.pack(changes, "b")
    assert everything.groups == (range(5),) and everything.cuts == ()
    split = session.pack(changes, "b", breaks={3: "because"})
    assert split.groups == (range(3), range(3, 5)) and split.cuts == ("because",)
    session.close()
    backend.close()


# --- from the command line -------------------------------------------------------------


def test_the_cli_applies_atomically(
    d1_env: dict[str, str], emulator: D1Emulator, mdir: Path, tmp_path: Path
) -> None:
    three(mdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "D1DEPLOY_"))}
    env.update(d1_env, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    emulator.reset_log()
    argv = [sys.executable, "-m", "d1deploy", "migrate", "--atomic", "--no-backup", "--json"]
    argv += ["-d", emulator.default_db.name, "--migrations-dir", str(mdir)]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and [a["name"] for a in report["applied"]] == NAMES
    assert emulator.count("POST", "/query") == 2


# --- read checks inside the migration's own request (#19) ---------------------------------


def _base_with_rows(db: Db, mdir: Path) -> None:
    write(
        mdir,
        "000_base.sql",
        "CREATE TABLE base (id INTEGER, name TEXT, b BLOB);\n"
        "INSERT INTO base VALUES (1, 'it''s', X'00FF'), (2, NULL, NULL);\n",
    )
    deploy(db, mdir)
    recording(db).requests.clear()


def test_read_checks_ride_in_their_migrations_request(db: Db, mdir: Path) -> None:
    _base_with_rows(db, mdir)
    three(mdir)
    write(
        mdir,
        "001_a/precheck.sql",
        "-- check: base has two\n-- expect: rows = 2\nSELECT * FROM base;\n",
    )
    write(
        mdir,
        "003_c/verify.sql",
        "-- check: c empty\n-- expect: value = 0\nSELECT count(*) FROM c;\n",
    )
    report = deploy(db, mdir)
    assert [(r.check.label, r.ok, r.outcome) for r in report.checks] == [
        ("base has two", True, "2 rows"),
        ("c empty", True, "value 0"),
    ]
    sent = recording(db).sent
    # Each check is in the request applying its migration, and in no other request.
    for check, migration in (
        ("SELECT * FROM base", "CREATE TABLE a"),
        ("SELECT count(*) FROM c", "CREATE TABLE c"),
    ):
        holding = [batch for batch in sent if any(s.startswith(check) for s in batch)]
        assert len(holding) == 1 and any(s.startswith(migration) for s in holding[0])
    # The three share one request; 003's verify check sits right after 003's statements,
    # before its ledger row, so it sees the state 003 leaves.
    (batch,) = [b for b in sent if any(s.startswith(APPLY_ROW) for s in b)]
    at = [
        i for i, s in enumerate(batch) if s.startswith(("CREATE TABLE c", "SELECT count(*) FROM c"))
    ]
    rows = [i for i, s in enumerate(batch) if s.startswith(APPLY_ROW)]
    assert len(rows) == 3 and rows[1] < at[0] < at[1] < rows[2]
    assert db.ledger() == ["000_base.sql", *NAMES] and db.count(lock.LOCK_TABLE) == 0


def test_a_failing_read_precheck_refuses_in_the_first_request_with_its_rows(
    db: Db, mdir: Path
) -> None:
    _base_with_rows(db, mdir)
    three(mdir)
    write(
        mdir,
        "001_a/precheck.sql",
        "-- check: base is empty\n-- expect: no rows\nSELECT * FROM base;\n",
    )
    with pytest.raises(migrations.PrechecksFailed) as info:
        deploy(db, mdir)
    assert info.value.exit_code == 5
    (result,) = info.value.results
    assert (result.ok, result.outcome) == (False, "2 rows")
    assert result.columns == ("id", "name", "b")
    assert result.rows == ((1, "it's", b"\x00\xff"), (2, None, None))
    # The one request that carried 001 aborted on the precheck at its head.
    assert recording(db).requests_with(APPLY_ROW) == 1
    assert db.ledger() == ["000_base.sql"] and tables(db) == {"base"}
    assert db.count(lock.LOCK_TABLE) == 0


def test_a_failing_verify_read_brings_its_rows_back_and_needs_no_rollback_sql(
    db: Db, mdir: Path
) -> None:
    _base_with_rows(db, mdir)
    write(mdir, "001_a.sql", "CREATE TABLE a (id INTEGER);\nINSERT INTO a VALUES (7), (8);\n")
    write(
        mdir, "001_a/verify.sql", "-- check: a has one\n-- expect: rows <= 1\nSELECT id FROM a;\n"
    )
    with pytest.raises(
        DeployFailed, match=r"verification failed after 001_a\.sql: a has one"
    ) as info:
        deploy(db, mdir)
    report = info.value.report
    (result,) = report.checks
    assert (result.ok, result.outcome, result.rows) == (False, "2 rows", ((7,), (8,)))
    assert report.applied == () and report.rolled_back == () and report.still_applied == ()
    assert recording(db).requests_with(UNDO_ROW) == 0
    assert db.ledger() == ["000_base.sql"] and tables(db) == {"base"}
    assert db.count(lock.LOCK_TABLE) == 0
