"""`RemoteBackend`: the `Backend` protocol over the D1 REST API.

A thin adapter: every method delegates to `client.D1Client` for the one database it was
opened on. Its only logic is pointing a failed statement's `SqlError` at its file and
line when the failing statement is known, and holding reads to their promise: a
`read_only` request whose answer shows a change raises `ReadWrote` (nothing re-sends it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from d1deploy import errors
from d1deploy.backend import (
    DatabaseInfo,
    ExportHandle,
    ExportOptions,
    ImportResult,
    MessageCallback,
    QueryResult,
    RestoreResult,
    Statement,
    locate,
)
from d1deploy.client import D1Client


class RemoteBackend:
    """A D1 database reached through `client`; `info` says which one."""

    def __init__(self, client: D1Client, info: DatabaseInfo) -> None:
        self._client = client
        self._info = info

    @property
    def info(self) -> DatabaseInfo:
        return self._info

    @property
    def is_remote(self) -> bool:
        return True

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        try:
            results = self._client.query(self._info.uuid, statements, read_only=read_only)
        except errors.SqlError as err:
            # A REST batch failure does not say which item failed; the client sets
            # `index` when D1 does say (per item).
            located = locate(err, statements)
            if located is err:
                raise
            raise located from err
        if read_only:
            for index, (stmt, result) in enumerate(zip(statements, results, strict=True)):
                if result.wrote:
                    raise _wrote_error(stmt, result, index)
        return results

    def bookmark(self, at: datetime | None = None) -> str:
        return self._client.bookmark(self._info.uuid, at)

    def restore(self, bookmark: str) -> RestoreResult:
        return self._client.restore(self._info.uuid, bookmark=bookmark)

    def export(
        self, options: ExportOptions, on_message: MessageCallback | None = None
    ) -> ExportHandle:
        return self._client.export(self._info.uuid, options, on_message)

    def import_file(self, path: Path, on_message: MessageCallback | None = None) -> ImportResult:
        return self._client.import_file(self._info.uuid, path, on_message)

    def close(self) -> None:
        self._client.close()


def _wrote_error(stmt: Statement, result: QueryResult, index: int) -> errors.ReadWrote:
    """The error for a statement sent as a read whose answer shows a change."""
    shown = f"changes {result.changes}, rows_written {result.rows_written}"
    if result.changed_db is not None:
        shown += f", changed_db {str(result.changed_db).lower()}"
    sql = " ".join(stmt.sql.split()).rstrip(";")
    return errors.ReadWrote(
        f"`{sql[:200]}` was sent as a read but changed the database (D1 answered {shown});"
        " the run stops here and nothing sends it again",
        changed=True,
        index=index,
        hint="find out what it changed; to undo it, restore the database to a Time Travel"
        " bookmark from before it was sent (see d1deploy bookmark --help)",
        file=stmt.file,
        line=stmt.line,
    )
