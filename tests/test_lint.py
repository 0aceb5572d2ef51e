"""Tests for d1deploy.lint: each check positive and negative, file:line, and the schema
model that carries the schema from statement to statement and file to file."""

from __future__ import annotations

from pathlib import Path

import pytest

from d1deploy import lint, sqlsplit
from d1deploy.lint import Finding, SchemaModel

PARENT_CHILD = (
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n"
    "CREATE TABLE deposits (id INTEGER PRIMARY KEY,\n"
    "  user_id INTEGER REFERENCES users(id) ON DELETE CASCADE);\n"
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id));\n"
)


def run(sql: str, *, schema: SchemaModel | None = None) -> list[Finding]:
    return lint.lint_statements(sqlsplit.split(sql, file="m.sql"), schema=schema)


def codes(sql: str, *, schema: SchemaModel | None = None) -> list[tuple[str, str, int | None]]:
    return [(f.code, f.severity, f.line) for f in run(sql, schema=schema)]


def test_finding_location() -> None:
    assert Finding("error", "c", "m", "a.sql", 3, None).location == "a.sql:3"
    assert Finding("error", "c", "m", "a.sql", None, None).location == "a.sql"
    assert Finding("warning", "c", "m", None, 3, "h").location is None


def test_clean_migration_has_no_findings() -> None:
    sql = PARENT_CHILD + (
        "PRAGMA defer_foreign_keys = on;\n"
        "INSERT INTO deposits (user_id) VALUES (42);\n"
        "ALTER TABLE users ADD COLUMN email TEXT;\n"
        "CREATE INDEX idx_users_email ON users(email);\n"
        "CREATE TRIGGER users_ins AFTER INSERT ON users BEGIN\n"
        "  UPDATE users SET name = CASE WHEN NEW.name IS NULL THEN '' ELSE NEW.name END;\n"
        "END;\n"
        "SELECT ?1, ?2;\n"
    )
    assert run(sql) == []


# --- transaction control ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN;",
        "BEGIN TRANSACTION;",
        "begin immediate;",
        "COMMIT;",
        "END TRANSACTION;",
        "ROLLBACK;",
        "SAVEPOINT s;",
        "RELEASE s;",
        "/* wrapped */ COMMIT;",
    ],
)
def test_transaction_control_is_an_error(statement: str) -> None:
    findings = run(f"SELECT 1;\n\n{statement}\n")
    assert [(f.code, f.severity, f.line) for f in findings] == [("transaction-control", "error", 3)]
    assert findings[0].hint is not None and "batch" in findings[0].hint
    assert findings[0].location == "m.sql:3"


def test_trigger_body_and_end_column_are_not_transaction_control() -> None:
    sql = (
        "CREATE TABLE t (id INTEGER, end TEXT);\n"
        "CREATE TRIGGER t_ins AFTER INSERT ON t begin\n  UPDATE t SET end = 'x';\nend;\n"
        "UPDATE t SET end = NULL;\n"
    )
    assert run(sql) == []


# --- PRAGMA foreign_keys = OFF ---------------------------------------------------------


@pytest.mark.parametrize(
    "pragma",
    [
        "PRAGMA foreign_keys = OFF;",
        "pragma foreign_keys=0;",
        "PRAGMA foreign_keys = false;",
        "PRAGMA main.foreign_keys = 'off';",
        "PRAGMA foreign_keys(no);",
    ],
)
def test_foreign_keys_off_is_a_warning(pragma: str) -> None:
    findings = run(f"-- rebuild\n{pragma}\n")
    assert [(f.code, f.severity, f.line) for f in findings] == [("foreign-keys-off", "warning", 2)]
    assert findings[0].hint is not None and "defer_foreign_keys" in findings[0].hint


@pytest.mark.parametrize(
    "pragma",
    ["PRAGMA foreign_keys = ON;", "PRAGMA defer_foreign_keys = off;", "PRAGMA foreign_keys;"],
)
def test_other_pragmas_are_fine(pragma: str) -> None:
    assert run(pragma) == []


# --- DROP TABLE with ON DELETE CASCADE children ------------------------------------------


def test_drop_of_a_cascade_parent_names_the_children() -> None:
    findings = run(PARENT_CHILD + "\nDROP TABLE users;\n")

    assert [(f.code, f.severity, f.line) for f in findings] == [("drop-cascade", "warning", 6)]
    assert "deposits" in findings[0].message
    assert "notes" not in findings[0].message  # no CASCADE: D1 would refuse, not delete
    assert findings[0].hint is not None
    assert "allow-row-loss deposits" in findings[0].hint


def test_drop_without_cascade_children_is_fine() -> None:
    sql = PARENT_CHILD + "DROP TABLE deposits;\nDROP TABLE notes;\nDROP TABLE users;\n"
    assert run(sql) == []


def test_self_reference_is_not_a_child() -> None:
    sql = (
        "CREATE TABLE tree (id INTEGER PRIMARY KEY,"
        " parent INTEGER REFERENCES tree(id) ON DELETE CASCADE);\nDROP TABLE tree;"
    )
    assert run(sql) == []


def test_cascade_children_of_a_live_table() -> None:
    with SchemaModel() as schema:
        for sql in sqlsplit.split(
            PARENT_CHILD + "CREATE TABLE tree (id INTEGER PRIMARY KEY,"
            " parent INTEGER REFERENCES tree(id) ON DELETE CASCADE,"
            " owner INTEGER REFERENCES USERS(id) ON DELETE cascade);"
        ):
            assert schema.dry_run(sql.sql).error is None
        assert schema.cascade_children("Users") == ("deposits", "tree")
        assert schema.cascade_children("tree") == ()


def test_rebuild_through_rename_still_cascades() -> None:
    # Renaming the parent re-points the children's foreign keys to the old copy.
    sql = PARENT_CHILD + (
        "ALTER TABLE users RENAME TO users_old;\n"
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
        "INSERT INTO users SELECT id, coalesce(name, '') FROM users_old;\n"
        "DROP TABLE users_old;\n"
    )
    findings = run(sql)
    assert [(f.code, f.line) for f in findings] == [("drop-cascade", 8)]
    assert "users_old" in findings[0].message and "deposits" in findings[0].message


def test_cascade_detected_across_two_files(tmp_path: Path) -> None:
    first = tmp_path / "001_init.sql"
    second = tmp_path / "002_rebuild.sql"
    first.write_text(PARENT_CHILD, encoding="utf-8")
    second.write_text("-- rebuild users\n\nDROP TABLE users;\n", encoding="utf-8")

    findings = lint.lint_files([first, second])

    assert [(f.code, f.file, f.line) for f in findings] == [("drop-cascade", str(second), 3)]
    assert lint.lint_files([second]) == []  # alone, users is unknown: nothing to say


def test_cascade_detected_against_a_live_schema() -> None:
    creates = [
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE deposits (id INTEGER PRIMARY KEY,"
        " user_id INTEGER REFERENCES users(id) ON DELETE CASCADE)",
    ]
    with SchemaModel.from_sql(creates) as schema:
        findings = run("DROP TABLE IF EXISTS users;", schema=schema)
        assert [f.code for f in findings] == ["drop-cascade"]
        assert schema.tables() == ("deposits",)  # the model moved on


# --- size and parameter limits -----------------------------------------------------------


def test_statement_over_100_kb_is_an_error() -> None:
    # 33,334 Korean characters are 100,002 UTF-8 bytes: the limit counts bytes.
    big = "SELECT '" + "홍" * 33_334 + "';"
    findings = run(f"SELECT 1;\n{big}")
    assert [(f.code, f.severity, f.line) for f in findings] == [("statement-too-big", "error", 2)]
    assert "100,0" in findings[0].message


def test_statement_of_exactly_100_kb_is_fine() -> None:
    filler = 100_000 - len("SELECT '';")
    assert run("SELECT '" + "x" * filler + "';") == []


def test_more_than_100_parameters_is_an_error() -> None:
    many = "INSERT INTO t VALUES (" + ", ".join(["?"] * 101) + ");"
    assert codes(many) == [("too-many-parameters", "error", 1)]


def test_100_parameters_and_question_marks_in_strings_are_fine() -> None:
    sql = PARENT_CHILD + ("SELECT " + ", ".join(["?"] * 99) + ", ?100, '?', \"?\" FROM users;\n")
    assert run(sql) == []


# --- ALTER TABLE ... ADD COLUMN ... NOT NULL ------------------------------------------------


@pytest.mark.parametrize(
    "column",
    [
        "email TEXT NOT NULL",
        "COLUMN email TEXT NOT NULL",
        "email TEXT NOT NULL DEFAULT NULL",
        "email TEXT NOT NULL CHECK (email <> '')",
        '"e-mail" TEXT /* required */ NOT NULL',
    ],
)
def test_add_not_null_column_without_default_is_a_warning(column: str) -> None:
    # D1 accepts it on an empty table; plan and migrate count the rows.
    findings = run(f"{PARENT_CHILD}ALTER TABLE users ADD {column};")
    assert [(f.code, f.severity, f.line, f.table) for f in findings] == [
        ("not-null-without-default", "warning", 5, "users")
    ]


@pytest.mark.parametrize(
    "column",
    [
        "email TEXT NOT NULL DEFAULT ''",
        "email TEXT DEFAULT 'NOT NULL'",
        "email TEXT NOT NULL DEFAULT (lower('X'))",
        "email TEXT CHECK (email IS NOT NULL)",
        "email TEXT",
        "email TEXT GENERATED ALWAYS AS (lower(name)) VIRTUAL NOT NULL",
    ],
)
def test_add_column_with_default_or_nullable_is_fine(column: str) -> None:
    assert run(f"{PARENT_CHILD}ALTER TABLE users ADD COLUMN {column};") == []


# --- syntax errors and the dry run -------------------------------------------------------


def test_syntax_error_points_at_the_statement() -> None:
    sql = "CREATE TABLE t (id INTEGER);\n\n-- next one is broken\nINSERT INTO t\n  VALUSE (1);\n"
    findings = run(sql)
    assert [(f.code, f.severity, f.location) for f in findings] == [
        ("syntax-error", "error", "m.sql:4")
    ]
    assert 'near "VALUSE": syntax error' in findings[0].message


@pytest.mark.parametrize(
    ("statement", "fragment"),
    [
        ("SELECT 1 +;", "syntax error"),
        ("SELECT #;", "unrecognized token"),
        ("SELECT (1", "incomplete input"),  # the last statement, without `;`
    ],
)
def test_each_kind_of_parse_error_is_a_syntax_error(statement: str, fragment: str) -> None:
    findings = run(statement)
    assert [f.code for f in findings] == ["syntax-error"]
    assert fragment in findings[0].message


def test_unknown_table_is_silent_without_a_schema() -> None:
    sql = "INSERT INTO users (name) VALUES ('a');\nALTER TABLE users ADD COLUMN x TEXT;"
    assert run(sql) == []


def test_unknown_table_is_a_dry_run_warning_against_a_live_schema() -> None:
    with SchemaModel.from_sql(["CREATE TABLE users (id INTEGER PRIMARY KEY)"]) as schema:
        findings = run("SELECT 1;\nINSERT INTO user (id) VALUES (1);", schema=schema)
    assert [(f.code, f.severity, f.line) for f in findings] == [("dry-run", "warning", 2)]
    assert "no such table: user" in findings[0].message


def test_semantic_error_is_a_dry_run_warning() -> None:
    findings = run("CREATE TABLE t (id INTEGER);\nCREATE TABLE t (id INTEGER);")
    assert [(f.code, f.severity, f.line) for f in findings] == [("dry-run", "warning", 2)]
    assert "already exists" in findings[0].message


def test_rows_are_discarded_and_missing_parents_are_not_reported() -> None:
    sql = PARENT_CHILD + (
        "INSERT INTO users (id) VALUES (1);\n"
        "INSERT INTO users (id) VALUES (1);\n"  # would collide if rows were kept
        "INSERT INTO deposits (user_id) VALUES (7);\n"  # user 7 may exist live
    )
    assert run(sql) == []


def test_schema_changes_carry_over_between_statements() -> None:
    sql = (
        "CREATE TABLE t (id INTEGER);\n"
        "ALTER TABLE t RENAME TO u;\n"
        "INSERT INTO u (id) VALUES (1);\n"
        "INSERT INTO t (id) VALUES (1);\n"
    )
    with SchemaModel.from_sql([]) as schema:
        findings = run(sql, schema=schema)
        assert [(f.code, f.line) for f in findings] == [("dry-run", 4)]
        assert schema.tables() == ("u",)


def test_runaway_query_is_stopped_without_a_finding() -> None:
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c;"
    # The lint goes on to the next statement instead of hanging.
    assert codes(sql + "\nSELEC 1;") == [("syntax-error", "error", 2)]


def test_dry_run_skips_transaction_control() -> None:
    with SchemaModel() as schema:
        assert schema.dry_run("COMMIT;") == lint.DryRun()
        assert schema.dry_run("CREATE TABLE t (id INTEGER);").error is None
        assert schema.tables() == ("t",)


def test_from_sql_skips_internal_tables_and_empty_rows() -> None:
    creates = [
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT)",
        "CREATE TABLE sqlite_sequence(name,seq)",
        None,
        "CREATE INDEX t_id ON t(id)",
    ]
    with SchemaModel.from_sql(creates) as schema:
        assert schema.known
        assert schema.tables() == ("t",)
    assert not SchemaModel().known


def test_lint_files_reports_an_unreadable_file_and_goes_on(tmp_path: Path) -> None:
    bad = tmp_path / "001_bad.sql"
    bad.write_bytes(b"SELECT 1;\n\nSELECT '\xff';\n")
    good = tmp_path / "002_good.sql"
    good.write_text("BEGIN;\n", encoding="utf-8")

    findings = lint.lint_files([bad, good])

    assert [(f.code, f.file, f.line) for f in findings] == [
        ("input-error", str(bad), 3),
        ("transaction-control", str(good), 1),
    ]
    assert findings[0].hint is not None and "UTF-8" in findings[0].hint
