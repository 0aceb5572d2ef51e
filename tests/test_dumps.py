"""Dump files: streamed statements, and dumps made importable after a parent rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from d1deploy import dumps, errors
from d1deploy.backend import ExportOptions, Statement
from d1deploy.local import LocalBackend

REBUILT_PARENT = [
    "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE child (id INTEGER PRIMARY KEY,"
    " parent_id INTEGER NOT NULL REFERENCES parent(id) ON DELETE CASCADE)",
    "INSERT INTO parent VALUES (1, 'a'), (2, 'b;\nwith a newline')",
    "INSERT INTO child VALUES (10, 1), (11, 2)",
    # The row-loss guard's advice: rebuild the parent without losing the children.
    "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '')",
    "INSERT INTO parent_new SELECT id, name FROM parent",
    "CREATE TEMP TABLE keep AS SELECT * FROM child",
    "DROP TABLE parent",
    "ALTER TABLE parent_new RENAME TO parent",
    "INSERT INTO child SELECT * FROM keep",
    "DROP TABLE keep",
]


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
