"""`LocalBackend`: the Backend protocol over a stdlib-sqlite3 file that behaves like D1.

`--local` exists to rehearse a real deploy, so this module copies D1's behaviour rather
than SQLite's defaults: foreign keys always on (a `PRAGMA foreign_keys=OFF` inside a batch
is a no-op, as on D1), each `run()` batch and each import is one transaction, SQL
transaction control and statements over 100,000 bytes are refused with D1's messages,
D1's documented limits are set on the connection, dumps follow D1's exporter line for
line, and Time Travel bookmarks are snapshot files kept beside the database
(`<path>.bookmarks/<bookmark>.sqlite`).

It is the only core module that sees `sqlite3` errors: they leave it as `errors.SqlError`
with D1's `"<message>: SQLITE_<CLASS>"` text, the batch index and the statement's file:line.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from d1deploy import sqlsplit
from d1deploy.backend import (
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
from d1deploy.errors import DownloadError, InputError, NotFound, SqlError

MAX_STATEMENT_BYTES = 100_000
"""D1's limit on one SQL statement (per statement, also inside a batch or an import)."""

TRANSACTION_REFUSED = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because its interactions with output gates are less confusing."
)
"""The Durable Objects SQLite engine's refusal of SQL transaction control (D1 adds SQLITE_AUTH)."""

VIRTUAL_TABLE_REFUSED = "D1 Export error: cannot export databases with Virtual Tables (fts5)"

# D1's documented limits (reference §5) map one to one onto sqlite3_limit() categories;
# setting them makes local runs fail where D1 would. SQL length is checked by hand, because
# Python's sqlite3 reports it as its own DataError instead of SQLite's SQLITE_TOOBIG.
_D1_LIMITS = {
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_LENGTH: 2_000_000,
    sqlite3.SQLITE_LIMIT_COLUMN: 100,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 50,
}

_ERROR_CLASS = re.compile(r"SQLITE_[A-Z]+")
_BOOKMARK = re.compile(r"([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{32})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PROGRESS_EVERY = 1000
_CHUNK_BYTES = 64 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LocalBackend:
    """A SQLite file made to behave like a D1 database."""

    def __init__(
        self,
        path: Path,
        *,
        name: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """Open (creating with mode 0600 if missing) the database file at `path`.

        `clock` dates bookmarks; tests inject one instead of waiting for real time.

        :raises InputError: the file exists but is not a SQLite database.
        """
        self._path = Path(path)
        self._name = name or self._path.stem
        self._clock = clock
        self._snapshots_dir = self._path.with_name(self._path.name + ".bookmarks")
        self.created = not self._path.exists()
        """Whether opening created the file (so a failed command can take it back)."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            _create_private_file(self._path)
        except OSError as exc:
            raise InputError(
                f"cannot create the local database {self._path}: {exc.strerror or exc}",
                hint="Point --local at a writable path.",
                file=str(self._path),
            ) from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
            for category, limit in _D1_LIMITS.items():
                conn.setlimit(category, limit)
            # Set outside any transaction: inside one SQLite ignores it, which is also why
            # user SQL (always run inside our transactions) cannot switch it off.
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise InputError(
                f"{self._path} is not a usable SQLite database ({exc})",
                hint="Point --local at a SQLite file, or at a path that does not exist yet.",
                file=str(self._path),
            ) from exc
        self._conn = conn

    # -- identity -------------------------------------------------------------------

    @property
    def info(self) -> DatabaseInfo:
        (num_tables,) = self._conn.execute(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
            " AND name NOT GLOB 'sqlite_*' AND name NOT GLOB '_cf_*'"
        ).fetchone()
        return DatabaseInfo(
            uuid=f"local:{self._path}",
            name=self._name,
            num_tables=int(num_tables),
            file_size=self._path.stat().st_size,
        )

    @property
    def is_remote(self) -> bool:
        return False

    # -- statements -----------------------------------------------------------------

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        """Run the statements as ONE transaction: all of them, or none on any failure.

        `read_only` only picks a deferred BEGIN; locally nothing is ever re-sent.

        :raises SqlError: a statement failed or was refused (`index` says which).
        :raises InputError: a statement holds more than one SQL statement.
        """
        if not statements:
            return []
        with self._transaction(write=not read_only):
            return [self._execute(stmt, index) for index, stmt in enumerate(statements)]

    def import_file(self, path: Path, on_message: MessageCallback | None = None) -> ImportResult:
        """Execute a SQL file as one transaction (D1 promises imports are all-or-nothing).

        The file is split by `sqlsplit` (so it is held in memory while it runs).

        :raises InputError: the file is a SQLite binary, not UTF-8, or holds an unusable statement.
        :raises SqlError: a statement failed or was refused; nothing of the file remains.
        """
        path = Path(path)
        started = time.perf_counter()
        statements = sqlsplit.split(sqlsplit.read_sql_file(path), file=str(path))
        rows_written = 0
        with self._transaction(write=True):
            for index, stmt in enumerate(statements):
                rows_written += self._execute(stmt, index).rows_written
                if on_message is not None and (index + 1) % _PROGRESS_EVERY == 0:
                    on_message(f"Executed {index + 1} queries")
        if on_message is not None:
            on_message(f"Imported {len(statements)} queries from {path.name}")
        return ImportResult(
            num_queries=len(statements),
            rows_written=rows_written,
            final_bookmark=self.bookmark(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        self._internal("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
            # Deferred foreign-key violations surface at COMMIT, with no statement to blame.
            self._internal("COMMIT")
        except BaseException:
            # Some errors (RAISE(ROLLBACK), ON CONFLICT ROLLBACK) already ended the transaction.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _internal(self, sql: str) -> None:
        try:
            self._conn.execute(sql)
        except sqlite3.Error as exc:
            raise _translate(exc, None, None) from exc

    def _execute(self, stmt: Statement, index: int) -> QueryResult:
        if sqlsplit.is_transaction_control(stmt.sql):
            raise SqlError(
                f"{TRANSACTION_REFUSED}: SQLITE_AUTH",
                sqlite_code="SQLITE_AUTH",
                index=index,
                hint="Remove BEGIN/COMMIT/SAVEPOINT lines: each migration already runs as "
                "one atomic batch, and D1 refuses SQL transaction control.",
                file=stmt.file,
                line=stmt.line,
            )
        if len(stmt.sql.encode()) > MAX_STATEMENT_BYTES:
            raise SqlError(
                "statement too long: SQLITE_TOOBIG",
                sqlite_code="SQLITE_TOOBIG",
                index=index,
                hint=f"Split it into smaller statements: D1 limits each statement to "
                f"{MAX_STATEMENT_BYTES:,} bytes.",
                file=stmt.file,
                line=stmt.line,
            )
        before = self._conn.total_changes
        started = time.perf_counter()
        try:
            cursor = self._conn.execute(stmt.sql, stmt.params)
            rows = tuple(cursor.fetchall())
        except sqlite3.Error as exc:
            raise _translate(exc, index, stmt) from exc
        written = self._conn.total_changes - before
        return QueryResult(
            columns=tuple(col[0] for col in cursor.description or ()),
            rows=rows,
            changes=max(cursor.rowcount, 0),
            rows_written=written,
            duration_ms=(time.perf_counter() - started) * 1000,
            last_row_id=cursor.lastrowid,
        )

    # -- Time Travel ----------------------------------------------------------------

    def bookmark(self, at: datetime | None = None) -> str:
        """A bookmark for the current state (a snapshot file), or the newest one taken at or
        before `at` (naive datetimes are UTC).

        When nothing changed since the newest snapshot, that snapshot's bookmark is returned.

        :raises NotFound: no snapshot is as old as `at`.
        """
        if at is not None:
            return self._bookmark_at(_as_utc(at))
        self._snapshots_dir.mkdir(mode=0o700, exist_ok=True)
        tmp = self._snapshots_dir / f".tmp-{os.getpid()}-{os.urandom(8).hex()}.sqlite"
        _create_private_file(tmp)
        try:
            target = sqlite3.connect(tmp)
            try:
                self._conn.backup(target)
            finally:
                target.close()
            with tmp.open("rb") as fh:
                digest = hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16))
            existing = self._bookmarks()
            # A backup of unchanged content is byte-identical, so the digest tells.
            if existing and existing[-1].endswith(digest.hexdigest()):
                return existing[-1]
            seq = int(existing[-1][:8], 16) + 1 if existing else 1
            now = _as_utc(self._clock())
            secs = (now - _EPOCH) // timedelta(seconds=1)
            bookmark = f"{seq:08x}-{secs:08x}-{now.microsecond:08x}-{digest.hexdigest()}"
            os.replace(tmp, self._snapshot_path(bookmark))
            return bookmark
        finally:
            tmp.unlink(missing_ok=True)

    def restore(self, bookmark: str) -> RestoreResult:
        """Put the database back to `bookmark` in place; `previous_bookmark` undoes it.

        :raises NotFound: no snapshot has this bookmark.
        """
        snapshot = self._snapshot_path(bookmark)
        if not _BOOKMARK.fullmatch(bookmark) or not snapshot.is_file():
            raise NotFound(
                f"local bookmark {bookmark!r} does not exist for {self._path}",
                hint="Get one with `d1deploy bookmark --local` (current state) or "
                "`d1deploy bookmark --local --timestamp T`; snapshots live in "
                f"{self._snapshots_dir}.",
            )
        previous = self.bookmark()
        source = sqlite3.connect(f"{snapshot.resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.backup(self._conn)
        except sqlite3.Error as exc:
            raise _translate(exc, None, None) from exc
        finally:
            source.close()
        return RestoreResult(
            bookmark=self.bookmark(),
            previous_bookmark=previous,
            message="Database restored successfully",
        )

    def _bookmarks(self) -> list[str]:
        """Every snapshot's bookmark, oldest first (they sort lexicographically)."""
        if not self._snapshots_dir.is_dir():
            return []
        return sorted(
            p.stem for p in self._snapshots_dir.glob("*.sqlite") if _BOOKMARK.fullmatch(p.stem)
        )

    def _bookmark_at(self, at: datetime) -> str:
        taken = [b for b in self._bookmarks() if _bookmark_time(b) <= at]
        if not taken:
            raise NotFound(
                f"no local bookmark at or before {at.isoformat()} for {self._path}",
                hint="Local bookmarks exist only from the first snapshot on; use a later "
                "timestamp, or `d1deploy bookmark --local` for the current state.",
            )
        return taken[-1]

    def _snapshot_path(self, bookmark: str) -> Path:
        return self._snapshots_dir / f"{bookmark}.sqlite"

    # -- export ---------------------------------------------------------------------

    def export(
        self, options: ExportOptions, on_message: MessageCallback | None = None
    ) -> ExportHandle:
        """Dump the database in D1's export format, from a snapshot taken for the dump.

        :raises NotFound: `options.tables` names something the database does not have.
        :raises SqlError: the dump would include a virtual table (D1 cannot export those).
        """
        _exported_tables(self._conn, options)
        bookmark = self.bookmark()
        filename = f"{self._name}-{bookmark}.sql"
        if on_message is not None:
            on_message(f"Generating {filename}")
        snapshot_uri = f"{self._snapshot_path(bookmark).resolve().as_uri()}?mode=ro"

        def download() -> Iterator[bytes]:
            try:
                conn = sqlite3.connect(snapshot_uri, uri=True)
                try:
                    yield from _chunked(_dump(conn, options))
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise DownloadError(
                    f"reading the local snapshot {bookmark} failed: {exc}",
                    hint="Run the export again; it takes a fresh snapshot.",
                ) from exc

        return ExportHandle(bookmark=bookmark, filename=filename, size=None, download=download)

    def close(self) -> None:
        self._conn.close()

    def discard_if_created_empty(self) -> bool:
        """After a failure: close, and delete the file when this backend created it and
        it still holds no schema (no command leaves an empty database behind)."""
        empty = self.created and not self._conn.execute("SELECT 1 FROM sqlite_schema").fetchone()
        self.close()
        if empty:
            for leftover in ("", "-journal", "-wal", "-shm"):
                self._path.with_name(self._path.name + leftover).unlink(missing_ok=True)
        return empty


def _translate(
    exc: sqlite3.Error, index: int | None, stmt: Statement | None
) -> InputError | SqlError:
    """A sqlite3 error as D1 would report it: `<message>: SQLITE_<CLASS>`."""
    file = stmt.file if stmt else None
    line = stmt.line if stmt else None
    name: str | None = getattr(exc, "sqlite_errorname", None)
    if name is None:
        # Raised by Python's sqlite3 module before SQLite ran anything: bad input.
        text = str(exc)
        if "one statement at a time" in text:
            text = "the statement holds more than one SQL statement (one per batch item)"
        return InputError(
            text,
            hint="Give each batch item exactly one statement with matching parameters.",
            file=file,
            line=line,
        )
    match = _ERROR_CLASS.match(name)
    code = match.group(0) if match else name
    extended = f" (extended: {name})" if name != code else ""
    return SqlError(f"{exc}: {code}{extended}", sqlite_code=code, index=index, file=file, line=line)


def _create_private_file(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _bookmark_time(bookmark: str) -> datetime:
    _, secs, micros = (int(part, 16) for part in bookmark.split("-")[:3])
    return _EPOCH + timedelta(seconds=secs, microseconds=micros)


# -- dump (D1's exporter: workers-sdk miniflare/src/workers/d1/dumpSql.ts) -----------

_TABLES_SQL = (
    "SELECT name, sql FROM sqlite_schema WHERE type == 'table' AND sql NOT NULL "
    "ORDER BY tbl_name = 'sqlite_sequence', rowid"
)
_REST_OF_SCHEMA_SQL = (
    "SELECT name, sql FROM sqlite_schema WHERE sql NOT NULL "
    "AND type IN ('index', 'trigger', 'view') ORDER BY type COLLATE NOCASE, rowid"
)


def _exported_tables(conn: sqlite3.Connection, options: ExportOptions) -> list[tuple[str, str]]:
    """The (name, sql) of the tables the dump walks, in D1's order, after D1's refusals."""
    wanted = set(options.tables)
    if wanted:
        known = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
        missing = sorted(wanted - known)
        if missing:
            raise NotFound(
                f"table(s) not found in the local database: {', '.join(missing)}",
                hint="List the tables with `d1deploy exec --local --command "
                "\"SELECT name FROM sqlite_schema WHERE type = 'table'\"`.",
            )
    tables = [
        (str(name), str(sql))
        for name, sql in conn.execute(_TABLES_SQL)
        if not wanted or name in wanted
    ]
    virtual = [name for name, sql in tables if sql.startswith("CREATE VIRTUAL TABLE")]
    if virtual:
        raise SqlError(
            VIRTUAL_TABLE_REFUSED,
            hint=f"Virtual table(s) {', '.join(virtual)} cannot be exported, as on D1: export "
            "the other tables with --table, or drop the virtual table and recreate it "
            "after restoring.",
        )
    return tables


def _dump(conn: sqlite3.Connection, options: ExportOptions) -> Iterator[str]:
    """The dump's statements, one per line, streamed row by row."""
    yield "PRAGMA defer_foreign_keys=TRUE;"
    wanted = set(options.tables)
    for name, sql in _exported_tables(conn, options):
        if name == "sqlite_sequence":
            if not options.no_schema:
                yield "DELETE FROM sqlite_sequence;"
        elif re.match(r"sqlite_stat.", name):
            if not options.no_schema:
                yield "ANALYZE sqlite_schema;"
        elif name.startswith(("_cf_", "sqlite_")):
            continue
        elif not options.no_schema:
            # SQLite's shell (and so D1) injects IF NOT EXISTS when the name was quoted.
            if re.search("CREATE TABLE ['\"]", sql):
                yield f"CREATE TABLE IF NOT EXISTS {sql[13:]};"
            else:
                yield f"{sql};"
        if options.no_data:
            continue
        columns = [str(row[1]) for row in conn.execute(f"PRAGMA table_info={_quote_id(name)}")]
        column_list = ",".join(map(_quote_id, columns))
        select = f"SELECT {', '.join(map(_quote_id, columns))} FROM {_quote_id(name)}"
        for row in conn.execute(select):
            values = ",".join(_literal(conn, value) for value in row)
            yield f"INSERT INTO {_quote_id(name)} ({column_list}) VALUES({values});"
    if not options.no_schema:
        for name, sql in conn.execute(_REST_OF_SCHEMA_SQL):
            if not wanted or name in wanted:
                yield f"{sql};"


def _chunked(lines: Iterable[str]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for line in lines:
        data = f"{line}\n".encode()
        buffer.append(data)
        size += len(data)
        if size >= _CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def _quote_id(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(conn: sqlite3.Connection, value: SqlValue) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return _quote_text(value)
    if isinstance(value, float):
        return _real(conn, value)
    return str(value)


def _quote_text(value: str) -> str:
    """SQLite shell's `output_quoted_escaped_string`, as D1 ports it."""
    if "\n" not in value and "\r" not in value:
        return "'" + value.replace("'", "''") + "'"
    newline = _unused(value, "\\n", "\\012")
    carriage = _unused(value, "\\r", "\\015")
    escaped = value.replace("'", "''").replace("\n", newline).replace("\r", carriage)
    text = f"'{escaped}'"
    if "\r" in value:
        text = f"replace({text},'{carriage}',char(13))"
    if "\n" in value:
        text = f"replace({text},'{newline}',char(10))"
    return text


def _unused(value: str, primary: str, secondary: str) -> str:
    if primary not in value:
        return primary
    if secondary not in value:
        return secondary
    suffix = 0
    while (candidate := f"({primary}{suffix})") in value:
        suffix += 1
    return candidate


def _real(conn: sqlite3.Connection, value: float) -> str:
    """A literal SQLite reads back as exactly `value`.

    D1 writes the shortest decimal (JavaScript's, the same as `repr`). Older SQLite
    libraries misround a few of those on reading, so each one is checked with this
    library's own parser and replaced by an exact power-of-two product when it fails.
    """
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    text = repr(value)
    (parsed,) = conn.execute("SELECT CAST(? AS REAL)", (text,)).fetchone()
    if parsed == value:
        return text
    mantissa, exponent = math.frexp(value)
    factors = [f"CAST({int(mantissa * 2**53)} AS REAL)"]
    power = exponent - 53
    while abs(power) >= 62:
        factors.append(str(2**62))
        power -= 62 if power > 0 else -62
    if power:
        factors.append(str(2 ** abs(power)))
    return "(" + ("*" if exponent > 53 else "/").join(factors) + ")"
