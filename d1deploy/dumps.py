"""D1 dump files: read them a statement at a time, and make them importable.

D1's exporter writes each table's CREATE TABLE followed by its rows, in the order the
tables appear in `sqlite_schema`. After a parent table has been rebuilt (create new,
copy, drop, rename: what the row-loss guard asks for), it comes after its children, so
the dump inserts child rows into a table whose parent does not exist yet and the import
fails, even with `PRAGMA defer_foreign_keys` (which defers rows, not missing tables;
workers-sdk #13272). `importable()` moves every CREATE TABLE to the front, keeping
everything else in order, so a d1deploy backup always restores.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

_HEAD = re.compile(r"\s*(PRAGMA|CREATE\s+TABLE)\b", re.IGNORECASE)


def statements(path: Path) -> Iterator[str]:
    """The statements of a SQL file, streamed: memory holds one statement, not the file.

    D1 dumps write every row on one line (newlines inside text are escaped), so this
    is linear; a statement spanning lines is gathered until SQLite calls it complete.
    """
    pending: list[str] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for line in fh:
            pending.append(line)
            if ";" in line and sqlite3.complete_statement("".join(pending)):
                yield "".join(pending)
                pending.clear()
    tail = "".join(pending)
    if tail.strip():
        yield tail


def private_file(path: Path) -> int:
    """Create `path` for writing, readable by its owner only: dumps hold the data."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def importable(source: Path, dest: Path) -> Path:
    """Write `source` to `dest` (mode 0600) with the PRAGMA and CREATE TABLE statements
    first."""
    with open(private_file(dest), "w", encoding="utf-8", newline="") as out:
        for ddl in (s for s in statements(source) if _HEAD.match(s)):
            out.write(ddl)
        for rest in (s for s in statements(source) if not _HEAD.match(s)):
            out.write(rest)
    return dest
