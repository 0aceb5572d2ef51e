"""Benchmark: how fast `sqlsplit.split` cuts a large D1-style dump.

`run()` writes a dump the way D1's export shapes it (the `PRAGMA defer_foreign_keys`
line, a CREATE TABLE, then one INSERT per row, with strings holding `;`, quotes and
`--`) into a temporary directory, reads it back with `read_sql_file` and times `split`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from d1deploy import sqlsplit

_HEADER = (
    "PRAGMA defer_foreign_keys=TRUE;\n"
    'CREATE TABLE "messages" (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,'
    " body TEXT, note TEXT);\n"
)
_ROW = (
    'INSERT INTO "messages" ("id","user_id","body","note") VALUES'
    "({id},{user},'hello; it''s row {id} -- not a comment','a \"quoted\" note; /* no */');\n"
)


def write_dump(path: Path, size_mb: int) -> int:
    """Write a dump of about `size_mb` MB to `path`; return its number of statements."""
    target = size_mb * 1_000_000
    written, rows = len(_HEADER), 0
    with path.open("w", encoding="utf-8") as out:
        out.write(_HEADER)
        while written < target:
            batch = "".join(_ROW.format(id=rows + i, user=(rows + i) % 977) for i in range(10_000))
            out.write(batch)
            written += len(batch)
            rows += 10_000
    return rows + 2


def run(size_mb: int = 100) -> dict[str, float]:
    """Split a generated dump of `size_mb` MB three times; report the median."""
    with tempfile.TemporaryDirectory(prefix="d1deploy-bench-") as tmp:
        path = Path(tmp) / "dump.sql"
        expected = write_dump(path, size_mb)
        text = sqlsplit.read_sql_file(path)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        statements = sqlsplit.split(text, file="dump.sql")
        times.append(time.perf_counter() - started)
        if len(statements) != expected:
            raise RuntimeError(f"split found {len(statements)} statements, expected {expected}")
        del statements
    seconds = statistics.median(times)
    mb = len(text.encode("utf-8")) / 1_000_000
    return {"mb": round(mb, 1), "seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 1)}


if __name__ == "__main__":
    print(run())
