"""lock.py: the deploy lease, taken in one request with the database's clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from d1deploy import errors, guard, lock
from d1deploy.backend import Backend, Statement
from d1deploy.local import LocalBackend
from tests.emulator import D1Emulator
from tests.helpers import remote_backend, take_lock


@pytest.fixture(params=["local", "emulator"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        found: Backend = LocalBackend(tmp_path / "db.sqlite")
    else:
        emulator: D1Emulator = request.getfixturevalue("emulator")
        found = remote_backend(emulator)
    yield found
    found.close()


def expire(backend: Backend) -> None:
    """Move the lease's expiry into the past, as the database clock would."""
    backend.run(
        [Statement(f"UPDATE {lock.LOCK_TABLE} SET expires_at = '2000-01-01T00:00:00.000Z'")]
    )


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_held_lock_names_its_holder_and_expiry(backend: Backend) -> None:
    mine = take_lock(backend, "ci run 1", 900)
    assert mine.holder == "ci run 1" and not mine.expired
    assert when(mine.expires_at) - when(mine.acquired_at) == timedelta(seconds=900)
    with pytest.raises(errors.LockHeld) as info:
        take_lock(backend, "ci run 2", 900)
    err = info.value
    assert err.exit_code == 5
    assert "ci run 1" in err.message and mine.expires_at in err.message
    assert err.hint is not None and "d1deploy unlock --force" in err.hint
    lock.release(backend, mine)
    assert lock.current(backend) is None
    assert take_lock(backend, "ci run 2", 900).holder == "ci run 2"


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_release_it(
    backend: Backend,
) -> None:
    crashed = take_lock(backend, "crashed run", 60)
    expire(backend)
    held = lock.current(backend)
    assert held is not None and held.expired
    fresh = take_lock(backend, "next run", 60)
    assert fresh.token != crashed.token
    lock.release(backend, crashed)
    current = lock.current(backend)
    assert current is not None and current.token == fresh.token


def test_force_release_removes_any_lease(backend: Backend) -> None:
    assert lock.force_release(backend) is None
    held = take_lock(backend, "stuck", 900)
    removed = lock.force_release(backend)
    assert removed is not None and removed.holder == "stuck" and removed.token == held.token
    assert lock.current(backend) is None


def test_check_and_extend_fails_the_batch_once_the_lease_changed_hands(
    backend: Backend,
) -> None:
    backend.run([Statement("CREATE TABLE t (x INTEGER)")])
    mine = take_lock(backend, "me", 60)
    write = Statement("INSERT INTO t VALUES (1)")
    backend.run([*lock.check_and_extend(mine, 900), write])
    extended = lock.current(backend)
    assert extended is not None and extended.expires_at > mine.expires_at

    expire(backend)
    take_lock(backend, "someone else", 900)
    with pytest.raises(errors.SqlError) as info:
        backend.run([*lock.check_and_extend(mine, 900), write])
    assert lock.is_lost(info.value.message)
    assert "held by someone else" in str(guard.parse_abort(info.value.message))
    assert backend.run([Statement("SELECT count(*) FROM t")])[0].first_value() == 1


def test_an_expired_lease_nobody_took_is_still_usable(backend: Backend) -> None:
    mine = take_lock(backend, "slow run", 60)
    expire(backend)
    backend.run(lock.check_and_extend(mine, 60))
    renewed = lock.current(backend)
    assert renewed is not None and not renewed.expired


def test_reading_the_lock_creates_nothing(backend: Backend) -> None:
    assert lock.current(backend) is None
    tables = backend.run(
        [Statement("SELECT name FROM sqlite_master WHERE name = ?", (lock.LOCK_TABLE,))]
    )[0]
    assert tables.rows == ()
