"""The workflows and the action, run end to end by act as GitHub would run them.

Each scenario runs `deploy.yml` (which calls the reusable `d1-deploy.yml`), a test
caller of it, `ci.yml`, or a job using the step-level `action.yml`, in a throwaway copy
of this repository, against the D1 emulator on 127.0.0.1 and a loopback stand-in for
GitHub's API (tests/act). It is judged from the emulator's SQLite file, the uploaded
artifacts, the job summaries and the step outputs act logged; nothing of the workflows'
own logic is replaced. Scenarios run several at a time, started when the first test
that needs them asks (`act_runs`); each test waits for its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from d1deploy import backups
from tests import act
from tests.act.github_api import BOT, GitHubApi
from tests.e2e.states import (
    DB,
    DbState,
    assert_stage,
    expected,
    fingerprint,
    in_process_backend,
    migrate_in_process,
    read_state,
    seed_before,
)
from tests.emulator import D1Emulator

pytestmark = pytest.mark.act

# Random per session, so that no file of the repository copy can hold them by chance.
TOKEN = f"act-SECRET-cloudflare-{secrets.token_hex(8)}"
GITHUB_TOKEN = f"act-SECRET-github-{secrets.token_hex(8)}"
REPOSITORY = "example/d1deploy"
PULL = 7
WORKERS = 3
"""Scenarios at once: each is mostly pip and d1deploy start-up, one core apiece."""
NICE = 10
"""Niceness of every scenario but `ci`, whose inner test suite is the longest path."""
MAIN = "refs/heads/main"
REPO_EVENT = {
    "name": "d1deploy",
    "full_name": REPOSITORY,
    "default_branch": "main",
    "private": True,
    "owner": {"login": "example"},
}
SECRETS = {"CLOUDFLARE_API_TOKEN": TOKEN, "GITHUB_TOKEN": GITHUB_TOKEN}
DEPLOY = ".github/workflows/deploy.yml"


@dataclass(frozen=True, repr=False)
class Outcome:
    """What a scenario left: its runs, the database's states, the GitHub API's view."""

    runs: tuple[act.Run, ...]
    before: DbState
    """The database as the scenario set it up, before any run."""
    after: DbState
    """The database after the runs."""
    api: GitHubApi
    leaks: tuple[str, ...]
    """Log lines, artifacts and comments holding a token."""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def run(self) -> act.Run:
        (only,) = self.runs
        return only

    def __repr__(self) -> str:
        stages = (self.before.stage(), self.after.stage())
        return f"Outcome(stages={stages}, leaks={self.leaks}, runs={self.runs})"


@dataclass
class World:
    """One scenario's repository copy, emulator, GitHub API stand-in and act."""

    root: Path
    repo: Path
    emulator: D1Emulator
    api: GitHubApi
    runner: act.Act
    runs: list[act.Run] = field(default_factory=list)
    before: DbState | None = None
    """The database just before the first run."""

    @property
    def db(self) -> Path:
        return self.emulator.db_path(DB)

    def run(
        self, event: str, payload: dict[str, Any], workflow: str = DEPLOY, *extra: str
    ) -> act.Run:
        if self.before is None:
            self.before = read_state(self.db)
        scratch = self.root / f"run{len(self.runs) + 1}"
        done = self.runner.run(
            self.repo, event, {**payload, "repository": REPO_EVENT}, workflows=[workflow],
            scratch=scratch, extra=extra,
        )  # fmt: skip
        self.runs.append(done)
        return done

    def add_workflow(self, name: str) -> str:
        """Copy a test workflow from tests/act/workflows into the repository; its path."""
        target = self.repo / ".github" / "workflows" / name
        shutil.copy2(act.WORKFLOWS / name, target)
        act.commit(self.repo, f"add {name}")
        return str(target.relative_to(self.repo))


@dataclass
class Context:
    binary: Path
    python: Path
    wheels: Path
    base: Path


@contextmanager
def world(
    ctx: Context,
    name: str,
    *,
    seed: str | None = "before",
    with_secrets: bool = True,
    nice: int = NICE,
) -> Iterator[World]:
    root = ctx.base / name
    repo = act.project(root / "repo")
    emulator = D1Emulator(root / "d1", token=TOKEN)
    emulator.create_database(DB)
    if seed is not None:
        seed_before(emulator, repo / "migrations")
    if seed == "after":
        migrate_in_process(emulator, repo / "migrations")
    api = GitHubApi(REPOSITORY, GITHUB_TOKEN)
    with contextlib.closing(emulator), emulator.serve() as base_url, api.serve() as api_url:
        runner = act.Act(
            ctx.binary,
            ctx.python,
            ctx.wheels,
            env={
                "CLOUDFLARE_API_BASE_URL": base_url,
                "GITHUB_API_URL": api_url,
                "GITHUB_REPOSITORY": REPOSITORY,
            },
            secrets=(
                {**SECRETS, "CLOUDFLARE_ACCOUNT_ID": emulator.account_id}
                if with_secrets
                else {"GITHUB_TOKEN": GITHUB_TOKEN}
            ),
            local_repositories={"example/d1deploy@v1": repo},
            nice=nice,
        )
        yield World(root, repo, emulator, api, runner)


def finish(w: World, **notes: Any) -> Outcome:
    assert w.before is not None, "the scenario ran nothing"
    return Outcome(tuple(w.runs), w.before, read_state(w.db), w.api, tuple(_leaks(w)), notes)


def _leaks(w: World) -> Iterator[str]:
    """Where a token shows in what a run leaves behind (the job's own folders go with
    the job, as on GitHub): act's log (every line a step printed, its summary and its
    outputs), the artifacts, the pull-request comments."""
    tokens = (TOKEN, GITHUB_TOKEN)
    for run in w.runs:
        for line in run.log.splitlines():
            if any(t in line for t in tokens):
                yield f"log: {line[:200]}"
        for path in sorted(run.artifacts.rglob("*")):
            if path.is_file() and any(t.encode() in path.read_bytes() for t in tokens):
                yield str(path.relative_to(w.root))
    for comment in w.api.comments:
        if any(t in comment["body"] for t in tokens):
            yield f"comment {comment['id']}"


# -- the scenarios -----------------------------------------------------------------------------
SCENARIOS: dict[str, Callable[[Context], Outcome]] = {}
"""Name -> scenario, in the order they start: the longest first."""


def scenario(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
    SCENARIOS[fn.__name__] = fn
    return fn


def push(ref: str = MAIN) -> dict[str, Any]:
    return {"ref": ref}


def pull_request(w: World) -> dict[str, Any]:
    head = act.git(w.repo, "rev-parse", "HEAD")
    pr = {"number": PULL, "head": {"ref": "feature", "sha": head}, "base": {"ref": "main"}}
    return {"number": PULL, "pull_request": pr}


def dispatch(ref: str = MAIN, **inputs: str) -> dict[str, Any]:
    return {"ref": ref, "inputs": inputs}


@scenario
def ci(ctx: Context) -> Outcome:
    """ci.yml on this host's Python: lint, types, actionlint and the test suite."""
    with world(ctx, "ci", seed=None, nice=0) as w:
        # The act suite is what runs this; it cannot also run inside it. The wrangler,
        # workerd and end-to-end suites are left to the outer run too (`.ci/run` runs them
        # on this very checkout): inside, they would double the longest path of the whole
        # suite (the e2e suite alone is ~160 s of CPU) for nothing ci.yml does differently
        # with them, and the installed command's runs in a runner's environment are what
        # the deploy, pr and action scenarios here already judge.
        w.runner.env["PYTEST_ADDOPTS"] = "-m 'not act and not wrangler and not workerd and not e2e'"
        # Its test matrix narrowed to the Python there is.
        w.run(
            "push", push(), ".github/workflows/ci.yml", "--matrix", f"python:{act.python_version()}"
        )
        return finish(w)


@scenario
def pr(ctx: Context) -> Outcome:
    """A pull request with a long conversation, pushed to three times: plans, rehearsals,
    and one comment (on the second page of comments) edited in place. The second push
    adds a migration; the third edits an applied one, which the plan refuses."""
    with world(ctx, "pull-request") as w:
        w.api.add_comment(PULL, "<!-- d1deploy-plan: telegram-conversations -->\nquoted", "octocat")
        for n in range(120):
            w.api.add_comment(PULL, f"review note {n}", BOT if n % 2 else "octocat")
        w.run("pull_request", pull_request(w))
        first = [dict(c) for c in w.api.on(PULL)]
        _add_migration(w.repo, "feature_flags")
        w.run("pull_request", pull_request(w))
        second = comment_of(w.api)["body"]
        applied = w.repo / "migrations" / "000_base_schema.sql"
        applied.write_text(applied.read_text() + "-- edited after it was applied\n")
        act.commit(w.repo, "edit an applied migration")
        w.run("pull_request", pull_request(w))
        return finish(w, first=first, second=second)


@scenario
def pushed(ctx: Context) -> Outcome:
    """A push to main with 001 pending: plan, rehearse, deploy; then the restore
    command from the summary, pasted into a terminal."""
    with world(ctx, "pushed") as w:
        run = w.run("push", push())
        deployed = read_state(w.db)
        command = re.search(r"```sh\n(d1deploy restore [^\n]+)\n```", run.summary("deploy"))
        pasted = None
        if command:
            env = {
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                "HOME": str(w.root),
                "CLOUDFLARE_API_TOKEN": TOKEN,
                "CLOUDFLARE_ACCOUNT_ID": w.emulator.account_id,
                "CLOUDFLARE_API_BASE_URL": w.runner.env["CLOUDFLARE_API_BASE_URL"],
            }
            pasted = subprocess.run(
                ["bash", "-c", command.group(1)],
                cwd=w.repo, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        return finish(w, deployed=deployed, pasted=pasted, pasted_state=read_state(w.db))


@scenario
def restored(ctx: Context) -> Outcome:
    """A restore to the bookmark taken before 001 was applied."""
    with world(ctx, "restore") as w:
        backend = in_process_backend(w.emulator)
        try:
            bookmark = backend.bookmark()
        finally:
            backend.close()
        migrate_in_process(w.emulator, w.repo / "migrations")
        w.run("workflow_dispatch", dispatch(action="restore", bookmark=bookmark, confirm=DB))
        return finish(w, bookmark=bookmark)


@scenario
def rolled_back(ctx: Context) -> Outcome:
    with world(ctx, "rollback", seed="after") as w:
        w.run("workflow_dispatch", dispatch(action="rollback", steps="1", confirm=DB))
        return finish(w)


@scenario
def verify_fails(ctx: Context) -> Outcome:
    """A push whose new migration passes its rehearsal but fails verification in
    production (a check that only the real database can fail)."""
    with world(ctx, "verify-fails", seed="after") as w:
        _add_migration(w.repo, "feature_flags", verify=PRODUCTION_ONLY_FAILURE)
        w.run("push", push())
        return finish(w)


@scenario
def action(ctx: Context) -> Outcome:
    """The step-level action in a team's own job: plan, migrate, verify."""
    with world(ctx, "action") as w:
        workflow = w.add_workflow("action.yml")
        w.run("push", push(), workflow)
        return finish(w)


@scenario
def other_branch(ctx: Context) -> Outcome:
    with world(ctx, "other-branch") as w:
        w.run("push", push("refs/heads/wip"))
        return finish(w)


@scenario
def pr_target(ctx: Context) -> Outcome:
    """pull_request_target, whose ref is the base branch."""
    with world(ctx, "pr-target") as w:
        workflow = w.add_workflow("pull-request-target.yml")
        w.run("pull_request_target", pull_request(w), workflow)
        return finish(w)


@scenario
def fork_pr(ctx: Context) -> Outcome:
    """A pull request from a fork: no secrets."""
    with world(ctx, "fork", with_secrets=False) as w:
        w.run("pull_request", pull_request(w))
        return finish(w)


@scenario
def refused(ctx: Context) -> Outcome:
    """Recovery requests that must not reach the database: no confirmation; the
    confirmation but from a branch."""
    with world(ctx, "refused", seed="after") as w:
        w.run("workflow_dispatch", dispatch(action="rollback", steps="1"))
        w.run(
            "workflow_dispatch",
            dispatch("refs/heads/wip", action="restore", bookmark="00000001-b1", confirm=DB),
        )
        return finish(w)


@scenario
def leak(ctx: Context) -> Outcome:
    """The scan's positive control: a workflow that leaks the token."""
    with world(ctx, "leak", seed=None) as w:
        workflow = w.add_workflow("leak.yml")
        w.run("push", push(), workflow)
        return finish(w)


PRODUCTION_ONLY_FAILURE = """\
-- check: no table of Cloudflare's own beside ours
-- D1 keeps `_cf_KV` in every database; an export leaves it out, so the rehearsal's
-- copy passes this and only production fails it.
-- expect: value = 0
SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_cf\\_%' ESCAPE '\\';
"""


def _add_migration(repo: Path, slug: str, verify: str | None = None) -> None:
    """A new migration with its rollback and verify files, scaffolded by `d1deploy new`
    wherever the current layout keeps them."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("d1deploy")), "new", slug, "--json"],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    created = [Path(p) for p in json.loads(done.stdout)["created"]]
    rollback = next(p for p in created if "rollback" in p.name)
    check = next(p for p in created if "verify" in p.name)
    (migration,) = set(created) - {rollback, check}
    migration.write_text(f"CREATE TABLE {slug} (name TEXT PRIMARY KEY, enabled INTEGER);\n")
    rollback.write_text(f"DROP TABLE {slug};\n")
    check.write_text(
        verify
        or (
            f"-- check: {slug} exists\n-- expect: value = 1\n"
            f"SELECT count(*) FROM sqlite_master WHERE name = '{slug}';\n"
        )
    )
    act.commit(repo, f"add migration {slug}")


# -- running them -----------------------------------------------------------------------------
class Scenarios:
    """The scenarios the selected tests need, running on a pool; `get` waits for one."""

    def __init__(self, ctx: Context, names: list[str]) -> None:
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="act")
        self.futures: dict[str, Future[Outcome]] = {
            name: self.pool.submit(SCENARIOS[name], ctx) for name in names
        }

    def get(self, name: str) -> Outcome:
        return self.futures[name].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def act_runs(
    request: pytest.FixtureRequest,
    act_binary: Path,
    act_wheelhouse: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenarios]:
    wanted: set[str] = set()
    for item in request.session.items:
        wanted.update(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None:  # a test that takes its scenario by name
            wanted.add(str(callspec.params.get("name")))
    names = [name for name in SCENARIOS if name in wanted]  # as defined: longest first
    base = tmp_path_factory.mktemp("act")
    ctx = Context(act_binary, act.host_python(base / "python"), act_wheelhouse, base)
    runs = Scenarios(ctx, names)
    yield runs
    runs.close()


def _scenario_fixture(name: str) -> Any:
    def fixture(act_runs: Scenarios) -> Outcome:
        return act_runs.get(name)

    fixture.__name__ = name
    return pytest.fixture(scope="session", name=name)(fixture)


for _name in SCENARIOS:
    globals()[f"_{_name}_fixture"] = _scenario_fixture(_name)


# -- helpers for the judgement ----------------------------------------------------------------
def assert_unchanged(outcome: Outcome) -> None:
    """The database is exactly as the scenario left it before the runs."""
    assert outcome.after == outcome.before


def dump_state(dump: Path) -> Any:
    """The user's schema and rows in a dump, loaded by plain SQLite."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(dump.read_text(encoding="utf-8"))
        return fingerprint(con)
    finally:
        con.close()


def verified_backup(artifact: Path) -> backups.Sidecar:
    """The one dump in a backup artifact: its sidecar verifies, and says what it holds."""
    (dump,) = [p for p in artifact.iterdir() if p.suffix == ".sql"]
    sidecar = backups.verify_backup(dump)
    assert sidecar.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert sidecar.bytes == dump.stat().st_size
    return sidecar


def comment_of(api: GitHubApi) -> dict[str, Any]:
    """The plan comment on the pull request: the bot's comment that starts with the marker."""
    (ours,) = [
        c
        for c in api.on(PULL)
        if c["user"]["login"] == BOT and c["body"].startswith("<!-- d1deploy-plan: ")
    ]
    return ours


# -- the tests ----------------------------------------------------------------------------------
def test_a_push_to_main_plans_rehearses_then_backs_up_migrates_and_verifies(
    pushed: Outcome,
) -> None:
    run = pushed.run
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"plan": "success", "deploy": "success"}
    assert run.outputs("plan")["pending"] == "1"
    assert list(run.step_results("deploy"))[3:6] == ["Back up", "Migrate", "Verify"]
    assert set(run.step_results("deploy").values()) == {"success"}
    assert_stage(pushed.before, "before")
    assert_stage(pushed.notes["deployed"], "after")
    deploy = run.outputs("deploy")
    assert json.loads(deploy["applied"]) == ["001_schema_enhancements.sql"]

    # The backup artifact: a dump of the database before the change, whose sidecar verifies.
    sidecar = verified_backup(run.artifact("d1deploy-backup-telegram-conversations-"))
    assert sidecar.database_name == DB
    assert dump_state(sidecar.path) == expected("before")
    reports = run.artifact("d1deploy-report-telegram-conversations-")
    assert sorted(p.name for p in reports.iterdir()) == [
        "backup.json",
        "migrate.json",
        "verify.json",
    ]

    # The plan job's summary holds the plan and the rehearsal, the deploy's the way back.
    assert "001_schema_enhancements" in run.summary("plan")
    assert "rehearsal" in run.summary("plan")
    summary = run.summary("deploy")
    assert f"bookmark before the first change: `{deploy['bookmark_before']}`" in summary
    assert "| backup | success |\n| deploy | success |\n| verify | success |" in summary


def test_the_restore_command_in_the_summary_works_when_pasted(pushed: Outcome) -> None:
    pasted = pushed.notes["pasted"]
    assert pasted is not None, "no restore command in the deploy summary"
    assert pasted.returncode == 0, pasted.stderr
    assert pushed.notes["pasted_state"].fingerprint == expected("before")


def test_a_pull_request_plans_and_rehearses_and_changes_nothing(pr: Outcome) -> None:
    for run in pr.runs[:2]:
        assert run.returncode == 0, run.log[-3000:]
        assert run.jobs == {"plan": "success", "comment": "success"}  # no deploy job
        summary = run.summary("plan")
        assert "### d1deploy plan" in summary and "### d1deploy rehearsal" in summary
    assert [r.outputs("plan")["pending"] for r in pr.runs[:2]] == ["1", "2"]
    # An applied migration edited: the plan fails, and nothing follows but the comment.
    refused = pr.runs[2]
    assert refused.returncode != 0
    assert refused.jobs == {"plan": "failure", "comment": "success"}
    assert refused.step_results("plan")["Plan"] == "failure"
    assert "Rehearse on a local copy" not in refused.step_results("plan")
    assert_unchanged(pr)


def test_the_plan_is_one_pull_request_comment_edited_on_each_push(pr: Outcome) -> None:
    first, ours = pr.notes["first"], comment_of(pr.api)
    assert len(first) == 1 + 120 + 1 and first[-1]["user"]["login"] == BOT
    assert first[-1]["id"] == ours["id"]  # the later pushes edited it, and added none
    assert len(pr.api.on(PULL)) == len(first)
    # Someone quoting the marker is not the bot: their comment is left alone.
    assert [c["edits"] for c in pr.api.on(PULL)] == [0] * 121 + [2]
    body = pr.notes["second"]
    assert body.startswith("<!-- d1deploy-plan: telegram-conversations -->\n")
    assert "Plan passed ✅, rehearsal passed ✅" in body
    assert "002_feature_flags" in body and "002_feature_flags" not in first[-1]["body"]
    assert "### d1deploy rehearsal" in body
    # The failed plan is what the comment shows last, with what d1deploy said.
    assert "Plan failed ❌, rehearsal not run" in ours["body"]
    assert "000_base_schema.sql" in ours["body"] and "### d1deploy rehearsal" not in ours["body"]
    assert all(c.authorized for c in pr.api.calls)
    pages = "/repos/example/d1deploy/issues/7/comments?per_page=100&page="
    edit = ("PATCH", f"/repos/example/d1deploy/issues/comments/{ours['id']}")
    post = ("POST", "/repos/example/d1deploy/issues/7/comments")
    listing = [("GET", pages + "1"), ("GET", pages + "2")]
    assert [(c.method, c.path) for c in pr.api.calls] == [
        *listing,
        post,
        *listing,
        edit,
        *listing,
        edit,
    ]


def test_a_failing_verify_fails_the_job_and_leaves_the_migration_unapplied(
    verify_fails: Outcome,
) -> None:
    run = verify_fails.run
    assert run.returncode != 0
    assert run.jobs == {"plan": "success", "deploy": "failure"}  # the rehearsal passed
    steps = run.step_results("deploy")
    assert (steps["Back up"], steps["Migrate"]) == ("success", "failure")
    assert "Verify" not in steps
    assert_stage(verify_fails.after, "after")
    assert "002_feature_flags.sql" not in verify_fails.after.tables
    # The check read rows, so it ran inside 002's own request and aborted it (#19).
    assert [e for e in verify_fails.after.events if e[0].startswith("002")] == []
    summary = run.summary("deploy")
    assert "| deploy | failure |" in summary
    assert "**deploy failed (exit 1)**: it failed while changing the database" in summary
    assert "verification failed after 002_feature_flags.sql" in summary
    assert "Rolled back automatically" not in summary
    assert "no table of Cloudflare's own beside ours" in summary  # the failed check
    verified_backup(run.artifact("d1deploy-backup-"))


@pytest.mark.parametrize("name", ["other_branch", "pr_target"])
def test_no_deploy_from_another_branch_or_pull_request_target(
    name: str, request: pytest.FixtureRequest
) -> None:
    outcome: Outcome = request.getfixturevalue(name)
    run = outcome.run
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"plan": "success"}
    assert run.outputs("plan")["pending"] == "1"
    assert_unchanged(outcome)
    assert_stage(outcome.after, "before")


def test_recovery_is_refused_without_confirmation_or_from_a_branch(refused: Outcome) -> None:
    messages = [
        "to rollback, type the database name (telegram-conversations) as the confirmation",
        "restore runs only from main or a tag, whose migrations are the reviewed ones",
    ]
    for run, message in zip(refused.runs, messages, strict=True):
        assert run.returncode != 0
        assert run.jobs == {"plan": "failure"}  # `recover` never started
        assert run.step_results("plan")["Check the request"] == "failure"
        assert ("error", "d1-deploy", message) in run.annotations("plan")
        assert "Set up Python" not in run.step_results("plan")
        assert run.summary("plan") == ""
    assert_unchanged(refused)


def test_a_confirmed_rollback_from_main_is_done_and_summarised(rolled_back: Outcome) -> None:
    run = rolled_back.run
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"plan": "success", "recover": "success"}
    assert_stage(rolled_back.before, "after")
    state = rolled_back.after
    assert state.stage() == "before" and state.ledger == ("000_base_schema.sql",)
    assert "@nektos/act asked to roll back the last 1 applied migration(s)" in run.summary("plan")
    summary = run.summary("recover")
    assert "### rollback of `telegram-conversations`" in summary
    assert "| backup | success |\n| rollback | success |\n| verify | success |" in summary
    sidecar = verified_backup(run.artifact("d1deploy-backup-"))
    assert dump_state(sidecar.path) == expected("after")  # the backup before the rollback


def test_a_confirmed_restore_from_main_is_done_and_summarised(restored: Outcome) -> None:
    run = restored.run
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"plan": "success", "recover": "success"}
    assert_stage(restored.before, "after")
    assert_stage(restored.after, "before")  # ledger and history as they were, too
    bookmark = restored.notes["bookmark"]
    assert f"restore `telegram-conversations` to bookmark `{bookmark}`" in run.summary("plan")
    summary = run.summary("recover")
    assert "### restore of `telegram-conversations`" in summary
    assert "| restore | success |" in summary
    verified_backup(run.artifact("d1deploy-backup-"))


def test_a_pull_request_from_a_fork_gets_a_notice_not_a_failure(fork_pr: Outcome) -> None:
    run = fork_pr.run
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"plan": "success"}  # no comment: nothing was planned
    note = "No Cloudflare credentials for this pull request (from a fork?), so it was not planned."
    ((level, text),) = [(a[0], a[2]) for a in run.annotations("plan") if a[1] == "d1-deploy"]
    assert level == "notice" and text.startswith(note)
    assert note in run.summary("plan")
    assert "Plan" not in run.step_results("plan")
    assert fork_pr.api.calls == []
    assert_unchanged(fork_pr)


def test_the_action_plans_migrates_and_verifies_with_its_outputs(action: Outcome) -> None:
    run = action.run
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"migrate": "success"}
    assert_stage(action.after, "after")
    seen = run.outputs("migrate")
    assert seen["seen_pending"] == "1"
    assert json.loads(seen["seen_applied"]) == ["001_schema_enhancements.sql"]
    bookmark = seen["seen_bookmark_before"]
    # The restore names the bookmark and, as every suggested command, the database.
    assert bookmark and seen["seen_restore_command"].endswith(
        f"--bookmark {bookmark} --yes -d telegram-conversations"
    )
    # The extra arguments arrive one per line, spaces and all.
    assert "/backups of this run/" in seen["seen_backup_path"]
    assert "### d1deploy migrate: telegram-conversations" in run.summary("migrate")


def test_ci_yml_is_green(ci: Outcome) -> None:
    run = ci.run
    assert run.returncode == 0, run.log[-6000:]
    assert run.jobs == {"lint": "success", "test": "success"}
    steps = run.step_results("test")
    assert steps["env -u GITHUB_ACTIONS -u GITHUB_STEP_SUMMARY -u GITHUB_OUTPUT python -m pytest"]
    tail = "\n".join(run.output_lines("test")[-5:])
    assert re.search(r"\d+ passed", tail) and "failed" not in tail, tail


@pytest.mark.parametrize("name", sorted(SCENARIOS.keys() - {"leak"}))
def test_no_token_in_any_log_artifact_summary_or_comment(
    name: str, request: pytest.FixtureRequest
) -> None:
    outcome: Outcome = request.getfixturevalue(name)
    assert outcome.leaks == ()


def test_the_token_scan_finds_a_leak_where_it_would_be(leak: Outcome) -> None:
    assert leak.run.returncode == 0, leak.run.log[-3000:]
    # act does not mask it (--insecure-secrets): the line the step printed, the summary
    # as act logged it and the artifact holding it are all found.
    logged = [found for found in leak.leaks if found.startswith("log: ")]
    assert any("the token is" in line for line in logged), leak.leaks
    assert any("Summary - token:" in line for line in logged), leak.leaks
    assert "run1/artifacts/leaked/report.txt" in leak.leaks
