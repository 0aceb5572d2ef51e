"""D1's SQL dump format, written a statement per line: the one writer of `--local`'s
exports and of the test emulator's.

It follows D1's exporter line for line (workers-sdk `miniflare/src/workers/d1/
dumpSql.ts`, a port of SQLite shell's `.dump`): `PRAGMA defer_foreign_keys=TRUE;`
first, then per table in `sqlite_schema` rowid order its `CREATE TABLE` (with `IF NOT
EXISTS` when the name was quoted) and one `INSERT INTO "t" ("c",...) VALUES(...);` per
row, `sqlite_sequence` as `DELETE FROM sqlite_sequence;`, `sqlite_stat*` as `ANALYZE
sqlite_schema;`, `_cf_*`/`sqlite_*` tables skipped, then indexes, triggers and views;
no transaction lines; a virtual table refuses the whole export, as on D1.

Two things differ from D1's exporter on purpose:

- **The newline marker.** D1 writes every newline in text as `\\n` inside
  `replace('...','\\n',char(10))`, so a text that also holds a backslash followed by `n`
  comes back changed. This writer picks a marker the text does not contain (`\\n`, else
  `\\012`, else `(\\n0)`...), as SQLite's own shell does: every string round-trips, and
  the output is still SQL D1 imports.
- **Numbers**, by choice of the caller: `exact` (`--local`: a backup must restore what is
  there) writes every integer exactly and every real so that SQLite reads back the same
  double; `javascript` writes them as D1's exporter does, through JavaScript numbers
  (integers beyond 2**53 rounded), which is what the emulator plays.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Literal

from d1deploy.backend import SqlValue

VIRTUAL_TABLE_REFUSED = "D1 Export error: cannot export databases with Virtual Tables (fts5)"

Numbers = Literal["exact", "javascript"]

_TABLES_SQL = (
    "SELECT name, sql FROM sqlite_schema WHERE type == 'table' AND sql NOT NULL "
    "ORDER BY tbl_name = 'sqlite_sequence', rowid"
)
_REST_OF_SCHEMA_SQL = (
    "SELECT name, sql FROM sqlite_schema WHERE sql NOT NULL "
    "AND type IN ('index', 'trigger', 'view') ORDER BY type COLLATE NOCASE, rowid"
)


class DumpRefused(Exception):
    """The database cannot be exported; `str()` is D1's text, `tables` the culprits."""

    def __init__(self, message: str, tables: Sequence[str]) -> None:
        super().__init__(message)
        self.tables = tuple(tables)


def dump(
    conn: sqlite3.Connection,
    *,
    no_data: bool = False,
    no_schema: bool = False,
    tables: Sequence[str] = (),
    numbers: Numbers = "exact",
) -> Iterator[str]:
    """The dump's statements, one line each, streamed row by row.

    :raises DumpRefused: a table to export is a virtual table (before anything is yielded).
    """
    wanted = set(tables)
    exported = [
        (str(name), str(sql))
        for name, sql in conn.execute(_TABLES_SQL)
        if not wanted or name in wanted
    ]
    virtual = [name for name, sql in exported if sql.startswith("CREATE VIRTUAL TABLE")]
    if virtual:
        raise DumpRefused(VIRTUAL_TABLE_REFUSED, virtual)
    return _statements(conn, exported, wanted, no_data, no_schema, numbers)


def _statements(
    conn: sqlite3.Connection,
    exported: list[tuple[str, str]],
    wanted: set[str],
    no_data: bool,
    no_schema: bool,
    numbers: Numbers,
) -> Iterator[str]:
    yield "PRAGMA defer_foreign_keys=TRUE;"
    for name, sql in exported:
        if name == "sqlite_sequence":
            if not no_schema:
                yield "DELETE FROM sqlite_sequence;"
        elif re.match(r"sqlite_stat.", name):
            if not no_schema:
                yield "ANALYZE sqlite_schema;"
        elif name.startswith(("_cf_", "sqlite_")):
            continue
        elif not no_schema:
            # SQLite's shell (and so D1) injects IF NOT EXISTS when the name was quoted.
            quoted = re.search("CREATE TABLE ['\"]", sql)
            yield f"CREATE TABLE IF NOT EXISTS {sql[13:]};" if quoted else f"{sql};"
        if no_data:
            continue
        columns = [str(row[1]) for row in conn.execute(f"PRAGMA table_info={quote_id(name)}")]
        column_list = ",".join(map(quote_id, columns))
        select = f"SELECT {', '.join(map(quote_id, columns))} FROM {quote_id(name)}"
        for row in conn.execute(select):
            values = ",".join(literal(conn, value, numbers) for value in row)
            yield f"INSERT INTO {quote_id(name)} ({column_list}) VALUES({values});"
    if not no_schema:
        for name, sql in conn.execute(_REST_OF_SCHEMA_SQL):
            if not wanted or name in wanted:
                yield f"{sql};"


def quote_id(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(conn: sqlite3.Connection, value: SqlValue, numbers: Numbers = "exact") -> str:
    """`value` as a SQL literal of the dump."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return quote_text(value)
    if numbers == "javascript":
        return (
            js_number(float(value))
            if isinstance(value, float) or abs(value) > 2**53
            else str(value)
        )
    if isinstance(value, float):
        return _real(conn, value)
    return str(value)


def quote_text(value: str) -> str:
    """SQLite shell's `output_quoted_escaped_string`, with an unused newline marker."""
    if "\n" not in value and "\r" not in value:
        return "'" + value.replace("'", "''") + "'"
    newline = _unused(value, "\\n", "\\012")
    carriage = _unused(value, "\\r", "\\015")
    escaped = value.replace("'", "''").replace("\n", newline).replace("\r", carriage)
    text = f"'{escaped}'"
    if "\r" in value:
        text = f"replace({text},'{carriage}',char(13))"
    if "\n" in value:
        text = f"replace({text},'{newline}',char(10))"
    return text


def _unused(value: str, primary: str, secondary: str) -> str:
    if primary not in value:
        return primary
    if secondary not in value:
        return secondary
    suffix = 0
    while (candidate := f"({primary}{suffix})") in value:
        suffix += 1
    return candidate


def _real(conn: sqlite3.Connection, value: float) -> str:
    """A literal SQLite reads back as exactly `value`.

    The shortest decimal (JavaScript's, the same as `repr`) is what D1 writes. Older
    SQLite libraries misround a few of those on reading, so each one is checked with this
    library's own parser and replaced by an exact power-of-two product when it fails.
    """
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    text = repr(value)
    (parsed,) = conn.execute("SELECT CAST(? AS REAL)", (text,)).fetchone()
    if parsed == value:
        return text
    mantissa, exponent = math.frexp(value)
    factors = [f"CAST({int(mantissa * 2**53)} AS REAL)"]
    power = exponent - 53
    while abs(power) >= 62:
        factors.append(str(2**62))
        power -= 62 if power > 0 else -62
    if power:
        factors.append(str(2 ** abs(power)))
    return "(" + ("*" if exponent > 53 else "/").join(factors) + ")"


def js_number(x: float) -> str:
    """ECMAScript Number::toString(10): shortest round-trip digits, JS exponent rules."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number(-x)
    _, digit_tuple, exponent = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), exponent + len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
