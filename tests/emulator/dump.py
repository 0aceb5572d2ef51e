"""D1's SQL dump format, written row by row to a file.

A port of the exporter D1 shares with miniflare (`workers-sdk`
`packages/miniflare/src/workers/d1/dumpSql.ts`, itself modelled on SQLite's shell
`.dump`): the first line is `PRAGMA defer_foreign_keys=TRUE;`, then per table in
`sqlite_schema` rowid order its `CREATE TABLE` and one `INSERT INTO "t" ("c",...)
VALUES(...);` per row, `_cf_*`/`sqlite_*` tables skipped, indexes/triggers/views last.
Values are printed the way that JavaScript code prints them (JS number formatting).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, TextIO

VTABLE_ERROR = "D1 Export error: cannot export databases with Virtual Tables (fts5)"


class DumpError(Exception):
    """The database cannot be exported; `str()` is D1's error text."""


def write_dump(
    conn: sqlite3.Connection,
    out: TextIO,
    *,
    no_data: bool = False,
    no_schema: bool = False,
    tables: Sequence[str] = (),
) -> None:
    """Write the dump of `conn`'s database to `out`, one statement per line."""
    for statement in _statements(conn, no_data=no_data, no_schema=no_schema, only=set(tables)):
        out.write(statement)
        out.write("\n")


def _statements(
    conn: sqlite3.Connection, *, no_data: bool, no_schema: bool, only: set[str]
) -> Iterator[str]:
    yield "PRAGMA defer_foreign_keys=TRUE;"
    schema = conn.execute(
        "SELECT name, type, sql FROM sqlite_schema AS o WHERE (true) AND type=='table' "
        "AND sql NOT NULL ORDER BY tbl_name='sqlite_sequence', rowid"
    ).fetchall()
    for table, _, sql in schema:
        if only and table not in only:
            continue
        if table == "sqlite_sequence":
            if not no_schema:
                yield "DELETE FROM sqlite_sequence;"
        elif re.match(r"sqlite_stat.", table):
            if not no_schema:
                yield "ANALYZE sqlite_schema;"
        elif sql.startswith("CREATE VIRTUAL TABLE"):
            raise DumpError(VTABLE_ERROR)
        elif table.startswith(("_cf_", "sqlite_")):
            continue
        elif not no_schema:
            # SQLite's .dump (and so D1) injects IF NOT EXISTS when the name was quoted.
            quoted = re.search(r"CREATE TABLE ['\"]", sql)
            yield f"CREATE TABLE IF NOT EXISTS {sql[13:]};" if quoted else f"{sql};"
        if no_data:
            continue
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info={_quote_id(table)}")]
        names = ",".join(_quote_id(c) for c in columns)
        select = f"SELECT {', '.join(_quote_id(c) for c in columns)} FROM {_quote_id(table)}"
        for row in conn.execute(select):
            cells = ",".join(_cell(value) for value in row)
            yield f"INSERT INTO {_quote_id(table)} ({names}) VALUES({cells});"
    if not no_schema:
        rest = conn.execute(
            "SELECT name, sql FROM sqlite_schema AS o WHERE (true) AND sql NOT NULL "
            "AND type IN ('index', 'trigger', 'view') ORDER BY type COLLATE NOCASE"
        )
        for name, sql in rest:
            if only and name not in only:
                continue
            yield f"{sql};"


def _quote_id(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return _quoted_string(value)
    return js_number(float(value)) if abs(value) > 2**53 or isinstance(value, float) else str(value)


def _quoted_string(value: str) -> str:
    """SQLite shell's `output_quoted_escaped_string`, as ported by D1's exporter."""
    has_nl, has_cr = "\n" in value, "\r" in value
    escaped = value.replace("'", "''")
    if not has_nl and not has_cr:
        return f"'{escaped}'"
    nl = _unused(value, "\\n", "\\012")
    cr = _unused(value, "\\r", "\\015")
    output = "'" + escaped.replace("\n", nl).replace("\r", cr) + "'"
    if has_cr:
        output = f"replace({output},'{cr}',char(13))"
    if has_nl:
        output = f"replace({output},'{nl}',char(10))"
    return output


def _unused(value: str, primary: str, secondary: str) -> str:
    if primary not in value:
        return primary
    if secondary not in value:
        return secondary
    suffix = 0
    while (candidate := f"({primary}{suffix})") in value:
        suffix += 1
    return candidate


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
