"""Fleet mode end to end: the installed command migrating several D1 databases at once.

Each database's state is read from the emulator's SQLite file afterwards: a failing
database never affects another, a canary failure leaves the rest untouched, and a
re-run continues where the last one stopped.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e

TENANTS = ("tenant-a", "tenant-b", "tenant-c", "tenant-d")
SEED = ["000_base_schema.sql", "001_schema_enhancements.sql"]


@pytest.fixture
def fleet(project: Project) -> Project:
    for name in TENANTS:
        project.emulator.create_database(name)
    return project


def applied(project: Project, database: str) -> list[str]:
    with sqlite3.connect(project.emulator.db_path(database)) as db:
        found = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'd1_migrations'"
        ).fetchall()
        if not found:
            return []
        return [row[0] for row in db.execute("SELECT name FROM d1_migrations ORDER BY id")]


def break_database(project: Project, database: str) -> None:
    """A table in the way of 001's audit_logs: that database's deploy must fail. It is
    schema drift too, which `--allow-drift` lets the deploy past, so that it fails while
    changing."""
    with sqlite3.connect(project.emulator.db_path(database)) as db:
        db.execute("CREATE TABLE audit_logs (x)")


def test_a_fleet_migrates_every_matching_database_and_nothing_else(fleet: Project) -> None:
    run = fleet.run("migrate", "--databases-matching", "tenant-*", "--no-backup", "--json")

    assert run.code == 0, run
    report = run.json()
    assert [r["name"] for r in report["results"]] == list(TENANTS)
    assert report["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    for name in TENANTS:
        assert applied(fleet, name) == SEED
    assert applied(fleet, "telegram-conversations") == []


def test_one_failing_database_never_touches_the_others_and_a_rerun_continues(
    fleet: Project,
) -> None:
    break_database(fleet, "tenant-b")

    run = fleet.run("migrate", "--databases-matching", "tenant-*", "--no-backup", "--allow-drift")

    assert run.code == 1, run
    assert "tenant-b" in run.stderr and "1 of 4 database(s) failed" in run.stderr
    # 001 failed and was undone; 000 has no rollback SQL, so it stays, and says so.
    assert applied(fleet, "tenant-b") == SEED[:1]
    for name in ("tenant-a", "tenant-c", "tenant-d"):
        assert applied(fleet, name) == SEED

    with sqlite3.connect(fleet.emulator.db_path("tenant-b")) as db:
        db.execute("DROP TABLE audit_logs")
    again = fleet.run("migrate", "--databases-matching", "tenant-*", "--no-backup", "--json")

    assert again.code == 0, again
    details = {r["name"]: r["value"]["applied"] for r in again.json()["results"]}
    assert [a["name"] for a in details["tenant-b"]] == SEED[1:]
    assert all(details[n] == [] for n in ("tenant-a", "tenant-c", "tenant-d"))


def test_a_failing_canary_stops_the_fleet_before_any_other_database(fleet: Project) -> None:
    break_database(fleet, "tenant-a")  # first by name: the canary
    fleet.emulator.reset_log()

    run = fleet.run(
        "migrate",
        "--databases-matching",
        "tenant-*",
        "--canary",
        "1",
        "--no-backup",
        "--allow-drift",
        "--json",
    )

    assert run.code == 1, run
    report = run.json()["report"]
    assert report["canary_failed"] == "tenant-a"
    statuses = {r["name"]: r["status"] for r in report["results"]}
    assert statuses == {
        "tenant-a": "failed",
        "tenant-b": "skipped",
        "tenant-c": "skipped",
        "tenant-d": "skipped",
    }
    others = {fleet.emulator.db_path(n).stem for n in ("tenant-b", "tenant-c", "tenant-d")}
    touched = {
        r.path.split("/database/")[1].split("/")[0]
        for r in fleet.emulator.requests
        if "/query" in r.path
    }
    assert not touched & others
    for name in ("tenant-b", "tenant-c", "tenant-d"):
        assert applied(fleet, name) == []


def test_fleet_status_and_verify_report_per_database(fleet: Project) -> None:
    names = ("-d", "tenant-a", "-d", "tenant-c")
    assert fleet.run("migrate", *names, "--no-backup").code == 0

    status = fleet.run("status", *names, "--json")
    verify = fleet.run("verify", *names)

    assert status.code == 0, status
    states = [[m["state"] for m in r["value"]["migrations"]] for r in status.json()["results"]]
    assert states == [["applied", "applied"], ["applied", "applied"]]
    assert verify.code == 0, verify
    assert "2 database(s): 2 ok, 0 failed, 0 skipped." in verify.stderr
    summary = fleet.summary.read_text(encoding="utf-8")
    assert "### d1deploy fleet: 2 ok, 0 failed, 0 skipped" in summary


def test_an_unknown_database_in_a_fleet_is_named_before_anything_runs(fleet: Project) -> None:
    run = fleet.run("migrate", "-d", "tenant-a", "-d", "tenant-zz", "--no-backup")

    assert run.code == 3, run
    assert "tenant-zz" in run.stderr
    assert applied(fleet, "tenant-a") == []


def test_fleet_backups_write_one_verified_file_per_database(fleet: Project) -> None:
    run = fleet.run("backup", "--databases-matching", "tenant-[ab]", "--json")

    assert run.code == 0, run
    paths = [r["value"]["path"] for r in run.json()["results"]]
    assert len(paths) == 2
    for path in paths:
        sidecar = json.loads((fleet.root / f"{path}.json").read_text())
        assert sidecar["database"]["name"] in {"tenant-a", "tenant-b"}


def test_a_fleet_status_fails_the_database_whose_schema_drifted(fleet: Project) -> None:
    names = ("-d", "tenant-a", "-d", "tenant-c")
    assert fleet.run("migrate", *names, "--no-backup").code == 0
    with sqlite3.connect(fleet.emulator.db_path("tenant-c")) as db:
        db.execute("CREATE TABLE made_by_hand (x)")

    status = fleet.run("status", *names, "--json")

    assert status.code == 5, status
    outcome = {r["name"]: r["status"] for r in status.json()["report"]["results"]}
    assert outcome == {"tenant-a": "ok", "tenant-c": "failed"}
    assert fleet.run("status", *names, "--allow-drift").code == 0
