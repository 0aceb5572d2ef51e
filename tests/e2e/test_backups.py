"""Backups proven against the database, and restores from them, through the installed command.

Each case runs `d1deploy` against the emulator on 127.0.0.1 and is judged from the files:
what the folder holds afterwards, what each sidecar records, and the emulator's SQLite
files, opened directly. (The migrate fault matrix, in test_faults.py, holds the HTML and
cut-at-a-statement downloads of a deploy.)
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests import realtools
from tests.e2e.conftest import TOKEN, Project
from tests.e2e.states import DB, M000, assert_stage, fingerprint

pytestmark = pytest.mark.e2e

PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>"
    "<body><h1>Service temporarily unavailable</h1></body></html>\n"
)

# Every storage class, NULLs, newlines, quotes, BLOBs (empty, zeros, random), an index,
# a view, a trigger, and a parent table rebuilt the way the row-loss guard advises, which
# leaves it after its child in sqlite_master (so in D1's dump).
EVERYTHING = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parent(id) ON DELETE CASCADE,
    note TEXT
);
CREATE TABLE kinds (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, v);
CREATE INDEX kinds_t ON kinds (t);
CREATE UNIQUE INDEX child_note ON child (parent_id, note);
INSERT INTO parent VALUES (1, 'first'), (2, 'it''s "second"');
INSERT INTO child VALUES (10, 1, 'a'), (11, 2, NULL), (12, 2, 'line one
line two;');
INSERT INTO kinds VALUES
    (1, 9007199254740991, 0.1, '홍길동 🎉', X'00ff10', 12.5, 3.25),
    (2, -9007199254740991, -1.5e-300, 'O''Brien "quoted"; -- not a comment', X'', 7, 'text'),
    (3, 0, 1e308, 'cr' || char(13) || 'lf' || char(10) || 'tab' || char(9), zeroblob(300),
     NULL, X'deadbeef'),
    (4, NULL, NULL, NULL, NULL, NULL, NULL),
    (5, 42, 2.5, '', randomblob(3000), '1e3', -7);
CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');
INSERT INTO parent_new SELECT id, name FROM parent;
DROP TABLE parent;
ALTER TABLE parent_new RENAME TO parent;
CREATE VIEW parents_with_children AS
    SELECT p.name, count(*) AS n FROM parent p JOIN child c ON c.parent_id = p.id GROUP BY p.id;
CREATE TRIGGER child_shout AFTER INSERT ON child WHEN NEW.note = 'shout' BEGIN
    UPDATE child SET note = upper(NEW.note) || '; ok' WHERE id = NEW.id;
END;
"""


def contents(path: Path) -> tuple[Any, ...]:
    """Schema and rows of a SQLite file, every value with its storage class."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        schema, data = fingerprint(con)
        typed = tuple(
            (table, tuple(tuple((type(v).__name__, v) for v in row) for row in rows))
            for table, rows in data
        )
        return schema, typed
    finally:
        con.close()


def sidecar(path: Path) -> dict[str, Any]:
    data = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def leftovers(folder: Path, stem: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(stem))


@pytest.mark.parametrize("gz", [False, True], ids=["sql", "gzip"])
def test_backup_then_restore_gives_back_every_type_and_a_rebuilt_parent(
    project: Project, gz: bool
) -> None:
    with project.sql() as con:
        con.executescript(EVERYTHING)
    project.emulator.create_database("copy")
    name = "all.sql.gz" if gz else "all.sql"

    made = project.run("backup", "-o", name, *(["--gzip"] if gz else []))

    assert made.code == 0, made
    assert "Proven: 7 schema objects and 10 rows in 3 tables" in made.stderr, made
    side = sidecar(project.root / name)
    assert side["dump"]["rows"] == {"child": 3, "kinds": 5, "parent": 2}
    assert side["database_rows"] == {
        "before_export": {"child": 3, "kinds": 5, "parent": 2},
        "after_export": {"child": 3, "kinds": 5, "parent": 2},
    }
    assert {(o["type"], o["name"]) for o in side["dump"]["objects"]} == {
        ("table", "child"),
        ("table", "kinds"),
        ("table", "parent"),
        ("index", "kinds_t"),
        ("index", "child_note"),
        ("view", "parents_with_children"),
        ("trigger", "child_shout"),
    }

    restored = project.run("restore", "--from-backup", name, "-d", "copy", "--yes")

    assert restored.code == 0, restored
    for line in ("parent: 2 -> 2", "child: 3 -> 3", "kinds: 5 -> 5"):
        assert line in restored.stderr, restored
    assert "unverified" not in restored.stderr
    assert contents(project.emulator.db_path("copy")) == contents(project.db_file)


def test_a_backup_of_an_html_page_is_refused_and_leaves_nothing(project: Project) -> None:
    project.seed_before()
    project.emulator.faults.add(
        "GET", r"^/__signed/", status=200, reply=PAGE, headers={"Content-Type": "text/html"}
    )

    run = project.run("backup", "-o", "b.sql")

    assert run.code == 4, run
    assert "answered text/html, not a SQL dump" in run.stderr
    assert leftovers(project.root, "b.sql") == []


def test_a_backup_cut_before_its_indexes_names_them(project: Project) -> None:
    project.seed_before()
    project.emulator.faults.add("GET", r"^/__signed/", end_before="CREATE INDEX")

    run = project.run("backup", "-o", "b.sql", "--json")

    assert run.code == 4, run
    assert (
        "it lacks index idx_deposit_transactions_user, index idx_deposit_transactions_status"
        in run.stderr
    ), run
    assert json.loads(run.stdout)["error"]["exit_code"] == 4
    assert leftovers(project.root, "b.sql") == []


def test_rollback_changes_nothing_without_its_backup(project: Project) -> None:
    project.seed_before()
    assert project.run("migrate").code == 0
    rule = project.emulator.faults.add(
        "GET", r"^/__signed/", status=200, reply=PAGE, headers={"Content-Type": "text/html"}
    )

    refused = project.run("rollback", "--yes")

    assert refused.code == 4 and rule.fired, refused
    assert_stage(project.state(), "after")
    assert project.run("rollback", "--yes", "--no-backup").code == 0
    assert_stage(project.state(), "before")


def test_a_full_disk_or_file_size_limit_is_named_and_leaves_nothing(project: Project) -> None:
    project.seed_before()
    with project.sql() as con:
        con.execute(
            "INSERT INTO users (telegram_id, username) WITH RECURSIVE n(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2000) "
            "SELECT 'bulk-' || x, hex(randomblob(200)) FROM n"
        )

    run = project.run("backup", "-o", "b.sql", file_size_limit=100_000)

    assert run.code == 4, run
    assert "file size limit (100.0 kB (100,000 bytes), `ulimit -f`)" in run.stderr, run
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    assert leftovers(project.root, "b.sql") == []

    deploy = project.run("migrate", file_size_limit=100_000)
    assert deploy.code == 4 and "file size limit" in deploy.stderr, deploy
    assert project.backups() == []
    state = project.state()
    assert state.ledger == (M000,) and state.lock is None
    assert "audit_logs" not in state.tables


def test_a_gzip_dump_inflates_on_the_fly_and_never_past_the_room_to_write_it(
    project: Project,
) -> None:
    row = b'INSERT INTO "t" ("x") VALUES(\'' + b"a" * 100 + b"');\n"
    head = b"PRAGMA defer_foreign_keys=TRUE;\nCREATE TABLE t (x TEXT);\n"
    (project.root / "bomb.sql.gz").write_bytes(gzip.compress(head + row * 300_000, 9))
    (project.root / "small.sql.gz").write_bytes(gzip.compress(head + row * 1_000, 9))
    project.emulator.create_database("copy")
    tmp = project.tmp / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}

    # 30 MB inflated, 4 MB allowed: stopped while reading, before anything is written.
    run = project.run(
        "restore", "--from-backup", "bomb.sql.gz", "-d", "copy", "--yes",
        env=env, file_size_limit=4_000_000,
    )  # fmt: skip

    assert run.code == 4, run
    assert "bomb.sql.gz it inflates to more than 4,000,000 bytes" in run.stderr, run
    assert list(tmp.iterdir()) == []
    assert contents(project.emulator.db_path("copy")) == ((), ())

    small = project.run(
        "restore", "--from-backup", "small.sql.gz", "-d", "copy", "--yes",
        env=env, file_size_limit=4_000_000,
    )  # fmt: skip
    assert small.code == 0, small
    assert "unverified" in small.stderr and "t: 1000 -> 1000" in small.stderr
    assert list(tmp.iterdir()) == []


def test_a_dump_without_a_sidecar_restores_as_unverified(project: Project) -> None:
    project.seed_before()
    assert project.run("backup", "-o", "prod.sql").code == 0
    (project.root / "prod.sql.json").unlink()
    project.emulator.create_database("copy")

    run = project.run("restore", "--from-backup", "prod.sql", "-d", "copy", "--yes")

    assert run.code == 0, run
    assert "has no sidecar, so nothing vouches it is a whole database (unverified)" in run.stderr
    assert "users: 3 -> 3" in run.stderr
    copy = contents(project.emulator.db_path("copy"))
    assert copy == contents(project.db_file)


@pytest.mark.wrangler
def test_a_dump_written_by_wrangler_d1_export_restores(
    project: Project, wrangler: realtools.Wrangler
) -> None:
    project.seed_before()
    uuid = project.emulator.default_db.uuid
    home = project.tmp / "wrangler"
    home.mkdir()
    (home / "wrangler.toml").write_text(
        f'name = "w"\n[[d1_databases]]\nbinding = "DB"\ndatabase_name = "{DB}"\n'
        f'database_id = "{uuid}"\n',
        encoding="utf-8",
    )
    exported = project.root / "exported.sql"
    wrangler.run(
        ["d1", "export", DB, "--remote", "--output", str(exported)],
        cwd=home,
        env={
            "CLOUDFLARE_API_TOKEN": TOKEN,
            "CLOUDFLARE_ACCOUNT_ID": project.emulator.account_id,
            "CLOUDFLARE_API_BASE_URL": project.base_url,
        },
    )
    project.emulator.create_database("copy")

    run = project.run("restore", "--from-backup", "exported.sql", "-d", "copy", "--yes")

    assert run.code == 0, run
    assert "unverified" in run.stderr and "deposit_transactions: 5 -> 5" in run.stderr
    assert contents(project.emulator.db_path("copy")) == contents(project.db_file)
    # The ledger came with it: the copy knows which migrations its schema has.
    with sqlite3.connect(project.emulator.db_path("copy")) as con:
        assert con.execute("SELECT name FROM d1_migrations").fetchall() == [(M000,)]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert "_d1deploy_history" in tables and "_d1deploy_lock" not in tables


@pytest.mark.workerd
def test_a_local_wrangler_export_without_a_final_newline_restores(
    project: Project, wrangler: realtools.Wrangler
) -> None:
    home = project.tmp / "wrangler"
    home.mkdir()
    (home / "wrangler.toml").write_text(
        'name = "w"\n[[d1_databases]]\nbinding = "DB"\ndatabase_name = "local"\n'
        'database_id = "00000000-0000-4000-8000-000000000002"\n',
        encoding="utf-8",
    )
    sql = (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, raw BLOB);"
        "INSERT INTO notes (body, raw)"
        " VALUES ('two\nlines; and ''quotes''', X'00ff'), (NULL, NULL);"
        "CREATE INDEX notes_body ON notes (body);"
    )
    wrangler.run(["d1", "execute", "DB", "--local", "--command", sql], cwd=home)
    exported = project.root / "local.sql"
    wrangler.run(["d1", "export", "DB", "--local", "--output", str(exported)], cwd=home)
    assert not exported.read_bytes().endswith(b"\n")  # wrangler joins the lines with \n

    run = project.run("restore", "--from-backup", "local.sql", "--yes")

    assert run.code == 0, run
    assert "notes: 2 -> 2" in run.stderr
    with sqlite3.connect(project.db_file) as con:
        assert con.execute("SELECT body, raw FROM notes ORDER BY id").fetchall() == [
            ("two\nlines; and 'quotes'", b"\x00\xff"),
            (None, None),
        ]
        assert con.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == [
            ("notes_body",)
        ]


def test_restores_into_databases_d1deploy_has_used(project: Project) -> None:
    project.seed_before()
    assert project.run("backup", "-o", "full.sql").code == 0
    assert project.run("backup", "--no-schema", "-o", "data.sql").code == 0
    prod = contents(project.db_file)

    # Used, but holding nothing: a deploy with no migrations left its lock table, an
    # empty ledger and an empty history.
    project.emulator.create_database("used")
    (project.tmp / "none").mkdir()
    nothing = ("migrate", "-d", "used", "--migrations-dir", str(project.tmp / "none"))
    assert project.run(*nothing, "--no-backup").code == 0
    full = project.run("restore", "--from-backup", "full.sql", "-d", "used", "--yes")
    assert full.code == 0, full
    assert contents(project.emulator.db_path("used")) == prod
    with sqlite3.connect(project.emulator.db_path("used")) as con:
        assert con.execute("SELECT name FROM d1_migrations").fetchall() == [(M000,)]
        assert con.execute("SELECT count(*) FROM _d1deploy_lock").fetchone() == (0,)

    # Migrated by d1deploy (its own ledger, history, lock): data only, with --force.
    project.emulator.create_database("staging")
    assert project.run("migrate", "-d", "staging", "--to", M000, "--no-backup").code == 0
    with sqlite3.connect(project.emulator.db_path("staging")) as con:
        history = con.execute("SELECT * FROM _d1deploy_history").fetchall()
    refused = project.run("restore", "--from-backup", "data.sql", "-d", "staging", "--yes")
    assert refused.code == 5 and "--force" in refused.stderr, refused

    forced = project.run(
        "restore", "--from-backup", "data.sql", "-d", "staging", "--yes", "--force"
    )

    assert forced.code == 0, forced
    assert "Keeping staging's own d1_migrations (1 row)" in forced.stderr, forced
    assert contents(project.emulator.db_path("staging")) == prod
    with sqlite3.connect(project.emulator.db_path("staging")) as con:
        assert con.execute("SELECT name FROM d1_migrations").fetchall() == [(M000,)]
        assert con.execute("SELECT * FROM _d1deploy_history").fetchall() == history
        assert con.execute("SELECT count(*) FROM _d1deploy_lock").fetchone() == (0,)


def test_a_failed_restore_names_the_file_and_leaves_no_database_behind(project: Project) -> None:
    (project.root / "page.sql").write_text(PAGE, encoding="utf-8")
    clash = "PRAGMA defer_foreign_keys=TRUE;\nCREATE TABLE t (x UNIQUE);\n"
    clash += 'INSERT INTO "t" ("x") VALUES(1);\n' * 2
    (project.root / "clash.sql").write_text(clash, encoding="utf-8")
    fresh = project.root / "fresh.sqlite"

    page = project.run("restore", "--local=fresh.sqlite", "--from-backup", "page.sql", "--yes")

    assert page.code == 2, page
    assert "page.sql is not a complete D1 dump: it is an HTML page" in page.stderr
    assert not fresh.exists()

    failed = project.run("restore", "--local=fresh.sqlite", "--from-backup", "clash.sql", "--yes")

    assert failed.code == 1, failed
    assert "Error: clash.sql: UNIQUE constraint failed: t.x" in failed.stderr, failed
    assert "d1deploy-restore-" not in failed.stderr
    assert leftovers(project.root, "fresh.sqlite") == []
