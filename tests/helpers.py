"""Helpers shared by the test modules, so that no test module imports from another.

Backends on the in-process emulator (`remote_backend`), the recording wrapper the engine's
tests count requests with (`Recording`), the engine's database fixtures (`db`, `remote`,
`mdir`, `seed`: a module binds them by name, `db = helpers.db`), the deploy driver
(`deploy`), the in-process CLI runner (`run`, `run_json`), shared data, and what a respx
router saw (`requests_of`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner, Result

from d1deploy import cli, ledger, lock, migrations
from d1deploy.backend import (
    Backend,
    DatabaseInfo,
    ExportHandle,
    ExportOptions,
    ImportResult,
    MessageCallback,
    QueryResult,
    RestoreResult,
    SqlValue,
    Statement,
)
from d1deploy.client import D1Client
from d1deploy.local import LocalBackend
from d1deploy.migrations import MigrateOptions, MigrateReport
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests.emulator import D1Emulator

TOKEN = "cli-SECRET-token-42"
"""The API token the CLI tests put in the environment: `run` checks it never shows."""
TRACEBACK = "Traceback (most recent call last)"


def requests_of(router: respx.Router) -> list[httpx.Request]:
    """Every request that reached a respx router, in order."""
    return [call.request for call in router.calls]


class FakeTime:
    """A clock and a sleep for the client's retry and rate-limit tests: sleeping moves
    the clock and is recorded; safe from the fleet's worker threads."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def clock(self) -> float:
        with self._lock:
            return self.now


SEED = Path(__file__).resolve().parent.parent / "migrations"
USER_TABLES = (
    "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%'"
    " AND name NOT LIKE '_cf%' AND name NOT LIKE '_d1deploy%' AND name <> 'd1_migrations'"
    " ORDER BY type, name"
)


@dataclass
class Db:
    backend: Backend
    emulator: D1Emulator | None
    path: Path

    def rows(self, sql: str) -> list[tuple[SqlValue, ...]]:
        return list(self.backend.run([Statement(sql)], read_only=True)[0].rows)

    def exec(self, *sql: str) -> None:
        self.backend.run([Statement(s) for s in sql])

    def ledger(self) -> list[str]:
        return [str(r[0]) for r in self.rows("SELECT name FROM d1_migrations ORDER BY id")]

    def events(self) -> list[tuple[SqlValue, ...]]:
        return self.rows(
            f"SELECT name, event, duration_ms IS NOT NULL FROM {ledger.HISTORY_TABLE} ORDER BY id"
        )

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0] or 0)


def remote_backend(emulator: D1Emulator, name: str | None = None) -> RemoteBackend:
    """A RemoteBackend in process on the emulator's default database, or on a new
    database called `name`."""
    ref = emulator.default_db if name is None else emulator.create_database(name)
    assert ref is not None
    client = D1Client(
        token=emulator.token,
        account_id=emulator.account_id,
        base_url=emulator.base_url,
        transport=emulator.transport(),
        sleep=lambda _: None,
    )
    return RemoteBackend(client, DatabaseInfo(uuid=ref.uuid, name=ref.name))


@pytest.fixture(params=["local", "emulator"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "local":
        path = tmp_path / "local.sqlite"
        backend: Backend = LocalBackend(path)
        found = Db(backend, None, path)
    else:
        emulator: D1Emulator = request.getfixturevalue("emulator")
        backend = remote_backend(emulator)
        assert emulator.default_db is not None
        found = Db(backend, emulator, emulator.db_path(emulator.default_db.uuid))
    yield found
    backend.close()


@pytest.fixture
def remote(emulator: D1Emulator, tmp_path: Path) -> Iterator[Db]:
    backend = remote_backend(emulator)
    assert emulator.default_db is not None
    yield Db(backend, emulator, emulator.db_path(emulator.default_db.uuid))
    backend.close()


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "seed"
    shutil.copytree(SEED, path, ignore=shutil.ignore_patterns("*.md"))
    return path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def deploy(db: Db, folder: Path, **options: object) -> MigrateReport:
    notify = options.pop("notify", None)
    hook = options.pop("before_change", None)
    project = Project(folder, actor="tester")
    if notify is not None:
        project = replace(project, notify=notify)  # type: ignore[arg-type]
    return migrations.migrate(
        db.backend,
        project,
        MigrateOptions(**options),  # type: ignore[arg-type]
        before_change=hook,  # type: ignore[arg-type]
    )


ONE_EACH = ledger.Limits(max_body_bytes=1)
"""Limits no two migrations fit in together: each goes in a request of its own, so a
test can fail a later one while an earlier one stands applied."""


def three(folder: Path, *, rollbacks: bool = True) -> None:
    for n, table in ((1, "a"), (2, "b"), (3, "c")):
        write(folder, f"00{n}_{table}.sql", f"CREATE TABLE {table} (id INTEGER PRIMARY KEY);\n")
        if rollbacks:
            write(folder, f"00{n}_{table}/rollback.sql", f"DROP TABLE {table};\n")


class Recording:
    """A Backend that records every request it passes on to another."""

    def __init__(self, inner: Backend, kind: str = "local") -> None:
        self.inner = inner
        self.kind = kind
        self.requests: list[tuple[list[str], bool]] = []

    @property
    def info(self) -> DatabaseInfo:
        return self.inner.info

    @property
    def is_remote(self) -> bool:
        return self.inner.is_remote

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        self.requests.append(([s.sql for s in statements], read_only))
        return self.inner.run(statements, read_only=read_only)

    def bookmark(self, at: datetime | None = None) -> str:
        return self.inner.bookmark(at)

    def restore(self, bookmark: str) -> RestoreResult:
        return self.inner.restore(bookmark)

    def export(
        self, options: ExportOptions, on_message: MessageCallback | None = None
    ) -> ExportHandle:
        return self.inner.export(options, on_message)

    def import_file(self, path: Path, on_message: MessageCallback | None = None) -> ImportResult:
        return self.inner.import_file(path, on_message)

    def close(self) -> None:
        self.inner.close()

    def scalar(self, sql: str) -> SqlValue:
        return self.inner.run([Statement(sql)], read_only=True)[0].first_value()

    def script(self, sql: str) -> None:
        self.inner.run([Statement(s) for s in sql.split(";\n") if s.strip()])


FIFTEEN_KOREAN = "가나다라마바사아자차카타파하거"
FIFTEEN_ASCII = "ABCDEFGHIJKLMNO"

REALISTIC_DATA = f"""
INSERT INTO users (id, telegram_id, username, first_name, created_at) VALUES
  (1, '123456', 'hong', '길동', '2025-12-01 09:00:00'),
  (2, '654321', NULL, 'Kim', '2025-12-02 10:30:00'),
  (3, '777', 'it''s_me', NULL, '2025-12-03 11:45:00');
INSERT INTO user_deposits (id, user_id, balance, created_at, updated_at) VALUES
  (1, 1, 15000, '2025-12-01 09:05:00', '2026-01-10 08:00:00'),
  (2, 2, 0, '2025-12-02 10:31:00', '2025-12-02 10:31:00'),
  (3, 3, 2500, '2025-12-03 11:46:00', '2026-01-15 22:10:00');
INSERT INTO deposit_transactions
  (id, user_id, type, amount, depositor_name, status, description, created_at, confirmed_at)
VALUES
  (1, 1, 'deposit', 5000, '홍길동', 'confirmed', NULL, '2026-01-10 07:55:00',
   '2026-01-10 08:00:00'),
  (2, 1, 'deposit', 10000, '{FIFTEEN_KOREAN}', 'confirmed', 'bank SMS', '2026-01-11 12:00:00',
   '2026-01-11 12:01:00'),
  (3, 2, 'deposit', 3000, '{FIFTEEN_ASCII}', 'pending', NULL, '2026-01-12 18:20:00', NULL),
  (4, 3, 'withdrawal', -500, NULL, 'cancelled', 'user cancelled', '2026-01-15 22:00:00', NULL),
  (5, 3, 'deposit', 3000, 'O''Brien', 'confirmed', NULL, '2026-01-15 22:05:00',
   '2026-01-15 22:10:00');
"""


REBUILT_PARENT = [
    "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE child (id INTEGER PRIMARY KEY,"
    " parent_id INTEGER NOT NULL REFERENCES parent(id) ON DELETE CASCADE)",
    "INSERT INTO parent VALUES (1, 'a'), (2, 'b;\nwith a newline')",
    "INSERT INTO child VALUES (10, 1), (11, 2)",
    # The row-loss guard's advice: rebuild the parent without losing the children.
    "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '')",
    "INSERT INTO parent_new SELECT id, name FROM parent",
    "CREATE TABLE keep AS SELECT * FROM child",  # D1 refuses TEMP tables
    "DROP TABLE parent",
    "ALTER TABLE parent_new RENAME TO parent",
    "INSERT INTO child SELECT * FROM keep",
    "DROP TABLE keep",
]


def run(*args: str, code: int = 0) -> Result:
    """`d1deploy ARGS` in process, expecting exit `code`. Every run of every test checks
    that the token never shows and that only --debug prints a traceback."""
    result = CliRunner().invoke(cli.app, list(args), catch_exceptions=False)
    shown = result.stdout + result.stderr
    assert TOKEN not in shown
    if "--debug" not in args:
        assert TRACEBACK not in shown
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def run_json(*args: str, code: int = 0) -> dict[str, Any]:
    """`d1deploy ARGS --json`: stdout is exactly one JSON object, whose `ok` and (on
    failure) `error.exit_code` agree with the exit code."""
    result = run(*args, "--json", code=code)
    payload = json.loads(result.stdout)
    assert isinstance(payload, dict)
    assert payload["ok"] is (code == 0)
    if code:
        assert payload["error"]["exit_code"] == code
        assert payload["error"]["message"]
    return payload


def local_rows(sql: str, path: str = "db.sqlite") -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def d1deploy_executable() -> str:
    """The console script installed for this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).with_name("d1deploy")
    found = str(beside) if beside.is_file() else shutil.which("d1deploy")
    if found is None:
        pytest.fail("the d1deploy command is not installed: pip install -e '.[dev]'")
    return found


def take_lock(backend: Backend, holder: str, ttl_seconds: int) -> lock.Lease:
    """Take the deploy lock in one request, with the statements a run's session sends
    (`lock.acquire_statements`), for tests that need it held by someone.

    :raises LockHeld: when another unexpired lease exists.
    """
    token = lock.new_token()
    results = backend.run(lock.acquire_statements(holder, token, ttl_seconds))
    return lock.lease_from(results[-1], token)
