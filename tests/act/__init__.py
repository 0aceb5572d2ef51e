"""This repository's GitHub workflows run by act, as a runner would run them, offline.

- `project()` makes a throwaway git repository of this repository's files (what a
  checkout of the commit would hold), for a test to change and run workflows in.
- `Act.run()` runs `act EVENT` there on the self-hosted platform (no container, no image
  to pull): every `uses:` of a GitHub action is replaced by its stand-in in
  tests/act/actions with `--local-repository` (a workflow using an action with no stand-in
  is refused before act starts, so nothing is ever cloned); `actions/checkout` of the
  repository itself is act's own (it copies the working tree into the job's workspace).
  The environment act and the jobs see is this host's, without the developer's
  Cloudflare, d1deploy or GitHub settings. `--insecure-secrets` keeps act from masking
  secrets, so that the log shows a leak as it would be written.
- `Run` is what a run left: each job's result, each step's outputs, each job's summary,
  the log, and the artifacts the upload-artifact stand-in copied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ACTIONS = HERE / "actions"
WORKFLOWS = HERE / "workflows"

STANDINS = {
    "actions/setup-python": ACTIONS / "setup-python",
    "actions/upload-artifact": ACTIONS / "upload-artifact",
}
"""GitHub's actions the workflows use, and the local folder that stands in for each."""

ACT_OWN = {"actions/checkout"}
"""Actions act performs itself: a checkout of the repository under test is a copy of it."""

_DROPPED_ENV = ("CLOUDFLARE_", "D1DEPLOY_", "GITHUB_", "RUNNER_", "ACT", "PYTEST_")
_PROXY_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_TIMEOUT = 600


def project(dest: Path) -> Path:
    """A git repository at `dest` holding this repository's files (tracked, and new ones
    not ignored, so that uncommitted work is what runs), committed on `main`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the work tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    git(dest, "init", "-q", "-b", "main")
    commit(dest, "the repository under test")
    return dest


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=act test",
            "-c",
            "user.email=act@example.invalid",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit(repo: Path, message: str) -> str:
    """Commit everything in `repo`; the new commit's SHA."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def host_python(dest: Path) -> Path:
    """A virtual environment of the host's Python with pip and nothing else: what the
    setup-python stand-in copies for each job (made once, it saves each job ~3 s)."""
    if not (dest / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True, symlinks=True).create(dest)
    return dest


def uses(workflow: Path) -> set[str]:
    """Every `uses:` of an action (not a local path or reusable workflow) in a file."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "uses" and isinstance(value, str) and not value.startswith("./"):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(workflow.read_text(encoding="utf-8")))
    return found


@dataclass(frozen=True, repr=False)
class Run:
    """What one `act` run left behind."""

    returncode: int
    events: tuple[dict[str, Any], ...]
    """act's log, one JSON object per line."""
    log: str
    """act's whole output (stdout and stderr) as written."""
    artifacts: Path
    """The upload-artifact stand-in's folder: one subfolder per artifact."""

    def __repr__(self) -> str:
        # What a failed assertion needs: the results and how the log ended.
        said = [e["msg"].rstrip() for e in self.events if e.get("msg")][-40:]
        return f"Run(returncode={self.returncode}, jobs={self.jobs}, log ends:\n" + (
            "\n".join(said) + ")"
        )

    def _of(self, job: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("jobID") == job]

    @property
    def jobs(self) -> dict[str, str]:
        """Job ID -> result ("success", "failure") of each job that ran."""
        return {e["jobID"]: e["jobResult"] for e in self.events if "jobResult" in e}

    def outputs(self, job: str) -> dict[str, str]:
        """Every step output the job set (step outputs, by name; later ones win)."""
        return {e["name"]: e["arg"] for e in self._of(job) if e.get("command") == "set-output"}

    def summary(self, job: str) -> str:
        """The job's step summary: what its steps wrote to $GITHUB_STEP_SUMMARY."""
        return "".join(e["content"] for e in self._of(job) if e.get("command") == "summary")

    def step_results(self, job: str) -> dict[str, str]:
        """Step name -> result of each step of the job that ran (main stage)."""
        return {
            e["step"]: e["stepResult"]
            for e in self._of(job)
            if e.get("stage") == "Main" and "stepResult" in e
        }

    def annotations(self, job: str) -> list[tuple[str, str, str]]:
        """(level, title, message) of each error, warning and notice the job's steps wrote."""
        return [
            (e["command"], e.get("kvPairs", {}).get("title", ""), e["arg"])
            for e in self._of(job)
            if e.get("command") in ("error", "warning", "notice")
        ]

    def output_lines(self, job: str) -> list[str]:
        """What the job's steps printed, line by line."""
        return [e["msg"].rstrip("\n") for e in self._of(job) if e.get("raw_output")]

    def artifact(self, name_prefix: str) -> Path:
        """The one uploaded artifact whose name starts with `name_prefix`."""
        (found,) = [p for p in self.artifacts.iterdir() if p.name.startswith(name_prefix)]
        return found


@dataclass
class Act:
    """Runs act in a project, with everything a run needs that is not the workflow."""

    binary: Path
    python: Path
    """The venv the setup-python stand-in copies (`host_python`)."""
    wheels: Path
    """Where the jobs' pip finds every package, with no index (`realtools.wheelhouse`)."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables for every job (act --env)."""
    secrets: dict[str, str] = field(default_factory=dict)
    local_repositories: dict[str, Path] = field(default_factory=dict)
    """Further `OWNER/REPO@REF` -> folder replacements (an action under test)."""
    nice: int = 0
    """Niceness of act and its jobs (runs beside a longer one yield the CPU to it)."""

    def run(
        self,
        repo: Path,
        event: str,
        payload: Mapping[str, Any],
        *,
        workflows: Sequence[str] = (".github/workflows",),
        scratch: Path,
        extra: Sequence[str] = (),
    ) -> Run:
        """`act EVENT` in `repo` with the event `payload`; its folders go under `scratch`."""
        scratch.mkdir(parents=True, exist_ok=True)
        event_file = scratch / "event.json"
        event_file.write_text(json.dumps(payload), encoding="utf-8")
        artifacts = scratch / "artifacts"
        artifacts.mkdir(exist_ok=True)
        args = [
            *(["nice", "-n", str(self.nice)] if self.nice else []),
            str(self.binary),
            event,
            "--eventpath",
            str(event_file),
            # No container: the jobs run on this host, and no image is pulled.
            "--platform",
            "ubuntu-latest=-self-hosted",
            "--action-offline-mode",
            "--pull=false",
            "--no-cache-server",
            "--action-cache-path",
            str(scratch / "runner"),
            "--json",
            "--insecure-secrets",
            "--env",
            f"D1DEPLOY_ACT_PYTHON={self.python}",
            "--env",
            f"D1DEPLOY_ACT_ARTIFACTS={artifacts}",
            # The runner's pip installs from a local wheelhouse: offline, as a test must be.
            "--env",
            "PIP_NO_INDEX=1",
            "--env",
            f"PIP_FIND_LINKS={self.wheels}",
        ]
        for workflow in workflows:
            args += ["--workflows", workflow]
        for name, value in self.env.items():
            args += ["--env", f"{name}={value}"]
        for name, value in self.secrets.items():
            args += ["--secret", f"{name}={value}"]
        for spec, folder in self._replacements(repo, workflows).items():
            args += ["--local-repository", f"{spec}={folder}"]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_DROPPED_ENV) and k.lower() not in _PROXY_ENV
        }
        env.update(ACT_DISABLE_VERSION_CHECK="1", NO_COLOR="1", NO_PROXY="127.0.0.1,localhost")
        done = subprocess.run(
            [*args, *extra],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=_TIMEOUT,
        )
        log = done.stdout + done.stderr
        events = []
        for line in log.splitlines():
            try:
                event_obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(event_obj, dict):
                events.append(event_obj)
        (scratch / "act.log").write_text(log, encoding="utf-8")
        return Run(done.returncode, tuple(events), log, artifacts)

    def _replacements(self, repo: Path, workflows: Sequence[str]) -> dict[str, Path]:
        """`--local-repository` for every action the workflows use: its stand-in, or the
        folder the test gave; an action with neither is an error here, before act could
        try to fetch it."""
        # The reusable workflows a caller names are read from .github/workflows.
        files = sorted((repo / ".github" / "workflows").glob("*.y*ml"))
        for workflow in workflows:
            path = repo / workflow
            files += sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
        replacements: dict[str, Path] = {}
        for spec in sorted(set().union(*(uses(f) for f in files))):
            action = re.sub(r"@.*$", "", spec)
            owner_repo = "/".join(action.split("/")[:2])
            if spec in self.local_repositories:
                replacements[spec] = self.local_repositories[spec]
            elif owner_repo in STANDINS:
                replacements[spec] = STANDINS[owner_repo]
            elif owner_repo not in ACT_OWN:
                raise LookupError(f"{spec}: no stand-in in {ACTIONS} (act would fetch it)")
        return replacements


def python_version() -> str:
    """The host's Python as a setup-python version (X.Y)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"
