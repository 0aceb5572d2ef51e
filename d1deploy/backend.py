"""The `Backend` protocol: what the engine needs from a D1 database, remote or local.

Two implementations: `remote.RemoteBackend` (the D1 REST API through `client.D1Client`)
and `local.LocalBackend` (a SQLite file made to behave like D1). The migration engine,
checks and backups only ever see this protocol, so every feature works with `--local`
and can be tested without HTTP.

The result types here are plain frozen dataclasses shared by both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from d1deploy.errors import SqlError

SqlValue = None | int | float | str | bytes
"""A value bound to or read from SQL. BLOBs are `bytes` locally; over REST they arrive
as JSON arrays of byte values and are returned as `bytes` too."""

MessageCallback = Callable[[str], None]
"""Receives progress lines (export/import `messages`, poll status)."""


@dataclass(frozen=True)
class Statement:
    """One SQL statement, with where it came from so errors can say file:line."""

    sql: str
    params: tuple[SqlValue, ...] = ()
    file: str | None = None
    line: int | None = None


def locate(err: SqlError, statements: Sequence[Statement]) -> SqlError:
    """`err` pointed at the failing statement's file:line, when it is known which one
    failed (D1 says so per item; in a batch of one there is no doubt); `err` itself when
    it already names a place or the statement is not known."""
    index = err.index if err.index is not None else 0 if len(statements) == 1 else None
    if err.file is not None or index is None or not 0 <= index < len(statements):
        return err
    stmt = statements[index]
    return SqlError(
        err.message,
        sqlite_code=err.sqlite_code,
        index=index,
        hint=err.hint,
        file=stmt.file,
        line=stmt.line,
    )


@dataclass(frozen=True)
class QueryResult:
    """The outcome of one statement. `changes`, `rows_written` and `changed_db` are D1's
    `meta` (`changed_db` is None where the answer did not say)."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[SqlValue, ...], ...] = ()
    changes: int = 0
    rows_read: int = 0
    rows_written: int = 0
    duration_ms: float = 0.0
    last_row_id: int | None = None
    changed_db: bool | None = None
    size_after: int | None = None
    """The database's size in bytes after the statement, when the answer says."""

    @property
    def wrote(self) -> bool:
        """Whether the answer shows that the statement changed the database."""
        return self.changes > 0 or self.rows_written > 0 or self.changed_db is True

    def first_value(self) -> SqlValue:
        """The first column of the first row, or None when there are no rows."""
        return self.rows[0][0] if self.rows and self.rows[0] else None

    def as_dicts(self) -> list[dict[str, SqlValue]]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.rows]


@dataclass(frozen=True)
class DatabaseInfo:
    """Identity of a database: a D1 database, or a local file (uuid = `local:<path>`)."""

    uuid: str
    name: str
    created_at: str | None = None
    version: str | None = None
    num_tables: int | None = None
    file_size: int | None = None


@dataclass(frozen=True)
class ExportOptions:
    """D1's `dump_options`."""

    no_data: bool = False
    no_schema: bool = False
    tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportHandle:
    """A finished export, ready to download.

    `download()` starts the transfer from the beginning each time it is called (so a
    truncated download can be retried) and yields the dump's bytes in chunks. It raises
    `errors.DownloadError` when the transfer fails or ends short.
    """

    bookmark: str | None
    filename: str | None
    download: Callable[[], Iterator[bytes]] = field(repr=False)


@dataclass(frozen=True)
class ImportResult:
    num_queries: int
    rows_read: int = 0
    rows_written: int = 0
    final_bookmark: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True)
class RestoreResult:
    bookmark: str
    previous_bookmark: str | None = None
    message: str = ""


class Backend(Protocol):
    """A D1 database the engine can change."""

    @property
    def info(self) -> DatabaseInfo:
        """Who this database is (name and uuid), for reports and sidecars."""
        ...

    @property
    def is_remote(self) -> bool: ...

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        """Run the statements in order as ONE request (one `batch` item each) and return
        one result per statement.

        Locally the batch is one transaction: all or nothing. Remotely D1 does not
        document that, which is why the engine re-reads state after any failure.
        `read_only=True` promises the statements do not write, which allows retrying
        them after a 5xx or a network error; writes are never re-sent automatically.
        The promise is held: locally SQLite refuses every write of the batch; remotely
        each answer must show no change. Either way `ReadWrote` names the statement.
        Raises `SqlError` (with `index` when known) when a statement fails.
        """
        ...

    def bookmark(self, at: datetime | None = None) -> str:
        """The current Time Travel bookmark, or the one at/before `at` (UTC)."""
        ...

    def restore(self, bookmark: str) -> RestoreResult:
        """Restore the database in place to `bookmark` (destructive)."""
        ...

    def export(
        self, options: ExportOptions, on_message: MessageCallback | None = None
    ) -> ExportHandle:
        """Run the export flow (bounded polling) and return a handle to download the dump."""
        ...

    def import_file(self, path: Path, on_message: MessageCallback | None = None) -> ImportResult:
        """Execute a SQL file through the import flow (all-or-nothing per D1)."""
        ...

    def close(self) -> None: ...
