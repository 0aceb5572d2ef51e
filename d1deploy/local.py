"""`LocalBackend`: the Backend protocol over a stdlib-sqlite3 file that behaves like D1.

`--local` exists to rehearse a real deploy, so this module copies D1's behaviour rather
than SQLite's defaults: every statement runs by D1's rules (`d1sqlite.run`: what D1's
authorizer refuses, its limits, its error texts, values as D1's JSON returns them, one
value per column name), foreign keys always on (a `PRAGMA foreign_keys=OFF` inside a
batch is a no-op, as on D1), each `run()` batch and each import is one transaction,
dumps are D1's format (`dumpsql`), and Time Travel bookmarks are snapshot files kept
beside the database (`<path>.bookmarks/<bookmark>.sqlite`).

It is the only core module that sees `sqlite3` errors: they leave it as `errors.SqlError`
with D1's text, the batch index and the statement's file:line.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from d1deploy import d1sqlite, dumpsql, limits, sqlsplit, suggest
from d1deploy.backend import (
    DatabaseInfo,
    ExportHandle,
    ExportOptions,
    ImportResult,
    MessageCallback,
    QueryResult,
    RestoreResult,
    Statement,
)
from d1deploy.errors import DownloadError, InputError, NotFound, ReadWrote, SqlError

_TRANSACTION_HINT = (
    "Remove BEGIN/COMMIT/SAVEPOINT lines: each migration already runs as one atomic batch, "
    "and D1 refuses SQL transaction control."
)
_HINTS = {
    d1sqlite.TRANSACTION_REFUSED: _TRANSACTION_HINT,
    d1sqlite.IMPORT_BEGIN_REFUSED: _TRANSACTION_HINT,
    d1sqlite.STATEMENT_TOO_LONG: "Split it into smaller statements: D1 limits each statement "
    f"to {limits.MAX_STATEMENT_BYTES:,} bytes.",
}
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
        durable: bool = True,
        create: bool = True,
    ) -> None:
        """Open the database file at `path`, creating it (mode 0600) if it is missing and
        `create` says so: commands that only read never leave a file behind.

        `clock` dates bookmarks; tests inject one instead of waiting for real time.
        `durable=False` is for a scratch database whose loss in a crash costs nothing
        (the schema replay): its commits skip fsync (tens of milliseconds each on disk)
        and keep the rollback journal in memory.

        :raises NotFound: the file is missing and `create` is false.
        :raises InputError: the path is a directory, or a file that is not a SQLite
            database, or it cannot be created.
        """
        self._path = Path(path)
        if self._path.is_dir():
            raise InputError(
                f"the local database {self._path} is a directory, not a SQLite file",
                hint="Point --local at a file, e.g. --local=.d1deploy/local.sqlite.",
            )
        if not create and not self._path.exists():
            raise NotFound(
                f"the local database {self._path} does not exist (nothing was created)",
                hint=f"Check the path; a deploy creates the file: `{suggest.command('migrate')}`.",
            )
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
            # No statement cache: a statement SQLite compiles anew says where its error is.
            conn = sqlite3.connect(self._path, isolation_level=None, cached_statements=0)
            d1sqlite.prepare(conn)
            if not durable:
                conn.execute("PRAGMA synchronous = OFF")
                conn.execute("PRAGMA journal_mode = MEMORY")
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

        `read_only` runs them where SQLite refuses to write (see `_reads`).

        :raises SqlError: a statement failed or was refused (`index` says which).
        :raises ReadWrote: a `read_only` statement tried to write; nothing changed.
        :raises InputError: a statement holds more than one SQL statement.
        """
        if not statements:
            return []
        with self._transaction(write=not read_only):
            if read_only:
                return self._reads(statements)
            return [self._execute(stmt, index) for index, stmt in enumerate(statements)]

    def _reads(self, statements: Sequence[Statement]) -> list[QueryResult]:
        """Run statements promised to only read, with SQLite refusing every write: an
        authorizer denies each action that writes (`d1sqlite.deny_writes`, which also
        refuses `PRAGMA query_only = OFF`), and `query_only` refuses whatever changes the
        file without asking permission (VACUUM)."""
        denied: list[d1sqlite.Action] = []

        def policy(action: d1sqlite.Action) -> int:
            answer = d1sqlite.deny_writes(action)
            if answer == sqlite3.SQLITE_DENY:
                denied.append(action)
            return answer

        results: list[QueryResult] = []
        self._internal("PRAGMA query_only = ON")
        try:
            for index, stmt in enumerate(statements):
                try:
                    results.append(self._execute(stmt, index, also=policy))
                except SqlError as exc:
                    if not denied and exc.sqlite_code != "SQLITE_READONLY":
                        raise
                    what = denied[0].describe() if denied else exc.message
                    sql = " ".join(stmt.sql.split()).rstrip(";")
                    raise ReadWrote(
                        f"`{sql[:200]}` was sent as a read but writes ({what}): SQLite"
                        " refused it and nothing changed",
                        changed=False,
                        index=index,
                        hint="a read must not write: run it as a change, or as a check"
                        " probe (a statement that writes in a check file)",
                        file=stmt.file,
                        line=stmt.line,
                    ) from exc
        finally:
            self._internal("PRAGMA query_only = OFF")
        return results

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
                rows_written += self._execute(stmt, index, importing=True).rows_written
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
            raise _translate(exc, self._conn, None, None) from exc

    def _execute(
        self,
        stmt: Statement,
        index: int,
        *,
        also: d1sqlite.Policy | None = None,
        importing: bool = False,
    ) -> QueryResult:
        before = self._conn.total_changes
        started = time.perf_counter()
        try:
            ran = d1sqlite.run(self._conn, stmt.sql, stmt.params, also=also, importing=importing)
        except d1sqlite.D1Error as exc:
            raise SqlError(
                exc.message,
                sqlite_code=exc.code,
                index=index,
                hint=_HINTS.get(exc.message),
                file=stmt.file,
                line=stmt.line,
            ) from exc
        except sqlite3.Error as exc:
            raise _translate(exc, self._conn, index, stmt) from exc
        # D1 answers JSON objects: its numbers, one value per column name.
        columns, rows = d1sqlite.json_objects(ran.columns, ran.rows)
        return QueryResult(
            columns=columns,
            rows=rows,
            changes=ran.rowcount,
            rows_written=self._conn.total_changes - before,
            duration_ms=(time.perf_counter() - started) * 1000,
            last_row_id=ran.last_row_id,
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
                hint=f"Get one with `{suggest.command('bookmark')}` (current state) or with"
                f" --timestamp T added; snapshots live in {self._snapshots_dir}.",
            )
        previous = self.bookmark()
        source = sqlite3.connect(f"{snapshot.resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.backup(self._conn)
        except sqlite3.Error as exc:
            raise _translate(exc, self._conn, None, None) from exc
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
                f"timestamp, or `{suggest.command('bookmark')}` for the current state.",
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
        _dump(self._conn, options)  # D1's refusals, before a snapshot is taken
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

        return ExportHandle(bookmark=bookmark, filename=filename, download=download)

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
    exc: sqlite3.Error, conn: sqlite3.Connection, index: int | None, stmt: Statement | None
) -> InputError | SqlError:
    """A sqlite3 error as D1 would report it (`d1sqlite.error_text`)."""
    file = stmt.file if stmt else None
    line = stmt.line if stmt else None
    if getattr(exc, "sqlite_errorname", None) is None:
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
    message, code = d1sqlite.error_text(exc, conn)
    return SqlError(message, sqlite_code=code, index=index, file=file, line=line)


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


# -- dump -----------------------------------------------------------------------------


def _dump(conn: sqlite3.Connection, options: ExportOptions) -> Iterator[str]:
    """D1's dump of `conn` (`dumpsql`, every value exact), after D1's refusals.

    :raises NotFound: `options.tables` names something the database does not have.
    :raises SqlError: the dump would include a virtual table (D1 cannot export those).
    """
    wanted = set(options.tables)
    if wanted:
        known = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
        missing = sorted(wanted - known)
        if missing:
            raise NotFound(
                f"table(s) not found in the local database: {', '.join(missing)}",
                hint="List the tables with `"
                + suggest.command(
                    "exec", "--command", "SELECT name FROM sqlite_schema WHERE type = 'table'"
                )
                + "`.",
            )
    try:
        return dumpsql.dump(
            conn, no_data=options.no_data, no_schema=options.no_schema, tables=options.tables
        )
    except dumpsql.DumpRefused as exc:
        raise SqlError(
            str(exc),
            hint=f"Virtual table(s) {', '.join(exc.tables)} cannot be exported, as on D1: "
            "export the other tables with --table, or drop the virtual table and recreate "
            "it after restoring.",
        ) from None


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
