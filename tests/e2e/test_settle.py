"""Every way out of a run is settled the same way, whatever D1 answers and wherever.

The matrix: five answers D1 can give instead of a result (HTTP 413 with code 7400, a
400, a 403 with code 10000, code 10000 inside a 200, a 400 saying SQLITE_FULL) at each
step of `migrate`, `rollback` and `verify`, through the installed command. The five
answers to one step run at once, each on a database of its own in one emulator, with
the fault bound to that database's path. Each run is judged from its SQLite file: the
database stands on a consistent prefix of the migrations, no lock is held, `--json`
printed exactly one object (carrying the report once the run had changed something),
the GitHub outputs were written, and a re-run right after finishes the job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import EXTRA, Project, Run, write_extra
from tests.e2e.states import DB, M000, M001, assert_settled, migrate_in_process, read_state

pytestmark = pytest.mark.e2e


def envelope(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": []}


KINDS: dict[str, dict[str, Any]] = {
    "413": {"status": 413, "reply": envelope(7400, "Request body too large")},
    "400": {"status": 400, "reply": envelope(7400, "The request was malformed")},
    "403": {"status": 403, "reply": envelope(10000, "Authentication error")},
    "10000": {"status": 200, "reply": envelope(10000, "Authentication error")},
    "sqlite-full": {
        "status": 400,
        "reply": envelope(7500, "Exceeded maximum DB size: SQLITE_FULL"),
    },
}
EXIT_OF = {"413": 2, "400": 2, "403": 3, "10000": 3, "sqlite-full": 1}
"""The exit code of each answer when it stops a run before its first change."""
ABSORBED = {"sqlite-full"}
"""Answers a run may get past: a SQL error on a batch of checks is asked again one check
at a time (to say which failed), and the fault answers only once."""


PROOF = "CREATE TABLE IF NOT EXISTS _d1deploy_meta"
"""The first request of the proof that an aborted batch leaves nothing behind."""


@dataclass(frozen=True)
class Step:
    id: str
    method: str
    path: str
    body: str | None = None
    after: int = 0
    changing: bool = False
    """The answer lands after the run's first change: the run settles (exit 1)."""
    shared: bool = False
    """The request carries several migrations: an answer refusing it as a whole (a 413, a
    400) sends them again one per request, and the run gets past it."""


MIGRATE = (
    Step("lock", "POST", "/query$", "INSERT INTO _d1deploy_lock"),
    Step("precheck", "POST", "/query$", "SELECT id, user_id, balance FROM user_deposits"),
    Step("backup", "POST", "/export$"),
    Step("bookmark", "GET", "/time_travel/bookmark$", after=1),
    Step("apply-001", "POST", "/query$", "CREATE TABLE user_deposits_new", changing=True),
    Step("verify-read", "POST", "/query$", "SELECT count(*) FROM audit_logs", changing=True),
    Step("probe-proof", "POST", "/query$", PROOF, changing=True),
    Step("apply-002-and-003", "POST", "/query$", "CREATE TABLE a_002", changing=True, shared=True),
    Step("apply-004-with-the-release", "POST", "/query$", "CREATE TABLE c_004", changing=True),
)  # fmt: skip
ROLLBACK = (
    Step("lock", "POST", "/query$", "INSERT INTO _d1deploy_lock"),
    Step("backup", "POST", "/export$"),
    Step("bookmark", "GET", "/time_travel/bookmark$"),
    Step("undo-004", "POST", "/query$", "DROP TABLE c_004", changing=True),
    Step("undo-002-with-the-release", "POST", "/query$", "DROP TABLE a_002", changing=True),
)  # fmt: skip
VERIFY = (
    Step("ledger", "POST", "/query$", "SELECT id, name, applied_at FROM"),
    Step("bookmark", "GET", "/time_travel/bookmark$"),
    Step("check-read", "POST", "/query$", "SELECT count(*) FROM audit_logs"),
    Step("probe-proof", "POST", "/query$", PROOF),
    Step("probe", "POST", "/query$", "VALUES (999999, -1000)"),
)  # fmt: skip


class Matrix:
    """One database per kind of answer, in the project's emulator; their runs at once."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.names = {kind: f"{DB}-{kind}" for kind in KINDS}
        for name in self.names.values():
            project.emulator.create_database(name)
            project.seed_before(name)

    def env(self, kind: str) -> dict[str, str]:
        github = self.project.tmp / "github"
        return {
            "D1DEPLOY_DATABASE": self.names[kind],
            "GITHUB_OUTPUT": str(github / f"output-{kind}"),
            "GITHUB_STEP_SUMMARY": str(github / f"summary-{kind}.md"),
        }

    def migrate_all(self) -> None:
        for name in self.names.values():
            migrate_in_process(self.project.emulator, self.project.migrations, name=name)

    def fault(self, step: Step) -> None:
        for kind, name in self.names.items():
            uuid = self.project.emulator.db_path(name).stem
            self.project.emulator.faults.add(
                step.method,
                f"/{uuid}{step.path}",
                body=step.body,
                after=step.after,
                times=1,
                **KINDS[kind],
            )

    def run(self, *args: str) -> dict[str, Run]:
        started = {kind: self.project.start(*args, env=self.env(kind)) for kind in KINDS}
        return {kind: self.project.finish(p, *args) for kind, p in started.items()}

    def again(self, step: Step, *args: str) -> tuple[str, Run]:
        """The same command again, without faults, on one of the databases (each step
        another): every database was judged to stand where this one does."""
        self.project.emulator.faults.clear()
        kind = list(KINDS)[sum(step.id.encode()) % len(KINDS)]
        return kind, self.project.run(*args, env=self.env(kind))

    def settled(self, kind: str, extra: Mapping[str, str] = EXTRA) -> tuple[str, ...]:
        return assert_settled(read_state(self.project.emulator.db_path(self.names[kind])), extra)

    def outputs(self, kind: str) -> str:
        return (self.project.tmp / "github" / f"output-{kind}").read_text(encoding="utf-8")


def one_object(run: Run) -> dict[str, Any]:
    """stdout holds exactly one JSON object, which agrees with the exit code."""
    payload = json.loads(run.stdout)
    assert isinstance(payload, dict), run
    assert payload["ok"] is (run.code == 0), run
    if run.code:
        assert payload["error"]["exit_code"] == run.code, run
    return payload


@pytest.mark.parametrize("step", MIGRATE, ids=[s.id for s in MIGRATE])
def test_migrate_settles_every_answer_at_every_step(project: Project, step: Step) -> None:
    write_extra(project)
    matrix = Matrix(project)
    matrix.fault(step)

    runs = matrix.run("migrate", "--json")

    assert all(rule.fired for rule in project.emulator.faults.rules), "a fault never fired"
    absorbed = ABSORBED | ({"413", "400"} if step.shared else set())
    for kind, run in runs.items():
        payload = one_object(run)
        if run.code == 0 and kind in absorbed:
            assert matrix.settled(kind) == (M000, M001, *EXTRA), run
            continue
        assert kind not in absorbed - ABSORBED, run
        assert run.code == (1 if step.changing else EXIT_OF[kind]), run
        # Before the first change nothing is applied; after it, this run is undone.
        assert matrix.settled(kind) == (M000,), run
        report = payload["report"]
        assert report is not None and report["still_applied"] == [], run
        if step.changing:
            assert payload["error"]["type"] == "DeployFailed", run
            undone = [r["name"] for r in report["rolled_back"]]
            assert undone == [a["name"] for a in reversed(report["applied"])], run
            assert "still_applied=[]" in matrix.outputs(kind)
            assert f"restore_command=d1deploy restore --bookmark {report['bookmark_before']}" in (
                matrix.outputs(kind)
            )

    kind, again = matrix.again(step, "migrate", "--json")
    assert again.code == 0, again
    assert matrix.settled(kind) == (M000, M001, *EXTRA)


@pytest.mark.parametrize("step", ROLLBACK, ids=[s.id for s in ROLLBACK])
def test_rollback_settles_every_answer_at_every_step(project: Project, step: Step) -> None:
    write_extra(project)
    matrix = Matrix(project)
    matrix.migrate_all()
    matrix.fault(step)
    args = ("rollback", "--to", M001.removesuffix(".sql"), "--yes", "--json")

    runs = matrix.run(*args)

    assert all(rule.fired for rule in project.emulator.faults.rules), "a fault never fired"
    # The rollbacks of 004 and 003 land when the last one (002) is what fails.
    left = (M000, M001, "002_a.sql") if step.id.startswith("undo-002") else (M000, M001, *EXTRA)
    for kind, run in runs.items():
        payload = one_object(run)
        if run.code == 0 and kind in ABSORBED:
            assert matrix.settled(kind) == (M000, M001), run
            continue
        assert run.code == (1 if step.changing else EXIT_OF[kind]), run
        assert matrix.settled(kind) == left, run
        report = payload["report"]
        assert report is not None, run
        if step.changing:
            assert report["not_rolled_back"] == list(reversed(left[2:])), run
            assert "rolled_back=" in matrix.outputs(kind)

    kind, again = matrix.again(step, *args)
    assert again.code == 0, again
    assert matrix.settled(kind) == (M000, M001)


@pytest.mark.parametrize("step", VERIFY, ids=[s.id for s in VERIFY])
def test_verify_fails_cleanly_on_every_answer_at_every_step(project: Project, step: Step) -> None:
    matrix = Matrix(project)
    matrix.migrate_all()
    matrix.fault(step)

    runs = matrix.run("verify", "--json")

    assert all(rule.fired for rule in project.emulator.faults.rules), "a fault never fired"
    for kind, run in runs.items():
        one_object(run)
        assert run.code != 0 or kind in ABSORBED, run
        # A probe that did not get its expected error is a failed check (exit 1).
        assert run.code in (EXIT_OF[kind], 1, 0), run
        assert matrix.settled(kind, {}) == (M000, M001), run

    kind, again = matrix.again(step, "verify", "--json")
    assert again.code == 0, again
    assert matrix.settled(kind, {}) == (M000, M001)
