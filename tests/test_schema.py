"""The live schema against the one the applied migrations leave (`d1deploy/schema.py`):
normalising definitions, naming each difference, replaying by the ledger, adopting a
database migrated by hand, and what status, plan, migrate and baseline do with it, on a
local file and on the D1 emulator.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from d1deploy import ledger, migrations, schema, sqlsplit, suggest
from d1deploy.discovery import discover
from d1deploy.errors import DriftDetected
from d1deploy.local import LocalBackend
from d1deploy.migrations import MigrateOptions
from d1deploy.project import Project
from d1deploy.schema import SchemaDrift, canonical
from tests import helpers
from tests.helpers import SEED, Db, local_rows, run, run_json

M000 = "000_base_schema.sql"
M001 = "001_schema_enhancements.sql"


# --- definitions and differences, no database -------------------------------------------


def objects(*sql: str) -> schema.Objects:
    """The user's objects of a database made by `sql`, as the engine reads them."""
    with closing(sqlite3.connect(":memory:")) as con:
        for statement in sql:
            con.execute(statement)
        rows = con.execute(ledger.SCHEMA_SQL).fetchall()
    return schema.user_objects([ledger.SchemaObject(*r) for r in rows], "d1_migrations")


def test_formatting_case_quoting_and_comments_do_not_count_but_literals_do() -> None:
    plain = "CREATE TABLE t (a INTEGER NOT NULL DEFAULT 0, b TEXT DEFAULT 'Hi')"
    restyled = (
        'create table "T"(\n  [A] integer not null default 0, -- the count\n'
        "  `b` TEXT /* greeting */ DEFAULT 'Hi'\n)"
    )
    assert canonical(plain) == canonical(restyled)
    assert canonical(plain) != canonical(plain.replace("'Hi'", "'hi'"))
    assert canonical(plain) != canonical(plain.replace("DEFAULT 0", "DEFAULT 1"))
    assert canonical("SELECT 1 == 1") == canonical("select 1 = 1")


BASE = (
    "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
    "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'x'"
    " CHECK (length(name) <= 15), parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE,"
    " code TEXT UNIQUE)",
    "CREATE INDEX t_name ON t (name) WHERE name <> ''",
    "CREATE VIEW v AS SELECT id FROM t",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
)


def only(base: tuple[str, ...], *, drop: str) -> tuple[str, ...]:
    return tuple(s for s in base if drop not in s)


def with_t(definition: str) -> tuple[str, ...]:
    """BASE with table t defined otherwise."""
    return tuple(definition if s.startswith("CREATE TABLE t ") else s for s in BASE)


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        pytest.param(BASE, [], id="same"),
        pytest.param(
            (*BASE, "ALTER TABLE t ADD COLUMN note TEXT DEFAULT 'n'"),
            [("changed", "table", "t", ("added column note TEXT DEFAULT 'n'",))],
            id="column-added",
        ),
        pytest.param(
            only(BASE, drop="t_name"),
            [("missing", "index", "t_name", ())],
            id="index-dropped",
        ),
        pytest.param(
            with_t(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'x',"
                " parent_id INTEGER REFERENCES parent (id), code TEXT UNIQUE)"
            ),
            [
                (
                    "changed",
                    "table",
                    "t",
                    (
                        "added FOREIGN KEY (parent_id) REFERENCES parent (id)",
                        "missing FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE",
                        "missing CHECK (length(name) <= 15)",
                    ),
                )
            ],
            id="check-and-cascade-removed",
        ),
        pytest.param(
            with_t(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT DEFAULT 'y'"
                " CHECK (length(name) <= 15), parent_id INTEGER REFERENCES parent (id)"
                " ON DELETE CASCADE, code TEXT)"
            ),
            [
                (
                    "changed",
                    "table",
                    "t",
                    (
                        "changed column name TEXT NOT NULL DEFAULT 'x'"
                        " (live: name TEXT DEFAULT 'y')",
                        "missing UNIQUE (code)",
                    ),
                )
            ],
            id="not-null-default-unique",
        ),
        pytest.param(
            (*only(BASE, drop="t_name"), "CREATE INDEX t_name ON t (name)"),
            [("changed", "index", "t_name", ())],
            id="partial-index-made-full",
        ),
        pytest.param(
            (*only(BASE, drop="VIEW"), "CREATE VIEW v AS SELECT id, name FROM t"),
            [("changed", "view", "v", ())],
            id="view",
        ),
        pytest.param(
            (*only(BASE, drop="TRIGGER"), "CREATE TABLE extra (x)"),
            [("added", "table", "extra", ()), ("missing", "trigger", "tr", ())],
            id="trigger-dropped-table-added",
        ),
    ],
)
def test_each_difference_is_named_with_both_definitions(
    live: tuple[str, ...], expected: list[tuple[str, str, str, tuple[str, ...]]]
) -> None:
    want, have = objects(*BASE), objects(*live)
    found = schema.compare(want, have)
    assert [(d.change, d.type, d.name, d.details) for d in found] == expected
    for d in found:
        key = (d.type, d.name.lower())
        assert d.expected == (want[key].sql if key in want else None)
        assert d.live == (have[key].sql if key in have else None)


def test_a_rebuild_that_keeps_the_definition_is_no_difference() -> None:
    tables = BASE[:3]
    rebuilt = (
        *tables,
        tables[1].replace("CREATE TABLE t ", "CREATE TABLE t_new "),
        "DROP TABLE t",
        "ALTER TABLE t_new RENAME TO t",  # sqlite_master now says CREATE TABLE "t"
        tables[2],
    )
    have = objects(*rebuilt)
    assert '"t"' in str(have[("table", "t")].sql)
    assert schema.compare(objects(*tables), have) == []


def test_sqlite_d1_d1deploy_and_ledger_objects_are_left_out() -> None:
    found = objects(
        "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT)",  # makes sqlite_sequence
        "CREATE TABLE _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID",
        ledger.create_ledger_sql("d1_migrations"),
        "CREATE INDEX by_name ON d1_migrations (name)",
        ledger.CREATE_HISTORY,
    )
    assert list(found) == [("table", "a")]


# --- the replay, on a local file and on the emulator ---------------------------------------


# The seed project, and a database on a local file or the emulator, as the engine's
# tests have them.
db = helpers.db
seed = helpers.seed


def by_hand(db: Db, folder: Path, name: str) -> None:
    """The seed runbook's way: the migration's statements run, no ledger row."""
    (migration,) = [m for m in discover(folder) if m.name == name]
    db.backend.run(migration.statements())


def deploy(db: Db, folder: Path, to: str | None = None) -> migrations.MigrateReport:
    return migrations.migrate(db.backend, Project(folder, actor="me"), MigrateOptions(to=to))


def status(db: Db, folder: Path) -> migrations.StatusReport:
    return migrations.status(db.backend, Project(folder))


def test_the_seed_deployed_by_d1deploy_has_no_schema_drift(db: Db, seed: Path) -> None:
    deploy(db, seed)
    found = status(db, seed).schema
    assert found == schema.SchemaCheck(True, (M000, M001))


def test_001_applied_by_hand_is_refused_then_adopted_in_one_command(db: Db, seed: Path) -> None:
    deploy(db, seed, to=M000)
    by_hand(db, seed, M001)

    found = status(db, seed).schema
    assert found is not None and found.compared
    assert [d.label for d in found.differences] == [
        "table audit_logs added",
        "table deposit_transactions changed",
        "table user_deposits changed",
        "index idx_audit_logs_action_created added",
        "index idx_audit_logs_telegram_created added",
    ]
    assert found.differences[2].details == ("added CHECK (balance >= 0)",)
    assert (found.matches_up_to, found.baseline_records) == (M001, (M001,))
    assert schema.adoption(found) == (
        f"The live schema already matches {M001}: `d1deploy baseline {M001}` records it"
        " without running it"
    )

    with pytest.raises(SchemaDrift) as refused:
        deploy(db, seed)
    assert refused.value.exit_code == 5 and isinstance(refused.value, DriftDetected)
    assert "table audit_logs added" in refused.value.message
    assert refused.value.hint is not None
    assert f"`d1deploy baseline {M001}`" in refused.value.hint
    assert db.ledger() == [M000] and db.count("d1_migrations") == 1

    migrations.baseline(db.backend, Project(seed, actor="me"), M001)
    after = status(db, seed)
    assert after.schema == schema.SchemaCheck(True, (M000, M001)) and after.pending == ()
    assert deploy(db, seed).applied == ()


def test_a_database_migrated_entirely_by_hand_is_adopted_with_every_migration(
    db: Db, seed: Path
) -> None:
    by_hand(db, seed, M000)
    by_hand(db, seed, M001)
    found = status(db, seed).schema
    assert found is not None
    assert (found.matches_up_to, found.baseline_records) == (M001, (M000, M001))
    with suggest.target(suggest.Target(database=("-d", "prod"))):
        adopting = schema.adoption(found)
    assert adopting == (
        f"The live schema already matches {M001}: `d1deploy baseline {M001} -d prod` records"
        f" it and {M000} without running them"
    )


HAND_CHANGES = {
    "column-added": (
        ["ALTER TABLE users ADD COLUMN nickname TEXT"],
        "table users changed (added column nickname TEXT)",
    ),
    "index-dropped": (
        ["DROP INDEX idx_audit_logs_action_created"],
        "index idx_audit_logs_action_created missing",
    ),
    "check-removed-by-a-rebuild": (
        [
            "CREATE TABLE user_deposits_old (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL"
            " UNIQUE, balance INTEGER NOT NULL DEFAULT 0, created_at DATETIME DEFAULT"
            " CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)",
            "INSERT INTO user_deposits_old SELECT * FROM user_deposits",
            "DROP TABLE user_deposits",
            "ALTER TABLE user_deposits_old RENAME TO user_deposits",
        ],
        "table user_deposits changed (missing CHECK (balance >= 0))",
    ),
}


@pytest.mark.parametrize("change", list(HAND_CHANGES))
def test_a_change_made_by_hand_is_shown_and_refused(db: Db, seed: Path, change: str) -> None:
    deploy(db, seed)
    (seed / "002_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    statements, described = HAND_CHANGES[change]
    db.exec(*statements)

    report = status(db, seed)
    assert [d.describe() for d in report.schema_drift] == [described]
    assert report.schema is not None and report.schema.matches_up_to is None
    with pytest.raises(SchemaDrift) as refused:
        migrations.refuse_drift(report)
    assert refused.value.hint is not None and "`d1deploy status`" in refused.value.hint
    plan = migrations.plan(db.backend, Project(seed))
    assert not plan.ok and plan.status.schema_drift == report.schema_drift

    with pytest.raises(SchemaDrift, match=described.replace("(", r"\(").replace(")", r"\)")):
        deploy(db, seed)
    assert db.ledger() == [M000, M001]
    assert db.rows("SELECT name FROM sqlite_master WHERE name = 'more'") == []
    # --allow-drift goes on.
    assert [
        a.name
        for a in migrations.migrate(
            db.backend, Project(seed, actor="me"), MigrateOptions(allow_drift=True)
        ).applied
    ] == ["002_more.sql"]


# --- what the replay cannot know, and how the ledger orders it --------------------------


def test_a_missing_file_leaves_the_schema_uncompared_and_unrefused(db: Db, seed: Path) -> None:
    (seed / "002_gone.sql").write_text("CREATE TABLE gone (id INTEGER);\n")
    deploy(db, seed)
    (seed / "002_gone.sql").unlink()

    report = status(db, seed)
    assert report.missing == ("002_gone.sql",)
    assert report.schema is not None and not report.schema.compared
    assert report.schema.reason == (
        "the file of applied migration 002_gone.sql is missing, so the schema the migrations"
        " leave cannot be replayed"
    )
    migrations.refuse_drift(report)  # nothing to refuse on
    (seed / "003_next.sql").write_text("CREATE TABLE next (id INTEGER);\n")
    notes: list[str] = []
    done = migrations.migrate(db.backend, Project(seed, actor="me", notify=notes.append))
    assert [a.name for a in done.applied] == ["003_next.sql"]
    assert any(n.startswith("schema not compared: the file of applied migration") for n in notes)


def test_a_migration_that_fails_on_an_empty_database_says_where(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_alter.sql").write_text(
        "-- the table came before the migrations\nALTER TABLE legacy ADD COLUMN x TEXT;\n"
    )
    local = LocalBackend(tmp_path / "local.sqlite")
    local.run(sqlsplit.split("CREATE TABLE legacy (id INTEGER);"))
    migrations.migrate(local, Project(folder, actor="me"), MigrateOptions(allow_drift=True))

    found = migrations.status(local, Project(folder)).schema
    assert found is not None and not found.compared
    assert found.reason is not None
    assert found.reason.startswith(
        f"001_alter.sql fails on an empty database ({folder}/001_alter.sql:2"
    )
    assert "no such table: legacy" in found.reason


def test_the_replay_follows_the_ledger_order_and_wrangler_applied_rows(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_base.sql").write_text("CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    (folder / "0002_x.sql").write_text("ALTER TABLE t ADD COLUMN x TEXT;\n")
    (folder / "0003_y.sql").write_text("ALTER TABLE t ADD COLUMN y TEXT;\n")
    local = LocalBackend(tmp_path / "local.sqlite")
    # Applied by wrangler, 0003 before 0002: ledger rows, no d1deploy history.
    local.run(
        sqlsplit.split(
            ledger.create_ledger_sql("d1_migrations")
            + "CREATE TABLE t (id INTEGER PRIMARY KEY); ALTER TABLE t ADD COLUMN y TEXT;"
            " ALTER TABLE t ADD COLUMN x TEXT;"
            " INSERT INTO d1_migrations (name)"
            " VALUES ('0001_base.sql'), ('0003_y.sql'), ('0002_x.sql');"
        )
    )

    found = migrations.status(local, Project(folder)).schema
    assert found == schema.SchemaCheck(True, ("0001_base.sql", "0003_y.sql", "0002_x.sql"))


def test_migrations_that_change_no_schema_cannot_be_told_from_the_schema(
    db: Db, seed: Path
) -> None:
    (seed / "002_data.sql").write_text("INSERT INTO users (telegram_id) VALUES ('1');\n")
    (seed / "003_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    deploy(db, seed, to=M000)
    by_hand(db, seed, M001)

    found = status(db, seed).schema
    assert found is not None
    assert found.matches_up_to == "002_data.sql"
    assert found.baseline_records == (M001, "002_data.sql")
    assert found.also_matches_up_to == (M001,)
    text = schema.adoption(found)
    assert text is not None and "the schema cannot say which of them ran" in text


# --- baseline ------------------------------------------------------------------------------


def test_baseline_refuses_what_the_schema_does_not_hold_and_names_what_it_does(
    db: Db, seed: Path
) -> None:
    by_hand(db, seed, M000)

    with pytest.raises(SchemaDrift) as refused:
        migrations.baseline(db.backend, Project(seed, actor="me"), M001)
    err = refused.value
    assert err.exit_code == 5 and err.instead == M000
    assert err.message.startswith(
        f"the live schema is not what the migrations up to {M001} leave, so recording them"
        " as applied would be wrong: table audit_logs missing;"
    )
    assert err.hint == (
        f"the live schema matches the migrations up to {M000}: `d1deploy baseline {M000}`"
        f" records those; `d1deploy baseline {M001} --force` records them anyway"
    )
    with (
        suggest.target(suggest.Target(database=("--local=db file.sqlite",))),
        pytest.raises(SchemaDrift) as refused,
    ):
        migrations.baseline(db.backend, Project(seed, actor="me"), M001)
    assert f"`d1deploy baseline {M000} '--local=db file.sqlite'`" in (refused.value.hint or "")
    assert db.ledger() == []

    forced = migrations.baseline(db.backend, Project(seed, actor="me"), M001, force=True)
    assert forced.recorded == (M000, M001)
    assert [d.label for d in forced.forced_over][:1] == ["table audit_logs missing"]
    assert db.ledger() == [M000, M001]


def test_baseline_refuses_when_the_schema_cannot_be_checked(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_alter.sql").write_text("ALTER TABLE legacy ADD COLUMN x TEXT;\n")
    local = LocalBackend(tmp_path / "local.sqlite")
    local.run(
        sqlsplit.split("CREATE TABLE legacy (id INTEGER); ALTER TABLE legacy ADD COLUMN x TEXT;")
    )

    with pytest.raises(SchemaDrift, match="cannot check that the live schema is what"):
        migrations.baseline(local, Project(folder, actor="me"), "001_alter")
    forced = migrations.baseline(local, Project(folder, actor="me"), "001_alter", force=True)
    assert forced.recorded == ("001_alter.sql",) and forced.schema_unchecked


# --- the command line: text, --json, the step summary, pasteable commands -----------------

LOCAL = "--local=db.sqlite"
DIR = ("--migrations-dir", "my migrations")


@pytest.fixture
def hand_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project (migrations in a folder whose name needs quoting) whose local database
    got 000 from d1deploy and 001 by hand, in GitHub Actions."""
    work = tmp_path / "project"
    shutil.copytree(SEED, work / "my migrations", ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.chdir(work)
    for name, value in {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
    }.items():
        monkeypatch.setenv(name, value)
    run("migrate", LOCAL, *DIR, "--to", M000, "--no-backup")
    (m001,) = [m for m in discover(work / "my migrations") if m.name == M001]
    run("exec", LOCAL, "--file", str(m001.path))
    return tmp_path


def suggested(text: str) -> list[str]:
    """The command between backticks after "matches ...:", as a shell would split it."""
    command = text.split("already matches")[1].split("`")[1]
    words = shlex.split(command)
    assert words[0] == "d1deploy"
    return words[1:]


def test_status_plan_and_migrate_show_refuse_and_name_a_pasteable_baseline(
    hand_migrated: Path,
) -> None:
    shown = run("status", LOCAL, *DIR, code=5)
    assert "schema drift: 5 object(s) differ from what the applied migrations leave" in (
        shown.stderr
    )
    assert "table user_deposits changed (added CHECK (balance >= 0))" in shown.stderr
    assert "      expected: CREATE TABLE user_deposits ( id INTEGER PRIMARY KEY," in shown.stderr
    assert '      live:     CREATE TABLE "user_deposits" ( id INTEGER PRIMARY KEY,' in shown.stderr
    command = suggested(shown.stderr)
    assert command == ["baseline", M001, LOCAL, "--migrations-dir", "my migrations"]
    summary = (hand_migrated / "summary.md").read_text(encoding="utf-8")
    assert "#### Schema drift: 5 object(s) differ" in summary
    assert "| object | change | details | expected | live |" in summary
    assert "| table audit_logs | added |  |  | `CREATE TABLE audit_logs ( id" in summary
    assert "schema_drift=5" in (hand_migrated / "output").read_text(encoding="utf-8")

    plan = run("plan", LOCAL, *DIR, code=5)
    assert "already matches 001_schema_enhancements.sql" in plan.stderr
    # Past the drift, the plan meets 001's own precheck (audit_logs must not exist yet).
    allowed = run_json("plan", LOCAL, *DIR, "--allow-drift", code=5)
    assert allowed["error"]["type"] == "PrecheckFailed"
    refused = run_json("migrate", LOCAL, *DIR, "--no-backup", code=5)
    assert refused["error"]["type"] == "SchemaDrift"
    assert suggested(refused["error"]["hint"]) == command
    assert [d["name"] for d in refused["error"]["schema"]["differences"]][:1] == ["audit_logs"]
    assert local_rows("SELECT name FROM d1_migrations") == [(M000,)]

    run(*command)  # pasted
    assert run_json("status", LOCAL, *DIR)["schema"]["differences"] == []
    assert "nothing to do" in run("migrate", LOCAL, *DIR, "--no-backup").stderr


def test_status_json_carries_the_comparison(hand_migrated: Path) -> None:
    payload = run_json("status", LOCAL, *DIR, code=5)
    assert payload["error"]["type"] == "SchemaDrift"
    found = payload["report"]["schema"]
    assert set(found) == {
        "compared",
        "replayed",
        "differences",
        "reason",
        "matches_up_to",
        "baseline_records",
        "also_matches_up_to",
        "baseline_command",
    }
    assert found["compared"] is True and found["replayed"] == [M000]
    assert found["matches_up_to"] == M001 and found["baseline_records"] == [M001]
    assert found["baseline_command"] == (
        f"d1deploy baseline {M001} {LOCAL} --migrations-dir 'my migrations'"
    )
    deposits = found["differences"][2]
    assert deposits["change"] == "changed" and deposits["name"] == "user_deposits"
    assert deposits["details"] == ["added CHECK (balance >= 0)"]
    assert deposits["expected"].startswith("CREATE TABLE user_deposits (")
    assert deposits["live"].startswith('CREATE TABLE "user_deposits" (')
    # --allow-drift exits 0; the report still says the database is not as it should be.
    allowed = run("status", LOCAL, *DIR, "--allow-drift", "--json")
    assert json.loads(allowed.stdout)["ok"] is False
