"""Fixtures of the end-to-end suite.

`project` is a directory holding a copy of the seed migrations, with the emulator served
on 127.0.0.1 under a recognisable token, and a runner for the installed `d1deploy`
command (GitHub Actions mode on, so the step summary and outputs are written too). When a
test ends, everything d1deploy printed and every file under the test's directory (reports,
backups, sidecars, the GitHub files, the emulator's own database files) is scanned for the
token, and the emulator must never have seen the Authorization header on a signed URL.

The state of the database is always judged by opening the emulator's SQLite file
directly, never through d1deploy.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.states import DB, SEED, DbState, read_state, seed_before
from tests.emulator import D1Emulator, Response
from tests.helpers import d1deploy_executable

TOKEN = "e2e-SECRET-token-7f3a9c"
WRONG_TOKEN = "e2e-SECRET-wrong-token-3b8d1e"
SECRETS = (TOKEN, WRONG_TOKEN)
# The runs see only the settings a scenario gives them: none of the developer's or CI's.
_DROPPED_ENV = ("CLOUDFLARE_", "D1DEPLOY_", "GITHUB_", "RUNNER_")
# A proxy must never see loopback traffic (and no test may reach anything else).
_PROXY_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


# --- the emulator's side ---------------------------------------------------------------


class Gate:
    """Where a request hit by a `delay` fault parks until the test releases it, so that
    "in flight" lasts exactly as long as a scenario needs."""

    def __init__(self) -> None:
        self.parked = threading.Event()
        self.released = threading.Event()
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self, seconds: float) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()
        self.parked.set()
        self.released.wait(seconds)

    def wait_parked(self, timeout: float = 60.0, count: int = 1) -> None:
        """Until `count` requests have reached this gate."""
        with self._changed:
            ok = self._changed.wait_for(lambda: self.count >= count, timeout)
        assert ok, "no request reached the delay fault"


class Gates:
    """The emulator's `sleep`: one `Gate` per delay, so that a scenario can park two
    requests (delay=60 and delay=61, say) and let them go in the order it chooses."""

    def __init__(self) -> None:
        self._gates: dict[float, Gate] = {}
        self._lock = threading.Lock()

    def __getitem__(self, seconds: float) -> Gate:
        with self._lock:
            return self._gates.setdefault(seconds, Gate())

    def __call__(self, seconds: float) -> None:
        self[seconds](seconds)

    def release_all(self) -> None:
        with self._lock:
            for gate in self._gates.values():
                gate.released.set()


@dataclass(frozen=True)
class Served:
    """One request the emulator finished handling (monotonic times, for waits)."""

    started: float
    ended: float
    method: str
    path: str
    status: int
    dropped: bool
    authorization: bool


class Timeline:
    """Every request the emulator handles, timed, with a way to wait for one."""

    def __init__(self, emulator: D1Emulator) -> None:
        self.entries: list[Served] = []
        self._changed = threading.Condition()
        inner = emulator.handle

        def handle(method: str, target: str, headers: dict[str, str], chunks: Any) -> Response:
            started = time.monotonic()
            response = inner(method, target, headers, chunks)
            auth = any(k.lower() == "authorization" for k in headers)
            served = Served(
                started,
                time.monotonic(),
                method,
                urlsplit(target).path,
                response.status,
                response.drop,
                auth,
            )
            with self._changed:
                self.entries.append(served)
                self._changed.notify_all()
            return response

        emulator.handle = handle  # type: ignore[method-assign]

    def wait_for(self, predicate: Callable[[list[Served]], bool], timeout: float = 60) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: predicate(self.entries), timeout)
        assert ok, "the emulator never saw the request the scenario waits for"


# --- the command -----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict[str, Any]:
        data = json.loads(self.stdout)
        assert isinstance(data, dict)
        return data

    def __str__(self) -> str:
        return (
            f"d1deploy {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Project:
    """A project directory with the seed migrations, and the served emulator."""

    def __init__(self, tmp: Path, emulator: D1Emulator, base_url: str, gates: Gates) -> None:
        self.tmp = tmp
        self.root = tmp / "project"
        self.migrations = self.root / "migrations"
        shutil.copytree(SEED, self.migrations, ignore=shutil.ignore_patterns("*.md"))
        self.emulator = emulator
        self.base_url = base_url
        self.gates = gates
        self.gate = gates[60]
        """The gate of `delay=60`, the delay most scenarios park a request with."""
        self.timeline = Timeline(emulator)
        self.db_file = emulator.db_path(DB)
        github = tmp / "github"
        github.mkdir()
        self.summary = github / "step_summary.md"
        self.outputs = github / "output"
        self.runs: list[Run] = []
        self.processes: list[subprocess.Popen[str]] = []

    # -- files
    def write(self, name: str, content: str | bytes) -> Path:
        path = self.migrations / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def backups(self) -> list[Path]:
        folder = self.root / "backups"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    # -- the command
    def env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_DROPPED_ENV) and k.lower() not in _PROXY_ENV
        }
        env.update(
            CLOUDFLARE_API_TOKEN=TOKEN,
            CLOUDFLARE_ACCOUNT_ID=self.emulator.account_id,
            CLOUDFLARE_API_BASE_URL=self.base_url,
            D1DEPLOY_DATABASE=DB,
            NO_COLOR="1",
            NO_PROXY="127.0.0.1,localhost",
            GITHUB_ACTIONS="true",
            GITHUB_STEP_SUMMARY=str(self.summary),
            GITHUB_OUTPUT=str(self.outputs),
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(overrides or {})
        return env

    def start(
        self, *args: str, env: Mapping[str, str] | None = None, file_size_limit: int | None = None
    ) -> subprocess.Popen[str]:
        """Start the command; `file_size_limit` (bytes) is its `ulimit -f`."""

        def limit() -> None:
            if file_size_limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        process = subprocess.Popen(
            [d1deploy_executable(), *args],
            cwd=self.root,
            env=self.env(env),
            preexec_fn=limit if file_size_limit is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.processes.append(process)
        return process

    def finish(self, process: subprocess.Popen[str], *args: str, timeout: float = 120) -> Run:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            run = Run(args, -9, stdout, stderr)
            self.runs.append(run)
            pytest.fail(f"d1deploy did not finish within {timeout} s (a hang):\n{run}")
        run = Run(args, process.returncode, stdout, stderr)
        self.runs.append(run)
        return run

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        file_size_limit: int | None = None,
    ) -> Run:
        process = self.start(*args, env=env, file_size_limit=file_size_limit)
        return self.finish(process, *args, timeout=timeout)

    # -- the database
    def state(self) -> DbState:
        return read_state(self.db_file)

    @contextlib.contextmanager
    def sql(self) -> Iterator[sqlite3.Connection]:
        """A writable connection to the emulator's file (to poke at it as time would)."""
        con = sqlite3.connect(self.db_file)
        try:
            with con:
                yield con
        finally:
            con.close()

    def seed_before(self, name: str = DB) -> None:
        """The production database before 001 (see `states.seed_before`), as `name`."""
        seed_before(self.emulator, self.migrations, name)
        self.emulator.reset_log()
        self.timeline.entries.clear()

    # -- secrets
    def leaks(self) -> list[str]:
        """Where a secret was found: command outputs and every file under the test."""
        found = [
            f"output of `d1deploy {' '.join(r.args)}`"
            for r in self.runs
            if any(s in r.output for s in SECRETS)
        ]
        for path in sorted(self.tmp.rglob("*")):
            if path.is_file() and any(s.encode() in path.read_bytes() for s in SECRETS):
                found.append(str(path))
        return found


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    gates = Gates()
    # export_polls=0: an export completes on its first answer, so backups take no
    # poll interval; scenarios about polling set it back.
    emulator = D1Emulator(
        tmp_path / "emulator", token=TOKEN, export_polls=0, import_polls=0, sleep=gates
    )
    emulator.create_database(DB)
    try:
        with emulator.serve() as base_url:
            project = Project(tmp_path, emulator, base_url, gates)
            try:
                yield project
            finally:
                gates.release_all()
                for process in project.processes:
                    if process.poll() is None:
                        process.kill()
                        process.communicate()
        assert emulator.auth_leaks == 0, "the API token was sent to a signed URL"
        leaks = project.leaks()
        assert not leaks, f"the API token leaked into: {leaks}"
    finally:
        emulator.close()


# --- shared by the scenario modules ---------------------------------------------------

EXTRA = {
    "002_a.sql": "CREATE TABLE a_002 (id INTEGER PRIMARY KEY);\n",
    "003_b.sql": "CREATE TABLE b_003 (id INTEGER PRIMARY KEY);\n",
    "004_c.sql": "CREATE TABLE c_004 (id INTEGER PRIMARY KEY);\n",
}


def write_extra(project: Project) -> None:
    """EXTRA with rollbacks; 003's verify check runs after its request, so 002 and 003
    share one request and 004 goes alone."""
    for name, sql in EXTRA.items():
        project.write(name, sql)
        table = sql.split()[2]
        project.write(name.replace(".sql", "/rollback.sql"), f"DROP TABLE {table};\n")
    project.write("003_b/verify.sql", "SELECT id FROM b_003;\n")
