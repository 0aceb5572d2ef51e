"""One emulated D1 database: a SQLite file made to behave like D1's engine.

Owns the connection, on which every user statement runs by D1's rules as the package
states them (`d1deploy.d1sqlite.run`: the authorizer, limits, error texts and JSON
values, the same code `--local` runs), splitting SQL text into statements the way D1's
server does, the per-statement result and `meta` shapes, and Time Travel bookmarks backed
by snapshot copies.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1deploy import d1sqlite

_CF_KV = "CREATE TABLE _cf_KV (\n  key TEXT PRIMARY KEY,\n  value BLOB\n) WITHOUT ROWID"
# Quoted names and comments, so a statement made only of comments can be told apart.
_TOKENS = re.compile(
    r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)",
    re.DOTALL,
)


class D1SqlError(Exception):
    """A statement failed; `str()` is D1's message, e.g. `no such table: t: SQLITE_ERROR`."""


def is_blank(sql: str) -> bool:
    """True when `sql` holds nothing but white space, comments and semicolons."""
    code = _TOKENS.sub(lambda m: " " if m.group().startswith(("--", "/*")) else "x", sql)
    return re.fullmatch(r"[\s;]*", code) is not None


def split_statements(lines: Iterable[str]) -> Iterator[str]:
    """Split SQL text (given in pieces, e.g. a file's lines) into statements.

    Cuts at every `;` where `sqlite3.complete_statement` says the text so far is whole, so
    `;` inside strings, comments and `CREATE TRIGGER ... BEGIN ... END;` bodies stays put.
    A trailing statement without `;` is kept; comment-only pieces are dropped.
    """
    pending: list[str] = []
    for line in lines:
        start = 0
        while (end := line.find(";", start)) != -1:
            pending.append(line[start : end + 1])
            start = end + 1
            text = "".join(pending)
            if sqlite3.complete_statement(text):
                pending = []
                if not is_blank(text):
                    yield text.strip()
        pending.append(line[start:])
    rest = "".join(pending)
    if not is_blank(rest):
        yield rest.strip()


def to_json(value: Any) -> Any:
    """A value of `d1sqlite.run`'s rows as it goes on the wire: BLOBs as arrays of byte
    values (numbers are already JavaScript's, `d1sqlite.json_value`)."""
    return list(value) if isinstance(value, bytes) else value


def _bind(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):
        return value
    kind = "object" if isinstance(value, list | dict) else type(value).__name__
    raise D1SqlError(f"D1_TYPE_ERROR: Type '{kind}' not supported for value '{value}'")


@dataclass(frozen=True)
class StatementResult:
    """One statement's outcome, ready to render as a `/query` or `/raw` result entry."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    meta: dict[str, Any]

    def query_shape(self) -> dict[str, Any]:
        # Like a JS object, a repeated column name keeps the last value.
        results = [dict(zip(self.columns, row, strict=True)) for row in self.rows]
        return {"success": True, "results": results, "meta": self.meta}

    def raw_shape(self) -> dict[str, Any]:
        results = {"columns": list(self.columns), "rows": [list(row) for row in self.rows]}
        return {"success": True, "results": results, "meta": self.meta}


@dataclass(frozen=True)
class Bookmark:
    name: str
    at: float
    snapshot: Path


class Database:
    """A D1 database on a SQLite file. Every public method takes `lock` itself."""

    def __init__(
        self,
        *,
        uuid: str,
        name: str,
        path: Path,
        snapshot_dir: Path,
        created_at: float,
        eager_snapshots: bool,
        clock: Callable[[], float],
    ) -> None:
        self.uuid, self.name, self.path, self.created_at = uuid, name, path, created_at
        self.lock = threading.RLock()
        self._snapshot_dir = snapshot_dir
        self._eager = eager_snapshots
        self._clock = clock
        self._bookmarks: list[Bookmark] = []
        self._dirty = False
        self._snap_version = -1
        self._import = False
        # No statement cache: a statement SQLite compiles anew says where its error is.
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=0
        )
        fresh = not self._internal("SELECT count(*) FROM sqlite_schema")[0][0]
        d1sqlite.prepare(self._conn)
        # A test double needs no crash safety; fsync per commit would cap a fleet at ~100/s.
        self._conn.execute("PRAGMA synchronous=OFF")
        if fresh:
            self._conn.execute(_CF_KV)
        self._snapshot()

    # -- SQL -----------------------------------------------------------------------------

    def execute(
        self,
        statements: Iterable[tuple[str, Sequence[Any]]],
        *,
        atomic: bool,
        on_result: Callable[[StatementResult], None],
        bulk: bool = False,
    ) -> None:
        """Run statements in order; raise `D1SqlError` at the first failure.

        `atomic`: one transaction for all of them (D1's batch), rolled back on any error.
        Otherwise every statement commits on its own, so earlier ones survive a failure.
        Each statement still runs inside a transaction, which is why `PRAGMA foreign_keys`
        can never switch enforcement off, exactly as on D1. `bulk` is an import: a leftover
        BEGIN gets SQLite's own error, and `size_after` is left to the caller (0 here).
        """
        with self.lock:
            self._import = bulk
            changed = False
            try:
                if atomic:
                    self._sql("BEGIN")
                for sql, params in statements:
                    if not atomic:
                        self._sql("BEGIN")
                    result = self._statement(sql, params)
                    changed = changed or bool(result.meta["changed_db"])
                    if not atomic:
                        self._sql("COMMIT")
                    on_result(result)
                if atomic:
                    self._sql("COMMIT")
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._import = False
                if changed:
                    self._changed()

    def _statement(self, sql: str, params: Sequence[Any]) -> StatementResult:
        bound = [_bind(p) for p in params]
        before = self._conn.total_changes
        started = time.perf_counter()
        try:
            ran = d1sqlite.run(self._conn, sql, bound, importing=self._import)
        except d1sqlite.D1Error as exc:
            raise D1SqlError(exc.message) from exc
        except (sqlite3.Error, OverflowError) as exc:
            # Raised by Python's binding layer (wrong number of parameters...).
            code = "SQLITE_RANGE" if isinstance(exc, sqlite3.ProgrammingError) else "SQLITE_ERROR"
            raise D1SqlError(f"{exc}: {code}") from exc
        duration = round((time.perf_counter() - started) * 1000, 4)
        changes = self._conn.total_changes - before
        meta = {
            "served_by": "d1-emulator",
            "served_by_region": "WEUR",
            "served_by_primary": True,
            "timings": {"sql_duration_ms": duration},
            "duration": duration,
            "changes": changes,
            "last_row_id": ran.last_row_id or 0,
            "changed_db": changes > 0 or ran.changed_schema,
            "size_after": 0 if self._import else self._size(),
            # D1 counts scanned rows including index rows; this is an approximation.
            "rows_read": len(ran.rows) + changes,
            "rows_written": changes,
            "total_attempts": 1,
        }
        json_rows = tuple(tuple(to_json(v) for v in row) for row in ran.rows)
        return StatementResult(ran.columns, json_rows, meta)

    def _sql(self, sql: str) -> None:
        """The emulator's own transaction control; a failing COMMIT is the batch's error."""
        try:
            self._conn.execute(sql)
        except sqlite3.Error as exc:
            raise D1SqlError(d1sqlite.error_text(exc, self._conn)[0]) from exc

    def _internal(self, sql: str) -> list[Any]:
        return self._conn.execute(sql).fetchall()

    def _size(self) -> int:
        return int(self._internal("PRAGMA page_count")[0][0] * self._page_size())

    def _page_size(self) -> int:
        return int(self._internal("PRAGMA page_size")[0][0])

    def connection(self) -> sqlite3.Connection:
        """The live connection, for the dump writer; hold `lock` while using it."""
        return self._conn

    def info(self) -> dict[str, Any]:
        with self.lock:
            tables = self._internal(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
                "AND substr(name, 1, 7) != 'sqlite_' AND substr(name, 1, 4) != '_cf_'"
            )[0][0]
            return {"num_tables": tables, "file_size": self._size()}

    # -- Time Travel ---------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty = True
        if self._eager:
            self._snapshot()

    def _snapshot(self) -> Bookmark:
        seq = len(self._bookmarks) + 1
        target = self._snapshot_dir / f"{seq:08d}.sqlite"
        self._snapshot_dir.mkdir(parents=True, exist_ok=True)
        copy = sqlite3.connect(target)
        try:
            self._conn.backup(copy)
        finally:
            copy.close()
        pages = int(self._internal("PRAGMA page_count")[0][0])
        digest = hashlib.md5(f"{self.uuid}:{seq}".encode()).hexdigest()
        name = f"{seq:08x}-{pages:08x}-{self._conn.total_changes % 2**32:08x}-{digest}"
        bookmark = Bookmark(name, self._clock(), target)
        self._bookmarks.append(bookmark)
        self._dirty = False
        self._snap_version = self._data_version()
        return bookmark

    def _data_version(self) -> int:
        # Changes when another connection (a test poking db_path) commits to the file.
        return int(self._internal("PRAGMA data_version")[0][0])

    def current_bookmark(self) -> str:
        """The bookmark of the current state, snapshotting first if it changed."""
        with self.lock:
            if self._dirty or self._data_version() != self._snap_version:
                return self._snapshot().name
            return self._bookmarks[-1].name

    def bookmark_at(self, at: float) -> str | None:
        """The newest bookmark taken at or before `at`, or None before the first one."""
        with self.lock:
            if at >= self._clock():
                return self.current_bookmark()
            found = [b for b in self._bookmarks if b.at <= at]
            return found[-1].name if found else None

    def restore(self, name: str) -> tuple[str, str] | None:
        """Copy the snapshot of `name` back in place: (new bookmark, previous bookmark)."""
        with self.lock:
            target = next((b for b in self._bookmarks if b.name == name), None)
            if target is None:
                return None
            previous = self.current_bookmark()
            source = sqlite3.connect(target.snapshot)
            try:
                source.backup(self._conn)
            finally:
                source.close()
            return self._snapshot().name, previous

    def close(self) -> None:
        with self.lock:
            self._conn.close()
