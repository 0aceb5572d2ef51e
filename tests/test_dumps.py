"""Dump files: streamed statements, and dumps made importable after a parent rebuild."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from d1deploy import dumps, errors
from d1deploy.backend import ExportOptions, Statement
from d1deploy.local import LocalBackend
from tests.helpers import REBUILT_PARENT


def dump_of(db: LocalBackend, path: Path) -> Path:
    path.write_bytes(b"".join(db.export(ExportOptions()).download()))
    return path


def rows(db: LocalBackend, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in db.run([Statement(sql)], read_only=True)[0].rows]


def test_a_dump_taken_after_a_parent_rebuild_imports_once_made_importable(tmp_path: Path) -> None:
    source = LocalBackend(tmp_path / "source.sqlite")
    source.run([Statement(s) for s in REBUILT_PARENT])
    dump = dump_of(source, tmp_path / "dump.sql")

    # As exported, the child's rows come before the (rebuilt) parent table exists.
    with pytest.raises(errors.SqlError, match="no such table"):
        LocalBackend(tmp_path / "raw.sqlite").import_file(dump)

    fixed = dumps.importable(dump, tmp_path / "fixed.sql")
    target = LocalBackend(tmp_path / "target.sqlite")
    target.import_file(fixed)
    for table in ("parent", "child"):
        query = f"SELECT * FROM {table} ORDER BY id"
        assert rows(target, query) == rows(source, query)


def test_statements_are_read_whole_across_lines_and_chunks(tmp_path: Path) -> None:
    text = (
        b"PRAGMA defer_foreign_keys=TRUE;\n"
        b"CREATE TABLE t (\n  a TEXT DEFAULT ';'\n);\n"
        b"INSERT INTO t VALUES('x;y');\n"
        b"CREATE INDEX i ON t (a);"
    )
    for size in (1, 7, len(text)):
        seen: list[tuple[str, str | None, bytes]] = []
        blocks = [text[at : at + size] for at in range(0, len(text), size)]
        contents = dumps.scan(blocks, lambda *statement, seen=seen: seen.append(statement))
        assert seen == [
            ("pragma", None, b"PRAGMA defer_foreign_keys=TRUE;\n"),
            ("table", "t", b"CREATE TABLE t (\n  a TEXT DEFAULT ';'\n);\n"),
            ("insert", "t", b"INSERT INTO t VALUES('x;y');\n"),
            ("index", "i", b"CREATE INDEX i ON t (a);"),
        ]
        assert contents == dumps.DumpContents({"t": "table", "i": "index"}, {"t": 1}, 4, len(text))


def test_importable_keeps_everything_and_only_moves_tables_first(tmp_path: Path) -> None:
    source = tmp_path / "in.sql"
    source.write_text(
        "PRAGMA defer_foreign_keys=TRUE;\n"
        "CREATE TABLE a (x);\nINSERT INTO a VALUES(1);\n"
        "CREATE TABLE b (y);\nINSERT INTO b VALUES(2);\n"
        "CREATE INDEX ia ON a (x);\n",
        encoding="utf-8",
    )
    out = dumps.importable(source, tmp_path / "out.sql").read_text(encoding="utf-8")
    assert out == (
        "PRAGMA defer_foreign_keys=TRUE;\n"
        "CREATE TABLE a (x);\nCREATE TABLE b (y);\n"
        "INSERT INTO a VALUES(1);\nINSERT INTO b VALUES(2);\n"
        "CREATE INDEX ia ON a (x);\n"
    )


# -- DumpScanner: a dump checked as it streams ---------------------------------------------

SOURCE = [
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, photo BLOB)",
    'CREATE TABLE "audit log" (id INTEGER PRIMARY KEY, note TEXT)',
    "CREATE INDEX users_name ON users (name)",
    "CREATE VIEW named AS SELECT name FROM users WHERE name IS NOT NULL",
    "CREATE TRIGGER audit AFTER INSERT ON users BEGIN\n"
    "  INSERT INTO \"audit log\" (note) VALUES ('new; user');\nEND",
    "INSERT INTO users (name, photo) WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL "
    "SELECT x + 1 FROM n WHERE x < 3000) SELECT 'user '' ' || x || char(10) || ';', "
    "randomblob(x % 50) FROM n",
]


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    db = LocalBackend(tmp_path_factory.mktemp("scan") / "source.sqlite")
    db.run([Statement(s) for s in SOURCE])
    return b"".join(db.export(ExportOptions()).download())


WHOLE = dumps.DumpContents(
    objects={
        "users": "table",
        "audit log": "table",
        "users_name": "index",
        "audit": "trigger",
        "named": "view",
    },
    rows={"users": 3000, "audit log": 3000},
    statements=6006,
    bytes=0,  # replaced by the dump's size
)


def whole(dump: bytes) -> dumps.DumpContents:
    return dumps.DumpContents(WHOLE.objects, WHOLE.rows, WHOLE.statements, len(dump))


@pytest.mark.parametrize("size", [1, 7, 100, 4096, 65536, 1 << 20])
def test_any_chunking_reads_the_same(dump: bytes, size: int) -> None:
    blocks = [dump[at : at + size] for at in range(0, len(dump), size)]
    assert dumps.scan(blocks) == whole(dump)


def test_rows_that_are_not_together_are_still_counted_exactly(dump: bytes) -> None:
    # Not how D1 writes, but a run of rows must never swallow another table's lines.
    lines = dump.splitlines(keepends=True)
    rows = [ln for ln in lines if ln.startswith(b'INSERT INTO "users"')]
    others = [ln for ln in lines if not ln.startswith(b'INSERT INTO "users"')]
    mixed = others[:3] + rows[:100] + others[3:6] + rows[100:] + others[6:]
    assert dumps.scan([b"".join(mixed)]).rows == WHOLE.rows


def test_a_dump_cut_inside_a_statement_is_not_complete(dump: bytes) -> None:
    trigger = dump.index(b"CREATE TRIGGER")
    for end in (trigger + 30, dump.index(b"\n", trigger) + 1, len(dump) - 3):
        with pytest.raises(dumps.NotADump, match="ends inside the statement at line"):
            dumps.scan([dump[:end]])


def test_a_dump_cut_between_statements_reads_as_less(dump: bytes) -> None:
    cut = dump.index(b'INSERT INTO "audit log"')
    contents = dumps.scan([dump[:cut]])
    assert contents.rows == {"users": 3000}
    assert "audit log" in contents.objects and "users_name" not in contents.objects


def test_the_last_statement_may_lack_its_newline(dump: bytes) -> None:
    # `wrangler d1 export --local` joins the statements with newlines: none at the end.
    assert dumps.scan([dump.rstrip(b"\n")]).statements == WHOLE.statements
    crlf = dump.replace(b"\n", b"\r\n")
    assert dumps.scan([crlf[at : at + 999] for at in range(0, len(crlf), 999)]).rows == WHOLE.rows


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "it is empty"),
        (b"<!DOCTYPE html><html><title>503</title></html>", "it is an HTML page"),
        (b'{"success":false,"errors":[{"code":7500}]}', 'it is a JSON document, \'{"success"'),
        (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>", "an XML document"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 40, "it is gzip-compressed"),
        (b"SQLite format 3\x00" + b"\x00" * 40, "a SQLite database file"),
        (b"CREATE TABLE t (x);\nINSERT INTO t VALUES (1);\n", "it starts with 'CREATE TABLE"),
        (b"PRAGMA defer_foreign_keys=TRUE", "it starts with 'PRAGMA"),
        (b"\xef\xbb\xbfPRAGMA defer_foreign_keys=TRUE;\n", "a byte-order mark (BOM)"),
    ],
)
def test_what_is_not_a_dump_says_what_it_is(body: bytes, says: str) -> None:
    with pytest.raises(dumps.NotADump, match=re.escape(says)) as caught:
        dumps.scan([body[:5], body[5:]])
    assert caught.value.line == 1


def test_a_statement_that_never_ends_is_refused_before_it_fills_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dumps, "MAX_STATEMENT_BYTES", 10_000)
    scanner = dumps.DumpScanner()
    scanner.feed(dumps.START + b"\nINSERT INTO t VALUES('")
    with pytest.raises(dumps.NotADump, match="the statement at line 2 runs past"):
        for _ in range(100):
            scanner.feed(b"x" * 1000 + b"\n")


def test_gzip_is_inflated_on_the_fly_within_a_limit(tmp_path: Path, dump: bytes) -> None:
    path = tmp_path / "d.sql.gz"
    path.write_bytes(gzip.compress(dump))
    assert dumps.scan(dumps.chunks(path, limit=len(dump))) == whole(dump)
    with pytest.raises(dumps.TooLarge, match=f"more than {len(dump) - 1:,} bytes"):
        dumps.scan(dumps.chunks(path, limit=len(dump) - 1))


def test_importable_leaves_out_what_it_is_told_and_writes_whole_runs(
    tmp_path: Path, dump: bytes
) -> None:
    source = tmp_path / "d.sql"
    source.write_bytes(dump)
    contents, schema = dumps.schema_statements(dumps.chunks(source))
    kept = [text for _kind, name, text in schema if name != "audit log"]
    out = tmp_path / "out.sql"
    again = dumps.write_importable(
        dumps.chunks(source), out, kept, skip=lambda kind, name: name == "audit log"
    )
    assert again == contents == whole(dump)
    written = dumps.scan([out.read_bytes()])
    assert written.rows == {"users": 3000}
    assert set(written.objects) == {"users", "users_name", "audit", "named"}
