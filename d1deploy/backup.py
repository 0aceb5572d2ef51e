"""Backups and restores: export to a verified file, re-import it, and Time Travel.

This module owns the backup file format: a D1 SQL dump (optionally gzipped) written
through `<dest>.part` (mode 0600, sha256 computed while streaming, fsync, rename), and
the JSON sidecar `<dest>.json` that describes it. A backup either exists complete with
its sidecar or not at all. It also owns restoring such a file into an empty database
through the import flow, and describing and performing Time Travel restores.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from d1deploy import __version__, dumps, errors, suggest
from d1deploy.backend import (
    Backend,
    ExportHandle,
    ExportOptions,
    RestoreResult,
    Statement,
)
from d1deploy.ledger import HISTORY_TABLE

FORMAT = "d1-sql-dump"
"""The sidecar's `format` value: a D1-format SQL dump (as D1's export produces)."""

_FILE_MODE = 0o600
_HASH_BATCH = 1 << 20  # bytes handed to the hashing thread at once: fewer hand-offs
_HASH_QUEUE = 4  # batches waiting at most, so memory stays flat when hashing lags
_GZIP_LEVEL = 6  # level 9 costs several times the CPU for a few percent on SQL text
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

_FTS5_HINT = (
    "D1 cannot export a database that contains virtual tables (FTS5). Use Time Travel "
    "instead: `d1deploy bookmark` records a restore point and `d1deploy restore "
    "--bookmark B` returns to it."
)
_NOT_A_BACKUP_HINT = (
    "Pass a dump written by `d1deploy backup`, with its `.json` sidecar beside it, or "
    "take a new backup with `d1deploy backup`."
)
_DAMAGED_HINT = "Use another backup, or take a new one with `d1deploy backup`."

# Objects D1 or SQLite create for themselves; everything else (including the ledger and
# d1deploy's own tables) counts as content of the target database.
_USER_TABLES_SQL = (
    "SELECT name FROM sqlite_master WHERE type = 'table'"
    " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'"
    " ORDER BY name"
)

_EVERYTHING = ExportOptions()

Notify = Callable[[str], None]
OnBytes = Callable[[int, int | None], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


@dataclass(frozen=True)
class RestoreFromBackupResult:
    """A backup re-imported into a database."""

    path: Path
    source: Sidecar
    database_name: str
    database_uuid: str
    tables_before: tuple[str, ...]
    """User tables the target held before the import (empty unless `force`)."""
    bookmark_before: str | None
    """The target's bookmark before a forced import over existing tables: the undo."""
    num_queries: int
    rows_read: int
    rows_written: int
    final_bookmark: str | None
    duration_ms: float


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


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _HashingWriter:
    """Writes to a file descriptor while a thread hashes exactly the bytes written.

    sha256 costs about as much CPU as receiving and writing the dump, and hashlib
    releases the GIL on large buffers, so a second thread overlaps it with the
    transfer. Each write reaches the file in full before its bytes are queued, in order.
    Leaving the `with` block stops the thread; `hexdigest()` waits for it.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
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
                self._sha256.update(b"".join(batch))
        except BaseException as exc:  # re-raised by hexdigest()
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
    now: Callable[[], datetime] = _utc_now,
) -> BackupResult:
    """Export the database to `dest` (default: a timestamped file in `backup_dir`).

    The dump is streamed to `<dest>.part` (0600), hashed as it arrives, fsynced and
    renamed; the sidecar is written only after that. A failed or short download is
    retried from the start up to `attempts` times in all; when every attempt fails,
    nothing is left behind and `DownloadError` propagates. `now` must return an aware
    datetime (a naive one is taken as UTC).
    """
    if attempts < 1:
        raise errors.UsageError(f"attempts must be at least 1, not {attempts}.")
    say = notify or (lambda _line: None)
    info = backend.info
    created_at = _as_utc(now())
    path = dest or _unused_default_path(backup_dir, info.name, created_at, gzip)
    _check_destination(path, gzip)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

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
            err.hint = _FTS5_HINT
        raise

    part = path.with_name(path.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            size, digest = _download(handle, part, gz=gzip, on_bytes=on_bytes)
            break
        except errors.DownloadError as err:
            if attempt == attempts:
                raise errors.DownloadError(
                    f"Downloading the export of {info.name} failed {attempts} times; "
                    f"the last attempt: {err.message}",
                    hint="Nothing was saved. Check the connection and run the backup again.",
                ) from err
            say(
                f"The download was cut short ({err.message}); starting it again "
                f"(attempt {attempt + 1} of {attempts})."
            )
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
    )
    try:
        _write_json_atomically(result.sidecar, _sidecar_json(result))
    except BaseException:
        # Without its sidecar the dump cannot be verified: leave no half backup.
        path.unlink(missing_ok=True)
        raise
    return result


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
    handle: ExportHandle, part: Path, *, gz: bool, on_bytes: OnBytes | None
) -> tuple[int, str]:
    """One attempt: stream the dump into `part`; returns (bytes on disk, sha256).

    `part` is removed when the attempt fails, whatever the reason.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(part, flags, _FILE_MODE)
    except FileExistsError:
        raise _part_exists(part) from None
    try:
        os.fchmod(fd, _FILE_MODE)  # exactly 0600 whatever the umask
        with _HashingWriter(fd) as sink:
            out: _Sink = sink
            compressor = None
            if gz:
                # mtime=0 keeps the output (and its sha256) a function of the dump alone.
                compressor = gzip.GzipFile(
                    filename="", mode="wb", fileobj=sink, compresslevel=_GZIP_LEVEL, mtime=0
                )
                out = compressor
            received = 0
            for chunk in handle.download():
                out.write(chunk)
                received += len(chunk)
                if on_bytes is not None:
                    on_bytes(received, handle.size)
            if compressor is not None:
                compressor.close()
            if handle.size is not None and received != handle.size:
                raise errors.DownloadError(
                    f"received {received} of {handle.size} bytes",
                )
            digest = sink.hexdigest()
        os.fsync(fd)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return sink.bytes, digest


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


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_sidecar(path: Path) -> Sidecar:
    """Read the sidecar of the dump at `path`; `InputError` when it is missing or malformed."""
    side = sidecar_path(path)
    try:
        raw = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = _NOT_A_BACKUP_HINT
        if path.name.endswith(".json"):
            hint = f"Pass the dump itself ({path.name[: -len('.json')]}), not its sidecar."
        raise errors.InputError(
            f"{path} is not a d1deploy backup: its sidecar {side.name} is missing.",
            hint=hint,
            file=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise errors.InputError(
            f"Cannot read the backup sidecar {side}: {err}.", hint=_NOT_A_BACKUP_HINT
        ) from err
    try:
        return _parse_sidecar(path, side, json.loads(raw))
    except (ValueError, KeyError, TypeError) as err:
        why = f"it has no {err} field" if isinstance(err, KeyError) else str(err)
        raise errors.InputError(
            f"{side} is not a d1deploy backup sidecar ({why}).",
            hint=_NOT_A_BACKUP_HINT,
            file=str(side),
        ) from None


def _parse_sidecar(path: Path, side: Path, data: Any) -> Sidecar:
    """Build a Sidecar, raising ValueError/KeyError/TypeError on any unexpected shape."""

    def typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
        # bool is an int in Python; a count or size must not be one.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"{name} has the wrong type")
        return value

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
    return Sidecar(
        path=path,
        sidecar=side,
        database_name=typed(database["name"], str, "database.name"),
        database_uuid=typed(database["uuid"], str, "database.uuid"),
        bookmark=typed(data.get("bookmark"), (str, type(None)), "bookmark"),
        created_at=_as_utc(datetime.fromisoformat(typed(data["created_at"], str, "created_at"))),
        bytes=size,
        sha256=digest,
        options=ExportOptions(
            no_data=typed(opts.get("no_data", False), bool, "options.no_data"),
            no_schema=typed(opts.get("no_schema", False), bool, "options.no_schema"),
            tables=tuple(typed(t, str, "options.tables[]") for t in tables),
        ),
        gzip=typed(opts.get("gzip", False), bool, "options.gzip"),
        tool=typed(data.get("tool", ""), str, "tool"),
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
            hint=_DAMAGED_HINT,
        ) from None
    except OSError as err:
        raise errors.InputError(f"Cannot read the backup {path}: {err}.") from err
    if size != side.bytes or digest != side.sha256:
        raise errors.InputError(
            f"The backup {path} is damaged: it has {size} bytes with sha256 {digest}, but "
            f"its sidecar records {side.bytes} bytes with sha256 {side.sha256}.",
            hint=_DAMAGED_HINT,
            file=str(path),
        )
    return side


def user_tables(backend: Backend) -> tuple[str, ...]:
    """The database's tables other than SQLite's and D1's own (ledgers count)."""
    (result,) = backend.run([Statement(_USER_TABLES_SQL)], read_only=True)
    return tuple(str(row[0]) for row in result.rows)


def restore_from_backup(
    backend: Backend, path: Path, *, force: bool = False, notify: Notify | None = None
) -> RestoreFromBackupResult:
    """Verify the backup at `path`, then re-import it into `backend` through the import
    flow. The target must hold no tables unless `force`."""
    say = notify or (lambda _line: None)
    source = verify_backup(path)
    info = backend.info
    tables = user_tables(backend)
    bookmark_before = None
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        if not force:
            hint = (
                "Restore into a new database, or pass --force to import on top of these "
                "tables (conflicting statements make the import fail)."
            )
            if source.options.no_schema:
                hint = "This backup holds data only, so it needs its tables to exist: " + (
                    "pass --force to import it into them."
                )
            raise errors.Refused(
                f"{info.name} is not empty: it has {len(tables)} "
                f"table{'s' if len(tables) != 1 else ''} ({shown}); a backup is restored "
                "only into an empty database.",
                hint=hint,
            )
        bookmark_before = backend.bookmark()
        say(
            f"Warning: importing into {info.name}, which has {len(tables)} tables ({shown}); "
            f"to undo: {suggest.restore(bookmark_before)}"
        )
    if backend.is_remote:
        say(f"Warning: D1 blocks every query to {info.name} while the import runs.")
    with _importable_sql(source) as sql_path:
        imported = backend.import_file(sql_path, on_message=say)
    return RestoreFromBackupResult(
        path=path,
        source=source,
        database_name=info.name,
        database_uuid=info.uuid,
        tables_before=tables,
        bookmark_before=bookmark_before,
        num_queries=imported.num_queries,
        rows_read=imported.rows_read,
        rows_written=imported.rows_written,
        final_bookmark=imported.final_bookmark,
        duration_ms=imported.duration_ms,
    )


@contextlib.contextmanager
def _importable_sql(source: Sidecar) -> Iterator[Path]:
    """The backup as a file the import flow can run: gunzipped when needed, with its
    CREATE TABLEs first (`dumps.importable`), in a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="d1deploy-restore-") as tmp:
        plain = source.path
        if source.gzip:
            plain = Path(tmp) / "plain.sql"
            try:
                with (
                    open(dumps.private_file(plain), "wb") as out,
                    gzip.open(source.path, "rb") as dump,
                ):
                    shutil.copyfileobj(dump, out, 1 << 20)
            except (OSError, EOFError, zlib.error) as err:
                raise errors.InputError(
                    f"The backup {source.path} is not valid gzip: {err}.",
                    hint=_DAMAGED_HINT,
                    file=str(source.path),
                ) from err
        yield dumps.importable(plain, Path(tmp) / "import.sql")


def describe_restore_point(
    backend: Backend,
    *,
    bookmark: str | None,
    timestamp: datetime | None,
    now: Callable[[], datetime] = _utc_now,
) -> RestorePoint:
    """Resolve the target of a Time Travel restore and say what restoring to it loses.

    Exactly one of `bookmark` and `timestamp` (aware, or naive meaning UTC). Reads only.
    """
    if (bookmark is None) == (timestamp is None):
        raise errors.UsageError(
            "Give exactly one restore point: a bookmark or a timestamp.",
            hint="Use --bookmark B or --timestamp T (ISO 8601, for example 2024-05-01T12:00:00Z).",
        )
    moment = _as_utc(now())
    info = backend.info
    current = backend.bookmark()
    point_in_time: datetime | None = None
    migrations: tuple[str, ...] = ()
    if timestamp is not None:
        point_in_time = _as_utc(timestamp)
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
        when = _as_utc(datetime.fromisoformat(at))
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
