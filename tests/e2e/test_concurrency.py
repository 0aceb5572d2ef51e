"""Crashes and races: a deploy killed with SIGKILL in the middle, and two deploys at once.

A `delay` fault parks one migration's request in the emulator (see `Gate`) so that the
process is provably in the middle of the deploy, or holding the lock, when the test acts.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading

import pytest

from tests.e2e.conftest import EXTRA, Project, Served, write_extra
from tests.e2e.states import M001, assert_stage

pytestmark = pytest.mark.e2e

APPLY_001 = "CREATE TABLE user_deposits_new"


def kill_while_parked(project: Project) -> tuple[int, list[Served]]:
    """Start `migrate`, SIGKILL it while its request for 002 and 003 is parked in the emulator,
    then let that request go on (it lands, or is dropped, as its fault says) and wait
    until the emulator has finished it. Returns the dead process's pid."""
    process = project.start("migrate")
    project.gate.wait_parked()
    os.kill(process.pid, signal.SIGKILL)
    killed = project.finish(process, "migrate")
    assert killed.code == -signal.SIGKILL, killed
    seen = len(project.timeline.entries)
    project.gate.released.set()
    project.timeline.wait_for(lambda entries: len(entries) > seen)
    return process.pid, project.timeline.entries[seen:]


@pytest.mark.parametrize("in_flight", ["lands", "is-lost"])
def test_sigkill_mid_deploy_leaves_a_stale_lock_that_unlock_force_clears(
    project: Project, in_flight: str
) -> None:
    project.seed_before()
    write_extra(project)
    project.emulator.faults.add(
        "POST",
        r"/query$",
        body="CREATE TABLE b_003",
        delay=60,
        drop_before=in_flight == "is-lost",
        times=1,
    )
    pid, _ = kill_while_parked(project)

    crashed = project.state()
    landed = ("002_a.sql", "003_b.sql") if in_flight == "lands" else ()
    assert crashed.ledger == ("000_base_schema.sql", M001, *landed)
    assert crashed.torn_events == []
    assert crashed.lock is not None and f"pid {pid}" in crashed.lock[0]
    holder, expires_at = crashed.lock

    refused = project.run("migrate")
    assert refused.code == 5, refused
    assert holder in refused.stderr and expires_at in refused.stderr, refused
    assert "unlock --force" in refused.stderr
    assert project.state() == crashed

    not_forced = project.run("unlock")
    assert not_forced.code == 5, not_forced
    assert project.state().lock == crashed.lock

    unlocked = project.run("unlock", "--force")
    assert unlocked.code == 0, unlocked
    assert holder in unlocked.stderr

    again = project.run("migrate")
    assert again.code == 0, again
    assert_stage(project.state(), "after", EXTRA)


def test_a_stale_lock_is_cleared_by_its_expiry(project: Project) -> None:
    project.seed_before()
    write_extra(project)
    project.emulator.faults.add("POST", r"/query$", body="CREATE TABLE b_003", delay=60, times=1)
    kill_while_parked(project)
    assert project.state().lock is not None
    with project.sql() as con:  # time passes: the lease's expiry is now behind us
        con.execute(
            "UPDATE _d1deploy_lock"
            " SET expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 second')"
        )

    again = project.run("migrate")

    assert again.code == 0, again
    assert_stage(project.state(), "after", EXTRA)


def first_to_exit(processes: list[subprocess.Popen[str]], timeout: float = 60) -> int:
    """The index of the first process that exits."""
    exited: queue.Queue[int] = queue.Queue()

    def wait(i: int) -> None:
        processes[i].wait()
        exited.put(i)

    for i in range(len(processes)):
        threading.Thread(target=wait, args=(i,), daemon=True).start()
    return exited.get(timeout=timeout)


def test_two_deploys_at_once_one_proceeds_the_other_exits_5(project: Project) -> None:
    project.seed_before()
    # Whoever takes the lock parks in 001's request until the other one has given up.
    project.emulator.faults.add("POST", r"/query$", body=APPLY_001, delay=60, times=1)
    processes = [project.start("migrate"), project.start("migrate")]
    project.gate.wait_parked()

    loser_index = first_to_exit(processes)
    loser, winner = processes[loser_index], processes[1 - loser_index]
    refused = project.finish(loser, "migrate")
    project.gate.released.set()
    deployed = project.finish(winner, "migrate")

    assert refused.code == 5, refused
    assert "another deploy holds the lock" in refused.stderr
    assert f"pid {winner.pid}" in refused.stderr
    assert deployed.code == 0, deployed
    assert_stage(project.state(), "after")


def test_two_deploys_racing_unaided_never_apply_twice(project: Project) -> None:
    project.seed_before()
    write_extra(project)
    processes = [project.start("migrate"), project.start("migrate")]
    runs = [project.finish(p, "migrate") for p in processes]

    codes = sorted(r.code for r in runs)
    assert codes in ([0, 0], [0, 5]), [str(r) for r in runs]
    if codes == [0, 0]:  # they did not overlap: the second found nothing to do
        assert any("nothing to apply" in r.stderr for r in runs)
    assert_stage(project.state(), "after", EXTRA)
