"""Bad input: each a clear message, the documented exit code, and nothing changed.

Every scenario starts from the production database before 001, prepares its bad input,
snapshots the emulator's file, runs the installed command, and checks the exit code, the
message, that the database is exactly as it was, and that no backup was written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.e2e.conftest import WRONG_TOKEN, Project
from tests.e2e.states import DB, M000, DbState, assert_stage, migrate_in_process

pytestmark = pytest.mark.e2e

BIG_INSERT = "INSERT INTO users (telegram_id) VALUES ('" + "x" * 150_000 + "');\n"
PLACEHOLDERS_101 = ", ".join(["?"] * 101)


def sqlite_file_bytes(project: Project) -> bytes:
    path = project.tmp / "binary.sqlite"
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE t (id INTEGER)")
    con.close()
    return path.read_bytes()


def drift(project: Project) -> None:
    path = project.migrations / M000
    path.write_text(path.read_text(encoding="utf-8") + "-- edited after it was applied\n")


def without_rollback(project: Project) -> None:
    """002 applied with no rollback file at all: nothing can undo it but a restore."""
    project.write("002_no_rollback.sql", "CREATE TABLE scratch (id INTEGER PRIMARY KEY);\n")
    migrate_in_process(project.emulator, project.migrations)


def staging_with_prods_id(project: Project) -> bytes:
    """A wrangler entry copied from production whose id nobody changed."""
    prod = project.emulator.default_db.uuid
    return (
        f'name = "bot"\n[[d1_databases]]\nbinding = "DB"\ndatabase_name = "staging"\n'
        f'database_id = "{prod}"\n'
    ).encode()


def negative_balance(project: Project) -> None:
    with project.sql() as con:
        con.execute("UPDATE user_deposits SET balance = -1 WHERE id = 2")


@dataclass(frozen=True)
class Bad:
    id: str
    args: tuple[str, ...]
    exit_code: int
    says: tuple[str, ...]
    files: dict[str, str | bytes | Callable[[Project], bytes]] = field(default_factory=dict)
    setup: Callable[[Project], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


SCENARIOS = (
    Bad("wrong-token", ("migrate",), 3, ("the API token was refused",),
        env={"CLOUDFLARE_API_TOKEN": WRONG_TOKEN}),
    Bad("no-token", ("migrate",), 3, ("CLOUDFLARE_API_TOKEN",),
        env={"CLOUDFLARE_API_TOKEN": ""}),
    Bad("unknown-database", ("migrate", "-d", "telegram-conversation"), 3,
        ("'telegram-conversation' not found", f"databases in this account: {DB}, analytics")),
    Bad("non-utf8-migration", ("migrate",), 2, ("002_latin1.sql:3", "not valid UTF-8"),
        files={"002_latin1.sql": b"CREATE TABLE t2 (id INTEGER);\n\n-- caf\xe9\n"}),
    Bad("sqlite-binary-as-migration", ("migrate",), 2,
        ("002_binary.sql", "is a SQLite database file, not SQL text"),
        files={"002_binary.sql": sqlite_file_bytes}),
    Bad("begin-transaction-in-a-migration", ("migrate",), 2,
        ("002_tx.sql:1", "transaction control"),
        files={"002_tx.sql": "BEGIN TRANSACTION;\nCREATE TABLE t2 (id INTEGER);\nCOMMIT;\n"}),
    Bad("150kb-statement-in-a-migration", ("migrate",), 2,
        ("002_big.sql:2", "D1 refuses statements over 100,000 bytes"),
        files={"002_big.sql": "-- one huge row\n" + BIG_INSERT}),
    Bad("150kb-statement-exec-file", ("exec", "--file", "migrations/big.sql"), 2,
        ("big.sql:1", "D1 refuses statements over 100,000 bytes"),
        files={"big.sql": BIG_INSERT}),
    Bad("101-parameters-in-a-migration", ("migrate",), 2,
        ("002_params.sql:1", "binds 101 parameters; D1 allows at most 100"),
        files={"002_params.sql": f"SELECT coalesce({PLACEHOLDERS_101});\n"}),
    Bad("101-bound-parameters-exec",
        ("exec", "--command", f"SELECT coalesce({PLACEHOLDERS_101})", *["--param", "1"] * 101),
        2, ("binds 101 parameters; D1 allows at most 100",)),
    Bad("drifted-applied-file", ("migrate",), 5, (M000, "drift"), setup=drift),
    Bad("failed-precheck", ("migrate",), 5, ("no negative balances",), setup=negative_balance),
    Bad("config-file-with-an-unknown-key", ("migrate",), 2,
        ("unknown key `databse`", "database"), files={"../d1deploy.toml": 'databse = "x"\n'}),
    Bad("rollback-without-a-terminal-or-yes", ("rollback",), 2, ("--yes",)),
    Bad("configured-name-and-id-are-two-databases", ("migrate", "-d", "staging"), 3,
        ("names database 'staging' with database_id", "the API says", f"is '{DB}'",
         "nothing was changed"),
        files={"../wrangler.toml": staging_with_prods_id}),
    Bad("companion-in-the-old-layout", ("migrate",), 2,
        ("002_x.rollback.sql (-> 002_x/rollback.sql)", "`d1deploy move-companions`"),
        files={"002_x.sql": "CREATE TABLE x (id INTEGER);\n",
               "002_x.rollback.sql": "DROP TABLE x;\n"}),
    Bad("companion-folder-without-its-migration", ("migrate",), 2,
        ("002_gone/verify.sql", "there is no migration 002_gone.sql"),
        files={"002_gone/verify.sql": "SELECT 1;\n"}),
    Bad("plain-http-to-a-remote-host", ("migrate",), 2,
        ("plain http://", "unencrypted"),
        env={"CLOUDFLARE_API_BASE_URL": "http://d1.invalid/client/v4"}),
)  # fmt: skip


def essentials(state: DbState) -> tuple[object, ...]:
    """What "nothing changed" compares: d1deploy's proof and scratch tables may appear."""
    return state.fingerprint, state.ledger, state.events, state.lock


@pytest.mark.parametrize("bad", SCENARIOS, ids=[b.id for b in SCENARIOS])
def test_bad_input_changes_nothing(project: Project, bad: Bad) -> None:
    project.seed_before()
    project.emulator.create_database("analytics")
    for name, content in bad.files.items():
        project.write(name, content(project) if callable(content) else content)
    if bad.setup:
        bad.setup(project)
    before = project.state()

    run = project.run(*bad.args, env=bad.env)

    assert run.code == bad.exit_code, run
    for text in bad.says:
        assert text in run.stderr, f"{text!r} not said:\n{run}"
    assert "Traceback" not in run.output and "internal error" not in run.output, run
    assert essentials(project.state()) == essentials(before)
    assert project.backups() == []


def test_a_rollback_file_deleted_after_apply_is_replaced_by_the_stored_copy(
    project: Project,
) -> None:
    project.seed_before()
    migrate_in_process(project.emulator, project.migrations)
    (project.migrations / "001_schema_enhancements" / "rollback.sql").unlink()

    run = project.run("rollback", "--yes")

    assert run.code == 0, run
    assert "copy stored when it was applied" in run.stderr
    assert_stage(project.state(), "before")


def test_a_migration_without_rollback_sql_is_refused_with_exit_5(project: Project) -> None:
    project.seed_before()
    without_rollback(project)
    before = project.state()

    run = project.run("rollback", "--yes")

    assert "002_no_rollback.sql has no rollback SQL" in run.stderr, run
    assert "nothing was rolled back" in run.stderr
    assert "d1deploy restore --bookmark" in run.stderr
    assert essentials(project.state()) == essentials(before)
    assert run.code == 5, run
