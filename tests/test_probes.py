"""Attacks on the promise "a check never writes where a read was promised".

`d1sqlite` is SQLite's judgement of a statement; these tests try to get a write past it.
The property test writes the same changes in every spelling SQLite accepts (quoted,
bracketed, backticked and bare names, no whitespace at all, comments between tokens,
mixed case, CTEs, RETURNING, INSERT OR REPLACE, REPLACE, upserts, UPDATE ... FROM) and
asserts that each is judged a probe and leaves the database exactly as it was, judged
from its SQLite file, on the local backend, on the emulator, and on an emulator whose
batches are not atomic. Forced through as reads (the classifier bypassed), the same
statements are refused by SQLite locally and caught by D1's answer remotely.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d1deploy import checks, d1sqlite, errors, lint, migrations, sqlsplit
from d1deploy.backend import Backend, Statement
from d1deploy.client import D1Client
from d1deploy.local import LocalBackend
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests.e2e.states import in_process_backend
from tests.emulator import D1Emulator

SCHEMA = (
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT UNIQUE,"
    " balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0));\n"
    "CREATE TABLE log (id INTEGER PRIMARY KEY, note TEXT);\n"
    "CREATE TRIGGER logged AFTER UPDATE ON accounts BEGIN"
    " INSERT INTO log (note) VALUES ('updated ' || NEW.id); END;\n"
)
ROWS = "INSERT INTO accounts (id, name, balance) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30);"
MODEL = lint.SchemaModel.from_sql(s.sql for s in sqlsplit.split(SCHEMA))


# --- d1sqlite itself ---------------------------------------------------------------------


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(SCHEMA + ROWS)
    return db


def test_compiling_runs_nothing_and_changes_nothing() -> None:
    db = _db()
    for sql in (
        "UPDATE accounts SET balance = 0",
        "DELETE FROM accounts",
        "CREATE TABLE t2 (a)",
        "PRAGMA ignore_check_constraints = ON",
        "PRAGMA foreign_keys = OFF",
        "ATTACH ':memory:' AS other",
    ):
        d1sqlite.compile_statement(db, sql)
    assert db.execute("SELECT sum(balance), count(*) FROM accounts").fetchone() == (60, 3)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 't2'").fetchone() == (0,)
    assert db.execute("PRAGMA ignore_check_constraints").fetchone() == (0,)
    assert [r[1] for r in db.execute("PRAGMA database_list")] == ["main"]


def test_the_same_statement_compiled_twice_is_judged_twice() -> None:
    """Python caches prepared statements; a cached one would skip the authorizer."""
    db = _db()
    first = d1sqlite.compile_statement(db, "UPDATE accounts SET balance = 1")
    again = d1sqlite.compile_statement(db, "UPDATE accounts SET balance = 1")
    assert first.writes and again.writes and first.actions == again.actions


def test_actions_say_what_sqlite_asked_for() -> None:
    db = _db()
    compiled = d1sqlite.compile_statement(db, 'UPDATE"accounts"SET balance = 0 WHERE id = 2')
    names = [(a.name, a.arg1, a.arg2) for a in compiled.actions]
    assert ("UPDATE", "accounts", "balance") in names
    assert ("READ", "accounts", "id") in names
    # The trigger's own INSERT is asked for too, naming the trigger.
    assert any(a.name == "INSERT" and a.source == "logged" for a in compiled.actions)
    assert compiled.describe_write() == "UPDATE accounts.balance"
    assert not d1sqlite.compile_statement(db, "SELECT * FROM accounts").writes


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("VACUUM", "its compiled program writes"),
        ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = OFF"),
        ("PRAGMA user_version", "PRAGMA user_version"),
        ("SELECT * FROM pragma_optimize", "PRAGMA optimize"),
        ("CREATE TEMP VIEW v AS SELECT 1", "CREATE_TEMP_VIEW v"),
        ("BEGIN", "TRANSACTION BEGIN"),
        ("SAVEPOINT s", "SAVEPOINT BEGIN.s"),
        ("DETACH other", "DETACH"),
        ("ANALYZE", "CREATE_TABLE sqlite_stat1"),
    ],
)
def test_writes_that_do_not_touch_a_table_are_writes(sql: str, why: str) -> None:
    db = _db()
    if sql.startswith("DETACH"):
        db.execute("ATTACH ':memory:' AS other")
    compiled = d1sqlite.compile_statement(db, sql)
    assert compiled.writes
    assert compiled.describe_write().startswith(why)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM pragma_table_info('accounts')",
        "SELECT * FROM json_each('[1, 2]')",
        "PRAGMA index_list(accounts)",
        "PRAGMA foreign_keys",
        "PRAGMA quick_check(5)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)"
        " SELECT * FROM n",
        "EXPLAIN QUERY PLAN SELECT * FROM accounts",
        "SELECT sql FROM sqlite_master",
    ],
)
def test_reads_are_reads_every_time(sql: str) -> None:
    db = _db()
    for _ in range(2):  # eponymous tables announce schema work only on first use
        assert not d1sqlite.compile_statement(db, sql).writes


def test_compile_errors_tell_syntax_from_unknown_names() -> None:
    db = _db()
    with pytest.raises(d1sqlite.CompileError) as syntax:
        d1sqlite.compile_statement(db, "UPDATE accounts SET")
    assert syntax.value.syntax
    with pytest.raises(d1sqlite.CompileError) as unknown:
        d1sqlite.compile_statement(db, "UPDATE nowhere SET a = 1")
    assert not unknown.value.syntax and "no such table: nowhere" in str(unknown.value)


# --- spellings ---------------------------------------------------------------------------

_TABLE = st.sampled_from(
    [
        "accounts",
        '"accounts"',
        "[accounts]",
        "`accounts`",
        "ACCOUNTS",
        "main.accounts",
        'main."accounts"',
        '"main".[accounts]',
    ]
)
_COLUMN = st.sampled_from(["balance", '"balance"', "[balance]", "`balance`", "BaLaNcE"])
_GAP = st.sampled_from(["", "", " ", "\n", "\t ", "/**/", "/* note; */", "-- note;\n"])
_WORD = re.compile(r"[0-9A-Za-z_$]")


@st.composite
def _keyword(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if up else c.lower() for c, up in zip(word, flips, strict=True))


@st.composite
def _write(draw: st.DrawFn) -> str:
    """One statement that changes `accounts` (or `log`, through its trigger)."""
    table, column = draw(_TABLE), draw(_COLUMN)

    def kw(words: str) -> list[str]:
        return [draw(_keyword(w)) for w in words.split()]

    def returning() -> list[str]:
        return [*kw("RETURNING"), "*"] if draw(st.booleans()) else []

    values = ["(", "7", ",", "'x'", ",", "5", ")"]
    cols = ["(", "id", ",", "name", ",", column, ")"]
    kind = draw(
        st.sampled_from(
            [
                *("update", "update-or", "update-from", "delete", "insert", "insert-or"),
                *("replace", "upsert", "insert-select", "default-values"),
            ]
        )
    )
    if kind == "update":
        body = [*kw("UPDATE"), table, *kw("SET"), column, "=", column, "+", "1", *returning()]
    elif kind == "update-or":
        body = [*kw("UPDATE OR REPLACE"), table, *kw("SET"), column, "=", "0", *returning()]
    elif kind == "update-from":
        body = [*kw("UPDATE"), table, *kw("SET"), column, "=", "s", ".", "v"]
        body += [*kw("FROM"), "(", *kw("SELECT"), "99", *kw("AS"), "v", ")", *kw("AS"), "s"]
    elif kind == "delete":
        body = [*kw("DELETE FROM"), table, *kw("WHERE"), "id", "=", "2", *returning()]
    elif kind in ("insert", "insert-or", "replace"):
        verb = {"insert": "INSERT INTO", "insert-or": "INSERT OR REPLACE INTO"}
        head = kw(verb.get(kind, "REPLACE INTO"))
        body = [*head, table, *cols, *kw("VALUES"), *values, *returning()]
    elif kind == "upsert":
        body = [*kw("INSERT INTO"), table, *cols, *kw("VALUES"), "(", "1", ",", "'a'", ",", "0"]
        body += [")", *kw("ON CONFLICT"), "(", "id", ")", *kw("DO UPDATE SET"), column, "="]
        body += ["excluded", ".", column, "+", "77", *returning()]
    elif kind == "insert-select":
        body = [*kw("INSERT INTO"), table, "(", "name", ",", column, ")", *kw("SELECT")]
        body += ["name", "||", "'z'", ",", column, *kw("FROM"), table]
    else:
        body = [*kw("INSERT INTO"), table, *kw("DEFAULT VALUES"), *returning()]
    if draw(st.booleans()):
        cte = [*kw("WITH"), "x", *kw("AS"), "(", *kw("SELECT"), "1", ")"]
        if draw(st.booleans()):
            cte = [*kw("WITH RECURSIVE"), "n", "(", "i", ")", *kw("AS"), "("]
            cte += [*kw("SELECT"), "1", *kw("UNION ALL SELECT"), "i", "+", "1"]
            cte += [*kw("FROM"), "n", *kw("WHERE"), "i", "<", "2", ")"]
        body = cte + body
    text = body[0]
    for token in body[1:]:
        gap = draw(_GAP)
        if not gap and _WORD.match(text[-1]) and _WORD.match(token[0]):
            gap = " "  # two words need something between them
        text += gap + token
    return text + draw(st.sampled_from(["", ";", " ;", "; -- end\n"]))


def fingerprint(path: Path) -> list[Any]:
    """The user's tables and schema in the SQLite file (d1deploy's own tables left out)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        schema = con.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ('accounts', 'log')"
            " ORDER BY name"
        ).fetchall()
        tables = ("accounts", "log")
        return [schema, [con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in tables]]
    finally:
        con.close()


def changes_something(sql: str) -> bool:
    """The oracle that the generator writes: plain SQLite runs it on a copy."""
    con = _db()
    tables = "SELECT * FROM accounts UNION ALL SELECT id, note, NULL FROM log"
    before = con.execute(tables).fetchall()
    con.execute(sql).fetchall()
    return con.execute(tables).fetchall() != before


class Target:
    """A database with the accounts, on one backend, and its SQLite file."""

    def __init__(self, backend: Backend, path: Path, kind: str) -> None:
        self.backend, self.path, self.kind = backend, path, kind
        backend.run(sqlsplit.split(SCHEMA + ROWS))
        self.original = fingerprint(path)


def _remote(emulator: D1Emulator, name: str) -> tuple[RemoteBackend, Path]:
    """A new database on the emulator, in process, and its SQLite file."""
    emulator.create_database(name)
    return in_process_backend(emulator, name), emulator.db_path(name)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Target]]:
    root = tmp_path_factory.mktemp("probes")
    local_path = root / "local.sqlite"
    atomic_emu = D1Emulator(root / "atomic")
    loose_emu = D1Emulator(root / "non-atomic")
    loose_emu.atomic_batches = False
    found = {
        "local": Target(LocalBackend(local_path), local_path, "local"),
        "emulator": Target(*_remote(atomic_emu, "atomic"), "emulator"),
        "emulator-nonatomic": Target(*_remote(loose_emu, "loose"), "emulator-nonatomic"),
    }
    yield found
    for target in found.values():
        target.backend.close()
    atomic_emu.close()
    loose_emu.close()


@pytest.mark.parametrize("kind", ["local", "emulator", "emulator-nonatomic"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sql=_write())
def test_no_spelling_of_a_write_gets_past_as_a_read(
    targets: dict[str, Target], kind: str, sql: str
) -> None:
    assert changes_something(sql), sql
    target = targets[kind]
    (check,) = checks.parse_checks(f"-- check: hostile\n{sql}\n", file="h.verify.sql", schema=MODEL)
    assert check.writes, sql
    (result,) = checks.run_checks(target.backend, [check])
    assert result.probe == ("shadow" if kind == "emulator-nonatomic" else "abort")
    assert fingerprint(target.path) == target.original, sql
    if kind == "local":
        # Forced through as a read, SQLite itself refuses it.
        with pytest.raises(errors.ReadWrote) as info:
            checks.run_checks(target.backend, [dataclasses.replace(check, writes=False)])
        assert not info.value.changed and info.value.location == "h.verify.sql:2"
        assert fingerprint(target.path) == target.original, sql
    else:
        # The emulator's connection outlives requests: its CHECK constraints still hold.
        with pytest.raises(errors.SqlError, match="CHECK constraint failed"):
            target.backend.run([Statement("INSERT INTO accounts (id, balance) VALUES (9, -1)")])


@pytest.mark.parametrize(
    "sql",
    [
        'UPDATE"accounts"SET balance = balance + 1',
        "WITH x AS (SELECT 1) UPDATE[accounts]SET balance = 0",
        "REPLACE INTO\"accounts\"(id, name, balance) VALUES (1, 'a', 99)",
        "INSERT INTO accounts (name) VALUES ('z') RETURNING id",
    ],
)
def test_a_read_that_wrote_remotely_stops_the_run_with_a_bookmark_that_undoes_it(
    emulator: D1Emulator, sql: str
) -> None:
    """The classifier bypassed: D1's answer shows the change, the run stops at once,
    nothing is sent again, and the bookmark in the message undoes it."""
    backend, path = _remote(emulator, "forced")
    target = Target(backend, path, "emulator")
    (check,) = checks.parse_checks(f"SELECT 1;\n{sql};\n", file="f.verify.sql", schema=MODEL)[1:]
    emulator.reset_log()
    with pytest.raises(errors.ReadWrote) as info:
        checks.run_checks(backend, [dataclasses.replace(check, writes=False)])
    err = info.value
    assert err.changed and err.exit_code == 1 and err.location == "f.verify.sql:2"
    assert err.bookmark and f"d1deploy restore --bookmark {err.bookmark} --yes" in (err.hint or "")
    batches = [r.json["batch"] for r in emulator.requests if isinstance(r.json, dict)]
    sent = [b for b in batches if any(sql in item["sql"] for item in b)]
    assert len(sent) == 1
    assert fingerprint(path) != target.original
    backend.restore(err.bookmark)
    assert fingerprint(path) == target.original
    backend.close()


def test_d1s_answer_is_read_into_every_result(emulator: D1Emulator) -> None:
    backend, _ = _remote(emulator, "meta")
    write, read = backend.run(
        [Statement("CREATE TABLE t (a)"), Statement("SELECT count(*) FROM sqlite_master")]
    )
    assert write.changed_db is True and write.wrote
    assert read.changed_db is False and not read.wrote
    backend.close()


def test_a_verify_read_that_d1_says_wrote_stops_the_deploy_where_it_stands(
    emulator: D1Emulator, tmp_path: Path
) -> None:
    """D1 answers a verify read with a change: the deploy stops there (exit 1), undoes
    nothing by machine, names the statement, and hands over a bookmark to restore."""
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    migration, rollback, verify = migrations.new_migration(mdir, "t")
    migration.write_text("CREATE TABLE t (a);\n", encoding="utf-8")
    rollback.write_text("DROP TABLE t;\n", encoding="utf-8")
    verify.write_text("-- expect: value = 0\nSELECT count(*) FROM t;\n", encoding="utf-8")
    # The check runs inside the migration's batch (#19): D1's answer to that one item
    # says it wrote, the rest of the batch is answered as the emulator ran it.
    wrote = {"changes": 1, "rows_written": 1, "changed_db": True}
    inner = emulator.transport()

    def answer(request: httpx.Request) -> httpx.Response:
        response = inner.handle_request(request)
        if not request.url.path.endswith("/query"):
            return response
        items = json.loads(request.content).get("batch") or []
        body = json.loads(response.read())
        for i, item in enumerate(items):
            if item["sql"].strip().rstrip(";") == "SELECT count(*) FROM t" and body["success"]:
                body["result"][i]["meta"].update(wrote)
        return httpx.Response(response.status_code, json=body)

    emulator.create_database("deploy")
    path = emulator.db_path("deploy")
    client = D1Client(
        token=emulator.token,
        account_id=emulator.account_id,
        base_url=emulator.base_url,
        transport=httpx.MockTransport(answer),
    )
    backend = RemoteBackend(client, client.resolve_database("deploy"))
    with pytest.raises(migrations.DeployFailed) as info:
        migrations.migrate(backend, Project(mdir, actor="test"))
    err = info.value
    assert err.exit_code == 1 and err.location == f"{verify}:2"
    assert "changed the database" in err.message and "nothing was undone" in err.message
    assert "d1deploy restore --bookmark" in (err.hint or "")
    report = err.report
    assert isinstance(report, migrations.MigrateReport) and not report.ok
    assert [a.name for a in report.applied] == [migration.name] and not report.rolled_back
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM _d1deploy_lock").fetchone() == (0,)
    finally:
        con.close()
    backend.close()
