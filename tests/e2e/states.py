"""The seed database's states, read straight from a SQLite file (never through d1deploy).

`expected("before")` is the production database before migration 001 (000 applied, real
rows), `expected("after")` the same after 001, both built by plain SQLite from the seed
files. `read_state` reads an emulator database file into a `DbState` (schema and rows,
ledger, history events, lock), and `assert_stage` says whether it is exactly one of them
with a history where each migration was applied once. With the in-process helpers (a
backend on the emulator's transport, a fake clock) it is shared by the e2e suite and
`bench/soak.py`.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from d1deploy import migrations
from d1deploy.client import D1Client
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests.emulator import D1Emulator
from tests.helpers import REALISTIC_DATA

DB = "telegram-conversations"
REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "migrations"
M000 = "000_base_schema.sql"
M001 = "001_schema_enhancements.sql"
LEDGER = "d1_migrations"
INTERNAL_PREFIXES = ("sqlite_", "_cf_", "_d1deploy_")
# The seed test's rows, with the one column they leave to CURRENT_TIMESTAMP pinned, so
# that the expected states do not depend on the second they were built in.
DATA = REALISTIC_DATA + "UPDATE users SET updated_at = created_at;\n"

Stage = Literal["before", "after"]
STAGES: tuple[Stage, ...] = ("before", "after")
Fingerprint = tuple[
    tuple[tuple[Any, ...], ...], tuple[tuple[str, tuple[tuple[Any, ...], ...]], ...]
]


def _is_user(name: str) -> bool:
    return not name.startswith(INTERNAL_PREFIXES) and name != LEDGER


def _normalized(sql: str | None) -> str | None:
    # A table renamed by ALTER TABLE (as the seed's rebuilds and rollback do) reads
    # `CREATE TABLE "name"`: the same table, so quotes and spacing do not count.
    return None if sql is None else " ".join(sql.replace('"', "").split())


def fingerprint(con: sqlite3.Connection) -> Fingerprint:
    """The user's schema and every row of every user table, comparable as data."""
    objects = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    schema = tuple(
        sorted(
            ((t, n, tbl, _normalized(sql)) for t, n, tbl, sql in objects if _is_user(tbl)), key=repr
        )
    )
    tables = sorted(o[1] for o in objects if o[0] == "table" and _is_user(o[1]))
    data = tuple(
        (t, tuple(con.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall())) for t in tables
    )
    return schema, data


@functools.cache
def expected(stage: Stage, extra: tuple[str, ...] = ()) -> Fingerprint:
    """The seed database before or after 001, then the `extra` SQL scripts, built by
    plain SQLite from the files (never by d1deploy)."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript((SEED / M000).read_text(encoding="utf-8"))
        con.executescript(DATA)
        if stage == "after":
            con.executescript((SEED / M001).read_text(encoding="utf-8"))
        for script in extra:
            con.executescript(script)
        return fingerprint(con)
    finally:
        con.close()


@dataclass(frozen=True)
class DbState:
    """Everything the emulator's file says after a scenario."""

    fingerprint: Fingerprint
    tables: frozenset[str]
    ledger: tuple[str, ...]
    events: tuple[tuple[str, str, bool], ...]
    """(migration, event, complete) in the order they were written."""
    lock: tuple[str, str] | None
    """(holder, expires_at) of the lease row, if any."""

    def stage(self, extra: tuple[str, ...] = ()) -> Stage | None:
        """Which seed state the database is in (with `extra` scripts applied after it)."""
        for stage in STAGES:
            if self.fingerprint == expected(stage, extra):
                return stage
        return None

    def times_applied(self, name: str) -> int:
        """Completed applies of `name` minus completed rollbacks."""
        count = Counter((n, e) for n, e, complete in self.events if complete)
        return count[(name, "apply")] + count[(name, "baseline")] - count[(name, "rollback")]

    @property
    def torn_events(self) -> list[tuple[str, str]]:
        return [(n, e) for n, e, complete in self.events if not complete]

    @property
    def locked(self) -> bool:
        """Whether a lease that has not expired is held (a run that gave up a lease it
        may not have got leaves it expired: no lock)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return self.lock is not None and self.lock[1] > now


def read_state(path: Path) -> DbState:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = frozenset(
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )
        ledger = ()
        if LEDGER in tables:
            ledger = tuple(r[0] for r in con.execute(f"SELECT name FROM {LEDGER} ORDER BY id"))
        events: tuple[tuple[str, str, bool], ...] = ()
        if "_d1deploy_history" in tables:
            events = tuple(
                (r[0], r[1], r[2] is not None)
                for r in con.execute(
                    "SELECT name, event, duration_ms FROM _d1deploy_history ORDER BY id"
                )
            )
        lock = None
        if "_d1deploy_lock" in tables:
            row = con.execute("SELECT holder, expires_at FROM _d1deploy_lock").fetchone()
            lock = None if row is None else (str(row[0]), str(row[1]))
        return DbState(fingerprint(con), tables, ledger, events, lock)
    finally:
        con.close()


def assert_settled(state: DbState, extra: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The database stands on a prefix of the migrations (000, 001, then `extra` in
    order, at least 000): schema and rows exactly what that prefix makes of the seed's
    data, a ledger and a history that say so, no torn event and no lock held. Returns
    the ledger."""
    extra = extra or {}
    order = (M000, M001, *extra)
    assert state.ledger == order[: len(state.ledger)] and state.ledger, state.ledger
    stage: Stage = "before" if len(state.ledger) == 1 else "after"
    scripts = tuple(extra[name] for name in state.ledger[2:])
    assert state.stage(scripts) == stage, f"not the {stage} state with {state.ledger}"
    for name in order:
        assert state.times_applied(name) == (1 if name in state.ledger else 0), name
    assert state.torn_events == []
    assert not state.locked, state.lock
    return state.ledger


def assert_stage(state: DbState, stage: Stage, extra: Mapping[str, str] | None = None) -> None:
    """The database is exactly the seed `stage` plus the `extra` migrations (name -> SQL):
    schema and rows, a ledger that says so, a history where each migration was applied
    once (and nothing rolled back is still counted), no torn event, no lock."""
    extra = extra or {}
    found = state.stage(tuple(extra.values()))
    assert found == stage, f"the database is not in the {stage} state (it is {found})"
    want = (M000,) + ((M001,) if stage == "after" else ()) + tuple(extra)
    assert state.ledger == want
    for name in {n for n, _, _ in state.events} | set(want):
        assert state.times_applied(name) == (1 if name in want else 0), name
    assert state.torn_events == []
    assert state.lock is None


class FakeTime:
    """A clock that only moves when d1deploy sleeps: retry and poll limits of minutes
    pass at once, and are still measured."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def in_process_backend(
    emulator: D1Emulator,
    name: str = DB,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RemoteBackend:
    """A RemoteBackend on database `name` through the emulator's in-process transport."""
    client = D1Client(
        token=emulator.token,
        account_id=emulator.account_id,
        base_url=emulator.base_url,
        transport=emulator.transport(),
        sleep=sleep,
        clock=clock,
    )
    return RemoteBackend(client, client.resolve_database(name))


def migrate_in_process(
    emulator: D1Emulator, migrations_dir: Path, to: str | None = None, name: str = DB
) -> None:
    """Apply migrations through the library: set-up, not the thing under test."""
    backend = in_process_backend(emulator, name)
    try:
        migrations.migrate(
            backend, Project(migrations_dir, actor="e2e setup"), migrations.MigrateOptions(to=to)
        )
    finally:
        backend.close()


def seed_before(emulator: D1Emulator, migrations_dir: Path, name: str = DB) -> None:
    """The production database before 001: 000 applied by d1deploy, with real rows."""
    migrate_in_process(emulator, migrations_dir, to=M000, name=name)
    con = sqlite3.connect(emulator.db_path(name))
    try:
        with con:
            con.executescript(DATA)
    finally:
        con.close()
