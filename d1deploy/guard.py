"""Failing a batch on purpose, and the row-loss guard built on it.

SQLite has no `RAISE` outside triggers, so d1deploy makes a statement fail with a message
of its own through a JSON path error: `json_extract('{}', '$d1deploy-abort-NONCE: ' ||
msg)` only runs when its `CASE` condition holds, and SQLite's error then contains the
marker and the message. `lock.py` (lease lost), `checks.py` (forced abort of write
probes) and the row-loss guard below all fail batches this way, and `parse_abort`
recognises it. NONCE is random and new in every run (`RUN_NONCE`): an error raised by a
migration or by data (`json_extract` of a user's text, `RAISE` in a trigger) cannot
carry it, so nothing but d1deploy's own SQL can pass for one of its aborts.

The row-loss guard exists because D1 keeps foreign keys on: rebuilding a parent table
with `DROP TABLE` silently cascades deletes into child tables. Inside the migration's own
batch, the guard records each table's row count before the migration and makes the batch
fail when a table has fewer rows after it (or when a table that had rows is dropped),
unless the migration declares the loss with `-- d1deploy: allow-row-loss TABLE`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Sequence

from d1deploy.backend import Statement

RUN_NONCE = secrets.token_hex(8)
"""Unique to this run of d1deploy (this process); never stored in a database."""


def marker(nonce: str = RUN_NONCE) -> str:
    """What precedes the message of an abort raised with `nonce`."""
    return f"d1deploy-abort-{nonce}: "


ABORT_MARKER = marker()
GUARD_TABLE = "_d1deploy_guard"

# `-- d1deploy: allow-row-loss t1 t2` on a line of its own (names may be quoted).
_ALLOW_RE = re.compile(r"^\s*--\s*d1deploy:\s*allow-row-loss\b(?P<names>.*)$", re.MULTILINE)
_ALLOW_NAME_RE = re.compile(r'"((?:[^"]|"")+)"|`([^`]+)`|\[([^\]]+)\]|([^\s,]+)')


def quote_ident(name: str) -> str:
    """`name` as a double-quoted SQL identifier (inner quotes doubled, as wrangler does)."""
    return '"' + name.replace('"', '""') + '"'


def quote_text(value: str) -> str:
    """`value` as a single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def abort_if(condition_sql: str, message_sql: str, *, nonce: str = RUN_NONCE) -> str:
    """A statement that fails its batch with `message_sql`'s value when `condition_sql`
    holds, and returns one NULL otherwise.

    SQLite evaluates a `CASE` branch only when it is taken (it never hoists expressions
    out of a conditional branch), so the JSON path error happens only then.
    """
    return (
        f"SELECT CASE WHEN ({condition_sql}) "
        f"THEN json_extract('{{}}', '${marker(nonce)}' || ({message_sql})) END"
    )


def parse_abort(message: str, *, nonce: str = RUN_NONCE) -> str | None:
    """The message of an `abort_if` failure raised with `nonce` (this run's) found in an
    error text, else None: a marker with any other nonce, or none, is not ours.

    SQLite quotes the JSON path in its error (`... near 'd1deploy-abort-N: msg'` or
    `bad JSON path: '$d1deploy-abort-N: msg'`) and doubles any quote inside it; the text
    ends at the closing quote, before whatever D1 appends (`: SQLITE_ERROR`).
    """
    tag = marker(nonce)
    start = message.find(tag)
    if start < 0:
        return None
    rest = message[start + len(tag) :]
    out: list[str] = []
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch == "'":
            if rest.startswith("''", i):
                out.append("'")
                i += 2
                continue
            break
        out.append(ch)
        i += 1
    return "".join(out).strip()


def allowed_row_loss(sql_text: str) -> set[str]:
    """Tables a migration declares it may lose rows from (`-- d1deploy: allow-row-loss`)."""
    allowed: set[str] = set()
    for match in _ALLOW_RE.finditer(sql_text):
        for name in _ALLOW_NAME_RE.finditer(match.group("names")):
            quoted, backticked, bracketed, bare = name.groups()
            if quoted is not None:
                allowed.add(quoted.replace('""', '"'))
            else:
                allowed.add(backticked or bracketed or bare)
    return allowed


def _count(table: str) -> str:
    return f"(SELECT count(*) FROM {quote_ident(table)})"


def _before(table: str) -> str:
    return f"(SELECT n FROM {GUARD_TABLE} WHERE tbl = {quote_text(table)})"


def guard_statements(
    tables: Sequence[str],
    allowed: Collection[str],
    dropped: Collection[str] = (),
) -> tuple[list[Statement], list[Statement]]:
    """Statements to put before and after a migration's statements in its batch.

    `tables` are the tables that exist before the migration (the ones to watch),
    `allowed` those the migration may lose rows from, `dropped` those it drops for good
    (they cannot be counted afterwards, so they must have been empty). One INSERT per
    table, not one compound SELECT: D1 limits the number of terms in a compound SELECT.
    """
    watched = [t for t in dict.fromkeys(tables) if t not in allowed]
    if not watched:
        return [], []
    before = [
        Statement(
            f"CREATE TABLE IF NOT EXISTS {GUARD_TABLE}(tbl TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        ),
        Statement(f"DELETE FROM {GUARD_TABLE}"),
    ]
    before += [
        Statement(f"INSERT INTO {GUARD_TABLE}(tbl, n) SELECT {quote_text(t)}, {_count(t)}")
        for t in watched
    ]
    after: list[Statement] = []
    for table in watched:
        declare = f"(declare `-- d1deploy: allow-row-loss {table}` if intended)"
        head = f"{quote_text(f'row-loss guard: table {table} had ')} || {_before(table)}"
        if table in dropped:
            condition = f"{_before(table)} > 0"
            tail = quote_text(f" rows before this migration, which drops it {declare}")
            message = f"{head} || {tail}"
        else:
            condition = f"{_count(table)} < {_before(table)}"
            middle = quote_text(" rows before this migration and ")
            tail = quote_text(f" after {declare}")
            message = f"{head} || {middle} || {_count(table)} || {tail}"
        after.append(Statement(abort_if(condition, message)))
    after.append(Statement(f"DELETE FROM {GUARD_TABLE}"))
    return before, after
