"""The one way a run ends when it does not succeed (`migrations._Run.settle`), and what it
rests on: interrupts as an exception (`interrupts`), the lease as the run's own, a bound
on the settle's time.

Most tests run on a local SQLite file and on the D1 emulator (in process); `Failing`
wraps either to make one request fail in any way at all, before or after it ran.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from d1deploy import errors, interrupts, lock, migrations
from d1deploy.backend import QueryResult, Statement
from d1deploy.client import D1Client
from d1deploy.local import LocalBackend
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests import helpers
from tests.emulator import ServedEmulator
from tests.helpers import ONE_EACH, Db, deploy, take_lock, three, write

# The engine's fixtures: a database on a local file and on the emulator, the emulator
# alone, a migrations folder.
db, remote, mdir = helpers.db, helpers.remote, helpers.mdir

THREE = ["001_a.sql", "002_b.sql", "003_c.sql"]


class Failing(helpers.Recording):
    """A backend whose first request holding `marker` raises `error`, before it is sent
    or (`landed`) after it ran."""

    def __init__(self, db: Db, marker: str, error: BaseException, *, landed: bool) -> None:
        super().__init__(db.backend)
        self.marker, self.error, self.landed = marker, error, landed
        self.fired = False

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        hit = not self.fired and any(self.marker in s.sql for s in statements)
        if hit and not self.landed:
            self.fired = True
            raise self.error
        results = super().run(statements, read_only=read_only)
        if hit:
            self.fired = True
            raise self.error
        return results


WAYS_OUT: dict[str, BaseException] = {
    "413": errors.UsageError("query was refused by the D1 API: Request body too large [code 7400]"),
    "403": errors.AuthError("the API token was refused: Authentication error [code 10000]"),
    "sqlite-full": errors.SqlError("Exceeded maximum DB size: SQLITE_FULL"),
    "timeout": errors.NetworkError("could not reach the D1 API (ReadTimeout)"),
    "SIGINT": errors.Interrupt("SIGINT"),
    "SIGTERM": errors.Interrupt("SIGTERM"),
    "a-bug": RuntimeError("something d1deploy did not expect"),
}  # fmt: skip


@pytest.mark.parametrize("landed", [False, True], ids=["before-it-ran", "after-it-ran"])
@pytest.mark.parametrize("way", WAYS_OUT)
def test_every_way_out_of_the_second_migration_is_settled_the_same(
    db: Db, mdir: Path, way: str, landed: bool
) -> None:
    three(mdir)
    error = WAYS_OUT[way]
    failing = Failing(db, "CREATE TABLE b", error, landed=landed)
    lines: list[str] = []
    if landed and isinstance(error, errors.D1DeployError):
        # An error for an answer whose request ran: the ledger says it landed, and the
        # deploy goes on, as after a lost answer.
        report = deploy(
            Db(failing, db.emulator, db.path), mdir, notify=lines.append, limits=ONE_EACH
        )
        assert [(a.name, a.answer_lost) for a in report.applied][1] == ("002_b.sql", True)
        assert db.ledger() == THREE and db.count(lock.LOCK_TABLE) == 0
        return

    with pytest.raises(migrations.DeployFailed) as info:
        deploy(Db(failing, db.emulator, db.path), mdir, notify=lines.append, limits=ONE_EACH)

    err, report = info.value, info.value.report
    signal_name = way if way.startswith("SIG") else None
    assert err.exit_code == (130 if signal_name else 1)
    assert isinstance(err, migrations.DeployInterrupted) == bool(signal_name)
    assert report.interrupted == signal_name and report.ok is False
    # Whatever it was, the ledger said what landed, and this run's migrations are undone.
    applied = ["001_a.sql", "002_b.sql"] if landed else ["001_a.sql"]
    assert [a.name for a in report.applied] == applied
    assert [r.name for r in report.rolled_back] == applied[::-1]
    assert report.still_applied == () and report.skipped == tuple(THREE[len(applied) :])
    assert f"rolled back {', '.join(applied[::-1])}" in err.message
    assert db.ledger() == [] and db.count(lock.LOCK_TABLE) == 0
    if landed:
        assert any("002_b.sql (its answer never came" in line for line in lines)


def test_an_interrupt_once_the_last_request_landed_says_the_deploy_had_finished(
    db: Db, mdir: Path
) -> None:
    """The last request carries the lock's release: when it landed, the lock is free
    because of it, not taken from this run, and nothing is left to undo or stop."""
    three(mdir)
    failing = Failing(db, "CREATE TABLE c", errors.Interrupt("SIGTERM"), landed=True)
    with pytest.raises(migrations.DeployInterrupted) as info:
        deploy(Db(failing, db.emulator, db.path), mdir)
    assert "the deploy had finished: its last request landed" in info.value.message
    assert "lock lost" not in info.value.message
    assert info.value.report.still_applied == tuple(THREE)
    assert db.ledger() == THREE and db.count(lock.LOCK_TABLE) == 0


def test_a_read_that_wrote_is_not_undone_but_reported_and_the_lock_released(
    db: Db, mdir: Path
) -> None:
    three(mdir)
    # Expecting nothing but success, it runs after the request, on its own (a check on
    # rows runs inside the migration's request: tests/test_probes.py has that case).
    write(mdir, "002_b/verify.sql", "SELECT id FROM b;\n")
    wrote = errors.ReadWrote("`SELECT id FROM b` was sent as a read but wrote", changed=True)
    failing = Failing(db, "SELECT id FROM b", wrote, landed=True)
    with pytest.raises(migrations.DeployFailed) as info:
        deploy(Db(failing, db.emulator, db.path), mdir)
    report = info.value.report
    assert "nothing was undone" in info.value.message
    assert report.still_applied == ("001_a.sql", "002_b.sql") and report.rolled_back == ()
    assert info.value.hint is not None and "d1deploy restore --bookmark " in info.value.hint
    assert db.ledger() == ["001_a.sql", "002_b.sql"] and db.count(lock.LOCK_TABLE) == 0


def test_an_interrupt_before_the_first_change_releases_the_lock(db: Db, mdir: Path) -> None:
    three(mdir)

    def backup() -> None:
        raise errors.Interrupt("SIGTERM")

    with pytest.raises(migrations.DeployInterrupted) as info:
        deploy(db, mdir, before_change=backup)
    assert info.value.message == "SIGTERM received while taking the backup; nothing was changed"
    assert info.value.report.applied == () and db.count(lock.LOCK_TABLE) == 0


def test_a_refusal_before_the_first_change_keeps_its_exit_code_and_carries_a_report(
    db: Db, mdir: Path
) -> None:
    three(mdir)
    deploy(db, mdir, to="001_a")
    db.exec("CREATE TABLE b (id INTEGER)")  # 002 cannot be applied: the deploy fails
    with pytest.raises(migrations.DeployFailed):
        deploy(db, mdir, allow_drift=True)
    (mdir / "001_a.sql").write_text("CREATE TABLE a (id TEXT);\n")  # drift
    with pytest.raises(errors.DriftDetected) as info:
        deploy(db, mdir)
    assert info.value.exit_code == 5
    assert info.value.report.ok is False and db.count(lock.LOCK_TABLE) == 0


def test_rollback_settles_too(db: Db, mdir: Path) -> None:
    three(mdir)
    deploy(db, mdir)
    failing = Failing(db, "DROP TABLE b", errors.Interrupt("SIGINT"), landed=True)
    with pytest.raises(migrations.DeployInterrupted) as info:
        migrations.rollback(
            failing, Project(mdir, actor="me"), migrations.RollbackOptions(to="001_a")
        )
    report = info.value.report
    assert [r.name for r in report.rolled_back] == ["003_c.sql", "002_b.sql"]
    assert report.rolled_back[-1].answer_lost and report.not_rolled_back == ()
    assert db.ledger() == ["001_a.sql"] and db.count(lock.LOCK_TABLE) == 0


def test_baseline_settles_too(db: Db, mdir: Path) -> None:
    three(mdir)
    failing = Failing(db, 'INSERT INTO "d1_migrations"', errors.Interrupt("SIGTERM"), landed=True)
    with pytest.raises(migrations.DeployInterrupted) as info:
        migrations.baseline(failing, Project(mdir, actor="me"), "002_b", force=True)
    assert info.value.report.recorded == ("001_a.sql", "002_b.sql")
    assert db.ledger() == ["001_a.sql", "002_b.sql"] and db.count(lock.LOCK_TABLE) == 0


# --- the lease is the run's own ----------------------------------------------------------


@pytest.mark.parametrize("lost", ["drop_before", "drop_after"])
def test_a_run_whose_lock_answer_was_lost_finds_its_own_lease(
    remote: Db, mdir: Path, lost: str
) -> None:
    three(mdir)
    assert remote.emulator is not None
    remote.emulator.faults.add(
        "POST", r"/query$", body="INSERT INTO _d1deploy_lock", times=1, **{lost: True}
    )
    lines: list[str] = []
    report = deploy(remote, mdir, notify=lines.append)
    assert [a.name for a in report.applied] == THREE
    assert any("sending the lock request again" in line for line in lines)
    assert remote.count(lock.LOCK_TABLE) == 0


def test_a_lease_released_by_someone_else_says_so(db: Db, mdir: Path) -> None:
    three(mdir)

    def unlock_force() -> None:
        lock.force_release(db.backend)

    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, mdir, before_change=unlock_force)
    message = info.value.message
    assert "someone released it (`unlock --force`" in message
    assert "another deploy" not in message and "nobody" not in message
    assert db.ledger() == []


def test_a_lease_taken_over_names_its_holder(db: Db, mdir: Path) -> None:
    three(mdir)

    def steal() -> None:
        db.exec(f"UPDATE {lock.LOCK_TABLE} SET token = 'theirs', holder = 'ci run 77'")

    with pytest.raises(migrations.DeployFailed) as info:
        deploy(db, mdir, before_change=steal)
    assert "it is now held by ci run 77, since " in info.value.message
    assert lock.current(db.backend) is not None  # theirs, left alone


def test_a_lease_given_up_unanswered_cannot_be_taken_by_its_late_request(db: Db) -> None:
    """The request that takes the lock, landing after the run gave the lease up."""
    late = lock.acquire_statements("run 1", "t1", 120)
    db.backend.run(lock.give_up_statements("run 1", "t1"))
    held = lock.lease_of(db.backend.run(late)[-1])
    assert held is not None and held.token == "t1" and held.expired
    assert take_lock(db.backend, "run 2", 120).holder == "run 2"


# --- interrupts and the settle's bound ---------------------------------------------------


def test_a_signal_raises_where_the_run_stands_and_is_refused_while_settling() -> None:
    said: list[str] = []
    with interrupts.handling(said.append):
        with pytest.raises(errors.Interrupt) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert info.value.signal_name == "SIGTERM"
        assert interrupts.stopping() == "SIGTERM"
        with interrupts.settling("undoing 002_b.sql"):
            os.kill(os.getpid(), signal.SIGINT)  # refused: no exception
        assert said and said[0].startswith("SIGINT refused: d1deploy is finishing (undoing 002_b")
    assert interrupts.stopping() is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_worker_thread_stops_at_its_next_checkpoint() -> None:
    outcome: list[BaseException | None] = []
    ready, go = threading.Event(), threading.Event()

    def worker() -> None:
        ready.set()
        go.wait(10)
        try:
            interrupts.checkpoint()
            outcome.append(None)
        except errors.Interrupt as exc:
            outcome.append(exc)

    with interrupts.handling(lambda _: None):
        thread = threading.Thread(target=worker)
        thread.start()
        ready.wait(10)
        with pytest.raises(errors.Interrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        go.set()
        thread.join(10)
    assert isinstance(outcome[0], errors.Interrupt) and outcome[0].signal_name == "SIGINT"


def test_the_settle_gives_up_in_time_and_still_releases_the_lock(
    served_emulator: ServedEmulator, mdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = served_emulator.emulator
    assert emulator.default_db is not None
    client = D1Client(
        token=emulator.token, account_id=emulator.account_id, base_url=served_emulator.base_url
    )
    backend = RemoteBackend(client, client.resolve_database(emulator.default_db.uuid))
    three(mdir)
    monkeypatch.setattr(interrupts, "SETTLE_SECONDS", 0.5)
    emulator.faults.add("POST", r"/query$", body="CREATE TABLE b", status=413, times=1)
    # The settle's first request (the ledger read) gets no answer in time; it lands later.
    emulator.faults.add("POST", r"/query$", body="SET token", delay=1, after=1, times=1)
    started = time.monotonic()
    with pytest.raises(migrations.DeployFailed) as info:
        db = Db(backend, emulator, emulator.db_path(emulator.default_db.uuid))
        deploy(db, mdir, limits=ONE_EACH)
    took = time.monotonic() - started
    backend.close()
    err = info.value
    assert "d1deploy gave up after 0.5 s, the time it allows itself to settle" in err.message
    assert "still applied by this deploy: 001_a.sql" in err.message
    assert err.hint is not None and "d1deploy restore --bookmark" in err.hint
    assert err.report.lock_held is None  # released within its own bound
    assert took < 15
    # The late ledger read lands after the run ended, and fences nothing.
    deadline = time.monotonic() + 10
    while sum("SET token" in str(r.json) for r in emulator.requests) < 2:
        assert time.monotonic() < deadline, "the late ledger read never landed"
        time.sleep(0.05)
    after = Db(LocalBackend(emulator.db_path(emulator.default_db.uuid)), None, Path())
    assert after.count(lock.LOCK_TABLE) == 0 and after.ledger() == ["001_a.sql"]
    after.backend.close()
