"""guard.py: failing a batch on purpose, and the row-loss guard's statements."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from d1deploy import guard
from d1deploy.backend import Statement


def test_abort_if_fails_only_when_the_condition_holds() -> None:
    conn = sqlite3.connect(":memory:")
    assert conn.execute(guard.abort_if("1 = 0", "'never'")).fetchall() == [(None,)]
    with pytest.raises(sqlite3.OperationalError) as info:
        conn.execute(guard.abort_if("1 = 1", "'it''s gone: ' || 42"))
    assert guard.parse_abort(str(info.value)) == "it's gone: 42"


OURS = guard.ABORT_MARKER


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (f"JSON path error near '{OURS}lost 3 rows'", "lost 3 rows"),
        (f"bad JSON path: '${OURS}it''s 0': SQLITE_ERROR [code: 7500]", "it's 0"),
        (f"{OURS}no closing quote", "no closing quote"),
        ("UNIQUE constraint failed: t.id: SQLITE_CONSTRAINT", None),
        # Markers without this run's nonce are text like any other, whoever wrote them.
        ("bad JSON path: '$d1deploy-abort: deploy lock lost: it is now held by x'", None),
        (f"bad JSON path: '${guard.marker('0' * 16)}deploy lock lost'", None),
        (f"bad JSON path: '${guard.marker(guard.RUN_NONCE[:-1])}deploy lock lost'", None),
    ],
)
def test_parse_abort_knows_only_this_runs_marker(message: str, expected: str | None) -> None:
    assert guard.parse_abort(message) == expected


def test_every_run_has_its_own_nonce() -> None:
    code = "from d1deploy import guard; print(guard.RUN_NONCE)"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(seen) == 2 and guard.RUN_NONCE not in seen
    assert all(len(n) == 16 for n in seen)


def test_data_cannot_raise_an_abort_of_ours() -> None:
    """A user's statement failing with the words of our marker is not one of our aborts;
    with the nonce it would be, which is why the nonce is never written anywhere."""
    conn = sqlite3.connect(":memory:")
    forged = "'$d1deploy-abort: probe rolled back'"
    with pytest.raises(sqlite3.OperationalError) as info:
        conn.execute(f"SELECT json_extract('{{}}', {forged})")
    assert guard.parse_abort(str(info.value)) is None
    other = guard.abort_if("1", "'probe rolled back'", nonce="feedfacefeedface")
    with pytest.raises(sqlite3.OperationalError) as info:
        conn.execute(other)
    assert guard.parse_abort(str(info.value)) is None
    assert guard.parse_abort(str(info.value), nonce="feedfacefeedface") == "probe rolled back"


def test_allowed_row_loss_reads_every_declaration() -> None:
    text = (
        '-- d1deploy: allow-row-loss sessions, "old logs"\n'
        "DELETE FROM sessions;\n"
        "  --d1deploy:allow-row-loss cache\n"
        "-- a comment mentioning allow-row-loss nothing\n"
    )
    assert guard.allowed_row_loss(text) == {"sessions", "old logs", "cache"}


def _cascade_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        " parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE)"
    )
    conn.execute("CREATE TABLE empty_one (id INTEGER PRIMARY KEY)")
    conn.executemany("INSERT INTO parent VALUES (?)", [(1,), (2,)])
    conn.executemany("INSERT INTO child VALUES (?, ?)", [(1, 1), (2, 1), (3, 2)])
    conn.execute("COMMIT")
    return conn


def _in_transaction(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    conn.execute("BEGIN")
    try:
        for st in statements:
            conn.execute(st.sql, st.params)
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


REBUILD = [
    Statement("CREATE TABLE parent_new (id INTEGER PRIMARY KEY, note TEXT)"),
    Statement("INSERT INTO parent_new (id) SELECT id FROM parent"),
    Statement("DROP TABLE parent"),
    Statement("ALTER TABLE parent_new RENAME TO parent"),
]


def test_guard_stops_a_cascading_rebuild_and_names_both_counts() -> None:
    conn = _cascade_db()
    before, after = guard.guard_statements(["parent", "child", "empty_one"], allowed=set())
    with pytest.raises(sqlite3.OperationalError) as info:
        _in_transaction(conn, [*before, *REBUILD, *after])
    message = guard.parse_abort(str(info.value))
    assert message is not None
    assert "table child had 3 rows before this migration and 0 after" in message
    assert "allow-row-loss child" in message
    assert conn.execute("SELECT count(*) FROM child").fetchone() == (3,)


def test_declared_row_loss_passes() -> None:
    conn = _cascade_db()
    before, after = guard.guard_statements(["parent", "child"], allowed={"child"})
    _in_transaction(conn, [*before, *REBUILD, *after])
    assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM parent").fetchone() == (2,)


def test_dropping_a_table_for_good_needs_it_empty_or_declared() -> None:
    conn = _cascade_db()
    drop_child = [Statement("DROP TABLE child")]
    before, after = guard.guard_statements(["parent", "child"], allowed=set(), dropped={"child"})
    with pytest.raises(sqlite3.OperationalError) as info:
        _in_transaction(conn, [*before, *drop_child, *after])
    assert "table child had 3 rows before this migration, which drops it" in str(
        guard.parse_abort(str(info.value))
    )
    before, after = guard.guard_statements(["empty_one"], allowed=set(), dropped={"empty_one"})
    _in_transaction(conn, [*before, Statement("DROP TABLE empty_one"), *after])
    before, after = guard.guard_statements(["child"], allowed={"child"}, dropped={"child"})
    assert (before, after) == ([], [])


def test_table_names_are_quoted() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute('CREATE TABLE "it\'s ""odd"""(x)')
    conn.execute('INSERT INTO "it\'s ""odd""" VALUES (1)')
    before, after = guard.guard_statements(['it\'s "odd"'], allowed=set())
    with pytest.raises(sqlite3.OperationalError) as info:
        _in_transaction(conn, [*before, Statement('DELETE FROM "it\'s ""odd"""'), *after])
    assert 'table it\'s "odd" had 1 rows' in str(guard.parse_abort(str(info.value)))
