"""Schema changed outside d1deploy, through the installed command, on the emulator and
on a local file: the seed's 001 applied by hand (the runbook's `exec --file`, no ledger
row) is refused and then adopted with the command d1deploy prints, pasted as printed;
a column added, an index dropped and a CHECK removed by a rebuild, each by hand, are
shown by `status` and refused by `migrate`. The database is judged from its file.
"""

from __future__ import annotations

import shlex
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, Run
from tests.e2e.states import DATA, M000, M001, assert_stage, read_state

pytestmark = pytest.mark.e2e

LOCAL = "--local=local.sqlite"
TARGETS = ("emulator", "local")


def target_args(target: str) -> tuple[str, ...]:
    # On the emulator the database comes from D1DEPLOY_DATABASE, as in CI.
    return (LOCAL,) if target == "local" else ()


def db_file(project: Project, target: str) -> Path:
    return project.root / "local.sqlite" if target == "local" else project.db_file


def before_001(project: Project, target: str) -> None:
    """Production before 001: 000 applied by d1deploy, with the seed's rows."""
    if target == "emulator":
        project.seed_before()
        return
    done = project.run("migrate", LOCAL, "--to", M000, "--no-backup")
    assert done.code == 0, done
    with sqlite3.connect(db_file(project, target)) as con:
        con.executescript(DATA)
    con.close()


def pasted(run: Run) -> list[str]:
    """The baseline command d1deploy suggested, split as a shell would."""
    words = shlex.split(run.stderr.split("already matches")[1].split("`")[1])
    assert words[0] == "d1deploy"
    return words[1:]


@pytest.mark.parametrize("target", TARGETS)
def test_001_applied_by_hand_is_refused_then_adopted_with_the_printed_command(
    project: Project, target: str
) -> None:
    args = target_args(target)
    before_001(project, target)
    ran = project.run("exec", *args, "--file", f"migrations/{M001}")
    assert ran.code == 0, ran
    by_hand = read_state(db_file(project, target))

    status = project.run("status", *args)
    assert status.code == 5, status
    for label in (
        "table audit_logs added",
        "table user_deposits changed (added CHECK (balance >= 0))",
        "table deposit_transactions changed (added CHECK (length(depositor_name) <= 15))",
        "index idx_audit_logs_telegram_created added",
    ):
        assert label in status.stderr
    migrate = project.run("migrate", *args)
    assert migrate.code == 5, migrate
    assert "the live schema differs from what the applied migrations leave" in migrate.stderr
    assert f"The live schema already matches {M001}" in migrate.stderr
    assert read_state(db_file(project, target)) == by_hand
    assert project.backups() == []

    command = pasted(migrate)
    # The options that chose the database (the configured one named with -d).
    assert command[:2] == ["baseline", M001] and set(args) <= set(command[2:]), command
    adopted = project.run(*command)
    assert adopted.code == 0, adopted

    assert project.run("status", *args).code == 0
    again = project.run("migrate", *args)
    assert again.code == 0 and "nothing to apply" in again.stderr, again
    assert_stage(read_state(db_file(project, target)), "after")


REBUILD_WITHOUT_CHECK = """\
CREATE TABLE user_deposits_old (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL UNIQUE,
    balance INTEGER NOT NULL DEFAULT 0,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO user_deposits_old SELECT * FROM user_deposits;
DROP TABLE user_deposits;
ALTER TABLE user_deposits_old RENAME TO user_deposits;
"""

HAND_CHANGES = {
    "column-added": (
        ("--command", "ALTER TABLE users ADD COLUMN nickname TEXT"),
        "table users changed (added column nickname TEXT)",
    ),
    "index-dropped": (
        ("--command", "DROP INDEX idx_audit_logs_action_created"),
        "index idx_audit_logs_action_created missing",
    ),
    "check-removed-by-a-rebuild": (
        ("--file", "rebuild.sql"),
        "table user_deposits changed (missing CHECK (balance >= 0))",
    ),
}


@pytest.mark.parametrize("change", list(HAND_CHANGES))
@pytest.mark.parametrize("target", TARGETS)
def test_a_change_made_by_hand_is_shown_by_status_and_refused_by_migrate(
    project: Project, target: str, change: str
) -> None:
    args = target_args(target)
    before_001(project, target)
    assert project.run("migrate", *args, "--no-backup").code == 0
    project.write("002_more.sql", "CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    (project.root / "rebuild.sql").write_text(REBUILD_WITHOUT_CHECK, encoding="utf-8")
    how, described = HAND_CHANGES[change]
    assert project.run("exec", *args, *how).code == 0
    changed = read_state(db_file(project, target))

    status = project.run("status", *args)
    assert status.code == 5, status
    assert described in status.stderr
    assert "expected:" in status.stderr or "live:" in status.stderr
    migrate = project.run("migrate", *args, "--json")
    assert migrate.code == 5, migrate
    error = migrate.json()["error"]
    assert error["type"] == "SchemaDrift" and described in error["message"]
    assert [d["change"] for d in error["schema"]["differences"]] == [described.split()[2]]
    state = read_state(db_file(project, target))
    assert state == changed and "more" not in state.tables
    assert project.backups() == []
