"""Restoring: a dump re-imported into a database, and Time Travel restores.

Owns restoring a dump (a d1deploy backup, or a dump without a sidecar such as
`wrangler d1 export` writes) through the import flow, counting each table it fills
afterwards against the dump, and describing and performing Time Travel restores. The
dump is read and checked by `backups.inspect_dump` first; the backup file format and
taking a backup are `backups`'.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from d1deploy import backups, defaults, dumps, errors, suggest
from d1deploy.backend import Backend, RestoreResult, Statement
from d1deploy.ledger import HISTORY_TABLE


@dataclass(frozen=True)
class TableRows:
    """One table of a restore: rows in the backup, in the target before and after."""

    table: str
    in_backup: int
    before: int
    after: int

    @property
    def proved(self) -> bool:
        return self.after == self.before + self.in_backup


@dataclass(frozen=True)
class RestoreFromBackupResult:
    """A backup re-imported into a database, and the rows counted after the import."""

    path: Path
    source: backups.Sidecar | None
    """The backup's sidecar; None for a dump without one (unverified)."""
    verified: bool
    database_name: str
    database_uuid: str
    tables_before: tuple[str, ...]
    """Tables the target held before the import (d1deploy's own working tables aside)."""
    bookmark_before: str | None
    """The target's bookmark before a forced import over existing tables: the undo."""
    num_queries: int
    rows_read: int
    rows_written: int
    final_bookmark: str | None
    duration_ms: float
    rows: tuple[TableRows, ...] = ()
    """Each table the backup fills, counted after the import."""
    kept: tuple[str, ...] = ()
    """The target's own ledger/history tables kept instead of the backup's."""


@dataclass(frozen=True)
class RestorePoint:
    """What a Time Travel restore will do, for the confirmation the CLI asks."""

    database_name: str
    database_uuid: str
    bookmark: str
    """The bookmark the database will be restored to."""
    current_bookmark: str
    """The bookmark now: restoring to it undoes the restore."""
    point_in_time: datetime | None
    """When the target bookmark was current, when known (a timestamp, or the history)."""
    now: datetime
    migrations_since: tuple[str, ...]
    """Migrations the history records as applied at or after the target bookmark."""

    @property
    def span(self) -> timedelta | None:
        """How much time of changes the restore discards, when known."""
        return None if self.point_in_time is None else self.now - self.point_in_time

    @property
    def is_current(self) -> bool:
        return self.bookmark == self.current_bookmark


# -- restore --------------------------------------------------------------------------------


def _working_table(name: str) -> bool:
    """d1deploy's working tables (lock lease, guard counts, proofs): facts about the run
    or database they were written in, never restored from a dump."""
    return name.startswith("_d1deploy_") and name != HISTORY_TABLE


def user_tables(backend: Backend) -> tuple[str, ...]:
    """The database's tables other than SQLite's, D1's and d1deploy's working tables
    (ledgers count)."""
    (result,) = backend.run([Statement(backups.SCHEMA_SQL)], read_only=True)
    return tuple(
        sorted(
            str(name)
            for kind, name, _ in result.rows
            if kind == "table"
            and not backups.is_sqlite_or_d1(str(name))
            and not _working_table(str(name))
        )
    )


def _count(backend: Backend, tables: Sequence[str]) -> dict[str, int]:
    if not tables:
        return {}
    results = backend.run(
        [Statement(f"SELECT count(*) FROM {backups.quote_name(t)}") for t in tables], read_only=True
    )
    return {t: int(r.first_value() or 0) for t, r in zip(tables, results, strict=True)}


def restore_from_backup(
    backend: Backend,
    source: Path | backups.DumpFile,
    *,
    force: bool = False,
    table: str = defaults.MIGRATIONS_TABLE,
    notify: backups.Notify | None = None,
) -> RestoreFromBackupResult:
    """Re-import a dump (checked first by `backups.inspect_dump`) into `backend` through the
    import flow, then count each table it fills and compare with the dump.

    The target must hold nothing unless `force`: d1deploy's working tables never count
    and are never taken from a dump; the ledger (`table`) and history come from the
    dump unless the target's own hold rows, which are then kept. With `force`, the dump
    may not create anything the target already has (the import would fail).

    :raises Refused: the target is not empty (without `force`), or holds what the dump creates.
    :raises ChangeFailed: the import succeeded but a table does not hold the rows it should.
    """
    say = notify or (lambda _line: None)
    dump = source if isinstance(source, backups.DumpFile) else backups.inspect_dump(source)
    info = backend.info
    if not dump.verified:
        say(
            f"Warning: {dump.path} has no sidecar, so nothing vouches it is a whole database "
            f"(unverified); it is a complete D1 dump of {len(dump.contents.objects)} objects "
            f"and {sum(dump.contents.rows.values())} rows."
        )
    (listing,) = backend.run([Statement(backups.SCHEMA_SQL)], read_only=True)
    present = {
        str(name): str(kind)
        for kind, name, _ in listing.rows
        if not backups.is_sqlite_or_d1(str(name))
    }
    records = [t for t in (table, HISTORY_TABLE) if present.get(t) == "table"]
    filled = [t for t in dump.contents.rows if present.get(t) == "table" and not _working_table(t)]
    rows_before = _count(backend, list(dict.fromkeys([*records, *filled])))
    kept = tuple(
        t
        for t in records
        if rows_before[t] and (t in dump.contents.objects or t in dump.contents.rows)
    )
    tables = tuple(sorted(t for t, k in present.items() if k == "table" and not _working_table(t)))
    content = [t for t in tables if t not in records or rows_before[t]]
    clashes = [
        n
        for n in dump.contents.objects
        if n in present and not _working_table(n) and n not in records
    ]
    if content and not force:
        hint = (
            "Restore into a new database, or pass --force to import on top of these "
            "tables (conflicting statements make the import fail)."
        )
        if not dump.contents.objects:
            hint = "This backup holds data only, so it needs its tables to exist: " + (
                "pass --force to import it into them."
            )
        raise errors.Refused(
            f"{info.name} is not empty: it has {len(content)} "
            f"table{'s' if len(content) != 1 else ''} ({_shown(content)}); a backup is "
            "restored only into an empty database.",
            hint=hint,
        )
    if clashes:
        raise errors.Refused(
            f"{dump.path} creates {_shown(clashes)}, which {info.name} already has: the "
            "import would fail.",
            hint="Restore into a new database, or return this one to an earlier point "
            "with `d1deploy restore --timestamp T` (Time Travel).",
        )
    bookmark_before = None
    if content:
        bookmark_before = backend.bookmark()
        say(
            f"Warning: importing into {info.name}, which has {len(content)} tables "
            f"({_shown(content)}); to undo: {suggest.restore(bookmark_before)}"
        )
    for name in kept:
        n = rows_before[name]
        say(
            f"Keeping {info.name}'s own {name} ({n} row{'s' if n != 1 else ''}): it describes "
            "the schema there; the backup's was not imported."
        )

    def skip(kind: str, name: str | None) -> bool:
        if name is None or kind in ("index", "trigger", "view"):
            return False
        if _working_table(name) or name in kept:
            return True
        if name == "sqlite_sequence":
            # The source's AUTOINCREMENT counters would clear the target's own.
            return bool(content)
        return kind == "table" and name in records  # the target's empty table stays

    if backend.is_remote:
        say(f"Warning: D1 blocks every query to {info.name} while the import runs.")
    with tempfile.TemporaryDirectory(prefix="d1deploy-restore-") as tmp:
        # Named as the user's file: D1's import messages name the file they ran.
        copy = Path(tmp) / dump.path.name
        _check_room(copy, dump.contents.bytes)
        try:
            again = dumps.write_importable(
                dumps.chunks(dump.path, limit=dump.contents.bytes),
                copy,
                [text for kind, name, text in dump.schema if not skip(kind, name)],
                skip=skip,
            )
        except OSError as err:
            if err.errno in backups.DISK_ERRNOS:
                raise backups.disk_full(
                    err,
                    f"the import copy of {dump.path}",
                    backups.tmp_root(),
                    elsewhere=backups.ELSEWHERE_RESTORE,
                    needed=dump.contents.bytes,
                ) from None
            raise errors.InputError(
                f"Cannot read {dump.path}: {err}", file=str(dump.path)
            ) from None
        except (dumps.NotADump, dumps.TooLarge, *dumps.GZIP_ERRORS) as err:
            raise _changed(dump.path, str(err)) from None
        if again != dump.contents:
            raise _changed(dump.path, "it holds something else than when it was checked")
        try:
            imported = backend.import_file(copy, on_message=say)
        except errors.D1DeployError as err:
            raise _about(err, copy, dump.path) from None
    created = [t for t, kind in dump.contents.objects.items() if kind == "table"]
    proved = [
        t
        for t in dict.fromkeys([*created, *dump.contents.rows])
        if not backups.is_sqlite_or_d1(t) and not _working_table(t) and t not in kept
    ]
    after = _count(backend, proved)
    rows = tuple(
        TableRows(t, dump.contents.rows.get(t, 0), rows_before.get(t, 0), after[t]) for t in proved
    )
    wrong = [r for r in rows if not r.proved]
    if wrong:
        raise errors.ChangeFailed(
            f"the import into {info.name} reported success, but "
            + "; ".join(
                f"{r.table} holds {r.after} rows where {r.before + r.in_backup} were expected "
                f"({r.before} before and {r.in_backup} in the backup)"
                for r in wrong
            ),
            hint=f"Undo it with `{suggest.restore(bookmark_before)}`"
            if bookmark_before
            else "Something else wrote to those tables during the import, or triggers fired "
            "on the imported rows; check them before the database is used.",
        )
    return RestoreFromBackupResult(
        path=dump.path,
        source=dump.sidecar,
        verified=dump.verified,
        database_name=info.name,
        database_uuid=info.uuid,
        tables_before=tables,
        bookmark_before=bookmark_before,
        num_queries=imported.num_queries,
        rows_read=imported.rows_read,
        rows_written=imported.rows_written,
        final_bookmark=imported.final_bookmark,
        duration_ms=imported.duration_ms,
        rows=rows,
        kept=kept,
    )


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_room(path: Path, size: int) -> None:
    """Refuse before writing `size` bytes to `path` where they cannot fit."""
    if size <= backups.free_space(path.parent):
        return
    limit = backups.file_size_limit()
    why = (
        f"the file size limit is {backups.size_text(limit)} (`ulimit -f`)"
        if limit is not None and limit < size
        else f"{backups.tmp_root()} has "
        f"{backups.size_text(shutil.disk_usage(path.parent).free)} free, of which "
        f"{backups.size_text(backups.SPARE_BYTES)} is left for others"
    )
    raise errors.DiskFull(
        f"restoring needs {backups.size_text(size)} for the import copy of the dump, but {why}",
        hint=f"Free space there, or {backups.ELSEWHERE_RESTORE}. Nothing was changed.",
    )


def _changed(path: Path, why: str) -> errors.InputError:
    return errors.InputError(
        f"{path} changed while it was being restored: {why}",
        hint="Leave the file alone while it is restored, and run the restore again.",
        file=str(path),
    )


def _about(err: errors.D1DeployError, copy: Path, user_file: Path) -> errors.D1DeployError:
    """`err` about the user's file instead of the temporary import copy (named as the
    file, but whose lines are not the file's: its CREATE TABLEs come first)."""
    err.message = err.message.replace(str(copy), str(user_file))
    err.args = (err.message,)
    if err.file is not None and Path(err.file) == copy:
        err.file, err.line = str(user_file), None
    return err


def describe_restore_point(
    backend: Backend,
    *,
    bookmark: str | None,
    timestamp: datetime | None,
    now: Callable[[], datetime] = backups.utc_now,
) -> RestorePoint:
    """Resolve the target of a Time Travel restore and say what restoring to it loses.

    Exactly one of `bookmark` and `timestamp` (aware, or naive meaning UTC). Reads only.
    """
    if (bookmark is None) == (timestamp is None):
        raise errors.UsageError(
            "Give exactly one restore point: a bookmark or a timestamp.",
            hint="Use --bookmark B or --timestamp T (ISO 8601, for example 2024-05-01T12:00:00Z).",
        )
    moment = backups.as_utc(now())
    info = backend.info
    current = backend.bookmark()
    point_in_time: datetime | None = None
    migrations: tuple[str, ...] = ()
    if timestamp is not None:
        point_in_time = backups.as_utc(timestamp)
        if point_in_time > moment:
            raise errors.UsageError(
                f"The timestamp {point_in_time.isoformat()} is in the future.",
                hint="Give a time in the past (UTC unless the timestamp says otherwise).",
            )
        target = backend.bookmark(at=point_in_time)
    else:
        assert bookmark is not None
        target = bookmark
    recorded = _history_since(backend, target)
    if recorded is not None:
        recorded_at, migrations = recorded
        point_in_time = point_in_time or recorded_at
    return RestorePoint(
        database_name=info.name,
        database_uuid=info.uuid,
        bookmark=target,
        current_bookmark=current,
        point_in_time=point_in_time,
        now=moment,
        migrations_since=migrations,
    )


def _history_since(backend: Backend, bookmark: str) -> tuple[datetime, tuple[str, ...]] | None:
    """When d1deploy's history recorded `bookmark` as a `bookmark_before`, that row's
    time and the migrations applied since; None when the history does not know it."""
    (exists,) = backend.run(
        [
            Statement(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                (HISTORY_TABLE,),
            )
        ],
        read_only=True,
    )
    if not exists.first_value():
        return None
    first = f"SELECT min(id) FROM {HISTORY_TABLE} WHERE bookmark_before = ?"
    recorded, applied = backend.run(
        [
            Statement(f"SELECT at FROM {HISTORY_TABLE} WHERE id = ({first})", (bookmark,)),
            Statement(
                f"SELECT name FROM {HISTORY_TABLE} WHERE id >= ({first}) AND event = 'apply'"
                " AND duration_ms IS NOT NULL ORDER BY id",
                (bookmark,),
            ),
        ],
        read_only=True,
    )
    at = recorded.first_value()
    if not isinstance(at, str):
        return None
    try:
        when = backups.as_utc(datetime.fromisoformat(at))
    except ValueError:
        return None
    return when, tuple(dict.fromkeys(str(row[0]) for row in applied.rows))


def restore_point(backend: Backend, point: RestorePoint) -> RestoreResult:
    """Restore the database in place to `point` (the CLI confirms first).

    The result's `previous_bookmark` undoes the restore; when the backend does not
    report one, it is the bookmark `point` saw as current.
    """
    result = backend.restore(point.bookmark)
    if result.previous_bookmark is None:
        result = replace(result, previous_bookmark=point.current_bookmark)
    return result
