"""Backups: export to a proven file, and read one back (its sidecar, its dump).

This module owns the backup file format: a D1 SQL dump (optionally gzipped) written
through `<dest>.part` (mode 0600, sha256 computed and the dump checked while streaming,
fsync, rename), and the JSON sidecar `<dest>.json` that describes it. A backup is proven
against the database itself: its schema objects and each table's rows are read right
before the export and right after it, and the dump must create every object and hold,
per table, a row count within those two. A backup either exists complete with its
sidecar or not at all.

Restoring (a dump re-imported, Time Travel) is `restoring`; it reads a dump with
`inspect_dump` here first.

Why one module over 500 lines: taking a backup and the file it leaves are one format
(the dump, its streaming checks, the sidecar written and read, the size and disk-space
arithmetic); split, each half would import the other's private details.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from d1deploy import __version__, dumps, errors, suggest
from d1deploy.backend import (
    Backend,
    ExportHandle,
    ExportOptions,
    Statement,
)

FORMAT = "d1-sql-dump"
"""The sidecar's `format` value: a D1-format SQL dump (as D1's export produces)."""

_FILE_MODE = 0o600
_HASH_BATCH = 1 << 20  # bytes handed to the hashing thread at once: fewer hand-offs
_HASH_QUEUE = 4  # batches waiting at most, so memory stays flat when hashing lags
_GZIP_LEVEL = 6  # level 9 costs several times the CPU for a few percent on SQL text
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_CENSUS_ROUNDS = 3  # schema reads before giving up on a schema that keeps changing
SPARE_BYTES = 16 << 20  # left free on a disk the import copy is written to
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _fts5_hint() -> str:
    return (
        "D1 cannot export a database that contains virtual tables (FTS5). Use Time Travel "
        f"instead: `{suggest.command('bookmark')}` records a restore point that "
        "`d1deploy restore --bookmark` returns to."
    )


def _not_a_backup_hint() -> str:
    return (
        f"Pass a dump written by `d1deploy backup` (with its `.json` sidecar beside it) or "
        f"by `wrangler d1 export`, or take a new backup with `{suggest.command('backup')}`."
    )


def _damaged_hint() -> str:
    return f"Use another backup, or take a new one with `{suggest.command('backup')}`."


_CONNECTION_HINT = "Check the connection and run the backup again."

# Every schema object with SQL of its own (automatic indexes have none, and D1's
# exporter writes only objects that have SQL).
SCHEMA_SQL = (
    "SELECT type, name, tbl_name FROM sqlite_master WHERE sql IS NOT NULL"
    " AND type IN ('table', 'index', 'trigger', 'view') ORDER BY rowid"
)

_EVERYTHING = ExportOptions()

Notify = Callable[[str], None]
OnBytes = Callable[[int, int | None], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_sqlite_or_d1(name: str) -> bool:
    """Objects SQLite and D1 keep for themselves: never exported, never user content."""
    return name.startswith(("sqlite_", "_cf_"))


@dataclass(frozen=True)
class Census:
    """What an export must hold, read from the database: every object it covers (name
    -> type) and the rows of each covered table (none counted for a schema-only export)."""

    objects: dict[str, str]
    rows: dict[str, int]

    @property
    def tables(self) -> list[str]:
        return [name for name, kind in self.objects.items() if kind == "table"]


@dataclass(frozen=True)
class Sidecar:
    """What a backup's `.json` sidecar records about its dump."""

    path: Path
    sidecar: Path
    database_name: str
    database_uuid: str
    bookmark: str | None
    created_at: datetime
    bytes: int
    sha256: str
    options: ExportOptions
    gzip: bool
    tool: str
    contents: dumps.DumpContents | None = None
    """What the dump holds (None in sidecars older than this field)."""
    rows_before: dict[str, int] = field(default_factory=dict)
    """Rows per table counted right before the export (empty in older sidecars)."""
    rows_after: dict[str, int] = field(default_factory=dict)
    """...and right after it."""


@dataclass(frozen=True)
class BackupResult:
    """A complete backup on disk: the dump, its sidecar, and what they hold."""

    path: Path
    sidecar: Path
    bytes: int
    sha256: str
    bookmark: str | None
    database_name: str
    database_uuid: str
    created_at: datetime
    options: ExportOptions
    gzip: bool
    attempts: int
    """Download attempts it took (1 unless a transfer was cut short and retried)."""
    contents: dumps.DumpContents
    """What the dump holds: every object it creates and its rows per table."""
    rows_before: dict[str, int]
    """Rows per table the database held right before the export..."""
    rows_after: dict[str, int]
    """...and right after it: the dump holds a count within the two for each table."""


@dataclass(frozen=True)
class DumpFile:
    """A dump on disk, read through once and checked: what `restore` imports."""

    path: Path
    sidecar: Sidecar | None
    """None for a dump without one (for example from `wrangler d1 export`): it was
    checked to be a complete D1 dump, but nothing vouches it is a whole database."""
    gzip: bool
    contents: dumps.DumpContents
    schema: tuple[tuple[str, str | None, bytes], ...] = field(repr=False)
    """Its PRAGMA and CREATE TABLE statements (kind, name, text), written first."""

    @property
    def verified(self) -> bool:
        return self.sidecar is not None


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _HashingWriter:
    """Writes to a file descriptor while a thread hashes exactly the bytes written.

    sha256 costs about as much CPU as receiving and writing the dump, and hashlib
    releases the GIL on large buffers, so a second thread overlaps it with the
    transfer. The same thread hands each batch to `check` (the dump scanner, whose
    SQLite calls release the GIL too). Each write reaches the file in full before its
    bytes are queued, in order. An error of the thread stops the next write; leaving
    the `with` block stops the thread; `hexdigest()` waits for it.
    """

    def __init__(self, fd: int, check: Callable[[bytes], None] | None = None) -> None:
        self._fd = fd
        self._check = check
        self.bytes = 0
        self._sha256 = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batched = 0
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(_HASH_QUEUE)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._hash, name="d1deploy-sha256", daemon=True)
        self._thread.start()

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def write(self, data: bytes, /) -> int:
        if self._closed:
            # A gzip writer finalised late must not reach an fd number reused meanwhile.
            raise ValueError("write to a closed backup file")
        if self._error is not None:
            raise self._error
        data = bytes(data)  # hashed later, so it must not change meanwhile (no copy of bytes)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.bytes += len(data)
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= _HASH_BATCH:
            self._hand_over()
        return len(data)

    def flush(self) -> None:
        """Nothing to do (gzip calls it): every write goes straight to the descriptor."""

    def hexdigest(self) -> str:
        """The sha256 of every byte written; no write may follow."""
        self._close()
        if self._error is not None:
            raise self._error
        return self._sha256.hexdigest()

    def _hand_over(self) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch, self._batched = [], 0

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hand_over()
            self._queue.put(None)
            self._thread.join()

    def _hash(self) -> None:
        try:
            while (batch := self._queue.get()) is not None:
                data = b"".join(batch)
                self._sha256.update(data)
                if self._check is not None:
                    self._check(data)
        except BaseException as exc:  # re-raised by write() and hexdigest()
            self._error = exc
            while self._queue.get() is not None:  # keep write() from blocking on a full queue
                pass


def sidecar_path(path: Path) -> Path:
    """`<dump>.json`: where a dump's sidecar lives."""
    return path.with_name(path.name + ".json")


def default_backup_path(
    backup_dir: Path, database_name: str, created_at: datetime, gz: bool
) -> Path:
    """`<backup_dir>/<database>-<UTC timestamp>.sql[.gz]`."""
    stamp = created_at.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)
    return backup_dir / f"{database_name}-{stamp}.sql{'.gz' if gz else ''}"


# -- census: what the database holds --------------------------------------------------------


def _covered(listing: Sequence[Sequence[Any]], options: ExportOptions) -> dict[str, str]:
    """The objects D1's exporter writes for `options` (workers-sdk `dumpSql.ts`): every
    table but SQLite's and D1's own, then indexes, triggers and views; with tables named,
    only the objects so named (D1 filters indexes, triggers and views by their own name)."""
    wanted = set(options.tables)
    return {
        str(name): str(kind)
        for kind, name, table in listing
        if not is_sqlite_or_d1(str(name))
        and not is_sqlite_or_d1(str(table))
        and (not wanted or name in wanted)
    }


def census(backend: Backend, options: ExportOptions, tables: Sequence[str] | None = None) -> Census:
    """The objects an export with `options` covers and each covered table's rows: one
    request when `tables` (the ones to count) are given, else one to list them first.

    :raises NotFound: `options.tables` names something the database does not have.
    :raises SqlError: a table in `tables` no longer exists.
    """
    listing = Statement(SCHEMA_SQL)
    for _ in range(_CENSUS_ROUNDS):
        if tables is None:
            (schema,) = backend.run([listing], read_only=True)
            known = _covered(schema.rows, options)
            missing = sorted(set(options.tables) - set(known))
            if missing:
                raise errors.NotFound(
                    f"{backend.info.name} has no table named {', '.join(missing)}",
                    hint="List its tables with `"
                    + suggest.command(
                        "exec", "--command", "SELECT name FROM sqlite_master WHERE type = 'table'"
                    )
                    + "`.",
                )
            if options.no_data:
                return Census(known, {})
            counted = Census(known, {}).tables
        else:
            counted = [] if options.no_data else list(tables)
        counts = [Statement(f"SELECT count(*) FROM {quote_name(t)}") for t in counted]
        schema, *results = backend.run([listing, *counts], read_only=True)
        found = Census(
            _covered(schema.rows, options),
            {t: int(r.first_value() or 0) for t, r in zip(counted, results, strict=True)},
        )
        if tables is not None or set(counted) == set(found.tables):
            return found
        # A table came or went between the two reads: read both again.
    raise errors.ServerError(
        f"the schema of {backend.info.name} changed at every read ({_CENSUS_ROUNDS} times): "
        "a backup cannot be proven while it changes",
        hint="Run the backup again when no schema change is running.",
    )


# -- backup ---------------------------------------------------------------------------------


def backup(
    backend: Backend,
    *,
    dest: Path | None,
    backup_dir: Path,
    options: ExportOptions = _EVERYTHING,
    gzip: bool = False,
    attempts: int = 3,
    notify: Notify | None = None,
    on_bytes: OnBytes | None = None,
    now: Callable[[], datetime] = utc_now,
) -> BackupResult:
    """Export the database to `dest` (default: a timestamped file in `backup_dir`).

    The schema and each table's rows are read right before the export and right after
    it. The dump is streamed to `<dest>.part` (0600), hashed and checked as it arrives
    (a D1 dump, every statement complete), fsynced, proven against those reads (every
    object created, each table's rows within its two counts) and renamed; the sidecar
    is written only after that. A download that fails, ends short or is not the whole
    dump is retried from the start up to `attempts` times in all; when every attempt
    fails, nothing is left behind and `DownloadError` (`InvalidDump` when the bytes were
    not the database) propagates. `now` must return an aware datetime (a naive one is
    taken as UTC).
    """
    if attempts < 1:
        raise errors.UsageError(f"attempts must be at least 1, not {attempts}.")
    say = notify or (lambda _line: None)
    info = backend.info
    created_at = as_utc(now())
    path = dest or _unused_default_path(backup_dir, info.name, created_at, gzip)
    _check_destination(path, gzip)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    before = census(backend, options)
    if backend.is_remote:
        say(
            f"Warning: D1 blocks every query to {info.name} while the export runs; "
            "on a large database that can take a while."
        )
    try:
        handle = backend.export(options, on_message=say)
    except errors.D1DeployError as err:
        text = err.message.lower()
        if err.hint is None and ("virtual table" in text or "fts5" in text):
            err.hint = _fts5_hint()
        raise
    # Counted right after the export: remotely while the dump downloads (from storage, not
    # from D1), so the proof adds no wait. A schema change is nothing a retry can mend.
    with ThreadPoolExecutor(1, thread_name_prefix="d1deploy-census") as pool:
        read_after = functools.partial(_after_export, backend, options, before)
        after_export = pool.submit(read_after).result if backend.is_remote else read_after
        part = path.with_name(path.name + ".part")
        after: Census | None = None
        for attempt in range(1, attempts + 1):
            try:
                size, digest, contents = _download(
                    handle, part, gz=gzip, on_bytes=on_bytes, estimate=info.file_size
                )
            except errors.DownloadError as err:
                _try_again(err, attempt, attempts, info.name, say)
                continue
            try:
                after = after or after_export()
                _prove(contents, before, after, options, info.name)
            except errors.InvalidDump as err:
                part.unlink(missing_ok=True)
                if after is None:  # the schema changed: no download can mend that
                    raise
                _try_again(err, attempt, attempts, info.name, say)
                continue
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            break
    assert after is not None  # the loop ends with a proven download or raises
    try:
        # Checked again: the dump may have taken long enough for someone to create `path`.
        _refuse_existing(path)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)

    result = BackupResult(
        path=path,
        sidecar=sidecar_path(path),
        bytes=size,
        sha256=digest,
        bookmark=handle.bookmark,
        database_name=info.name,
        database_uuid=info.uuid,
        created_at=created_at,
        options=options,
        gzip=gzip,
        attempts=attempt,
        contents=contents,
        rows_before=before.rows,
        rows_after=after.rows,
    )
    try:
        _write_json_atomically(result.sidecar, _sidecar_json(result))
    except BaseException as err:
        # Without its sidecar the dump cannot be verified: leave no half backup.
        path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            raise disk_full(
                err,
                f"the backup sidecar {result.sidecar}",
                path.parent,
                elsewhere=_ELSEWHERE_BACKUP,
            ) from err
        raise
    return result


def _after_export(backend: Backend, options: ExportOptions, before: Census) -> Census:
    """The census again, of the tables counted before; the same objects or an error."""
    try:
        after = census(backend, options, before.tables)
    except errors.SqlError as err:
        raise _schema_changed(backend.info.name, err.message) from err
    if after.objects != before.objects:
        changed = sorted(set(after.objects.items()) ^ set(before.objects.items()))
        raise _schema_changed(
            backend.info.name,
            ", ".join(f"{kind} {name}" for name, kind in changed[:8])
            + (" and more" if len(changed) > 8 else ""),
        )
    return after


def _try_again(
    err: errors.DownloadError, attempt: int, attempts: int, database: str, say: Notify
) -> None:
    """Say that the download starts again, or raise when that was the last attempt."""
    invalid = isinstance(err, errors.InvalidDump)
    if attempt == attempts:
        raise (errors.InvalidDump if invalid else errors.DownloadError)(
            f"Downloading the export of {database} failed {attempts} times; "
            f"the last attempt: {err.message}",
            hint="Nothing was saved. " + (err.hint if invalid and err.hint else _CONNECTION_HINT),
        ) from err
    say(
        f"The download {'was not the whole dump' if invalid else 'was cut short'} "
        f"({err.message}); starting it again (attempt {attempt + 1} of {attempts})."
    )


def _schema_changed(database: str, what: str) -> errors.InvalidDump:
    return errors.InvalidDump(
        f"the schema of {database} changed while it was exported ({what} came or went): "
        "the dump cannot be proven to hold the database",
        hint="Nothing was saved. Run the backup again when no schema change is running.",
    )


def _prove(
    contents: dumps.DumpContents,
    before: Census,
    after: Census,
    options: ExportOptions,
    database: str,
) -> None:
    """The dump holds what was asked of `database`: every object it covers (unless data
    only) and nothing else, and per table a row count within the counts read before and
    after the export (no rows when schema only).

    :raises InvalidDump: naming each table or object that does not agree, with numbers.
    """
    problems: list[str] = []
    unasked = "which were not asked for" if options.tables else f"which {database} does not have"
    if options.no_schema:
        if contents.objects:
            problems.append(f"it creates {_names(contents.objects)} though only data was asked for")
    else:
        missing = [n for n, kind in before.objects.items() if contents.objects.get(n) != kind]
        if missing:
            problems.append(f"it lacks {_names({n: before.objects[n] for n in missing})}")
        extra = {n: k for n, k in contents.objects.items() if n not in before.objects}
        if extra:
            problems.append(f"it creates {_names(extra)}, {unasked}")
    rows = {t: n for t, n in contents.rows.items() if not is_sqlite_or_d1(t)}
    if options.no_data:
        if rows:
            problems.append(f"it holds rows ({_rows(rows)}) though only the schema was asked for")
    else:
        for table, first in before.rows.items():
            held, last = rows.pop(table, 0), after.rows[table]
            if not min(first, last) <= held <= max(first, last):
                problems.append(
                    f"it holds {held} rows of {table}, which had {first} right before the "
                    f"export and {last} right after it"
                )
        if rows:
            problems.append(f"it holds rows of {', '.join(rows)}, {unasked}")
    if problems:
        raise errors.InvalidDump(
            f"the dump is not the whole of what was exported: {'; '.join(problems)}",
            hint="A transfer that ends early at a statement boundary looks like this; so "
            "does a database written to during the export. Run the backup again.",
        )


def _names(objects: Mapping[str, str]) -> str:
    shown = [f"{kind} {name}" for name, kind in list(objects.items())[:8]]
    return ", ".join(shown) + (f" and {len(objects) - 8} more" if len(objects) > 8 else "")


def _rows(rows: Mapping[str, int]) -> str:
    return ", ".join(f"{n} in {t}" for t, n in rows.items())


def _unused_default_path(
    backup_dir: Path, database_name: str, created_at: datetime, gz: bool
) -> Path:
    """The default path, or `<name>-N.sql[.gz]` when a backup taken in the same second
    holds it: a deploy re-run right after a failed one must not be refused for a name."""
    first = default_backup_path(backup_dir, database_name, created_at, gz)
    ext = ".sql.gz" if gz else ".sql"
    n = 1
    path = first
    while any(p.exists() for p in (path, sidecar_path(path), path.with_name(path.name + ".part"))):
        n += 1
        path = first.with_name(f"{first.name.removesuffix(ext)}-{n}{ext}")
    return path


def _check_destination(path: Path, gz: bool) -> None:
    if gz != path.name.endswith(".gz"):
        want = "ends with .gz" if gz else "does not end with .gz"
        raise errors.UsageError(
            f"The backup file {path} does not match the gzip setting.",
            hint=f"With --gzip the file name must end with .sql.gz; choose a name that {want}.",
        )
    _refuse_existing(path)
    part = path.with_name(path.name + ".part")
    if part.exists():
        raise _part_exists(part)


def _refuse_existing(path: Path) -> None:
    for existing in (path, sidecar_path(path)):
        if existing.exists():
            raise errors.UsageError(
                f"{existing} already exists; d1deploy never overwrites a backup.",
                hint="Choose another file with -o, or move the existing one away.",
            )


def _part_exists(part: Path) -> errors.UsageError:
    return errors.UsageError(
        f"{part} already exists: another backup is writing it, or an earlier one was interrupted.",
        hint=f"Delete {part} if no backup is running, or choose another file with -o.",
    )


def _download(
    handle: ExportHandle,
    part: Path,
    *,
    gz: bool,
    on_bytes: OnBytes | None,
    estimate: int | None = None,
) -> tuple[int, str, dumps.DumpContents]:
    """One attempt: stream the dump into `part`, checking it as it comes; returns (bytes
    on disk, sha256, what the dump holds).

    `part` is removed when the attempt fails, whatever the reason. `estimate` (the
    database's size, when known) helps say how much space a full disk lacked.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(part, flags, _FILE_MODE)
    except FileExistsError:
        raise _part_exists(part) from None
    scanner = dumps.DumpScanner()
    received = 0
    try:
        os.fchmod(fd, _FILE_MODE)  # exactly 0600 whatever the umask
        # Plain, the dump is checked beside the hashing; gzipped, before it is compressed.
        with _HashingWriter(fd, check=None if gz else scanner.feed) as sink:
            out: _Sink = sink
            compressor = None
            if gz:
                # mtime=0 keeps the output (and its sha256) a function of the dump alone.
                compressor = gzip.GzipFile(
                    filename="", mode="wb", fileobj=sink, compresslevel=_GZIP_LEVEL, mtime=0
                )
                out = compressor
            for chunk in handle.download():
                if compressor is not None:
                    scanner.feed(chunk)
                out.write(chunk)
                received += len(chunk)
                if on_bytes is not None:
                    # D1 says nothing of a dump's size before it arrives (the client
                    # checks the storage's Content-Length as the bytes come).
                    on_bytes(received, None)
            if compressor is not None:
                compressor.close()
            digest = sink.hexdigest()
        contents = scanner.finish()
        os.fsync(fd)
    except BaseException as err:
        part.unlink(missing_ok=True)
        if isinstance(err, dumps.NotADump):
            raise errors.InvalidDump(
                f"the download is not a complete D1 dump: {err}",
                hint="A transfer cut short, or an error page from the storage behind the "
                "signed URL, looks like this. Run the backup again.",
            ) from None
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            needed = max(filter(None, (estimate, received)), default=received)
            dest = part.with_name(part.name.removesuffix(".part"))
            raise disk_full(
                err,
                f"the backup {dest}",
                part.parent,
                elsewhere=_ELSEWHERE_BACKUP,
                written=received,
                needed=needed,
            ) from None
        raise
    finally:
        os.close(fd)
    return sink.bytes, digest, contents


_ELSEWHERE_BACKUP = "choose another folder with --backup-dir DIR or another file with -o FILE"
ELSEWHERE_RESTORE = "point TMPDIR at a folder with more room"


def disk_full(
    err: OSError,
    what: str,
    folder: Path,
    *,
    elsewhere: str,
    written: int | None = None,
    needed: int | None = None,
) -> errors.DiskFull:
    """A clear error for a write into `folder` that ran out of room: what, where, how much."""
    if err.errno == errno.EFBIG:
        limit = file_size_limit()
        why = "it would exceed this process's file size limit" + (
            f" ({size_text(limit)}, `ulimit -f`)" if limit is not None else " (`ulimit -f`)"
        )
        fix = "Raise the limit (`ulimit -f unlimited`), or"
    else:
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        reason = os.strerror(err.errno or errno.ENOSPC)
        why = f"the disk is full ({reason}): {folder} has {size_text(free)} free"
        fix = "Free space there, or"
    done = f" after {size_text(written)}" if written else ""
    need = f"; it needs about {size_text(needed)}" if needed else ""
    return errors.DiskFull(
        f"writing {what} failed{done}: {why}{need}",
        hint=f"{fix} {elsewhere}. Nothing was left behind.",
    )


def file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def size_text(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n_units = n / 1000 ** ("kMGT".index(unit[0]) + 1)
        if n_units < 1000 or unit == "TB":
            return f"{n_units:.1f} {unit} ({n:,} bytes)"
    raise AssertionError("unreachable")


def _sidecar_json(result: BackupResult) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "tool": f"d1deploy {__version__}",
        "database": {"name": result.database_name, "uuid": result.database_uuid},
        "bookmark": result.bookmark,
        "created_at": result.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bytes": result.bytes,
        "sha256": result.sha256,
        "options": {
            "no_data": result.options.no_data,
            "no_schema": result.options.no_schema,
            "tables": list(result.options.tables),
            "gzip": result.gzip,
        },
        "dump": {
            "bytes": result.contents.bytes,
            "statements": result.contents.statements,
            "objects": [{"type": k, "name": n} for n, k in result.contents.objects.items()],
            "rows": result.contents.rows,
        },
        "database_rows": {"before_export": result.rows_before, "after_export": result.rows_after},
    }


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with open(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable. Some filesystems cannot fsync a directory: then the
    rename is as durable as they allow, which is no reason to fail the backup."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_sidecar(path: Path) -> Sidecar:
    """Read the sidecar of the dump at `path`; `InputError` when it is missing or malformed."""
    side = sidecar_path(path)
    try:
        raw = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = _not_a_backup_hint()
        if path.name.endswith(".json"):
            hint = f"Pass the dump itself ({path.name[: -len('.json')]}), not its sidecar."
        raise errors.InputError(
            f"{path} is not a d1deploy backup: its sidecar {side.name} is missing.",
            hint=hint,
            file=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise errors.InputError(
            f"Cannot read the backup sidecar {side}: {err}.", hint=_not_a_backup_hint()
        ) from err
    try:
        return _parse_sidecar(path, side, json.loads(raw))
    except (ValueError, KeyError, TypeError) as err:
        why = f"it has no {err} field" if isinstance(err, KeyError) else str(err)
        raise errors.InputError(
            f"{side} is not a d1deploy backup sidecar ({why}).",
            hint=_not_a_backup_hint(),
            file=str(side),
        ) from None


def _parse_sidecar(path: Path, side: Path, data: Any) -> Sidecar:
    """Build a Sidecar, raising ValueError/KeyError/TypeError on any unexpected shape."""

    def typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
        # bool is an int in Python; a count or size must not be one.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"{name} has the wrong type")
        return value

    def counts(value: Any, name: str) -> dict[str, int]:
        return {
            typed(k, str, f"{name} key"): typed(n, int, f"{name}.{k}")
            for k, n in typed(value, dict, name).items()
        }

    typed(data, dict, "the document")
    if data.get("format") != FORMAT:
        raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
    database = typed(data["database"], dict, "database")
    opts = typed(data["options"], dict, "options")
    tables = typed(opts.get("tables", []), list, "options.tables")
    size = typed(data["bytes"], int, "bytes")
    digest = typed(data["sha256"], str, "sha256").lower()
    if size < 0 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("bytes or sha256 is not valid")
    contents = None
    if "dump" in data:  # written since backups are proven; older sidecars lack it
        dump = typed(data["dump"], dict, "dump")
        objects = typed(dump["objects"], list, "dump.objects")
        contents = dumps.DumpContents(
            objects={
                typed(typed(o, dict, "dump.objects[]")["name"], str, "name"): typed(
                    o["type"], str, "type"
                )
                for o in objects
            },
            rows=counts(dump["rows"], "dump.rows"),
            statements=typed(dump["statements"], int, "dump.statements"),
            bytes=typed(dump["bytes"], int, "dump.bytes"),
        )
    live = typed(data.get("database_rows", {}), dict, "database_rows")
    return Sidecar(
        path=path,
        sidecar=side,
        database_name=typed(database["name"], str, "database.name"),
        database_uuid=typed(database["uuid"], str, "database.uuid"),
        bookmark=typed(data.get("bookmark"), (str, type(None)), "bookmark"),
        created_at=as_utc(datetime.fromisoformat(typed(data["created_at"], str, "created_at"))),
        bytes=size,
        sha256=digest,
        options=ExportOptions(
            no_data=typed(opts.get("no_data", False), bool, "options.no_data"),
            no_schema=typed(opts.get("no_schema", False), bool, "options.no_schema"),
            tables=tuple(typed(t, str, "options.tables[]") for t in tables),
        ),
        gzip=typed(opts.get("gzip", False), bool, "options.gzip"),
        tool=typed(data.get("tool", ""), str, "tool"),
        contents=contents,
        rows_before=counts(live.get("before_export", {}), "database_rows.before_export"),
        rows_after=counts(live.get("after_export", {}), "database_rows.after_export"),
    )


def verify_backup(path: Path) -> Sidecar:
    """Recompute the dump's sha256 (streamed) and compare it with its sidecar."""
    side = read_sidecar(path)
    try:
        with path.open("rb") as dump:
            digest = hashlib.file_digest(dump, "sha256").hexdigest()
            size = dump.tell()
    except FileNotFoundError:
        raise errors.InputError(
            f"The backup {path} is missing; only its sidecar {side.sidecar.name} exists.",
            hint=_damaged_hint(),
        ) from None
    except OSError as err:
        raise errors.InputError(f"Cannot read the backup {path}: {err}.") from err
    if size != side.bytes or digest != side.sha256:
        raise errors.InputError(
            f"The backup {path} is damaged: it has {size} bytes with sha256 {digest}, but "
            f"its sidecar records {side.bytes} bytes with sha256 {side.sha256}.",
            hint=_damaged_hint(),
            file=str(path),
        )
    return side


def tmp_root() -> Path:
    return Path(tempfile.gettempdir())


def inspect_dump(path: Path) -> DumpFile:
    """Check the dump at `path` before anything is restored from it, in one streamed pass.

    With a sidecar beside it (a d1deploy backup) its sha256 must match and it must hold
    what the sidecar records; without one (`wrangler d1 export`, say) it is accepted as
    unverified when it is a complete D1 dump. Gzip is inflated on the fly (by its
    bytes, whatever its name), never to disk, and never past what it may hold: the size
    the sidecar records, else the free space a restore would need for it.

    :raises InputError: not a complete D1 dump, damaged, or not readable.
    :raises DiskFull: a gzip dump without a sidecar inflates to more than fits.
    """
    if not path.is_file():
        hint = None if path.exists() else "Check the path; `ls backups/` lists the backups."
        raise errors.InputError(f"{path} is not a file", hint=hint, file=str(path))
    side = verify_backup(path) if sidecar_path(path).exists() else None
    if side is None and path.name.endswith(".json") and path.with_suffix("").is_file():
        raise errors.InputError(
            f"{path} looks like a backup sidecar, not a dump",
            hint=f"Pass the dump itself ({path.with_suffix('').name}).",
            file=str(path),
        )
    try:
        gz = dumps.is_gzip(path)
        recorded = side.contents.bytes if side and side.contents else None
        limit = recorded if recorded is not None else free_space(tmp_root())
        contents, schema = dumps.schema_statements(dumps.chunks(path, limit=limit if gz else None))
    except dumps.NotADump as err:
        raise errors.InputError(
            f"{path} is not a complete D1 dump: {err}",
            hint=_damaged_hint() if side else _not_a_backup_hint(),
            file=str(path),
            line=err.line,
        ) from None
    except dumps.TooLarge as err:
        if side is not None:
            raise errors.InputError(
                f"The backup {path} is damaged: {err}, more than its sidecar records",
                hint=_damaged_hint(),
                file=str(path),
            ) from None
        raise errors.DiskFull(
            f"{path} {err}: more than the {size_text(limit)} a restore could write to {tmp_root()}",
            hint=f"Free space there, or {ELSEWHERE_RESTORE}.",
            file=str(path),
        ) from None
    except dumps.GZIP_ERRORS as err:
        raise errors.InputError(
            f"Cannot read {path}: {'it is not valid gzip: ' if gz else ''}{err}",
            hint=_damaged_hint(),
            file=str(path),
        ) from None
    if (
        side is not None
        and side.contents is not None
        and ((side.contents.objects, side.contents.rows) != (contents.objects, contents.rows))
    ):
        raise errors.InputError(
            f"The backup {path} holds other objects or rows than its sidecar records",
            hint=_damaged_hint(),
            file=str(path),
        )
    return DumpFile(path=path, sidecar=side, gzip=gz, contents=contents, schema=tuple(schema))


def free_space(folder: Path) -> int:
    """Bytes a file in `folder` may grow to: the free space (less a little, for everyone
    else), within the file size limit."""
    free = max(0, shutil.disk_usage(folder).free - SPARE_BYTES)
    limit = file_size_limit()
    return free if limit is None else min(free, limit)
