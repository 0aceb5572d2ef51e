"""Faults whose bound is minutes of wall-clock time, run in process on a fake clock.

The command's own waits (a 900 s export poll limit, five attempts with exponential
backoff) are too long for a subprocess in CI, so these scenarios drive the library the
command wires, through the emulator's in-process transport, with `sleep` advancing a
fake clock. Each still checks the exit code its error carries, that the wait was
bounded, and the database and backup folder afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import soak
from d1deploy import backups, errors, lock, migrations
from d1deploy.backend import Backend
from d1deploy.client import MAX_BACKOFF
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests.e2e.conftest import TOKEN
from tests.e2e.states import (
    DB,
    M001,
    SEED,
    FakeTime,
    assert_stage,
    in_process_backend,
    read_state,
    seed_before,
)
from tests.emulator import D1Emulator

pytestmark = pytest.mark.e2e

APPLY_001 = "CREATE TABLE user_deposits_new"


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[D1Emulator]:
    """An emulator without a server: d1deploy reaches it through its in-process
    transport."""
    emu = D1Emulator(tmp_path / "emulator", token=TOKEN, export_polls=0, sleep=lambda _: None)
    emu.create_database(DB)
    yield emu
    emu.close()


def backend(emulator: D1Emulator, time: FakeTime) -> RemoteBackend:
    return in_process_backend(emulator, sleep=time.sleep, clock=time.clock)


def test_an_export_that_never_completes_is_abandoned_within_the_poll_limit(
    quiet: D1Emulator, tmp_path: Path
) -> None:
    quiet.faults.add("POST", r"/export$", export_never_completes=True)
    time = FakeTime()
    folder = tmp_path / "backups"

    with pytest.raises(errors.PollTimeout) as info:
        backups.backup(backend(quiet, time), dest=None, backup_dir=folder)

    assert info.value.exit_code == 4
    assert "did not finish within 900 s" in info.value.message
    assert 900 <= time.now <= 901
    assert quiet.count("POST", "/export") == len(time.sleeps) + 1
    assert list(folder.iterdir()) == []


def test_persistent_5xx_on_export_polls_gives_up_after_bounded_attempts(
    quiet: D1Emulator, tmp_path: Path
) -> None:
    quiet.export_polls = 2
    quiet.faults.add("POST", r"/export$", body="current_bookmark", status=503)
    time = FakeTime()
    folder = tmp_path / "backups"

    with pytest.raises(errors.ServerError) as info:
        backups.backup(backend(quiet, time), dest=None, backup_dir=folder)

    assert info.value.exit_code == 4
    assert "gave up after 5 attempts" in info.value.message
    backoffs = time.sleeps[1:]  # the first sleep is the poll interval
    assert len(backoffs) == 4 and all(0 < s <= MAX_BACKOFF + 1 for s in backoffs)
    assert list(folder.iterdir()) == []


def test_same_second_backups_get_distinct_complete_files(quiet: D1Emulator, tmp_path: Path) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    folder = tmp_path / "backups"
    db = in_process_backend(quiet)

    first = backups.backup(db, dest=None, backup_dir=folder, now=lambda: moment)
    second = backups.backup(db, dest=None, backup_dir=folder, now=lambda: moment)

    assert first.path.name == f"{DB}-20260102T030405Z.sql"
    assert second.path.name == f"{DB}-20260102T030405Z-2.sql"
    assert backups.verify_backup(second.path).sha256 == second.sha256


def test_an_answer_lost_then_an_unreadable_ledger_says_what_is_known(
    quiet: D1Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(SEED, folder, ignore=shutil.ignore_patterns("*.md"))
    seed_before(quiet, folder)
    lost = quiet.faults.add("POST", r"/query$", body=APPLY_001, drop_after=True, times=1)
    # From the moment the write's answer is lost, every query fails: the ledger cannot
    # be read to tell whether 001 landed.
    quiet.faults.add("POST", r"/query$", body=lambda _: lost.fired > 0, status=503)
    time = FakeTime()

    with pytest.raises(migrations.DeployFailed) as info:
        migrations.migrate(backend(quiet, time), Project(folder, actor="e2e"))

    err = info.value
    assert err.exit_code == 1
    assert f"could not tell whether {M001} was applied" in err.message
    assert "bookmark before this deploy" in err.message
    assert err.hint is not None and "d1deploy restore --bookmark" in err.hint
    quiet.faults.clear()
    state = read_state(quiet.db_path(DB))
    # It had landed, whole: the database is consistent, only its lock is left behind.
    assert state.stage() == "after" and state.ledger[-1] == M001 and state.lock is not None

    db = in_process_backend(quiet)
    try:
        lock.force_release(db)
        again = migrations.migrate(db, Project(folder, actor="e2e"))
    finally:
        db.close()
    assert again.applied == ()
    assert_stage(read_state(quiet.db_path(DB)), "after")


def test_a_stale_atomicity_proof_never_lets_a_probe_row_into_production(
    quiet: D1Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(SEED, folder, ignore=shutil.ignore_patterns("*.md"))
    seed_before(quiet, folder)

    def one_run(operation: Callable[[Backend], object]) -> None:
        db = in_process_backend(quiet)  # each run of d1deploy has its own backend
        try:
            operation(db)
        finally:
            db.close()

    one_run(lambda db: migrations.migrate(db, Project(folder, actor="e2e")))  # proves atomicity
    one_run(lambda db: migrations.rollback(db, Project(folder, actor="e2e")))
    quiet.atomic_batches = False  # the platform changes under the remembered proof
    one_run(lambda db: migrations.migrate(db, Project(folder, actor="e2e")))

    state = read_state(quiet.db_path(DB))
    probes = [r for _, rows in state.fingerprint[1] for r in rows if 999999 in r]
    assert probes == []


def test_a_short_soak_ends_every_run_in_the_before_or_after_state() -> None:
    outcomes = soak.soak(runs=12, seed=7)

    assert [o.stage for o in outcomes if o.stage == "neither"] == []
    assert {o.operation for o in outcomes} == {"migrate", "rollback"}
    assert sum(o.bad_backups for o in outcomes) == 0
