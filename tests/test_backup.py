"""backups.py: backup files (atomic, 0600, sidecar, retried downloads), restores from them,
and Time Travel restore points, against a fake backend, the local backend and the emulator."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from d1deploy import __version__, backups, dumps, dumpsql, errors, ledger, restoring
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
from d1deploy.remote import RemoteBackend
from tests.emulator.api import SIGNED_PREFIX, D1Emulator, RecordedRequest

Row = tuple[SqlValue, ...]
NOW = datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)

# Everything a dump must carry across: blobs, NULLs, unicode, quotes, newlines, reals,
# a quoted table name, an index, a trigger and a view.
SOURCE_SQL = """
CREATE TABLE user_deposits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    depositor_name TEXT,
    balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    rate REAL,
    avatar BLOB
);
CREATE TABLE "audit log" (id INTEGER PRIMARY KEY, deposit_id INTEGER
    REFERENCES user_deposits(id) ON DELETE CASCADE, note TEXT);
CREATE INDEX idx_deposits_user ON user_deposits(user_id);
CREATE VIEW rich AS SELECT user_id FROM user_deposits WHERE balance > 100;
CREATE TRIGGER audit_insert AFTER INSERT ON user_deposits BEGIN
    INSERT INTO "audit log" (deposit_id, note) VALUES (NEW.id, 'created; ok');
END;
INSERT INTO user_deposits (user_id, depositor_name, balance, rate, avatar) VALUES
    (1, '홍길동', 1000, 0.1, X'00ff10'),
    (2, NULL, 0, NULL, NULL),
    (3, 'O''Brien "the" quote', 5, -1.5e-300, X''),
    (4, 'line one
line two' || char(13) || 'cr', 7, 3.0, zeroblob(3));
"""


# --- helpers ------------------------------------------------------------------------


def local_db(path: Path, sql: str = "") -> LocalBackend:
    db = LocalBackend(path)
    if sql:
        script = path.with_suffix(".seed.sql")
        script.write_text(sql, encoding="utf-8")
        db.import_file(script)
    return db


def snapshot(db: Backend) -> tuple[list[Row], dict[str, list[Row]]]:
    """The user schema and every table's rows, comparable across databases."""
    (schema,) = db.run(
        [
            Statement(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"
                " WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                " AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY type, name"
            )
        ],
        read_only=True,
    )
    rows = {}
    for kind, name, _tbl, _sql in schema.rows:
        if kind == "table":
            quoted = '"' + str(name).replace('"', '""') + '"'
            (result,) = db.run(
                [Statement(f"SELECT * FROM {quoted} ORDER BY rowid")], read_only=True
            )
            rows[str(name)] = list(result.rows)
    return list(schema.rows), rows


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


SEED = "CREATE TABLE t (x);\n" + "".join(f"INSERT INTO t VALUES ({i});\n" for i in range(50))


def d1_dump(db: sqlite3.Connection, options: ExportOptions | None = None) -> bytes:
    """The dump D1 would write of `db` (D1's exporter, as the emulator runs it)."""
    options = options or ExportOptions()
    statements = dumpsql.dump(
        db,
        no_data=options.no_data,
        no_schema=options.no_schema,
        tables=options.tables,
        numbers="javascript",
    )
    return "".join(f"{statement}\n" for statement in statements).encode()


@dataclass
class FakeBackend:
    """A database in memory that answers SQL for real (it `holds` that script, and runs
    what is imported into it) and exports in D1's format; `body` replaces the dump it
    serves. `cut` attempts end short (by error, or silently when `silent_cut`)."""

    holds: str = SEED
    body: bytes | None = None
    cut: int = 0
    silent_cut: bool = False
    remote: bool = False
    export_error: errors.D1DeployError | None = None
    download_error: BaseException | None = None
    downloads: int = 0
    dump: bytes = b""
    imported: list[bytes] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.db.executescript(self.holds)
        self.dump = d1_dump(self.db)

    @property
    def info(self) -> DatabaseInfo:
        return DatabaseInfo(uuid="0000-uuid", name="prod-db")

    @property
    def is_remote(self) -> bool:
        return self.remote

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        assert read_only
        results = []
        for stmt in statements:
            cursor = self.db.execute(stmt.sql, stmt.params)
            columns = tuple(c[0] for c in cursor.description or ())
            results.append(QueryResult(columns=columns, rows=tuple(cursor.fetchall())))
        return results

    def bookmark(self, at: datetime | None = None) -> str:
        return "bm-at" if at else "bm-now"

    def restore(self, bookmark: str) -> RestoreResult:
        self.restored.append(bookmark)
        return RestoreResult(bookmark="bm-new")

    def export(
        self, options: ExportOptions, on_message: MessageCallback | None = None
    ) -> ExportHandle:
        if on_message:
            on_message("Generating prod-db.sql")
        if self.export_error:
            raise self.export_error
        self.dump = d1_dump(self.db, options) if self.body is None else self.body
        return ExportHandle(
            bookmark="bm-export",
            filename="prod-db.sql",
            download=self._download,
        )

    def _download(self) -> Iterator[bytes]:
        self.downloads += 1
        half = len(self.dump) // 2
        yield self.dump[:half]
        if self.download_error is not None:
            raise self.download_error
        if self.downloads <= self.cut:
            if self.silent_cut:
                return
            raise errors.DownloadError("connection closed after 100 of 200 bytes")
        yield self.dump[half:]

    def import_file(self, path: Path, on_message: MessageCallback | None = None) -> ImportResult:
        self.imported.append(path.read_bytes())
        self.db.executescript(path.read_text(encoding="utf-8"))
        return ImportResult(num_queries=3, rows_written=2, final_bookmark="bm-final")

    def close(self) -> None:
        self.db.close()


def run_backup(
    db: Backend, tmp_path: Path, **kwargs: object
) -> tuple[backups.BackupResult, list[str]]:
    said: list[str] = []
    result = backups.backup(
        db,
        dest=kwargs.pop("dest", None),  # type: ignore[arg-type]
        backup_dir=tmp_path / "backups",
        notify=said.append,
        now=lambda: NOW,
        **kwargs,  # type: ignore[arg-type]
    )
    return result, said


# --- backup files -------------------------------------------------------------------


def test_backup_writes_dump_and_sidecar_private_and_consistent(tmp_path: Path) -> None:
    db = FakeBackend()
    progress: list[tuple[int, int | None]] = []
    result, said = run_backup(
        db, tmp_path, on_bytes=lambda done, total: progress.append((done, total))
    )

    assert result.path == tmp_path / "backups" / "prod-db-20240501T123045Z.sql"
    assert result.path.read_bytes() == db.dump
    assert result.sidecar == tmp_path / "backups" / "prod-db-20240501T123045Z.sql.json"
    assert mode(result.path) == 0o600 and mode(result.sidecar) == 0o600
    assert files_in(tmp_path / "backups") == [result.path.name, result.sidecar.name]
    assert progress[-1] == (len(db.dump), None)
    assert "Generating prod-db.sql" in said
    assert not any("blocks" in line for line in said)  # the warning is for D1 only

    side = json.loads(result.sidecar.read_text())
    assert side == {
        "format": "d1-sql-dump",
        "tool": f"d1deploy {__version__}",
        "database": {"name": "prod-db", "uuid": "0000-uuid"},
        "bookmark": "bm-export",
        "created_at": "2024-05-01T12:30:45Z",
        "bytes": len(db.dump),
        "sha256": hashlib.sha256(db.dump).hexdigest(),
        "options": {"no_data": False, "no_schema": False, "tables": [], "gzip": False},
        "dump": {
            "bytes": len(db.dump),
            "statements": 52,
            "objects": [{"type": "table", "name": "t"}],
            "rows": {"t": 50},
        },
        "database_rows": {"before_export": {"t": 50}, "after_export": {"t": 50}},
    }
    assert result.sha256 == side["sha256"] and result.bytes == side["bytes"]
    assert result.attempts == 1 and result.bookmark == "bm-export"

    parsed = backups.verify_backup(result.path)
    assert parsed.sha256 == result.sha256
    assert parsed.contents == result.contents
    assert parsed.rows_before == parsed.rows_after == {"t": 50}
    assert parsed.created_at == NOW
    assert (parsed.database_name, parsed.database_uuid) == ("prod-db", "0000-uuid")


def test_remote_backup_warns_first_that_queries_are_blocked(tmp_path: Path) -> None:
    _, said = run_backup(FakeBackend(remote=True), tmp_path)
    assert "blocks every query to prod-db" in said[0]


def test_gzip_backup_is_hashed_as_written_and_records_options(tmp_path: Path) -> None:
    db = FakeBackend(holds=SEED + "CREATE TABLE u (y); CREATE INDEX u_y ON u(y);")
    opts = ExportOptions(no_data=True, tables=("t", "u"))
    result, _ = run_backup(db, tmp_path, gzip=True, options=opts)
    # D1 writes the index only when it is named too: the tables asked for are the dump.
    assert result.contents.objects == {"t": "table", "u": "table"}
    assert result.contents.rows == {} and result.rows_before == {}

    assert result.path.name == "prod-db-20240501T123045Z.sql.gz"
    on_disk = result.path.read_bytes()
    assert gzip.decompress(on_disk) == db.dump
    assert result.sha256 == hashlib.sha256(on_disk).hexdigest()
    assert result.bytes == len(on_disk)
    side = backups.verify_backup(result.path)
    assert side.gzip and side.options == opts


def test_explicit_destination_and_gzip_name_mismatch(tmp_path: Path) -> None:
    dest = tmp_path / "nested" / "dir" / "mine.sql"
    result, _ = run_backup(FakeBackend(), tmp_path, dest=dest)
    assert result.path == dest and dest.exists()

    db = FakeBackend()
    with pytest.raises(errors.UsageError, match="gzip"):
        run_backup(db, tmp_path, dest=tmp_path / "other.sql", gzip=True)
    with pytest.raises(errors.UsageError, match="gzip"):
        run_backup(db, tmp_path, dest=tmp_path / "other.sql.gz")
    assert db.downloads == 0


def test_refuses_to_overwrite_an_existing_backup_before_exporting(tmp_path: Path) -> None:
    dest = tmp_path / "keep.sql"
    dest.write_bytes(b"precious")
    db = FakeBackend(export_error=errors.ServerError("export must not run"))
    with pytest.raises(errors.UsageError, match="already exists") as caught:
        run_backup(db, tmp_path, dest=dest)
    assert caught.value.hint
    assert dest.read_bytes() == b"precious"


def test_leftover_sidecar_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "b.sql.json").write_text("{}")
    with pytest.raises(errors.UsageError, match=r"b\.sql\.json already exists"):
        run_backup(FakeBackend(), tmp_path, dest=tmp_path / "b.sql")
    assert files_in(tmp_path) == ["b.sql.json"]


def test_destination_created_during_the_download_is_not_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "race.sql"

    class Racing(FakeBackend):
        def _download(self) -> Iterator[bytes]:
            dest.write_bytes(b"theirs")
            yield from super()._download()

    with pytest.raises(errors.UsageError, match="already exists"):
        run_backup(Racing(), tmp_path, dest=dest)
    assert dest.read_bytes() == b"theirs"
    assert files_in(tmp_path) == ["race.sql"]


def test_leftover_part_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "b.sql"
    part = tmp_path / "b.sql.part"
    part.write_bytes(b"someone else's")
    with pytest.raises(errors.UsageError, match=r"b\.sql\.part already exists"):
        run_backup(FakeBackend(), tmp_path, dest=dest)
    assert part.read_bytes() == b"someone else's"
    assert not dest.exists()


def test_truncated_download_is_retried_from_the_start(tmp_path: Path) -> None:
    db = FakeBackend(cut=2)
    result, said = run_backup(db, tmp_path, attempts=3)
    assert db.downloads == 3 and result.attempts == 3
    assert result.path.read_bytes() == db.dump
    assert backups.verify_backup(result.path).bytes == len(db.dump)
    assert sum("starting it again" in line for line in said) == 2


def test_silently_short_download_is_caught_as_an_incomplete_dump(tmp_path: Path) -> None:
    db = FakeBackend(cut=1, silent_cut=True)
    result, _ = run_backup(db, tmp_path)
    assert db.downloads == 2
    assert result.path.read_bytes() == db.dump


@pytest.mark.parametrize("silent", [False, True])
def test_download_failing_every_time_leaves_nothing(tmp_path: Path, silent: bool) -> None:
    db = FakeBackend(cut=99, silent_cut=silent)
    with pytest.raises(errors.DownloadError, match="failed 2 times") as caught:
        run_backup(db, tmp_path, attempts=2)
    assert caught.value.exit_code == 4
    assert db.downloads == 2
    assert files_in(tmp_path / "backups") == []


def test_other_failure_while_writing_removes_the_part_file(tmp_path: Path) -> None:
    db = FakeBackend(download_error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_backup(db, tmp_path)
    assert db.downloads == 1  # only download errors are retried
    assert files_in(tmp_path / "backups") == []


def test_export_failure_leaves_no_files_and_explains_fts5(tmp_path: Path) -> None:
    fts = errors.SqlError("D1 Export error: cannot export databases with Virtual Tables (fts5)")
    with pytest.raises(errors.SqlError) as caught:
        run_backup(FakeBackend(export_error=fts), tmp_path)
    assert caught.value.hint and "Time Travel" in caught.value.hint
    assert files_in(tmp_path / "backups") == []

    with pytest.raises(errors.PollTimeout):
        run_backup(FakeBackend(export_error=errors.PollTimeout("export poll")), tmp_path)
    assert files_in(tmp_path / "backups") == []


def test_sidecar_write_failure_removes_the_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(path: Path, data: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backups, "_write_json_atomically", boom)
    with pytest.raises(errors.DiskFull, match=r"sidecar .* the disk is full") as caught:
        run_backup(FakeBackend(), tmp_path)
    assert caught.value.exit_code == 4
    assert files_in(tmp_path / "backups") == []


# --- proof against the database ------------------------------------------------------


def rows_of_t(dump: bytes, keep: int) -> bytes:
    """`dump` with only the first `keep` rows of table t."""
    lines = dump.splitlines(keepends=True)
    rows = [ln for ln in lines if ln.startswith(b'INSERT INTO "t"')]
    return b"".join(ln for ln in lines if ln not in rows[keep:])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html><body>Service temporarily unavailable</body></html>", "it is an HTML page"),
        (b'{"success":false,"errors":[{"code":10000}]}', "it is a JSON document"),
        (None, "it holds 40 rows of t, which had 50 right before the export and 50 right after"),
    ],
    ids=["html", "json", "cut-at-a-statement"],
)
def test_a_download_that_is_not_the_database_is_a_failed_backup(
    tmp_path: Path, body: bytes | None, says: str
) -> None:
    db = FakeBackend()
    db.body = body if body is not None else rows_of_t(db.dump, 40)
    with pytest.raises(errors.InvalidDump, match=re.escape(says)) as caught:
        run_backup(db, tmp_path, attempts=2)
    assert caught.value.exit_code == 4 and db.downloads == 2
    assert caught.value.hint and caught.value.hint.startswith("Nothing was saved.")
    assert files_in(tmp_path / "backups") == []


def test_rows_written_during_the_export_stay_within_the_two_counts(tmp_path: Path) -> None:
    class Busy(FakeBackend):
        def export(
            self, options: ExportOptions, on_message: MessageCallback | None = None
        ) -> ExportHandle:
            handle = super().export(options, on_message)
            self.db.execute("INSERT INTO t VALUES (50), (51)")  # after the snapshot
            return handle

    result, _ = run_backup(Busy(), tmp_path)
    assert result.contents.rows == {"t": 50}
    assert (result.rows_before, result.rows_after) == ({"t": 50}, {"t": 52})
    side = json.loads(result.sidecar.read_text())
    assert side["database_rows"] == {"before_export": {"t": 50}, "after_export": {"t": 52}}


def test_a_dump_without_an_object_or_with_one_not_asked_for_is_refused(tmp_path: Path) -> None:
    indexed = FakeBackend(holds=SEED + "CREATE INDEX t_x ON t (x);")
    indexed.body = indexed.dump.replace(b"CREATE INDEX t_x ON t (x);\n", b"")
    with pytest.raises(errors.InvalidDump, match="it lacks index t_x"):
        run_backup(indexed, tmp_path, attempts=1)

    other = FakeBackend()
    other.body = other.dump + b"CREATE TABLE stranger (y);\n"
    with pytest.raises(errors.InvalidDump, match="creates table stranger, which prod-db does not"):
        run_backup(other, tmp_path, attempts=1)

    data_only = FakeBackend()
    data_only.body = data_only.dump  # with its CREATE TABLE, though data only is asked
    with pytest.raises(errors.InvalidDump, match="creates table t though only data was asked"):
        run_backup(data_only, tmp_path, attempts=1, options=ExportOptions(no_schema=True))

    schema_only = FakeBackend()
    schema_only.body = schema_only.dump
    with pytest.raises(errors.InvalidDump, match=r"holds rows \(50 in t\) though only the schema"):
        run_backup(schema_only, tmp_path, attempts=1, options=ExportOptions(no_data=True))
    assert files_in(tmp_path / "backups") == []


@pytest.mark.parametrize("remote", [False, True])  # remotely, counted during the download
def test_a_schema_change_during_the_export_fails_the_backup(tmp_path: Path, remote: bool) -> None:
    class Migrating(FakeBackend):
        def export(
            self, options: ExportOptions, on_message: MessageCallback | None = None
        ) -> ExportHandle:
            handle = super().export(options, on_message)
            self.db.execute("CREATE TABLE late (y)")
            return handle

    db = Migrating(remote=remote)
    with pytest.raises(errors.InvalidDump, match="changed while it was exported") as caught:
        run_backup(db, tmp_path)
    assert "table late" in str(caught.value) and db.downloads == 1  # not retried
    assert files_in(tmp_path / "backups") == []


def test_a_table_that_does_not_exist_is_refused_before_exporting(tmp_path: Path) -> None:
    db = FakeBackend(export_error=errors.ServerError("export must not run"))
    with pytest.raises(errors.NotFound, match="prod-db has no table named ghost"):
        run_backup(db, tmp_path, options=ExportOptions(tables=("t", "ghost")))


# --- reading and verifying ------------------------------------------------------------


@pytest.fixture
def made(tmp_path: Path) -> backups.BackupResult:
    return run_backup(FakeBackend(), tmp_path)[0]


def test_verify_rejects_a_tampered_or_truncated_dump(made: backups.BackupResult) -> None:
    data = made.path.read_bytes()
    made.path.write_bytes(data.replace(b"CREATE TABLE t", b"CREATE TABLE u", 1))
    with pytest.raises(errors.InputError, match="damaged") as caught:
        backups.verify_backup(made.path)
    assert caught.value.exit_code == 2 and caught.value.hint
    made.path.write_bytes(data[:-10])
    with pytest.raises(errors.InputError, match="damaged"):
        backups.verify_backup(made.path)


def test_missing_sidecar_means_not_a_backup(made: backups.BackupResult) -> None:
    made.sidecar.unlink()
    with pytest.raises(errors.InputError, match="not a d1deploy backup") as caught:
        backups.verify_backup(made.path)
    assert caught.value.hint


def test_sidecar_path_given_instead_of_the_dump(made: backups.BackupResult) -> None:
    with pytest.raises(errors.InputError) as caught:
        backups.read_sidecar(made.sidecar)
    assert caught.value.hint and made.path.name in caught.value.hint


def test_missing_dump_with_sidecar(made: backups.BackupResult) -> None:
    made.path.unlink()
    with pytest.raises(errors.InputError, match="missing"):
        backups.verify_backup(made.path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: "not json",
        lambda d: json.dumps([d]),
        lambda d: json.dumps({**d, "format": "other"}),
        lambda d: json.dumps({**d, "sha256": "xyz"}),
        lambda d: json.dumps({**d, "bytes": True}),
        lambda d: json.dumps({**d, "created_at": "yesterday"}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "database"}),
    ],
)
def test_malformed_sidecar_is_refused(
    made: backups.BackupResult, damage: Callable[[dict[str, object]], str]
) -> None:
    made.sidecar.write_text(damage(json.loads(made.sidecar.read_text())))
    with pytest.raises(errors.InputError, match="not a d1deploy backup sidecar"):
        backups.read_sidecar(made.path)


# --- restore from a backup ------------------------------------------------------------


LEDGER = """
CREATE TABLE d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL);
INSERT INTO d1_migrations (name) VALUES ('0001_users.sql');
"""


def test_restore_refuses_a_non_empty_target_unless_forced(made: backups.BackupResult) -> None:
    target = FakeBackend(holds=LEDGER + "CREATE TABLE users (x);")
    with pytest.raises(errors.Refused, match="2 tables") as caught:
        restoring.restore_from_backup(target, made.path)
    assert caught.value.exit_code == 5
    assert caught.value.hint and "--force" in caught.value.hint
    assert target.imported == []

    said: list[str] = []
    result = restoring.restore_from_backup(target, made.path, force=True, notify=said.append)
    assert target.imported == [made.path.read_bytes()]
    assert result.tables_before == ("d1_migrations", "users")
    assert result.bookmark_before == "bm-now"
    assert any("restore --bookmark bm-now" in line for line in said)
    assert (result.num_queries, result.rows_written, result.final_bookmark) == (3, 2, "bm-final")
    assert result.rows == (restoring.TableRows("t", 50, 0, 50),) and result.verified


def test_data_only_backup_into_existing_tables_says_force_is_expected(tmp_path: Path) -> None:
    made, _ = run_backup(FakeBackend(), tmp_path, options=ExportOptions(no_schema=True))
    with pytest.raises(errors.Refused, match="1 table ") as caught:
        restoring.restore_from_backup(FakeBackend(holds="CREATE TABLE t (x);"), made.path)
    assert caught.value.hint and "data only" in caught.value.hint


def test_restore_refuses_a_tampered_backup_before_touching_the_target(
    made: backups.BackupResult,
) -> None:
    made.path.write_bytes(made.path.read_bytes() + b"DROP TABLE t;\n")
    target = FakeBackend(holds="")
    with pytest.raises(errors.InputError, match="damaged"):
        restoring.restore_from_backup(target, made.path)
    assert target.imported == []


def test_restore_gunzips_into_a_temporary_file_it_removes(tmp_path: Path) -> None:
    source = FakeBackend()
    made, _ = run_backup(source, tmp_path, gzip=True)
    seen: list[Path] = []

    class Target(FakeBackend):
        def import_file(
            self, path: Path, on_message: MessageCallback | None = None
        ) -> ImportResult:
            seen.append(path)
            assert mode(path) == 0o600
            return super().import_file(path, on_message)

    target = Target(holds="")
    result = restoring.restore_from_backup(target, made.path)
    assert target.imported == [source.dump]
    assert result.source and result.source.gzip and result.tables_before == ()
    assert seen[0].name == made.path.name and not seen[0].exists()


def test_restore_reports_a_gzip_backup_that_is_not_gzip(tmp_path: Path) -> None:
    made, _ = run_backup(FakeBackend(), tmp_path)
    side = json.loads(made.sidecar.read_text())
    side["options"]["gzip"] = True
    made.sidecar.write_text(json.dumps(side))
    made.path.write_bytes(gzip.compress(b"PRAGMA defer_foreign_keys=TRUE;\n")[:-4])
    side["bytes"] = made.path.stat().st_size
    side["sha256"] = hashlib.sha256(made.path.read_bytes()).hexdigest()
    made.sidecar.write_text(json.dumps(side))
    with pytest.raises(errors.InputError, match="not valid gzip"):
        restoring.restore_from_backup(FakeBackend(holds=""), made.path)


def test_a_dump_without_a_sidecar_is_checked_and_restored_as_unverified(
    made: backups.BackupResult,
) -> None:
    made.sidecar.unlink()
    target = FakeBackend(holds="")
    said: list[str] = []
    result = restoring.restore_from_backup(target, made.path, notify=said.append)
    assert not result.verified and result.source is None
    assert any("no sidecar" in line and "(unverified)" in line for line in said)
    assert result.rows == (restoring.TableRows("t", 50, 0, 50),)

    made.path.write_bytes(rows_of_t(made.path.read_bytes(), 10)[:-3])  # cut mid-statement
    with pytest.raises(errors.InputError, match="is not a complete D1 dump: it ends inside"):
        restoring.restore_from_backup(FakeBackend(holds=""), made.path)


def test_a_gzip_dump_never_inflates_past_the_room_to_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made, _ = run_backup(FakeBackend(), tmp_path, gzip=True)
    plain = gzip.decompress(made.path.read_bytes())
    monkeypatch.setattr(backups, "free_space", lambda _folder: len(plain))
    target = FakeBackend(holds="")
    restoring.restore_from_backup(target, made.path)  # exactly the room it needs
    assert target.imported == [plain]

    made.sidecar.unlink()
    monkeypatch.setattr(backups, "free_space", lambda _folder: len(plain) - 1)
    with pytest.raises(errors.DiskFull, match=f"inflates to more than {len(plain) - 1:,} bytes"):
        restoring.restore_from_backup(FakeBackend(holds=""), made.path)


def test_no_room_for_the_import_copy_is_said_before_anything_changes(
    made: backups.BackupResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "free_space", lambda _folder: 100)
    target = FakeBackend(holds="")
    with pytest.raises(errors.DiskFull, match=r"needs 1.7 kB .* for the import copy") as caught:
        restoring.restore_from_backup(target, made.path)
    assert "TMPDIR" in (caught.value.hint or "") and target.imported == []


def test_a_disk_filling_up_under_the_import_copy_leaves_nothing(
    made: backups.BackupResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Path] = []

    def full(blocks: object, dest: Path, *args: object, **kwargs: object) -> None:
        seen.append(dest)
        dest.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dumps, "write_importable", full)
    target = FakeBackend(holds="")
    with pytest.raises(errors.DiskFull, match=r"writing the import copy of .* the disk is full"):
        restoring.restore_from_backup(target, made.path)
    assert target.imported == [] and not seen[0].exists() and not seen[0].parent.exists()


def test_a_failed_import_names_the_users_file_not_the_copy(made: backups.BackupResult) -> None:
    class Failing(FakeBackend):
        def import_file(
            self, path: Path, on_message: MessageCallback | None = None
        ) -> ImportResult:
            raise errors.SqlError(
                f"import of {path.name} failed at {path}: no such table", file=str(path), line=7
            )

    with pytest.raises(errors.SqlError) as caught:
        restoring.restore_from_backup(Failing(holds=""), made.path)
    assert caught.value.file == str(made.path) and caught.value.line is None
    assert str(made.path) in caught.value.message and "d1deploy-restore-" not in str(caught.value)


def test_rows_that_do_not_arrive_fail_the_restore_with_the_numbers(
    made: backups.BackupResult,
) -> None:
    class Lossy(FakeBackend):
        def import_file(
            self, path: Path, on_message: MessageCallback | None = None
        ) -> ImportResult:
            result = super().import_file(path, on_message)
            self.db.execute("DELETE FROM t WHERE x < 3")
            return result

    with pytest.raises(errors.ChangeFailed, match=r"t holds 47 rows where 50 were expected"):
        restoring.restore_from_backup(Lossy(holds=""), made.path)


USED = (
    f"{ledger.create_ledger_sql('d1_migrations')};\n{ledger.CREATE_HISTORY};\n"
    "CREATE TABLE _d1deploy_lock (id INTEGER PRIMARY KEY, holder TEXT);\n"
    "CREATE TABLE _d1deploy_meta (key TEXT PRIMARY KEY, value TEXT);\n"
)


def test_d1deploys_own_tables_never_block_or_come_with_a_restore(tmp_path: Path) -> None:
    source = local_db(tmp_path / "src.sqlite", SOURCE_SQL + USED)
    source.run(
        [
            Statement("INSERT INTO d1_migrations (name) VALUES ('0001_x.sql')"),
            Statement("INSERT INTO _d1deploy_history (name, event) VALUES ('0001_x.sql', 'apply')"),
            Statement(
                "INSERT INTO _d1deploy_lock (id, holder) VALUES (1, 'the run that backs up')"
            ),
            Statement("INSERT INTO _d1deploy_meta VALUES ('proof', 'source')"),
        ]
    )
    made, _ = run_backup(source, tmp_path)

    # A database d1deploy used but that holds nothing is empty: no --force needed.
    used = local_db(tmp_path / "used.sqlite", USED)
    used.run([Statement("INSERT INTO _d1deploy_meta VALUES ('proof', 'target')")])
    result = restoring.restore_from_backup(used, made.path)
    assert snapshot(used)[1]["d1_migrations"] == snapshot(source)[1]["d1_migrations"]
    assert snapshot(used)[1]["_d1deploy_lock"] == []  # a lease is not data
    assert snapshot(used)[1]["_d1deploy_meta"] == [("proof", "target")]
    assert {r.table for r in result.rows} >= {"d1_migrations", "_d1deploy_history", "user_deposits"}

    # Data only into a database with its own ledger: that ledger stays.
    data, _ = run_backup(source, tmp_path, options=ExportOptions(no_schema=True))
    staged = local_db(tmp_path / "staged.sqlite", SOURCE_SQL + USED)
    staged.run(
        [
            Statement("DROP TRIGGER audit_insert"),  # else it adds rows the backup has
            Statement('DELETE FROM "audit log"'),
            Statement("DELETE FROM user_deposits"),
            Statement("INSERT INTO d1_migrations (name) VALUES ('0001_x.sql')"),
        ]
    )
    said: list[str] = []
    result = restoring.restore_from_backup(staged, data.path, force=True, notify=said.append)
    assert result.kept == ("d1_migrations",)
    assert "Keeping staged's own d1_migrations (1 row)" in "\n".join(said)
    assert snapshot(staged)[1]["user_deposits"] == snapshot(source)[1]["user_deposits"]
    assert len(snapshot(staged)[1]["d1_migrations"]) == 1


def test_a_forced_restore_of_tables_the_target_has_is_refused_before_importing(
    made: backups.BackupResult,
) -> None:
    target = FakeBackend(holds="CREATE TABLE t (x); CREATE TABLE mine (y);")
    with pytest.raises(errors.Refused, match="creates t, which prod-db already has"):
        restoring.restore_from_backup(target, made.path, force=True)
    assert target.imported == []


# --- round trips through the local backend ---------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_local_backup_restores_into_an_empty_database_identically(tmp_path: Path, gz: bool) -> None:
    source = local_db(tmp_path / "src.sqlite", SOURCE_SQL)
    made, _ = run_backup(source, tmp_path, gzip=gz)
    assert made.bookmark

    target = local_db(tmp_path / "fresh.sqlite")
    result = restoring.restore_from_backup(target, made.path)
    assert result.num_queries > 8
    assert snapshot(target) == snapshot(source)
    rows = snapshot(target)[1]["user_deposits"]
    assert rows[0][2] == "홍길동" and rows[0][5] == b"\x00\xff\x10"
    assert rows[1][2:] == (None, 0, None, None)
    assert rows[3][2] == "line one\nline two\rcr"

    with pytest.raises(errors.Refused, match=r"2 tables \(audit log, user_deposits\)"):
        restoring.restore_from_backup(target, made.path)


def test_local_backup_of_a_table_subset(tmp_path: Path) -> None:
    source = local_db(tmp_path / "src.sqlite", SOURCE_SQL)
    made, _ = run_backup(source, tmp_path, options=ExportOptions(tables=("user_deposits",)))
    target = local_db(tmp_path / "fresh.sqlite")
    restoring.restore_from_backup(target, made.path)
    assert restoring.user_tables(target) == ("user_deposits",)


def test_local_fts5_export_failure_keeps_its_own_hint(tmp_path: Path) -> None:
    source = local_db(tmp_path / "src.sqlite", "CREATE VIRTUAL TABLE docs USING fts5(body);")
    with pytest.raises(errors.SqlError, match="Virtual Tables") as caught:
        run_backup(source, tmp_path)
    assert caught.value.hint
    assert files_in(tmp_path / "backups") == []


# --- Time Travel -----------------------------------------------------------------------


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def count(db: Backend, table: str = "user_deposits") -> object:
    (result,) = db.run([Statement(f"SELECT count(*) FROM {table}")], read_only=True)
    return result.first_value()


def test_restore_point_by_bookmark_returns_the_local_database_there(tmp_path: Path) -> None:
    clock = Clock(NOW)
    db = LocalBackend(tmp_path / "db.sqlite", clock=clock)
    db.run([Statement(s) for s in ("CREATE TABLE user_deposits (id INTEGER PRIMARY KEY)",)])
    db.run([Statement("INSERT INTO user_deposits VALUES (1)")])
    mark = db.bookmark()
    clock.now += timedelta(minutes=5)
    db.run([Statement("INSERT INTO user_deposits VALUES (2)")])

    point = restoring.describe_restore_point(db, bookmark=mark, timestamp=None, now=clock)
    assert point.bookmark == mark and not point.is_current
    assert point.point_in_time is None and point.span is None  # no history to date it
    result = restoring.restore_point(db, point)
    assert count(db) == 1
    assert result.previous_bookmark == point.current_bookmark

    # The previous bookmark is the undo.
    undo = restoring.describe_restore_point(
        db, bookmark=result.previous_bookmark, timestamp=None, now=clock
    )
    restoring.restore_point(db, undo)
    assert count(db) == 2


def test_restore_point_by_timestamp_reports_the_span(tmp_path: Path) -> None:
    clock = Clock(NOW)
    db = LocalBackend(tmp_path / "db.sqlite", clock=clock)
    db.run([Statement("CREATE TABLE user_deposits (id INTEGER PRIMARY KEY)")])
    mark = db.bookmark()
    clock.now += timedelta(hours=2)
    db.run([Statement("INSERT INTO user_deposits VALUES (1)")])
    db.bookmark()
    clock.now += timedelta(hours=1)

    point = restoring.describe_restore_point(
        db, bookmark=None, timestamp=NOW + timedelta(hours=1), now=clock
    )
    assert point.bookmark == mark
    assert point.span == timedelta(hours=2)
    restoring.restore_point(db, point)
    assert count(db) == 0


def test_restore_point_dates_a_bookmark_from_the_history(tmp_path: Path) -> None:
    db = local_db(tmp_path / "db.sqlite")
    db.run([Statement(ledger.CREATE_HISTORY)])
    insert = (
        f"INSERT INTO {ledger.HISTORY_TABLE} (name, event, bookmark_before, duration_ms, at)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    db.run(
        [
            Statement(insert, ("000_base.sql", "apply", "bm-0", 3, "2024-04-01T00:00:00.000Z")),
            Statement(insert, ("001_x.sql", "apply", "bm-1", 5, "2024-05-01T10:30:45.000Z")),
            Statement(insert, ("002_y.sql", "apply", "bm-1", 7, "2024-05-01T10:30:46.000Z")),
            Statement(insert, ("003_torn.sql", "apply", "bm-1", None, "2024-05-01T10:31:00Z")),
        ]
    )
    point = restoring.describe_restore_point(db, bookmark="bm-1", timestamp=None, now=lambda: NOW)
    assert point.migrations_since == ("001_x.sql", "002_y.sql")
    assert point.point_in_time == datetime(2024, 5, 1, 10, 30, 45, tzinfo=UTC)
    assert point.span == timedelta(hours=2)

    unknown = restoring.describe_restore_point(db, bookmark="bm-9", timestamp=None, now=lambda: NOW)
    assert unknown.migrations_since == () and unknown.span is None


def test_restore_point_arguments_are_checked(tmp_path: Path) -> None:
    db = FakeBackend()
    with pytest.raises(errors.UsageError, match="exactly one"):
        restoring.describe_restore_point(db, bookmark=None, timestamp=None)
    with pytest.raises(errors.UsageError, match="exactly one"):
        restoring.describe_restore_point(db, bookmark="b", timestamp=NOW)
    with pytest.raises(errors.UsageError, match="future"):
        restoring.describe_restore_point(
            db, bookmark=None, timestamp=NOW + timedelta(seconds=1), now=lambda: NOW
        )
    naive = restoring.describe_restore_point(
        db, bookmark=None, timestamp=datetime(2024, 5, 1, 12), now=lambda: NOW
    )
    assert naive.bookmark == "bm-at" and naive.span == timedelta(minutes=30, seconds=45)
    result = restoring.restore_point(db, naive)
    assert db.restored == ["bm-at"] and result.previous_bookmark == "bm-now"


# --- the emulator, through the REST client -----------------------------------------------


@pytest.fixture
def remote(emulator: D1Emulator) -> Iterator[Callable[[str], RemoteBackend]]:
    """Opens a new emulated D1 database through the real client."""
    opened: list[RemoteBackend] = []

    def make(name: str) -> RemoteBackend:
        ref = emulator.create_database(name)
        client = D1Client(
            token=emulator.token,
            account_id=emulator.account_id,
            base_url=emulator.base_url,
            transport=emulator.transport(),
            sleep=lambda _seconds: None,
        )
        db = RemoteBackend(client, DatabaseInfo(uuid=ref.uuid, name=name))
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


def seeded_remote(remote: Callable[[str], RemoteBackend], tmp_path: Path) -> RemoteBackend:
    db = remote("prod")
    script = tmp_path / "seed.sql"
    script.write_text(SOURCE_SQL, encoding="utf-8")
    db.import_file(script)
    return db


def signed_requests(emulator: D1Emulator) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.path.startswith(SIGNED_PREFIX)]


@pytest.mark.parametrize("gz", [False, True])
def test_emulator_backup_restores_identically_without_leaking_the_token(
    emulator: D1Emulator,
    remote: Callable[[str], RemoteBackend],
    tmp_path: Path,
    gz: bool,
) -> None:
    source = seeded_remote(remote, tmp_path)
    made, said = run_backup(source, tmp_path, gzip=gz)
    assert "blocks every query to prod" in said[0]
    assert backups.verify_backup(made.path).bookmark == made.bookmark
    assert mode(made.path) == 0o600 and mode(made.sidecar) == 0o600

    fresh = remote("fresh")
    result = restoring.restore_from_backup(fresh, made.path)
    assert result.final_bookmark and result.num_queries > 8
    assert snapshot(fresh) == snapshot(source)

    local = local_db(tmp_path / "copy.sqlite")
    restoring.restore_from_backup(local, made.path)
    assert snapshot(local) == snapshot(source)

    # The export download and the import upload both went to presigned URLs, bare.
    methods = sorted(r.method for r in signed_requests(emulator))
    assert methods.count("GET") == 1 and methods.count("PUT") == 2
    assert all("authorization" not in r.headers for r in signed_requests(emulator))
    assert emulator.auth_leaks == 0


def test_emulator_truncated_download_is_retried_to_a_verified_file(
    emulator: D1Emulator, remote: Callable[[str], RemoteBackend], tmp_path: Path
) -> None:
    source = seeded_remote(remote, tmp_path)
    emulator.faults.add("GET", "^/__signed/exports/", truncate=100, times=1)
    made, said = run_backup(source, tmp_path)
    assert made.attempts == 2
    assert any("starting it again" in line for line in said)
    assert backups.verify_backup(made.path).bytes == made.bytes > 100


def test_emulator_download_truncated_every_time_leaves_nothing(
    emulator: D1Emulator, remote: Callable[[str], RemoteBackend], tmp_path: Path
) -> None:
    source = seeded_remote(remote, tmp_path)
    emulator.faults.add("GET", "^/__signed/exports/", truncate=100)
    with pytest.raises(errors.DownloadError) as caught:
        run_backup(source, tmp_path, attempts=3)
    assert caught.value.exit_code == 4
    assert len([r for r in signed_requests(emulator) if r.method == "GET"]) == 3
    assert files_in(tmp_path / "backups") == []


def test_emulator_export_failure_leaves_nothing(
    emulator: D1Emulator, remote: Callable[[str], RemoteBackend], tmp_path: Path
) -> None:
    source = seeded_remote(remote, tmp_path)
    emulator.faults.add(export_fails="D1 Export error: out of cheese")
    with pytest.raises(errors.D1DeployError, match="out of cheese"):
        run_backup(source, tmp_path)
    assert files_in(tmp_path / "backups") == []


def test_emulator_refuses_to_restore_into_a_non_empty_database(
    remote: Callable[[str], RemoteBackend], tmp_path: Path
) -> None:
    source = seeded_remote(remote, tmp_path)
    made, _ = run_backup(source, tmp_path)
    with pytest.raises(errors.Refused, match="2 tables"):
        restoring.restore_from_backup(source, made.path)


def test_emulator_time_travel_by_bookmark_and_undo(
    remote: Callable[[str], RemoteBackend], tmp_path: Path
) -> None:
    db = seeded_remote(remote, tmp_path)
    before = snapshot(db)
    mark = db.bookmark()
    db.run([Statement("DELETE FROM user_deposits WHERE user_id > 1")])
    after = snapshot(db)
    assert after != before

    point = restoring.describe_restore_point(db, bookmark=mark, timestamp=None)
    assert not point.is_current
    result = restoring.restore_point(db, point)
    assert snapshot(db) == before
    assert result.previous_bookmark

    undo = restoring.describe_restore_point(db, bookmark=result.previous_bookmark, timestamp=None)
    restoring.restore_point(db, undo)
    assert snapshot(db) == after
