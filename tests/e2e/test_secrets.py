"""Secrets: the token never leaves through output, files or the wrong URL.

Every test of this suite already ends with a scan of everything d1deploy printed and every
file under the test's directory (backups, sidecars, the GitHub step summary and outputs,
the emulator's database files) for the token (`project` fixture). The tests here add the
adversarial cases: an API that echoes the token back, tracebacks, the signed URLs of
exports and imports, and the positive controls that the scanned files were written.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import TOKEN, Project
from tests.e2e.states import DB

pytestmark = pytest.mark.e2e

ECHO = {
    "success": False,
    "errors": [{"code": 7400, "message": f"bad request; you sent Authorization: Bearer {TOKEN}"}],
    "messages": [],
    "result": None,
}


def test_a_deploy_in_github_actions_writes_its_summary_and_outputs_without_the_token(
    project: Project,
) -> None:
    project.seed_before()

    run = project.run("migrate", "--json")

    assert run.code == 0, run
    assert run.json()["ok"] is True
    summary = project.summary.read_text(encoding="utf-8")
    assert "001_schema_enhancements" in summary
    outputs = project.outputs.read_text(encoding="utf-8")
    assert "restore_command=d1deploy restore --bookmark" in outputs
    # The sidecar and the dump exist, so the fixture's scan covers them.
    assert [p.suffix for p in project.backups()] == [".sql", ".json"]
    sidecar = json.loads(project.backups()[1].read_text(encoding="utf-8"))
    assert sidecar["database"]["name"] == DB


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug-traceback"])
def test_an_api_echoing_the_token_never_gets_it_printed(project: Project, debug: bool) -> None:
    project.seed_before()
    project.emulator.faults.add("GET", r"/d1/database$", status=400, reply=ECHO)
    env = {"D1DEPLOY_DEBUG": "1"} if debug else {}

    run = project.run("migrate", "--json", env=env)

    assert run.code != 0, run
    assert "[redacted]" in run.output, run
    assert json.loads(run.stdout)["ok"] is False
    if debug:
        assert "Traceback" in run.stderr
    assert project.summary.read_text(encoding="utf-8")  # the failure was summarised


def test_a_sql_error_quoting_the_token_is_scrubbed(project: Project) -> None:
    project.seed_before()

    run = project.run("exec", "--command", f'SELECT * FROM "{TOKEN}"')

    assert run.code == 1, run
    assert "no such table: [redacted]" in run.stderr


def test_signed_urls_never_receive_the_authorization_header(project: Project) -> None:
    project.seed_before()
    project.emulator.create_database("restored")

    backed_up = project.run("backup", "-o", "copy.sql")
    restored = project.run("restore", "--from-backup", "copy.sql", "-d", "restored", "--yes")

    assert backed_up.code == 0, backed_up
    assert restored.code == 0, restored
    signed = [e for e in project.timeline.entries if e.path.startswith("/__signed/")]
    assert {e.method for e in signed} == {"GET", "PUT"}
    assert not any(e.authorization for e in signed)
    api = [e for e in project.timeline.entries if e.path.startswith("/client/v4/")]
    assert api and all(e.authorization for e in api)
    assert project.emulator.auth_leaks == 0


def test_verbose_settings_show_where_the_token_came_from_never_its_value(
    project: Project,
) -> None:
    run = project.run("status", "-v")

    assert run.code == 0, run
    assert "redacted" in run.stderr


def test_the_token_cannot_be_given_on_the_command_line(project: Project) -> None:
    run = project.run("migrate", "--api-token", TOKEN.upper())

    assert run.code == 2, run
    assert TOKEN.upper() not in run.output
