"""checks.py: the check-file format, judging expectations, and safe write probes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from d1deploy import checks, defaults, errors, guard, ledger, lint, planning
from d1deploy.backend import (
    Backend,
    QueryResult,
    Statement,
)
from d1deploy.checks import Check, Expectation
from d1deploy.local import LocalBackend
from tests.emulator import D1Emulator
from tests.helpers import Recording, remote_backend

SCHEMA = (
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT,"
    " balance INTEGER CHECK (balance >= 0));\n"
    "INSERT INTO accounts (id, name, balance) VALUES (1, 'a', 10), (2, 'b', 0), (3, 'it''s', 5);\n"
)


# --- parsing ------------------------------------------------------------------------

MODEL = lint.SchemaModel.from_sql(
    [
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT,"
        " balance INTEGER CHECK (balance >= 0))",
        "CREATE INDEX accounts_name ON accounts (name)",
        "CREATE TABLE t (a)",
    ]
)
"""The schema the parsing tests' checks meet (SQLite judges them on it)."""


def parse(text: str, schema: lint.SchemaModel = MODEL) -> list[Check]:
    return checks.parse_checks(text, file="x.verify.sql", schema=schema)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("no rows", Expectation("no_rows")),
        ("No  Rows", Expectation("no_rows")),
        ("rows = 3", Expectation("rows", op="=", count=3)),
        ("rows>=2", Expectation("rows", op=">=", count=2)),
        ("rows <= 0", Expectation("rows", op="<=", count=0)),
        ("value = 1", Expectation("value", value=1)),
        ("value = -7", Expectation("value", value=-7)),
        ("value = 1.5", Expectation("value", value=1.5)),
        ("value = 2e3", Expectation("value", value=2000.0)),
        ("value = NULL", Expectation("value", value=None)),
        ("value = null", Expectation("value", value=None)),
        ("value = 'it''s'", Expectation("value", value="it's")),
        ("value = ''", Expectation("value", value="")),
        ("value = '홍길동'", Expectation("value", value="홍길동")),
        ("error", Expectation("error")),
        (
            "error ~ CHECK constraint failed",
            Expectation("error", error_text="CHECK constraint failed"),
        ),
    ],
)
def test_every_expect_form_parses(form: str, expected: Expectation) -> None:
    assert checks.parse_expectation(form) == expected


@pytest.mark.parametrize(
    "form",
    [
        "",
        "no row",
        "rows",
        "rows = x",
        "rows > 1",
        "rows = -1",
        "value 1",
        "value = abc",
        "value = 'open",
        "value = 1 2",
        "error ~",
        "error ~   ",
        "errors",
        "succeeds",
    ],
)
def test_unknown_expect_forms_are_refused(form: str) -> None:
    assert checks.parse_expectation(form) is None


@pytest.mark.parametrize(
    "form",
    [
        "no rows",
        "rows = 3",
        "rows >= 2",
        "rows <= 0",
        "value = 1",
        "value = 1.5",
        "value = NULL",
        "value = 'it''s'",
        "error",
        "error ~ CHECK constraint failed",
    ],
)
def test_describe_round_trips(form: str) -> None:
    parsed = checks.parse_expectation(form)
    assert parsed is not None
    assert parsed.describe() == form
    assert checks.parse_expectation(parsed.describe()) == parsed


def test_parse_labels_lines_expectations_and_writes() -> None:
    text = (
        "-- Verification for 001.\n"
        "\n"
        "-- check: no negative balances\n"
        "-- expect: no rows\n"
        "SELECT id, balance\n"
        "FROM accounts WHERE balance < 0;\n"
        "\n"
        "-- expect: error ~ CHECK constraint failed\n"
        "INSERT INTO accounts (balance) VALUES (-1);\n"
        "SELECT count(*) FROM accounts;\n"
    )
    first, second, third = parse(text)
    assert (first.label, first.line, first.file) == ("no negative balances", 5, "x.verify.sql")
    assert first.expect == Expectation("no_rows")
    assert not first.writes
    assert first.sql.startswith("SELECT id, balance\nFROM accounts")
    assert first.location == "x.verify.sql:5"
    assert (second.label, second.line, second.writes) == (
        "INSERT INTO accounts (balance) VALUES (-1);",
        9,
        True,
    )
    assert second.expect.describe() == "error ~ CHECK constraint failed"
    assert (third.line, third.expect.kind, third.writes) == (10, "succeeds", False)


def test_long_default_labels_are_shortened() -> None:
    (check,) = parse("SELECT " + ", ".join(f"{i} AS c{i}" for i in range(40)) + " FROM t;")
    assert len(check.label) == 60
    assert check.label.endswith("...")


def test_parse_check_file_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "001_x.precheck.sql"
    path.write_text("-- check: one\n-- expect: value = 1\nSELECT 1;\n", encoding="utf-8")
    named = "migrations/001_x.precheck.sql"
    (check,) = checks.parse_check_file(path, display_name=named, schema=MODEL)
    assert check.location == "migrations/001_x.precheck.sql:3"
    assert checks.parse_check_file(path, schema=MODEL)[0].file == str(path)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("SELECT 1;\n-- expect: rows = many\nSELECT 2;\n", 2, "unknown expectation"),
        ("-- expect: no rows\n-- expect: rows = 1\nSELECT 1;\n", 2, "second `-- expect:`"),
        ("-- check: a\n-- check: b\nSELECT 1;\n", 2, "second `-- check:`"),
        ("SELECT 1;\n\n-- check: dangling\n", 3, "no statement after it"),
        ("SELECT 1;\n-- expect: no rows\n", 2, "no statement after it"),
        ("-- expect rows = 1\nSELECT 1;\n", 1, "needs a colon"),
        ("-- expect: value = 0\nDELETE FROM t;\n", 2, "cannot expect `value = 0`"),
        ("-- expect: no rows\nUPDATE t SET a = 1;\n", 2, "cannot expect `no rows`"),
        ("-- expect: rows >= 1\nINSERT INTO t VALUES (1) RETURNING *;\n", 2, "cannot expect"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(errors.InputError) as info:
        parse(text)
    err = info.value
    assert (err.file, err.line) == ("x.verify.sql", line)
    assert fragment in err.message
    assert err.hint
    assert str(err).startswith(f"x.verify.sql:{line}: ")
    assert err.exit_code == 2


def test_crlf_files_parse_like_lf_files(tmp_path: Path) -> None:
    text = (
        "-- check: one\n-- expect: value = 1\nSELECT\n  1;\n\n"
        "-- expect: no rows\nSELECT 2 WHERE 0;\n"
    )
    path = tmp_path / "crlf.verify.sql"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    crlf = checks.parse_check_file(path, display_name="x.verify.sql", schema=MODEL)
    assert crlf == parse(text)
    assert [c.line for c in crlf] == [3, 7]


def test_an_unfinished_statement_names_its_line() -> None:
    with pytest.raises(errors.InputError) as info:
        parse("SELECT 1;\n-- expect: value = 'x'\nSELECT 'x;\n")
    assert (info.value.file, info.value.line) == ("x.verify.sql", 3)


def test_unknown_form_hint_lists_the_valid_forms() -> None:
    with pytest.raises(errors.InputError) as info:
        parse("-- expect: exactly one\nSELECT 1;\n")
    assert info.value.hint is not None
    assert "no rows" in info.value.hint
    assert "error ~ TEXT" in info.value.hint
    assert "value = LITERAL" in info.value.hint


def test_ordinary_comments_are_not_directives() -> None:
    (check,) = parse("-- checks that nothing is odd\n-- check this by hand too\nSELECT 1;\n")
    assert check.label == "SELECT 1;"
    assert check.expect.kind == "succeeds"


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("SELECT 1", False),
        ("  select * from t", False),
        ("VALUES (1)", False),
        ("EXPLAIN QUERY PLAN SELECT * FROM t", False),
        ("WITH x AS (SELECT 1) SELECT * FROM x", False),
        ("WITH x AS (SELECT 'delete me' AS d) SELECT d FROM x", False),
        ("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN x", True),
        ("WITH x AS (SELECT replace(name, 'a', 'b') FROM accounts) SELECT * FROM x", False),
        ("WITH x AS (SELECT 1) REPLACE INTO t SELECT * FROM x", True),
        ("/* note */ SELECT 1", False),
        ("-- SELECT\nDELETE FROM t", True),
        ("WITH x AS (SELECT 1 /* update later */) SELECT * FROM x -- delete", False),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", True),
        ("PRAGMA table_info(t)", False),
        ("PRAGMA foreign_key_check", False),
        ("PRAGMA foreign_keys", False),
        ("SELECT name FROM pragma_table_info('accounts')", False),
        ("SELECT * FROM json_each('[1, 2]')", False),
        ("INSERT INTO t VALUES (1)", True),
        ("REPLACE INTO t VALUES (1)", True),
        ("UPDATE t SET a = 1", True),
        ("DELETE FROM t", True),
        ("CREATE TABLE t2 (a)", True),
        ("DROP TABLE t", True),
        # Spellings a pattern read as reads: SQLite knows better.
        ('UPDATE"t"SET a = 1', True),
        ("UPDATE[t]SET a = 1", True),
        ("UPDATE`t`SET a = 1", True),
        ('WITH x AS (SELECT 1) UPDATE"accounts"SET balance = 0', True),
        ('REPLACE INTO"t"(a) VALUES (1)', True),
        ("INSERT INTO t VALUES (1) RETURNING a", True),
        ("CREATE TEMP TABLE scratch (a)", True),
        ("ANALYZE", True),
        ("VACUUM", True),
        ("ATTACH ':memory:' AS other", True),
        ("REINDEX", True),
    ],
)
def test_sqlite_judges_whether_a_check_writes(sql: str, writes: bool) -> None:
    (check,) = parse(f"{sql};\n")
    assert check.writes is writes


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA ignore_check_constraints = ON",
        "PRAGMA foreign_keys = OFF",
        "pragma Foreign_Keys=0",
        "PRAGMA main.defer_foreign_keys = true",
        "PRAGMA user_version = 3",
        "PRAGMA user_version",
        "PRAGMA query_only = 1",
        "PRAGMA optimize",
        "PRAGMA writable_schema = ON",
        "SELECT * FROM pragma_optimize",
    ],
)
def test_a_pragma_outside_the_allowlist_or_with_a_value_is_refused(sql: str) -> None:
    with pytest.raises(errors.InputError) as info:
        parse(f"SELECT 1;\n-- check: a pragma\n{sql};\n")
    err = info.value
    assert (err.file, err.line, err.exit_code) == ("x.verify.sql", 3, 2)
    assert "refused in a check file" in err.message
    assert err.hint is not None and "table_info" in err.hint


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM acounts", "no such table: acounts"),
        ("UPDATE accounts SET nope = 1", "no such column: nope"),
        ("SELECT no_such_function(1)", "no such function"),
        ("UPDATE sqlite_master SET sql = ''", "may not be modified"),
    ],
)
def test_a_statement_sqlite_cannot_compile_is_refused_before_anything_runs(
    sql: str, fragment: str
) -> None:
    with pytest.raises(errors.InputError) as info:
        parse(f"\n-- expect: no rows\n{sql};\n")
    assert (info.value.line, info.value.exit_code) == (3, 2)
    assert "SQLite cannot compile" in info.value.message and fragment in info.value.message


def test_a_check_expected_to_fail_on_a_missing_name_runs_as_a_probe() -> None:
    """Only the database can tell: it runs where it cannot take effect, never as a read."""
    (gone,) = parse("-- expect: error ~ no such table: old\nSELECT * FROM old;\n")
    assert gone.writes
    with pytest.raises(errors.InputError, match="syntax error"):
        parse("-- expect: error\nSELEC 1;\n")


def test_classification_uses_the_schema_the_checks_meet() -> None:
    empty = lint.SchemaModel(known=True)
    with pytest.raises(errors.InputError, match="no such table: accounts"):
        parse("SELECT * FROM accounts;", schema=empty)
    assert not parse("SELECT * FROM accounts;")[0].writes


# --- running ------------------------------------------------------------------------


class NoAbort(Recording):
    """A database whose forced aborts never fire: it drops them from every batch."""

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        kept = [s for s in statements if guard.ABORT_MARKER not in s.sql]
        return super().run(kept, read_only=read_only)


class KeepsAbortedWrites(Recording):
    """A database that commits what a batch did before the statement that failed."""

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        out: list[QueryResult] = []
        for stmt in statements:
            out += super().run([stmt], read_only=read_only)
        return out


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "db.sqlite")
    yield backend
    backend.close()


@pytest.fixture(params=["local", "emulator", "emulator-nonatomic"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Recording]:
    """The same database on the LocalBackend, the emulator, and an emulator whose
    batches are not atomic (each statement commits on its own)."""
    inner: Backend
    if request.param == "local":
        inner = LocalBackend(tmp_path / "db.sqlite")
    else:
        emulator: D1Emulator = request.getfixturevalue("emulator")
        emulator.atomic_batches = request.param == "emulator"
        inner = remote_backend(emulator)
    backend = Recording(inner, request.param)
    backend.script(SCHEMA)
    backend.requests.clear()
    yield backend
    backend.close()


def live(backend: Backend) -> lint.SchemaModel:
    """A schema-only copy of what `backend` holds now (what its checks meet)."""
    return planning.model_of(ledger.read_state(backend, defaults.MIGRATIONS_TABLE))


@pytest.fixture
def db(local: LocalBackend) -> Recording:
    backend = Recording(local)
    backend.script(SCHEMA)
    backend.requests.clear()
    return backend


def outcomes(results: Sequence[checks.CheckResult]) -> list[tuple[bool, str]]:
    return [(r.ok, r.outcome) for r in results]


def test_every_read_expectation_is_judged(db: Recording) -> None:
    text = """
-- expect: no rows
SELECT id FROM accounts WHERE balance < 0;
-- expect: no rows
SELECT id, name FROM accounts WHERE balance > 0;
-- expect: rows = 3
SELECT * FROM accounts;
-- expect: rows = 2
SELECT * FROM accounts;
-- expect: rows >= 3
SELECT * FROM accounts;
-- expect: rows >= 4
SELECT * FROM accounts;
-- expect: rows <= 1
SELECT * FROM accounts WHERE id = 1;
-- expect: rows <= 1
SELECT * FROM accounts;
-- expect: value = 15
SELECT sum(balance) FROM accounts;
-- expect: value = 15.0
SELECT sum(balance) FROM accounts;
-- expect: value = 'it''s'
SELECT name FROM accounts WHERE id = 3;
-- expect: value = '15'
SELECT sum(balance) FROM accounts;
-- expect: value = NULL
SELECT max(balance) FROM accounts WHERE id > 99;
-- expect: value = 0
SELECT id FROM accounts WHERE id > 99;
SELECT 1 FROM accounts;
"""
    results = checks.run_checks(db, parse(text))
    assert outcomes(results) == [
        (True, "no rows"),
        (False, "2 rows"),
        (True, "3 rows"),
        (False, "3 rows"),
        (True, "3 rows"),
        (False, "3 rows"),
        (True, "1 row"),
        (False, "3 rows"),
        (True, "value 15"),
        (True, "value 15"),
        (True, "value 'it''s'"),
        (False, "value 15"),
        (True, "value NULL"),
        (False, "no rows"),
        (True, "succeeded, 3 rows"),
    ]
    failed = results[1]
    assert failed.columns == ("id", "name")
    assert failed.rows == ((1, "a"), (3, "it's"))
    assert results[0].rows == ()  # passing checks carry no rows
    assert all(r.probe is None for r in results)
    # Everything went in one read-only request.
    assert db.requests == [([c.sql for c in parse(text)], True)]


def test_error_expectations_on_reads(db: Recording) -> None:
    text = """
-- expect: error
SELECT json_extract('not json', '$');
-- expect: error ~ MALFORMED JSON
SELECT json_extract('not json', '$');
-- expect: error ~ syntax
SELECT json_extract('not json', '$');
-- expect: error
SELECT 1;
-- expect: value = 3
SELECT count(*) FROM accounts;
"""
    results = checks.run_checks(db, parse(text))
    assert outcomes(results) == [
        (True, "error: malformed JSON: SQLITE_ERROR"),
        (True, "error: malformed JSON: SQLITE_ERROR"),
        (False, "error: malformed JSON: SQLITE_ERROR"),
        (False, "succeeded, 1 row"),
        (True, "value 3"),
    ]
    # Statements expected to fail each run alone; the rest share one request.
    assert len(db.requests) == 5
    assert all(read_only for _, read_only in db.requests)


def test_missing_names_expected_to_fail_are_judged_by_the_database(db: Recording) -> None:
    text = """
-- expect: error ~ no such table: missing
SELECT * FROM missing;
-- expect: error ~ no such table: missing
DELETE FROM missing;
"""
    results = checks.run_checks(db, parse(text))
    assert outcomes(results) == [(True, "error: no such table: missing: SQLITE_ERROR")] * 2
    assert {r.probe for r in results} == {"abort"}


def test_a_failing_batch_falls_back_to_one_by_one(db: Recording) -> None:
    text = """
-- expect: value = 3
SELECT count(*) FROM accounts;
-- check: the names are JSON
SELECT json_extract(name, '$') FROM accounts;
-- expect: no rows
SELECT id FROM accounts WHERE balance < 0;
"""
    results = checks.run_checks(db, parse(text))
    assert outcomes(results) == [
        (True, "value 3"),
        (False, "error: malformed JSON: SQLITE_ERROR"),
        (True, "no rows"),
    ]
    assert [len(sql) for sql, _ in db.requests] == [3, 1, 1, 1]


def test_offending_rows_are_capped(db: Recording) -> None:
    db.script(
        "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 40)"
        " INSERT INTO accounts (id, name, balance) SELECT i, 'n' || i, 1 FROM n"
    )
    (result,) = checks.run_checks(db, parse("-- expect: no rows\nSELECT id, name FROM accounts;"))
    assert result.outcome == "34 rows"
    assert len(result.rows) == checks.ROW_SAMPLE == 10
    assert result.rows[0] == (1, "a")
    assert result.columns == ("id", "name")


PROBES = """
-- check: negative balances are refused
-- expect: error ~ CHECK constraint failed: balance >= 0
INSERT INTO accounts (name, balance) VALUES ('probe', -1000);
-- check: ordinary rows are accepted
INSERT INTO accounts (name, balance) VALUES ('probe', 1000);
-- expect: error
UPDATE accounts SET balance = 0;
-- expect: error ~ UNIQUE
INSERT INTO accounts (id, name, balance) VALUES (1, 'probe', 1);
"""


def test_write_probes_in_abort_mode_leave_nothing(db: Recording) -> None:
    results = checks.run_checks(db, parse(PROBES))
    assert [(r.ok, r.probe) for r in results] == [
        (True, "abort"),
        (True, "abort"),
        (False, "abort"),
        (True, "abort"),
    ]
    assert results[0].outcome == (
        "error: CHECK constraint failed: balance >= 0: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_CHECK)"
    )
    assert results[1].outcome == "succeeded (probe rolled back)"
    assert results[2].outcome == "succeeded (probe rolled back)"
    assert db.scalar("SELECT count(*) FROM accounts WHERE name = 'probe'") == 0
    assert db.scalar("SELECT sum(balance) FROM accounts") == 15
    assert checks.read_proof(db) is True
    assert db.scalar("SELECT count(*) FROM _d1deploy_scratch") == 0


def _proved(db: Recording) -> bool:
    return any("_d1deploy_scratch" in sql for batch, _ in db.requests for sql in batch)


def test_the_proof_runs_once_per_run_and_again_in_the_next(db: Recording) -> None:
    checks.run_checks(db, parse(PROBES))
    assert _proved(db)
    db.requests.clear()
    checks.run_checks(db, parse(PROBES))
    assert not _proved(db)  # the same run (the same backend) trusts its own proof
    next_run = Recording(db.inner, db.kind)
    checks.run_checks(next_run, parse(PROBES))
    assert _proved(next_run)  # a stored proof is a record, not a promise


def test_a_database_that_keeps_aborted_batches_gets_shadow_probes(local: LocalBackend) -> None:
    db = KeepsAbortedWrites(local)
    db.script(SCHEMA)
    assert checks.prove_aborted_batches(db) is False
    # The proof cleaned up after itself and remembered the answer.
    assert db.scalar("SELECT count(*) FROM _d1deploy_scratch") == 0
    assert checks.read_proof(db) is False
    results = checks.run_checks(db, parse(PROBES))
    assert [(r.ok, r.probe) for r in results] == [
        (True, "shadow"),
        (True, "shadow"),
        (False, "shadow"),
        # The schema-only copy has no rows, so nothing conflicts with id 1 there.
        (False, "shadow"),
    ]
    # Shadow errors read like D1's (and the local backend's).
    assert results[0].outcome == (
        "error: CHECK constraint failed: balance >= 0: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_CHECK)"
    )
    assert results[1].outcome == "succeeded (probe ran on a schema-only copy)"
    assert db.scalar("SELECT count(*) FROM accounts WHERE name = 'probe'") == 0
    assert db.scalar("SELECT sum(balance) FROM accounts") == 15


def test_plan_mode_writes_nothing_on_an_unproven_database(db: Recording) -> None:
    results = checks.run_checks(db, parse(PROBES), allow_writes_proof=False)
    assert {r.probe for r in results} == {"shadow"}
    assert all(read_only for _, read_only in db.requests)
    assert db.scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE '_d1deploy%'") == 0


def test_plan_mode_writes_nothing_even_on_a_proven_database(db: Recording) -> None:
    assert checks.prove_aborted_batches(db) is True
    db.requests.clear()
    results = checks.run_checks(db, parse(PROBES), allow_writes_proof=False)
    assert {r.probe for r in results} == {"shadow"}
    assert all(read_only for _, read_only in db.requests)


def test_shadow_copies_foreign_keys_views_and_triggers(db: Recording) -> None:
    db.script(
        "CREATE VIEW v AS SELECT * FROM child;\n"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));\n"
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
        "CREATE INDEX child_parent ON child (parent_id);\n"
        "CREATE TRIGGER no_zero BEFORE INSERT ON parent WHEN NEW.id = 0"
        " BEGIN SELECT RAISE(ABORT, 'zero is reserved'); END;\n"
    )
    text = """
-- expect: error ~ FOREIGN KEY constraint failed
INSERT INTO child (parent_id) VALUES (42);
-- expect: error ~ zero is reserved
INSERT INTO parent (id) VALUES (0);
INSERT INTO parent (id) VALUES (7);
"""
    results = checks.run_checks(db, parse(text, live(db)), allow_writes_proof=False)
    assert outcomes(results) == [
        (
            True,
            "error: FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"
            " (extended: SQLITE_CONSTRAINT_FOREIGNKEY)",
        ),
        (True, "error: zero is reserved: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_TRIGGER)"),
        (True, "succeeded (probe ran on a schema-only copy)"),
    ]
    assert db.scalar("SELECT count(*) FROM parent") == 0


class ForeignSchema(Recording):
    """A database whose schema uses a function this SQLite does not have."""

    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        if "FROM sqlite_master" in statements[0].sql and "ORDER BY" in statements[0].sql:
            sql = "CREATE TABLE t (a INTEGER CHECK (d1_only(a) > 0))"
            return [QueryResult(("type", "name", "sql"), (("table", "t", sql),))]
        return super().run(statements, read_only=read_only)


def test_a_schema_the_shadow_cannot_copy_fails_the_probes_it_would_run(
    local: LocalBackend,
) -> None:
    db = ForeignSchema(local)
    probe = parse("INSERT INTO t VALUES (1);")
    checks._PROVEN[db] = False  # as on a database whose aborted batches keep writes
    (result,) = checks.run_checks(db, probe)
    assert not result.ok and result.judged
    assert result.outcome == (
        "not run: cannot copy table t locally: no such function: d1_only: SQLITE_ERROR"
    )
    # `plan` leaves it to `migrate`, which may well run it on the database.
    (planned,) = checks.run_checks(db, probe, allow_writes_proof=False)
    assert not planned.ok and not planned.failed
    assert planned.outcome == (
        "judged at deploy time (cannot copy table t locally: no such function: d1_only:"
        " SQLITE_ERROR)"
    )


def test_a_probe_that_took_effect_is_an_error_not_a_result(local: LocalBackend) -> None:
    db = NoAbort(local)
    db.script(SCHEMA)
    assert checks.prove_aborted_batches(local) is True
    # The platform stops aborting batches after this run proved it did: the safety net.
    checks._PROVEN[db] = True
    with pytest.raises(errors.ChangeFailed) as info:
        checks.run_checks(db, parse("-- check: probe\nINSERT INTO accounts (balance) VALUES (1);"))
    assert info.value.location == "x.verify.sql:2"
    assert "took effect" in info.value.message
    assert checks.PROOF_KEY in (info.value.hint or "")


def test_the_proof_fails_when_the_abort_does_not_fire(local: LocalBackend) -> None:
    db = NoAbort(local)
    assert checks.prove_aborted_batches(db) is False
    assert db.scalar("SELECT count(*) FROM _d1deploy_scratch") == 0


def test_results_keep_the_order_of_the_checks(db: Recording) -> None:
    text = """
INSERT INTO accounts (name, balance) VALUES ('probe', 1);
-- expect: error
SELECT * FROM missing;
SELECT 1;
-- expect: error ~ CHECK
UPDATE accounts SET balance = -1;
-- expect: value = 3
SELECT count(*) FROM accounts;
"""
    parsed = parse(text)
    results = checks.run_checks(db, parsed)
    assert [r.check for r in results] == parsed
    assert all(r.ok for r in results)


def test_every_backend_judges_reads_in_one_request(any_db: Recording) -> None:
    text = """
-- expect: value = 15
SELECT sum(balance) FROM accounts;
-- expect: no rows
SELECT id, name, balance FROM accounts WHERE balance > 0;
-- expect: rows >= 3
SELECT * FROM accounts;
-- expect: value = 'it''s'
SELECT name FROM accounts WHERE id = 3;
"""
    results = checks.run_checks(any_db, parse(text))
    assert outcomes(results) == [
        (True, "value 15"),
        (False, "2 rows"),
        (True, "3 rows"),
        (True, "value 'it''s'"),
    ]
    assert results[1].columns == ("id", "name", "balance")
    assert results[1].rows == ((1, "a", 10), (3, "it's", 5))
    assert len(any_db.requests) == 1
    assert any_db.requests[0][1] is True


def test_every_backend_reports_errors_in_d1s_words(any_db: Recording) -> None:
    text = """
-- expect: error ~ no such table: missing
SELECT * FROM missing;
-- expect: value = 3
SELECT count(*) FROM accounts;
"""
    results = checks.run_checks(any_db, parse(text))
    assert [r.ok for r in results] == [True, True]
    assert results[0].outcome.endswith("SQLITE_ERROR")


def test_probes_never_leave_a_row_on_any_backend(any_db: Recording) -> None:
    results = checks.run_checks(any_db, parse(PROBES))
    assert [r.ok for r in results[:3]] == [True, True, False]
    assert results[0].outcome.startswith("error: CHECK constraint failed: balance >= 0")
    assert any_db.scalar("SELECT count(*) FROM accounts WHERE name = 'probe'") == 0
    assert any_db.scalar("SELECT sum(balance) FROM accounts") == 15
    assert any_db.scalar("SELECT count(*) FROM _d1deploy_scratch") == 0
    # The proof fails exactly where batches are not atomic, and is remembered.
    proven = any_db.kind != "emulator-nonatomic"
    assert checks.read_proof(any_db) is proven
    assert {r.probe for r in results} == {"abort" if proven else "shadow"}


class Unreachable(Recording):
    def run(self, statements: Sequence[Statement], *, read_only: bool = False) -> list[QueryResult]:
        raise errors.NetworkError("the API could not be reached")


@pytest.mark.parametrize("text", ["SELECT 1;", "INSERT INTO accounts (balance) VALUES (1);"])
def test_infrastructure_errors_are_raised_not_judged(local: LocalBackend, text: str) -> None:
    with pytest.raises(errors.NetworkError):
        checks.run_checks(Unreachable(local), parse(text))
