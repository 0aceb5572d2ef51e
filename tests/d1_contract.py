"""The D1 contract: one table of statements and batches, and what D1's engine answers.

Each `Case` is a batch (one statement per item, sent as written, `;` included) and the
answer of its last statement: the rows, as D1's JSON brings them back (BLOBs as `bytes`),
or the exact error text. The answer is workerd's, D1's engine as `wrangler d1 execute
--local --json` runs it, and tests/test_d1_contract.py holds `--local` (LocalBackend) and
the test emulator (through d1deploy's own client) to the same table. Where one of them
answers differently on purpose, the case says so in `kept`: the answer it gives instead
and why that is kept. Nothing else may differ.

`{tmp}` in a statement is a folder of the test's own (for files a statement must not
create).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from d1deploy import assertions, checks, d1sqlite, guard, lint

Row = dict[str, Any]

TARGETS = ("local", "emulator", "workerd")

NOT_AUTHORIZED = "not authorized: SQLITE_AUTH"
TX = d1sqlite.TRANSACTION_REFUSED

OLD_SQLITE = (
    "this machine's SQLite (3.40.1, which Python's sqlite3 uses for --local and the emulator) "
    "predates the function; D1 allows it. SQL using it fails locally with SQLite's own text"
)
RENAME = (
    "workerd patches SQLite to tell its authorizer the new name of a RENAME; stock SQLite "
    "does not, so --local and the emulator cannot refuse a rename into `_cf_`"
)
DOCUMENTED_LIMIT = (
    "D1's documented limit (developers.cloudflare.com/d1/platform/limits), stricter than "
    "the workerd wrangler runs locally: a rehearsal must fail where production D1 would"
)
PRODUCTION_KV = (
    "the emulator models a production D1 database, which holds D1's own `_cf_KV` table "
    "(its exports skip it); workerd's local database has none. Reading it is refused by "
    "name, as D1's authorizer refuses every `_cf_` name"
)


@dataclass(frozen=True)
class Answer:
    """Rows of the last statement, or an error text (a pattern when `pattern` is set)."""

    rows: tuple[Row, ...] | None = None
    error: str | None = None
    pattern: bool = False

    def describe(self) -> str:
        return (
            f"error {self.error!r}" if self.error is not None else f"rows {list(self.rows or ())}"
        )

    def matches(self, got: Answer) -> bool:
        if self.error is not None:
            if got.error is None:
                return False
            if self.pattern:
                return re.fullmatch(self.error, got.error) is not None
            return got.error == self.error
        return got.error is None and list(got.rows or ()) == list(self.rows or ())


@dataclass(frozen=True)
class Kept:
    """A target's different answer, kept on purpose."""

    answer: Answer
    why: str


@dataclass(frozen=True)
class Case:
    id: str
    sql: tuple[str, ...]
    answer: Answer
    kept: Mapping[str, Kept] = field(default_factory=dict)

    def expected(self, target: str) -> Answer:
        kept = self.kept.get(target)
        return kept.answer if kept else self.answer


def ok(id: str, *sql: str, rows: list[Row], kept: Mapping[str, Kept] | None = None) -> Case:
    return Case(id, sql, Answer(rows=tuple(rows)), kept or {})


def fails(
    id: str,
    *sql: str,
    error: str,
    pattern: bool = False,
    kept: Mapping[str, Kept] | None = None,
) -> Case:
    return Case(id, sql, Answer(error=error, pattern=pattern), kept or {})


def both(answer: Answer, why: str) -> dict[str, Kept]:
    """The same kept answer for --local and the emulator."""
    return {"local": Kept(answer, why), "emulator": Kept(answer, why)}


def padded(total: int) -> str:
    """`SELECT length('xx…') AS n;`, exactly `total` bytes long."""
    head, tail = "SELECT length('", "') AS n;"
    return head + "x" * (total - len(head) - len(tail)) + tail


VERIFY_ABORT = assertions.verify_abort("0002_checked.sql")
"""What the verify checks of a migration abort its request with."""


def _in_batch(table: str, expect: str) -> list[str]:
    """A read check of `table` as a migration's batch carries it (`assertions.batch_statements`):
    its SELECT, then the assertion that fails the batch unless it holds."""
    check_sql = f"SELECT id, name, b, r FROM {table} ORDER BY id;"
    model = lint.SchemaModel.from_sql(
        [f"CREATE TABLE {table}(id INTEGER, name TEXT, b BLOB, r REAL)"]
    )
    found = checks.parse_checks(
        f"-- expect: {expect}\n{check_sql}\n", file="verify.sql", schema=model
    )
    return [
        s.sql if s.sql.endswith(";") else s.sql + ";"
        for s in assertions.batch_statements(found, VERIFY_ABORT)
    ]


def _with_rows(table: str) -> list[str]:
    return [
        f"CREATE TABLE {table}(id INTEGER, name TEXT, b BLOB, r REAL);",
        f"INSERT INTO {table} VALUES (1, 'it''s', X'00FF', 1.5), (2, NULL, NULL, -2);",
    ]


CHECK_FAILED = r"(?:bad JSON path: '\$|JSON path error near ')" + re.escape(
    f"{guard.marker()}{VERIFY_ABORT}"
    """[[2,[[1,"it''s",{"blob":"00FF"},1.5],[2,null,null,-2.0]]]]'"""
)
"""A check failing inside a batch: its row count and rows come back in the error (the
words before them are SQLite's, which changed in 3.45; `guard.parse_abort` reads both)."""

CASES: tuple[Case, ...] = (
    # -- what D1's authorizer refuses ---------------------------------------------------
    fails("attach", "ATTACH DATABASE '{tmp}/attached.sqlite' AS other;", error=NOT_AUTHORIZED),
    fails("detach", "DETACH DATABASE other;", error=NOT_AUTHORIZED),
    fails("journal_mode", "PRAGMA journal_mode=WAL;", error=NOT_AUTHORIZED),
    fails("user_version", "PRAGMA user_version=3;", error=NOT_AUTHORIZED),
    fails("writable_schema", "PRAGMA writable_schema=ON;", error=NOT_AUTHORIZED),
    fails("integrity_check", "PRAGMA integrity_check;", error=NOT_AUTHORIZED),
    fails("integrity_check_tvf", "SELECT * FROM pragma_integrity_check;", error=NOT_AUTHORIZED),
    fails("page_size_set", "PRAGMA page_size=8192;", error=NOT_AUTHORIZED),
    fails("cf_table", "CREATE TABLE _cf_x(a);", error=NOT_AUTHORIZED),
    fails("cf_table_any_case", "CREATE TABLE _CF_y(a);", error=NOT_AUTHORIZED),
    fails(
        "cf_index",
        "CREATE TABLE t_idx(a);",
        "CREATE INDEX _cf_i ON t_idx(a);",
        error=NOT_AUTHORIZED,
    ),
    fails(
        "cf_rename",
        "CREATE TABLE t_ren(a);",
        "ALTER TABLE t_ren RENAME TO _cf_ren;",
        error=NOT_AUTHORIZED,
        kept=both(Answer(rows=()), RENAME),
    ),
    fails("cf_table_info", "PRAGMA table_info(_cf_KV);", error=NOT_AUTHORIZED),
    fails(
        "cf_read",
        "SELECT * FROM _cf_KV;",
        error="no such table: _cf_KV: SQLITE_ERROR",
        kept={
            "emulator": Kept(
                Answer(error="access to _cf_KV.key is prohibited: SQLITE_AUTH"), PRODUCTION_KV
            )
        },
    ),
    fails("temp_table", "CREATE TEMP TABLE t_tmp(a);", error=NOT_AUTHORIZED),
    fails("temp_view", "CREATE TEMP VIEW v_tmp AS SELECT 1;", error=NOT_AUTHORIZED),
    fails(
        "function_not_allowed",
        "SELECT sqlite_version();",
        error="not authorized to use function: sqlite_version at offset 7: SQLITE_ERROR",
    ),
    fails("load_extension", "SELECT load_extension('x');", error="not authorized: SQLITE_ERROR"),
    fails(
        "sqlite_master_write",
        "UPDATE sqlite_master SET sql = '' WHERE 0;",
        error="table sqlite_master may not be modified: SQLITE_ERROR",
    ),
    # -- transactions --------------------------------------------------------------------
    fails("begin", "BEGIN;", error=TX),
    # Not `BEGIN TRANSACTION;`: wrangler deletes that text from a file before D1 sees it.
    fails("begin_after_a_write", "CREATE TABLE t_tx(a);", "BEGIN DEFERRED TRANSACTION;", error=TX),
    fails("begin_immediate", "BEGIN IMMEDIATE;", error=TX),
    fails("commit", "COMMIT;", error=TX),
    fails("rollback", "ROLLBACK;", error=TX),
    fails("savepoint", "SAVEPOINT s;", error=TX),
    fails("release", "RELEASE s;", error=TX),
    fails("vacuum", "VACUUM;", error="cannot VACUUM from within a transaction: SQLITE_ERROR"),
    # -- triggers with `;` inside ---------------------------------------------------------
    ok(
        "trigger_with_semicolons",
        "CREATE TABLE t_trg(v TEXT);",
        "CREATE TABLE t_trg_log(v TEXT);",
        "CREATE TRIGGER t_trg_ai AFTER INSERT ON t_trg BEGIN\n"
        "  INSERT INTO t_trg_log VALUES (new.v || ';');\n"
        "  INSERT INTO t_trg_log VALUES ('two; three');\n"
        "END;",
        "INSERT INTO t_trg VALUES ('a');",
        "SELECT v FROM t_trg_log ORDER BY rowid;",
        rows=[{"v": "a;"}, {"v": "two; three"}],
    ),
    # -- limits --------------------------------------------------------------------------
    ok("statement_100000_bytes", padded(100_000), rows=[{"n": 100_000 - 23}]),
    fails("statement_100001_bytes", padded(100_001), error=d1sqlite.STATEMENT_TOO_LONG),
    fails(
        "parameter_101",
        "SELECT ?101;",
        error="variable number must be between ?1 and ?100 at offset 7: SQLITE_ERROR",
    ),
    fails(
        "compound_select_6",
        "SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6;",
        error="too many terms in compound SELECT: SQLITE_ERROR",
    ),
    ok(
        "compound_select_5",
        "SELECT 1 AS v UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5;",
        rows=[{"v": v} for v in range(1, 6)],
    ),
    fails(
        "like_pattern_51",
        "SELECT 'a' LIKE '" + "a" * 51 + "' AS l;",
        error="LIKE or GLOB pattern too complex: SQLITE_ERROR",
    ),
    ok(
        "function_args_33",
        "SELECT max(" + ",".join(["1"] * 33) + ") AS m;",
        rows=[{"m": 1}],
        kept=both(
            Answer(error="too many arguments on function max at offset 7: SQLITE_ERROR"),
            DOCUMENTED_LIMIT,
        ),
    ),
    ok(
        "blob_over_2mb",
        "SELECT length(zeroblob(2000001)) AS n;",
        rows=[{"n": 2_000_001}],
        kept=both(Answer(error="string or blob too big: SQLITE_TOOBIG"), DOCUMENTED_LIMIT),
    ),
    # -- FTS5 and R*Tree -----------------------------------------------------------------
    ok(
        "fts5",
        "CREATE VIRTUAL TABLE t_fts USING fts5(body);",
        "INSERT INTO t_fts VALUES ('hello world'), ('goodbye');",
        "SELECT highlight(t_fts, 0, '[', ']') AS h FROM t_fts WHERE t_fts MATCH 'hello';",
        rows=[{"h": "[hello] world"}],
    ),
    ok(
        "rtree",
        "CREATE VIRTUAL TABLE t_rtree USING rtree(id, x0, x1);",
        "INSERT INTO t_rtree VALUES (1, 0, 10);",
        "SELECT id FROM t_rtree WHERE x0 <= 5 AND x1 >= 5;",
        rows=[{"id": 1}],
    ),
    # -- foreign keys --------------------------------------------------------------------
    ok(
        "defer_foreign_keys",
        "CREATE TABLE t_dp(id INTEGER PRIMARY KEY);",
        "CREATE TABLE t_dc(p INTEGER REFERENCES t_dp(id));",
        "PRAGMA defer_foreign_keys = ON;",
        "INSERT INTO t_dc VALUES (1);",
        "INSERT INTO t_dp VALUES (1);",
        "SELECT count(*) AS n FROM t_dc;",
        rows=[{"n": 1}],
    ),
    fails(
        "foreign_key_immediate",
        "CREATE TABLE t_fp(id INTEGER PRIMARY KEY);",
        "CREATE TABLE t_fc(p INTEGER REFERENCES t_fp(id));",
        "INSERT INTO t_fc VALUES (5);",
        error="FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_FOREIGNKEY)",
    ),
    fails(
        "foreign_key_deferred_unresolved",
        "CREATE TABLE t_up(id INTEGER PRIMARY KEY);",
        "CREATE TABLE t_uc(p INTEGER REFERENCES t_up(id));",
        "PRAGMA defer_foreign_keys = ON;",
        "INSERT INTO t_uc VALUES (5);",
        # wrangler's local D1 (miniflare) fails the commit inside transactionSync().
        error=r"internal error; reference = [0-9a-z]+",
        pattern=True,
        kept=both(
            Answer(
                error="FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"
                " (extended: SQLITE_CONSTRAINT_FOREIGNKEY)"
            ),
            "D1's answer (its foreign-key docs): the deferred check fails the batch with "
            "SQLite's text; workerd under wrangler hides it behind a random reference",
        ),
    ),
    ok(
        "foreign_keys_cannot_be_switched_off",
        "PRAGMA foreign_keys = OFF;",
        "PRAGMA foreign_keys;",
        rows=[{"foreign_keys": 1}],
    ),
    # -- RETURNING -----------------------------------------------------------------------
    ok(
        "insert_returning",
        "CREATE TABLE t_ret(id INTEGER PRIMARY KEY, a TEXT);",
        "INSERT INTO t_ret(a) VALUES ('x'), ('y') RETURNING id, a;",
        rows=[{"id": 1, "a": "x"}, {"id": 2, "a": "y"}],
    ),
    ok(
        "update_returning",
        "CREATE TABLE t_uret(a INTEGER);",
        "INSERT INTO t_uret VALUES (1), (2);",
        "UPDATE t_uret SET a = a * 10 RETURNING a;",
        rows=[{"a": 10}, {"a": 20}],
    ),
    # -- JSON functions and table-valued functions ---------------------------------------
    ok(
        "json_functions",
        "SELECT json_extract('{\"a\":[1,2]}', '$.a[1]') AS x, json_object('k', 1) AS o,"
        " '{\"a\":1}' ->> '$.a' AS y, json_array_length('[1,2,3]') AS n;",
        rows=[{"x": 2, "o": '{"k":1}', "y": 1, "n": 3}],
    ),
    # The first table-valued function a connection uses makes SQLite ask to write its
    # schema table (it writes nothing): D1 allows that, as it allows every unreserved name.
    ok(
        "json_each",
        "SELECT key, value FROM json_each('[10,20]');",
        rows=[{"key": 0, "value": 10}, {"key": 1, "value": 20}],
    ),
    ok(
        "pragma_table_valued",
        "SELECT name FROM pragma_table_info('sqlite_master') WHERE cid < 2;",
        rows=[{"name": "type"}, {"name": "name"}],
    ),
    ok(
        "jsonb",
        "SELECT json(jsonb('[1]')) AS j;",
        rows=[{"j": "[1]"}],
        kept=both(Answer(error="no such function: jsonb at offset 12: SQLITE_ERROR"), OLD_SQLITE),
    ),
    ok(
        "concat",
        "SELECT concat('a', NULL, 'b') AS c;",
        rows=[{"c": "ab"}],
        kept=both(Answer(error="no such function: concat at offset 7: SQLITE_ERROR"), OLD_SQLITE),
    ),
    # -- values through JSON -------------------------------------------------------------
    ok(
        "integers_beyond_2_53",
        "SELECT 9007199254740993 AS big, -9007199254740993 AS neg,"
        " 9223372036854775807 AS max, 9007199254740992 AS edge;",
        rows=[
            {
                "big": 9007199254740992,
                "neg": -9007199254740992,
                "max": 9223372036854776000,
                "edge": 9007199254740992,
            }
        ],
    ),
    ok(
        "stored_integer_beyond_2_53",
        "CREATE TABLE t_big(v INTEGER);",
        "INSERT INTO t_big VALUES (9007199254740993);",
        "SELECT v, v = 9007199254740993 AS exact, typeof(v) AS t FROM t_big;",
        rows=[{"v": 9007199254740992, "exact": 1, "t": "integer"}],
    ),
    ok(
        "reals",
        "SELECT 2.0 AS two, 0.1 AS tenth, 1e20 AS e20, 1e21 AS e21, 1e300 AS huge,"
        " -0.0 AS negzero, 9e999 AS inf;",
        rows=[
            {
                "two": 2,
                "tenth": 0.1,
                "e20": 100000000000000000000,
                "e21": 1e21,
                "huge": 1e300,
                "negzero": 0,
                "inf": None,
            }
        ],
    ),
    ok(
        "blobs",
        "SELECT x'00ff10' AS b, x'' AS empty, typeof(x'00ff10') AS t, length(x'00ff10') AS n;",
        rows=[{"b": b"\x00\xff\x10", "empty": b"", "t": "blob", "n": 3}],
    ),
    ok(
        "duplicate_column_names",
        "SELECT 1 AS a, 2 AS b, 3 AS a;",
        rows=[{"a": 3, "b": 2}],
    ),
    ok(
        "duplicate_column_names_in_a_join",
        "CREATE TABLE t_dup(a);",
        "INSERT INTO t_dup VALUES (1), (2);",
        "SELECT x.a, y.a FROM t_dup AS x JOIN t_dup AS y ON y.a = x.a + 1;",
        rows=[{"a": 2}],
    ),
    # -- SQLite's error texts, as the engine writes them ----------------------------------
    fails(
        "unique",
        "CREATE TABLE t_uni(a UNIQUE);",
        "INSERT INTO t_uni VALUES (1);",
        "INSERT INTO t_uni VALUES (1);",
        error="UNIQUE constraint failed: t_uni.a: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_UNIQUE)",
    ),
    fails(
        "not_null",
        "CREATE TABLE t_nn(a NOT NULL);",
        "INSERT INTO t_nn VALUES (NULL);",
        error="NOT NULL constraint failed: t_nn.a: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_NOTNULL)",
    ),
    fails(
        "check",
        "CREATE TABLE t_chk(a CHECK (a > 0));",
        "INSERT INTO t_chk VALUES (-1);",
        error="CHECK constraint failed: a > 0: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_CHECK)",
    ),
    fails("syntax", "SELEC 1;", error='near "SELEC": syntax error at offset 0: SQLITE_ERROR'),
    fails(
        "table_exists",
        "CREATE TABLE t_ex(a);",
        "CREATE TABLE t_ex(b);",
        error="table t_ex already exists at offset 13: SQLITE_ERROR",
    ),
    fails(
        "no_such_table", "SELECT * FROM t_missing;", error="no such table: t_missing: SQLITE_ERROR"
    ),
    fails(
        "no_such_column",
        "CREATE TABLE t_col(a);",
        "SELECT nope FROM t_col;",
        error="no such column: nope at offset 7: SQLITE_ERROR",
    ),
    fails(
        "strict",
        "CREATE TABLE t_str(a) STRICT;",
        error="missing datatype for t_str.a: SQLITE_ERROR",
    ),
    # -- what D1 allows ------------------------------------------------------------------
    ok("quick_check", "PRAGMA quick_check;", rows=[{"quick_check": "ok"}]),
    ok("foreign_key_check", "PRAGMA foreign_key_check;", rows=[]),
    ok("pragma_name_any_case", "PRAGMA Foreign_Keys;", rows=[{"foreign_keys": 1}]),
    ok("pragma_quoted_boolean", "PRAGMA case_sensitive_like = 'on';", rows=[]),
    ok("optimize", "PRAGMA optimize;", rows=[]),
    ok("analyze", "CREATE TABLE t_an(a);", "CREATE INDEX t_an_a ON t_an(a);", "ANALYZE;", rows=[]),
    ok(
        "recursive_cte",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3)"
        " SELECT x FROM c;",
        rows=[{"x": 1}, {"x": 2}, {"x": 3}],
    ),
    ok(
        "changes_and_rowid",
        "CREATE TABLE t_chg(a);",
        "INSERT INTO t_chg VALUES (1), (2);",
        "DELETE FROM t_chg WHERE a = 1;",
        "SELECT changes() AS c, last_insert_rowid() AS r;",
        rows=[{"c": 1, "r": 2}],
    ),
    # -- a read check inside a migration's batch (#19) ----------------------------------
    ok(
        "check_in_batch_holds",
        *_with_rows("t_chk_ok"),
        *_in_batch("t_chk_ok", "rows = 2"),
        "SELECT 'held' AS outcome;",
        rows=[{"outcome": "held"}],
    ),
    fails(
        "check_in_batch_fails_with_its_rows",
        *_with_rows("t_chk_bad"),
        *_in_batch("t_chk_bad", "no rows"),
        error=CHECK_FAILED + r".*",
        pattern=True,
    ),
    ok(
        "core_functions",
        "SELECT printf('%d', 3) AS p, iif(1, 'y', 'n') AS i, unixepoch('2024-01-01') AS u;",
        rows=[{"p": "3", "i": "y", "u": 1704067200}],
    ),
)
