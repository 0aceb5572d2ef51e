"""The fault matrix: `d1deploy migrate` of the seed's 001 while the API misbehaves.

Every scenario starts from the production database before 001 (000 applied, real rows),
injects its faults into the emulator, runs the installed command, and states the exit
code, what the message must say, and the one state the database may be in afterwards,
read from the emulator's SQLite file. A run that failed is then run again without faults
and must converge to 001 applied exactly once.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.e2e.states import M000, M001, Stage, assert_stage

pytestmark = pytest.mark.e2e

# A substring of the one request that applies 001 (its first statement).
APPLY_001 = "CREATE TABLE user_deposits_new"
BROKEN = """\
-- The third statement fails: nothing of this migration may remain.
CREATE TABLE broken_one (id INTEGER PRIMARY KEY);
CREATE TABLE broken_two (id INTEGER PRIMARY KEY);
INSERT INTO no_such_table VALUES (1);
CREATE TABLE broken_four (id INTEGER PRIMARY KEY);
"""


DEPOSIT_ROWS = 'INSERT INTO "deposit_transactions"'
UNAVAILABLE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>"
    "<body><h1>Service temporarily unavailable</h1></body></html>\n"
)


def fault(method: str, path: str, **options: Any) -> dict[str, Any]:
    """The arguments of one `emulator.faults.add` call."""
    return {"method": method, "path": path, **options}


@dataclass(frozen=True)
class Scenario:
    id: str
    faults: tuple[dict[str, Any], ...]
    exit_code: int
    stage: Stage
    """The only state the database may be in afterwards."""
    says: tuple[str, ...] = ()
    """Text the command's output must contain."""
    waits: float = 0.0
    """After each faulty answer, the client waited at least this long before retrying."""
    export_polls: int = 0
    files: dict[str, str] = field(default_factory=dict)


SCENARIOS = (
    Scenario(
        "429-retry-after-1-twice-then-ok",
        (fault("POST", r"/query$", body=APPLY_001, status=429,
              headers={"Retry-After": "1"}, times=2),),
        0, "after", says=("429 from D1, retrying",), waits=1.0,
    ),
    Scenario(
        "5xx-on-reads-then-ok",
        (fault("GET", r"/d1/database$", status=503, times=1),
         fault("GET", r"/time_travel/bookmark$", status=500, times=1)),
        0, "after", says=("503 from D1, retrying", "500 from D1, retrying"),
    ),
    Scenario(
        "500-on-an-export-poll-then-ok",
        (fault("POST", r"/export$", body="current_bookmark", status=500, times=1),),
        0, "after", says=("500 from D1, retrying",), export_polls=1,
    ),
    Scenario(
        "503-on-reads-persistent",
        (fault("GET", r"/d1/database$", status=503),),
        4, "before", says=("gave up after 5 attempts",),
    ),
    Scenario(
        "connection-dropped-before-the-write",
        (fault("POST", r"/query$", body=APPLY_001, drop_before=True, times=1),),
        1, "before", says=(f"{M001} failed and was not applied",),
    ),
    Scenario(
        "connection-dropped-after-the-write",
        (fault("POST", r"/query$", body=APPLY_001, drop_after=True, times=1),),
        0, "after", says=("answer was lost",),
    ),
    Scenario(
        "export-fails",
        (fault("POST", r"/export$", export_fails="D1 export failed: internal error"),),
        4, "before", says=("D1 export failed: internal error",),
    ),
    Scenario(
        "download-truncated-once",
        (fault("GET", r"^/__signed/", truncate=200, times=1),),
        0, "after", says=("starting it again",),
    ),
    Scenario(
        "download-truncated-always",
        (fault("GET", r"^/__signed/", truncate=200),),
        4, "before", says=("failed 3 times", "Nothing was saved"),
    ),
    Scenario(
        "download-is-an-html-page",
        (fault("GET", r"^/__signed/", status=200, reply=UNAVAILABLE_PAGE,
               headers={"Content-Type": "text/html; charset=utf-8"}),),
        4, "before", says=("answered text/html, not a SQL dump", "Nothing was saved"),
    ),
    Scenario(
        "download-is-an-html-page-under-a-file-type-once",
        (fault("GET", r"^/__signed/", status=200, reply=UNAVAILABLE_PAGE,
               headers={"Content-Type": "application/octet-stream"}, times=1),),
        0, "after", says=("was not the whole dump", "it is an HTML page", "starting it again"),
    ),
    Scenario(
        "download-ends-cleanly-after-a-statement",
        # The body ends after `CREATE TABLE deposit_transactions (...);`: its rows, the
        # tables made after it and both indexes never come, and no Content-Length says so.
        (fault("GET", r"^/__signed/", end_before=DEPOSIT_ROWS),),
        4, "before",
        says=("it holds 0 rows of deposit_transactions, which had 5 right before the export"
              " and 5 right after it", "index idx_deposit_transactions_status",
              "failed 3 times", "Nothing was saved"),
    ),
    Scenario(
        "download-ends-cleanly-after-a-statement-once",
        (fault("GET", r"^/__signed/", end_before=DEPOSIT_ROWS, times=1),),
        0, "after", says=("was not the whole dump", "starting it again"),
    ),
    Scenario(
        "third-statement-of-a-migration-fails",
        (),
        1, "before",
        says=("002_broken.sql:4", "002_broken.sql failed and was not applied",
              "no such table: no_such_table", f"rolled back {M001}"),
        files={"002_broken.sql": BROKEN},
    ),
)  # fmt: skip


def assert_backups_complete(project: Project) -> None:
    """Every backup is a dump with a sidecar that matches it, and loads into SQLite with
    the rows its sidecar records, which the database had; no partial file anywhere."""
    files = {p.name: p for p in project.backups()}
    assert not [n for n in files if n.endswith(".part")]
    for name, path in files.items():
        if name.endswith(".json"):
            assert name.removesuffix(".json") in files, f"sidecar without its dump: {name}"
            continue
        sidecar = json.loads(files[name + ".json"].read_text(encoding="utf-8"))
        data = path.read_bytes()
        assert sidecar["bytes"] == len(data)
        assert sidecar["sha256"] == hashlib.sha256(data).hexdigest()
        assert loaded_rows(data) == sidecar["dump"]["rows"]
        counted = sidecar["database_rows"]["before_export"]
        assert {t: n for t, n in counted.items() if n} == {
            t: n for t, n in sidecar["dump"]["rows"].items() if not t.startswith("sqlite_")
        }


def loaded_rows(dump: bytes) -> dict[str, int]:
    """Rows per table of a dump, as plain SQLite loads it (tables first: no rebuilds here)."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(dump.decode("utf-8"))
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        return {t: n for t, n in counts.items() if n}
    finally:
        con.close()


def retry_waits(project: Project, statuses: tuple[int, ...]) -> list[float]:
    """For each answer with one of `statuses`, the pause before the next request."""
    entries = sorted(project.timeline.entries, key=lambda e: e.started)
    return [
        min(later.started for later in entries if later.started > e.ended) - e.ended
        for e in entries
        if e.status in statuses
    ]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_fault_matrix(project: Project, scenario: Scenario) -> None:
    project.seed_before()
    for name, text in scenario.files.items():
        project.write(name, text)
    project.emulator.export_polls = scenario.export_polls
    rules = [project.emulator.faults.add(**fault) for fault in scenario.faults]

    run = project.run("migrate")

    assert run.code == scenario.exit_code, run
    for text in scenario.says:
        assert text in run.stderr, f"{text!r} not said:\n{run}"
    assert all(rule.fired for rule in rules), "a fault never fired: the scenario tested nothing"
    assert_stage(project.state(), scenario.stage)
    assert_backups_complete(project)
    if scenario.exit_code == 4:
        assert project.backups() == [], "a failed backup left files behind"
    if scenario.waits:
        waits = retry_waits(project, (429,))
        assert waits and min(waits) >= scenario.waits, waits

    if scenario.exit_code != 0:
        project.emulator.faults.clear()
        for name in scenario.files:
            (project.migrations / name).unlink()
        again = project.run("migrate")
        assert again.code == 0, again
        assert_stage(project.state(), "after")
        assert_backups_complete(project)


def test_a_torn_batch_is_reported_and_the_hinted_restore_returns_to_before(
    project: Project,
) -> None:
    """D1 does not promise that a failed batch is rolled back: when it is not, the run
    says the migration was partly applied and how to restore, and that works."""
    project.seed_before()
    project.write("002_broken.sql", BROKEN)
    project.emulator.atomic_batches = False

    run = project.run("migrate")

    assert run.code == 1, run
    assert "002_broken.sql was partly applied" in run.stderr, run
    hint = re.search(r"`(d1deploy restore --bookmark [^`]+)`", run.stderr)
    assert hint is not None, run
    torn = project.state()
    assert torn.stage() is None and {"broken_one", "broken_two"} <= torn.tables
    assert torn.torn_events == [("002_broken.sql", "apply")]

    project.emulator.atomic_batches = True
    restored = project.run(*shlex.split(hint[1])[1:])
    assert restored.code == 0, restored
    back = project.state()
    assert back.stage() == "before" and back.ledger == (M000,)
    # The bookmark was taken under that run's (short) lease, so the restore brings the
    # lease back: the next deploy is refused, naming it and the way out.
    assert back.lock is not None
    refused = project.run("migrate")
    assert refused.code == 5 and "unlock --force" in refused.stderr, refused
    assert project.run("unlock", "--force").code == 0
    assert_stage(project.state(), "before")


def test_a_connection_lost_during_verification_undoes_the_deploy(project: Project) -> None:
    """Verification that could not run is a failure like any other: the run undoes its
    migration, as when a check fails, and says so."""
    project.seed_before()
    # The first verify probe of 001 is sent once (a write) and its answer never comes.
    probe = "VALUES (999999, -1000)"
    project.emulator.faults.add("POST", r"/query$", body=probe, drop_before=True, times=1)

    run = project.run("migrate")

    assert_stage(project.state(), "before")  # consistent: undone whole, lock released
    error = next(line for line in run.stderr.splitlines() if line.startswith("Error:"))
    assert f"verifying {M001} failed" in error and f"rolled back {M001}" in error, run
    assert run.code == 1, run
