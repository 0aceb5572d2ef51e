"""SIGINT (Ctrl-C) and SIGTERM (what a CI cancel sends) at several points of a deploy.

A `delay` fault parks one request in the emulator (see `Gates`), so the signal provably
lands while that request is on its way. Each run is judged from the emulator's SQLite
file once the parked request has been let go and has finished too: the database stands
on a consistent prefix of the migrations, no lock is held, `--json` printed exactly one
object (exit 130), and a re-run right after finishes the deploy.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.e2e.conftest import EXTRA, Project, Run, write_extra
from tests.e2e.states import M000, M001, assert_settled, read_state

pytestmark = pytest.mark.e2e

POINTS = {
    # Before the first change: the lock is given up (its request may still land).
    "the-lock-request": ("POST", r"/query$", "INSERT INTO _d1deploy_lock"),
    "the-backup": ("POST", r"/export$", None),
    # After it: what landed is read from the ledger and undone.
    "applying-001": ("POST", r"/query$", "CREATE TABLE user_deposits_new"),
    "verifying-001": ("POST", r"/query$", "SELECT count(*) FROM audit_logs"),
    "applying-003": ("POST", r"/query$", "CREATE TABLE b_003"),
}
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
FENCE = "UPDATE _d1deploy_lock SET token"
"""A substring of the settle's first request, which reads the ledger and fences the lease."""
EVERYTHING = (M000, M001, *EXTRA)


def interrupted(run: Run, signal_name: str) -> dict[str, Any]:
    assert run.code == 130, run
    payload = json.loads(run.stdout)  # exactly one object
    assert isinstance(payload, dict) and payload["ok"] is False, run
    assert payload["error"]["exit_code"] == 130, run
    assert f"{signal_name} received while" in payload["error"]["message"], run
    return payload


def let_go(project: Project, delay: float = 60) -> None:
    """Release the parked request and wait until the emulator has finished it."""
    seen = len(project.timeline.entries)
    project.gates[delay].released.set()
    project.timeline.wait_for(lambda entries: len(entries) > seen)


@pytest.mark.parametrize("signal_name", SIGNALS)
@pytest.mark.parametrize("point", POINTS)
def test_a_signal_mid_deploy_is_settled(project: Project, point: str, signal_name: str) -> None:
    project.seed_before()
    write_extra(project)
    method, path, body = POINTS[point]
    project.emulator.faults.add(method, path, body=body, delay=60, times=1)

    process = project.start("migrate", "--json")
    project.gate.wait_parked()
    process.send_signal(SIGNALS[signal_name])
    run = project.finish(process, "migrate", "--json")
    let_go(project)

    payload = interrupted(run, signal_name)
    report = payload["report"]
    assert report["interrupted"] == signal_name and report["still_applied"] == [], run
    assert [r["name"] for r in report["rolled_back"]] == [
        a["name"] for a in reversed(report["applied"])
    ], run
    assert assert_settled(project.state(), EXTRA) == (M000,)

    again = project.run("migrate", "--json")
    assert again.code == 0, again
    assert assert_settled(project.state(), EXTRA) == EVERYTHING


def test_a_request_that_lands_while_the_run_settles_is_undone_and_a_second_signal_waits(
    project: Project,
) -> None:
    """SIGTERM while 003's request is on its way; D1 runs it only after the settle has
    begun, but before the settle reads the ledger. The ledger says 003 landed: it is
    reported and undone with the rest. A Ctrl-C meanwhile is refused, saying why."""
    project.seed_before()
    write_extra(project)
    project.emulator.faults.add("POST", r"/query$", body="CREATE TABLE b_003", delay=60, times=1)
    project.emulator.faults.add("POST", r"/query$", body=FENCE, delay=61, times=1)

    process = project.start("migrate", "--json")
    project.gates[60].wait_parked()
    process.send_signal(signal.SIGTERM)
    project.gates[61].wait_parked()  # settling: the ledger read is on its way
    process.send_signal(signal.SIGINT)
    let_go(project, 60)  # 003 lands now, before the read
    project.gates[61].released.set()
    run = project.finish(process, "migrate", "--json")

    report = interrupted(run, "SIGTERM")["report"]
    assert "SIGINT refused: d1deploy is finishing (settling the deploy of" in run.stderr, run
    assert "it stops by itself within" in run.stderr, run
    (late,) = [a for a in report["applied"] if a["name"] == "003_b.sql"]
    assert late["answer_lost"] is True
    assert [r["name"] for r in report["rolled_back"]] == ["003_b.sql", "002_a.sql", M001]
    assert assert_settled(project.state(), EXTRA) == (M000,)

    again = project.run("migrate")
    assert again.code == 0, again
    assert assert_settled(project.state(), EXTRA) == EVERYTHING


def test_a_request_that_lands_after_the_settle_changes_nothing(project: Project) -> None:
    """The other order: the settle reads the ledger (and fences the lease) first; 003's
    request, let go after the run has ended, finds the lease gone and changes nothing."""
    project.seed_before()
    write_extra(project)
    project.emulator.faults.add("POST", r"/query$", body="CREATE TABLE b_003", delay=60, times=1)

    process = project.start("migrate", "--json")
    project.gate.wait_parked()
    process.send_signal(signal.SIGINT)
    run = project.finish(process, "migrate", "--json")
    before = project.state()
    let_go(project)

    interrupted(run, "SIGINT")
    assert project.state() == before
    assert assert_settled(before, EXTRA) == (M000,)


def test_a_fleet_interrupted_settles_every_database(project: Project) -> None:
    tenants = ("tenant-a", "tenant-b", "tenant-c")
    for name in tenants:
        project.emulator.create_database(name)
        project.seed_before(name)
    write_extra(project)
    # Every database's 002 is on its way when the signal comes.
    project.emulator.faults.add(
        "POST", r"/query$", body="CREATE TABLE a_002", delay=60, times=len(tenants)
    )
    args = ("migrate", "--databases-matching", "tenant-*", "--no-backup", "--json")

    process = project.start(*args)
    project.gate.wait_parked(count=len(tenants))
    process.send_signal(signal.SIGTERM)
    project.gate.released.set()  # the workers go on to their next step, and stop there
    run = project.finish(process, *args)

    assert run.code == 130, run
    report = json.loads(run.stdout)
    assert report["ok"] is False and report["error"]["exit_code"] == 130, run
    for result in report["report"]["results"]:
        assert result["status"] == "failed" and result["error"]["exit_code"] == 130, result
    for name in tenants:
        assert assert_settled(read_state(project.emulator.db_path(name)), EXTRA) == (M000,)

    again = project.run(*args)
    assert again.code == 0, again
    for name in tenants:
        assert assert_settled(read_state(project.emulator.db_path(name)), EXTRA) == EVERYTHING


def test_a_command_that_only_reads_reports_an_interrupt_as_one_object(project: Project) -> None:
    project.seed_before()
    project.emulator.faults.add("POST", r"/query$", delay=60, times=1)

    process = project.start("status", "--json")
    project.gate.wait_parked()
    process.send_signal(signal.SIGINT)
    run = project.finish(process, "status", "--json")
    let_go(project)

    assert run.code == 130, run
    payload = json.loads(run.stdout)
    assert payload["error"]["type"] == "Interrupted" and payload["report"] is None, run
    assert "SIGINT received: `d1deploy status` stopped" in run.stderr
