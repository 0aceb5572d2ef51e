"""Fleet mode on the D1 emulator (in process): selecting databases, running the migration
engine over several of them with one shared client, isolation of a failing database,
canary stop, re-runs, the shared 429 pause and the request budget (fake clocks only)."""

from __future__ import annotations

import dataclasses
import math
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from d1deploy import errors, migrations
from d1deploy.backend import Backend, DatabaseInfo, Statement
from d1deploy.client import D1Client
from d1deploy.fleet import (
    INTERRUPTED_EXIT,
    FleetReport,
    remote_task,
    run_fleet,
    select_databases,
)
from d1deploy.migrations import MigrateReport
from d1deploy.project import Project
from d1deploy.ratelimit import RateLimitTransport
from tests.emulator import D1Emulator, DatabaseRef

NAMES = ["001_a.sql", "002_b.sql", "003_c.sql"]
TENANTS = ["tenant-a", "tenant-b", "tenant-c", "tenant-d", "tenant-e"]


class FakeClock:
    """A thread-safe clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append((threading.current_thread().name, seconds))
            self.now += max(0.0, seconds)


def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def tenants(emulator: D1Emulator) -> dict[str, DatabaseRef]:
    return {name: emulator.create_database(name) for name in TENANTS}


@pytest.fixture
def gate_clock() -> FakeClock:
    return FakeClock()


def make_client(emulator: D1Emulator, **options: object) -> D1Client:
    return D1Client(
        token=emulator.token,
        account_id=emulator.account_id,
        base_url=emulator.base_url,
        sleep=no_sleep,
        **{"transport": emulator.transport(), **options},  # type: ignore[arg-type]
    )


def rate_limited(emulator: D1Emulator, clock: FakeClock, **options: object) -> RateLimitTransport:
    """The fleet's shared transport, in front of the emulator, on a fake clock."""
    return RateLimitTransport(
        emulator.transport(),
        clock=clock,
        sleep=clock.sleep,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(emulator: D1Emulator, gate_clock: FakeClock) -> Iterator[D1Client]:
    with make_client(emulator, transport=rate_limited(emulator, gate_clock)) as shared:
        yield shared


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name, table in zip(NAMES, "abc", strict=True):
        (folder / name).write_text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY);\n")
        (folder / name.removesuffix(".sql")).mkdir()
        (folder / name.removesuffix(".sql") / "rollback.sql").write_text(f"DROP TABLE {table};\n")
    return folder


def migrate_task(
    client: D1Client, mdir: Path, *, allow_drift: bool = False
) -> Callable[[DatabaseInfo], MigrateReport]:
    options = migrations.MigrateOptions(allow_drift=allow_drift)
    return remote_task(
        client, lambda backend: migrations.migrate(backend, Project(mdir, actor="fleet"), options)
    )


def info(ref: DatabaseRef) -> DatabaseInfo:
    return DatabaseInfo(uuid=ref.uuid, name=ref.name)


def tables(emulator: D1Emulator, name: str) -> set[str]:
    uri = f"file:{emulator.db_path(name)}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def ledger(emulator: D1Emulator, name: str) -> list[str]:
    if "d1_migrations" not in tables(emulator, name):
        return []
    uri = f"file:{emulator.db_path(name)}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM d1_migrations ORDER BY id")]


def applied(report: FleetReport[MigrateReport], name: str) -> list[str]:
    value = next(r.value for r in report.results if r.name == name)
    assert value is not None
    return [a.name for a in value.applied]


def block_migration_b(client: D1Client, ref: DatabaseRef) -> None:
    """Give one database a table `b`, so that 002_b.sql fails there (after 001 applied).
    That is schema drift: the deploys that meet it pass `allow_drift` to get that far."""
    client.query(ref.uuid, [Statement("CREATE TABLE b (x)")])


# --- running migrations over a fleet ---------------------------------------------------


def test_every_database_is_migrated_and_results_follow_the_input_order(
    emulator: D1Emulator, tenants: dict[str, DatabaseRef], client: D1Client, mdir: Path
) -> None:
    order = [info(tenants[n]) for n in reversed(TENANTS)]
    lines: list[str] = []
    report = run_fleet(order, migrate_task(client, mdir), concurrency=3, notify=lines.append)
    assert [r.name for r in report.results] == [d.name for d in order]
    assert [r.uuid for r in report.results] == [d.uuid for d in order]
    assert report.ok and report.exit_code == 0
    assert report.counts == {"ok": 5, "failed": 0, "skipped": 0}
    for name in TENANTS:
        assert applied(report, name) == NAMES
        assert ledger(emulator, name) == NAMES
    assert ledger(emulator, "telegram-conversations") == []
    assert len(lines) == 5 and all(": ok in " in line for line in lines)
    assert sorted(line.split("] ")[0] for line in lines) == [f"[{n}/5" for n in range(1, 6)]


def test_a_failing_database_is_isolated_reported_and_a_rerun_continues(
    emulator: D1Emulator, tenants: dict[str, DatabaseRef], client: D1Client, mdir: Path
) -> None:
    block_migration_b(client, tenants["tenant-c"])
    dbs = [info(tenants[n]) for n in TENANTS]
    report = run_fleet(dbs, migrate_task(client, mdir, allow_drift=True), concurrency=4)

    assert [r.status for r in report.results] == ["ok", "ok", "failed", "ok", "ok"]
    assert report.counts == {"ok": 4, "failed": 1, "skipped": 0}
    assert report.exit_code == 1 and not report.ok
    (bad,) = report.failed
    assert bad.name == "tenant-c" and bad.value is None and bad.error is not None
    assert bad.error.type == "DeployFailed" and bad.error.exit_code == 1
    assert "002_b.sql" in bad.error.message and "rolled back 001_a.sql" in bad.error.message
    assert isinstance(bad.error.report, MigrateReport)
    assert [m.name for m in bad.error.report.rolled_back] == ["001_a.sql"]
    assert bad.error.traceback is None
    assert dataclasses.asdict(report)["results"][2]["error"]["report"]["ok"] is False
    assert ledger(emulator, "tenant-c") == [] and "a" not in tables(emulator, "tenant-c")
    for name in ("tenant-a", "tenant-b", "tenant-d", "tenant-e"):
        assert ledger(emulator, name) == NAMES

    client.query(tenants["tenant-c"].uuid, [Statement("DROP TABLE b")])
    again = run_fleet(dbs, migrate_task(client, mdir), concurrency=4)
    assert again.ok and again.exit_code == 0
    for name in TENANTS:
        assert applied(again, name) == (NAMES if name == "tenant-c" else [])
        assert ledger(emulator, name) == NAMES


def test_a_failing_canary_stops_the_fleet_before_any_other_database_is_touched(
    emulator: D1Emulator, tenants: dict[str, DatabaseRef], client: D1Client, mdir: Path
) -> None:
    block_migration_b(client, tenants["tenant-a"])
    dbs = select_databases(client, matching="tenant-*")
    emulator.reset_log()
    lines: list[str] = []
    report = run_fleet(
        dbs, migrate_task(client, mdir, allow_drift=True), canary=1, notify=lines.append
    )

    assert report.canary_failed == "tenant-a" and not report.interrupted
    assert [r.status for r in report.results] == ["failed"] + ["skipped"] * 4
    assert {r.reason for r in report.results[1:]} == {"canary tenant-a failed"}
    assert report.exit_code == 1
    touched = {ref.name for ref in tenants.values() for r in emulator.requests if ref in r.path}
    assert touched == {"tenant-a"}
    for name in TENANTS[1:]:
        assert "d1_migrations" not in tables(emulator, name)
    assert lines[0].startswith("[1/5] canary tenant-a: failed after ")
    assert lines[-1] == "canary tenant-a failed: skipped 4 database(s)"

    client.query(tenants["tenant-a"].uuid, [Statement("DROP TABLE b")])
    again = run_fleet(dbs, migrate_task(client, mdir), canary=1)
    assert again.ok and all(ledger(emulator, n) == NAMES for n in TENANTS)


def test_canaries_run_alone_and_finish_before_the_rest_start() -> None:
    dbs = [DatabaseInfo(uuid=f"u{i}", name=f"db{i}") for i in range(6)]
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def task(db: DatabaseInfo) -> str:
        with lock:
            events.append(("start", db.name))
        with lock:
            events.append(("end", db.name))
        return db.name

    report = run_fleet(dbs, task, canary=2, concurrency=4)
    assert report.ok and [r.value for r in report.results] == [d.name for d in dbs]
    assert events[:4] == [("start", "db0"), ("end", "db0"), ("start", "db1"), ("end", "db1")]
    assert sorted(events[4:]) == sorted(
        (k, f"db{i}") for i in range(2, 6) for k in ("start", "end")
    )


def test_a_backend_closed_by_a_task_leaves_the_shared_client_open(
    tenants: dict[str, DatabaseRef], client: D1Client
) -> None:
    def operation(backend: Backend) -> object:
        backend.close()
        return backend.run([Statement("SELECT 42")], read_only=True)[0].first_value()

    dbs = [info(tenants[n]) for n in TENANTS]
    report = run_fleet(dbs, remote_task(client, operation), concurrency=2)
    assert report.ok and {r.value for r in report.results} == {42}


# --- rate limits -----------------------------------------------------------------------


def test_a_429_on_one_database_pauses_every_worker(
    emulator: D1Emulator, tenants: dict[str, DatabaseRef], gate_clock: FakeClock, mdir: Path
) -> None:
    a, b = tenants["tenant-a"], tenants["tenant-b"]
    emulator.faults.add("POST", f"/{a}/query$", status=429, headers={"Retry-After": "7"}, times=1)
    backing_off, b_done = threading.Event(), threading.Event()
    threads: dict[str, str] = {}

    def on_retry(_: str) -> None:
        # tenant-a holds its retry until tenant-b has run entirely under the pause.
        backing_off.set()
        assert b_done.wait(5)

    shared = make_client(
        emulator,
        transport=rate_limited(emulator, gate_clock),
        on_retry=on_retry,
        jitter=lambda: 0.0,
    )
    migrate = migrate_task(shared, mdir)

    def task(db: DatabaseInfo) -> MigrateReport:
        threads[db.name] = threading.current_thread().name
        if db.name != "tenant-b":
            return migrate(db)
        assert backing_off.wait(5)
        try:
            return migrate(db)
        finally:
            b_done.set()

    with shared:
        report = run_fleet([info(a), info(b)], task, concurrency=2)
    assert report.ok, report.failed
    # tenant-b never got a 429 itself, yet waited out tenant-a's Retry-After; tenant-a's
    # own retry then found the pause over.
    assert gate_clock.sleeps == [(threads["tenant-b"], 7.0)]
    assert [r.status for r in emulator.requests].count(429) == 1
    assert ledger(emulator, "tenant-a") == ledger(emulator, "tenant-b") == NAMES


def test_client_consults_the_budget_before_every_attempt(emulator: D1Emulator) -> None:
    clock = FakeClock()
    emulator.faults.add("POST", "/query$", status=429, headers={"Retry-After": "1"}, times=1)
    budget = rate_limited(emulator, clock, limit=1, window=10.0)
    with make_client(emulator, transport=budget) as shared:
        result = shared.query(emulator.default_db, [Statement("SELECT 1")], read_only=True)
    assert result[0].first_value() == 1
    # One request per 10 s: the retry waited for the 429's window to pass (over the
    # 1 s pause the 429 asked for), so the budget counted both attempts.
    assert [s for _, s in clock.sleeps] == [1.0, 9.0] and len(emulator.requests) == 2


def test_a_fleet_under_a_small_budget_is_throttled_to_it(
    emulator: D1Emulator, tenants: dict[str, DatabaseRef], mdir: Path
) -> None:
    clock = FakeClock()
    budget = rate_limited(emulator, clock, limit=4, window=60.0)
    with make_client(emulator, transport=budget) as shared:
        report = run_fleet([info(t) for t in tenants.values()], migrate_task(shared, mdir))
    assert report.ok
    sent = len(emulator.requests)
    assert sent > 4 and clock.sleeps
    assert clock.now >= (math.ceil(sent / 4) - 1) * 60.0


# --- outcomes, exit codes, stopping ----------------------------------------------------

DBS = [DatabaseInfo(uuid=f"uuid-{i}", name=f"db{i}") for i in range(5)]


def raising(*failures: BaseException) -> Callable[[DatabaseInfo], int]:
    """A task: database i raises failures[i], the others return i."""

    def task(db: DatabaseInfo) -> int:
        i = DBS.index(db)
        if i < len(failures):
            raise failures[i]
        return i

    return task


@pytest.mark.parametrize(
    ("failures", "code"),
    [
        ((), 0),
        ((errors.ServerError("x"),), 4),
        ((errors.ServerError("x"), errors.InputError("x")), 2),
        ((errors.InputError("x"), errors.AuthError("x"), errors.NetworkError("x")), 3),
        ((errors.AuthError("x"), errors.LockHeld("x"), errors.RateLimited("x")), 5),
        ((errors.LockHeld("x"), errors.UsageError("x"), errors.ChangeFailed("x")), 1),
        ((errors.PollTimeout("x"), ValueError("boom")), 1),
        ((SystemExit("bye"),), 1),
    ],
)
def test_the_exit_code_is_the_most_severe_failure(
    failures: tuple[BaseException, ...], code: int
) -> None:
    report = run_fleet(DBS, raising(*failures), concurrency=3)
    assert report.exit_code == code
    assert [r.status for r in report.results] == ["failed"] * len(failures) + ["ok"] * (
        5 - len(failures)
    )
    assert [r.value for r in report.results[len(failures) :]] == list(range(len(failures), 5))


def test_an_error_keeps_its_class_message_hint_and_location() -> None:
    failure = errors.InputError("bad statement", hint="fix it", file="m/001.sql", line=3)
    report = run_fleet(DBS[:2], raising(failure, ValueError("boom")))
    first, second = (r.error for r in report.results)
    assert first is not None and second is not None
    assert (first.type, first.message, first.hint, first.exit_code) == (
        "InputError",
        "m/001.sql:3: bad statement",
        "fix it",
        2,
    )
    assert first.traceback is None and first.report is None
    assert (second.type, second.message, second.exit_code) == ("ValueError", "boom", 1)
    assert second.traceback is not None and "ValueError: boom" in second.traceback


def test_the_stop_event_lets_the_running_database_finish_and_skips_the_rest() -> None:
    stop = threading.Event()

    def task(db: DatabaseInfo) -> str:
        if db.name == "db1":
            stop.set()
        return db.name

    report = run_fleet(DBS, task, concurrency=1, stop=stop)
    assert [r.status for r in report.results] == ["ok", "ok", "skipped", "skipped", "skipped"]
    assert report.results[2].reason == "interrupted before it started"
    assert report.interrupted and report.exit_code == INTERRUPTED_EXIT

    # Already set: nothing starts at all.
    failing = run_fleet(DBS, raising(errors.ServerError("x")), stop=stop)
    assert failing.counts == {"ok": 0, "failed": 0, "skipped": 5}


def test_a_failure_outranks_the_interruption_in_the_exit_code() -> None:
    stop = threading.Event()

    def task(db: DatabaseInfo) -> str:
        stop.set()
        raise errors.LockHeld("someone else is deploying")

    report = run_fleet(DBS, task, concurrency=1, stop=stop)
    assert report.counts == {"ok": 0, "failed": 1, "skipped": 4}
    assert report.interrupted and report.exit_code == 5


def test_ctrl_c_lets_running_databases_finish_and_returns_the_report() -> None:
    release = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def task(db: DatabaseInfo) -> str:
        if db.name == "db0":
            assert release.wait(5)
        if db.name == "db1":
            signal.pthread_kill(main, signal.SIGINT)
            release.set()
        return db.name

    lines: list[str] = []
    report = run_fleet(DBS, task, concurrency=2, notify=lines.append)
    assert [r.status for r in report.results] == ["ok", "ok", "skipped", "skipped", "skipped"]
    assert report.interrupted and report.exit_code == INTERRUPTED_EXIT
    assert "interrupted: waiting for the running databases to finish" in lines


def test_bad_concurrency_or_canary_is_a_usage_error() -> None:
    with pytest.raises(errors.UsageError, match="--concurrency"):
        run_fleet(DBS, raising(), concurrency=0)
    with pytest.raises(errors.UsageError, match="--canary"):
        run_fleet(DBS, raising(), canary=-1)


def test_more_canaries_than_databases_runs_them_all_one_by_one() -> None:
    report = run_fleet(DBS[:2], raising(), canary=5)
    assert report.ok and report.canary_failed is None


# --- selecting databases ---------------------------------------------------------------


def test_select_by_name_and_uuid_without_duplicates_in_name_order(
    emulator: D1Emulator, tenants: dict[str, DatabaseRef], client: D1Client
) -> None:
    a = tenants["tenant-a"]
    emulator.reset_log()
    names = ["tenant-c", a.uuid, "tenant-c", a.uuid.upper()]
    found = select_databases(client, names=names)
    assert [(d.name, d.uuid) for d in found] == [("tenant-a", a), ("tenant-c", tenants["tenant-c"])]
    assert len(emulator.requests) == 1  # one list, whatever the number of names


def test_select_by_glob_is_case_sensitive_and_merges_with_names(
    tenants: dict[str, DatabaseRef], client: D1Client
) -> None:
    assert [d.name for d in select_databases(client, matching="tenant-[bd]")] == [
        "tenant-b",
        "tenant-d",
    ]
    found = select_databases(client, names=["tenant-b", "telegram-conversations"], matching="*-b")
    assert [d.name for d in found] == ["telegram-conversations", "tenant-b"]
    with pytest.raises(errors.NotFound) as caught:
        select_databases(client, matching="Tenant-*")
    assert "no database name matches 'Tenant-*'" in str(caught.value)
    assert "tenant-a" in str(caught.value) and "telegram-conversations" in str(caught.value)
    assert caught.value.hint is not None and "case-sensitively" in caught.value.hint


def test_select_names_every_missing_database_and_lists_the_others() -> None:
    known = [DatabaseInfo(uuid=f"uuid-{i:02}", name=f"db{i:02}") for i in range(25)]
    with pytest.raises(errors.NotFound) as caught:
        select_databases(known, names=["db01", "nope", "gone", "nope"])
    message = str(caught.value)
    assert "database(s) 'nope', 'gone' not found" in message
    assert "db00, db01" in message and "db19" in message and "db20" not in message
    assert "(and 5 more)" in message and caught.value.exit_code == 3
    with pytest.raises(errors.NotFound, match="the account has no D1 databases"):
        select_databases([], matching="*")


def test_an_empty_selection_is_a_usage_error() -> None:
    with pytest.raises(errors.UsageError, match="no databases selected"):
        select_databases([DatabaseInfo(uuid="u", name="db")])
