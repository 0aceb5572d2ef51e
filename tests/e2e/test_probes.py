"""Check files that try to write where a read was promised, run by the installed command.

Each scenario starts from the production database before 001 (000 applied, real rows)
and judges the outcome from the emulator's SQLite file: a write spelled so that a
pattern took it for a read, with and without its answer lost on the way back; a pragma
that would outlive its batch; data that imitates d1deploy's own abort marker; and a
probe whose outcome depends on rows, on which `plan` must not claim a refusal `migrate`
would not make.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Project
from tests.e2e.states import M001, assert_stage

pytestmark = pytest.mark.e2e

STEM = M001.removesuffix(".sql")
# Quoted names right after the keywords, a CTE in front: reads, to a regular expression.
HOSTILE_UPDATE = 'WITH x AS (SELECT 1) UPDATE"user_deposits"SET balance = balance + 1000'
HOSTILE_CTE = "WITH x AS (SELECT 1) UPDATE[user_deposits]SET balance = 0"


def companion(project: Project, kind: str, stem: str = STEM) -> Path:
    """The precheck or verify file of migration `stem`, whatever the layout."""
    (found,) = [
        p
        for p in project.migrations.rglob(f"*{kind}.sql")
        if stem in str(p.relative_to(project.migrations))
    ]
    return found


def append(path: Path, lines: str) -> int:
    """Add `lines` (comment lines, then one statement) to a check file; the statement's line."""
    text = path.read_text(encoding="utf-8").rstrip("\n") + "\n\n"
    path.write_text(text + lines, encoding="utf-8")
    return text.count("\n") + lines.rstrip("\n").count("\n") + 1


def sent(project: Project, fragment: str) -> int:
    """How many requests carried a statement containing `fragment`."""
    batches = [r.json["batch"] for r in project.emulator.requests if isinstance(r.json, dict)]
    return sum(any(fragment in item["sql"] for item in batch) for batch in batches)


def new_migration(project: Project, name: str, sql: str, rollback: str | None = None) -> str:
    """`d1deploy new NAME`, then its SQL (and rollback); the migration's file name."""
    created = [Path(p) for p in project.run("new", name, "--json").json()["created"]]
    migration = project.root / created[0]
    migration.write_text(sql, encoding="utf-8")
    if rollback is not None:
        (project.root / created[1]).write_text(rollback, encoding="utf-8")
    return migration.name


def test_writes_spelled_as_reads_never_take_effect(project: Project) -> None:
    project.seed_before()
    append(companion(project, "precheck"), f"-- check: hostile precheck\n{HOSTILE_CTE};\n")
    append(companion(project, "verify"), f"-- check: hostile verify\n{HOSTILE_UPDATE};\n")

    plan = project.run("plan", "--json")
    assert plan.code == 0, plan
    (hostile,) = [r for r in plan.json()["prechecks"] if r["check"]["label"] == "hostile precheck"]
    assert hostile["check"]["writes"] and hostile["probe"] == "shadow"
    assert project.state().stage() == "before"

    migrate = project.run("migrate", "--no-backup")
    assert migrate.code == 0, migrate
    assert "ok   hostile verify" in migrate.stderr and "[abort probe]" in migrate.stderr
    # 001 applied, every balance exactly as the data had it.
    assert_stage(project.state(), "after")
    lint = project.run("lint", "--json")
    notes = [f for f in lint.json()["findings"] if f["code"] == "probe"]
    assert {f["message"].split("(")[1].split(")")[0] for f in notes} >= {
        "UPDATE user_deposits.balance"
    }


def test_the_lost_answer_of_a_write_is_never_sent_again(project: Project) -> None:
    """The write, with its answer dropped after D1 ran it: a read may be sent again, a
    probe never; it ran in a batch forced to abort, so it changed nothing either."""
    project.seed_before()
    append(companion(project, "verify"), f"-- check: hostile verify\n{HOSTILE_UPDATE};\n")
    project.emulator.faults.add("POST", r"/query$", body="balance + 1000", drop_after=True, times=1)

    run = project.run("migrate", "--no-backup")
    assert run.code == 1, run
    assert f"verifying {M001} failed" in run.stderr and f"rolled back {M001}" in run.stderr
    assert sent(project, "balance + 1000") == 1
    assert_stage(project.state(), "before")  # undone as a failed verification, no balance rewritten


def test_a_pragma_that_sets_something_is_refused_before_anything_runs(project: Project) -> None:
    project.seed_before()
    verify = companion(project, "verify")
    original = verify.read_text(encoding="utf-8")
    line = append(verify, "-- check: sneaky\nPRAGMA ignore_check_constraints = ON;\n")
    before = project.state()
    for command in ("plan", "migrate", "lint"):
        run = project.run(command)
        assert run.code == 2, run
        assert f"{verify.name}:{line}" in run.stderr
        assert "PRAGMA ignore_check_constraints = ON` is refused in a check file" in run.stderr
    assert project.state() == before and not project.backups()
    assert sent(project, "ignore_check_constraints") == 0

    verify.write_text(original, encoding="utf-8")
    run = project.run("migrate", "--no-backup")
    assert run.code == 0, run
    # The seed's own probe of the CHECK constraint: the emulator's connection still
    # enforces it, since the pragma never reached it.
    assert "ok   a negative balance is refused" in run.stderr
    assert_stage(project.state(), "after")


@pytest.mark.parametrize(
    "marker", ["d1deploy-abort: ", "d1deploy-abort-0123456789abcdef: "], ids=["bare", "guessed"]
)
def test_data_that_reads_like_our_abort_marker_is_not_taken_for_one(
    project: Project, marker: str
) -> None:
    """An error whose text comes from data and carries the lock-lost marker's words: a
    migration failure like any other, so this run's migrations are undone."""
    project.seed_before()
    notes = new_migration(
        project,
        "notes",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n"
        f"INSERT INTO notes (body) VALUES ('{marker}deploy lock lost: held by mallory');\n",
        "-- d1deploy: allow-row-loss notes\nDROP TABLE notes;\n",
    )
    failing = new_migration(
        project, "read notes", "SELECT json_extract('{}', '$' || body) FROM notes;\n"
    )

    run = project.run("migrate", "--no-backup")
    assert run.code == 1, run
    assert f"{failing} failed and was not applied" in run.stderr
    assert f"rolled back {notes}, {M001}" in run.stderr
    assert "another deploy now holds the lock" not in run.stderr
    state = project.state()
    assert "notes" not in state.tables
    assert_stage(state, "before")


@pytest.mark.parametrize(
    ("telegram_id", "migrate_code"),
    [("123456", 0), ("no-such-user", 5)],
    ids=["refused-on-the-rows", "accepted-on-the-rows"],
)
def test_plan_leaves_to_migrate_a_probe_whose_outcome_depends_on_rows(
    project: Project, telegram_id: str, migrate_code: int
) -> None:
    """On a copy without rows nothing conflicts, so the probe fails there; `plan` says
    migrate judges it, and never refuses where migrate would go ahead."""
    project.seed_before()
    append(
        companion(project, "precheck"),
        "-- check: telegram ids stay unique\n"
        "-- expect: error ~ UNIQUE constraint failed: users.telegram_id\n"
        f"INSERT INTO users (telegram_id, first_name) VALUES ('{telegram_id}', 'dup');\n",
    )
    plan = project.run("plan", "--json")
    assert plan.code == 0, plan
    (probe,) = [r for r in plan.json()["prechecks"] if r["check"]["writes"]]
    assert (probe["ok"], probe["judged"]) == (False, False)
    assert probe["outcome"].startswith("judged at deploy time (on a schema-only copy")
    human = project.run("plan")
    assert "wait telegram ids stay unique" in human.stderr
    assert "migrate judges them on the database's rows" in human.stderr

    migrate = project.run("migrate", "--no-backup")
    assert migrate.code == migrate_code, migrate
    if migrate_code == 0:
        assert "ok   telegram ids stay unique" in migrate.stderr
        assert_stage(project.state(), "after")
    else:
        assert "FAIL telegram ids stay unique" in migrate.stderr
        assert project.state().stage() == "before"
