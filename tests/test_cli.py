"""The command line as its users meet it: every command on a local file and on the D1
emulator over loopback, `--json`, exit codes, error messages, and the token never shown.

Commands run in process through Click's CliRunner (stdout and stderr kept apart); the
D1 client is given a recording sleep, so retries cost no wall-clock time.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result

from d1deploy import __version__, cli, suggest
from d1deploy.cli.command import SUMMARIES
from d1deploy.client import D1Client
from d1deploy.errors import EXIT_CODES
from d1deploy.local import LocalBackend
from tests.emulator import D1Emulator, ServedEmulator
from tests.helpers import SEED, TOKEN, TRACEBACK, local_rows, run, run_json, take_lock

DB = "telegram-conversations"
LOCAL = "--local=db.sqlite"
COMMANDS = (
    "databases",
    "exec",
    "bookmark",
    "lint",
    "status",
    "plan",
    "migrate",
    "rollback",
    "verify",
    "baseline",
    "new",
    "backup",
    "restore",
    "unlock",
    "rehearse",
    "move-companions",
)
M001 = "001_schema_enhancements.sql"


# -- running the command -----------------------------------------------------------------------
def one_line(text: str) -> str:
    """Help text wraps at the terminal width; compare it with whitespace collapsed."""
    return " ".join(text.split())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a copy of the seed migrations."""
    work = tmp_path / "project"
    shutil.copytree(SEED, work / "migrations")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def deployed(project: Path) -> Path:
    """The project with the seed migrated into ./db.sqlite."""
    run("migrate", LOCAL, "--no-backup")
    return project


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the D1 client asked for: its retries and polls never really sleep."""
    asked: list[float] = []
    monkeypatch.setattr("d1deploy.client.D1Client", functools.partial(D1Client, sleep=asked.append))
    return asked


@pytest.fixture
def remote(
    project: Path,
    served_emulator: ServedEmulator,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[D1Emulator]:
    """The project pointed at the emulator on 127.0.0.1 by the environment, as in CI."""
    emulator = served_emulator.emulator
    emulator.token = TOKEN
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", emulator.account_id)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", served_emulator.base_url)
    monkeypatch.setenv("D1DEPLOY_DATABASE", DB)
    yield emulator
    assert emulator.auth_leaks == 0


def remote_rows(emulator: D1Emulator, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(emulator.db_path(DB)) as conn:
        return conn.execute(sql).fetchall()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- version and help --------------------------------------------------------------------------
def test_version_prints_the_version_on_stdout() -> None:
    result = run("--version")
    assert result.stdout == f"d1deploy {__version__}\n"
    assert result.stderr == ""


def test_python_m_d1deploy_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "d1deploy", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"d1deploy {__version__}\n", "")


def test_the_console_script_rewrites_a_bare_local(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["d1deploy", "migrate", "--local", "--no-backup"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert (project / ".d1deploy" / "local.sqlite").is_file()
    assert "applied 2 migration(s)" in capsys.readouterr().err


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = run("--help")
    listed = set(re.findall(r"^  ([\w-]+)  ", result.stdout, flags=re.MULTILINE))
    assert set(COMMANDS) <= listed
    text = one_line(result.stdout)
    for code, meaning in EXIT_CODES.items():
        assert one_line(f"{code} {meaning}") in text


def test_every_command_has_help_text() -> None:
    group = cli.app
    assert isinstance(group, click.Group)
    assert set(COMMANDS) <= set(group.commands)
    for name, command in group.commands.items():
        assert command.help and len(command.help) > 20, name
        assert one_line(command.help) in one_line(run(name, "--help").stdout), name


def test_the_help_lists_each_command_by_the_line_it_is_registered_with() -> None:
    """`--help` lists the commands without importing them (`SUMMARIES`): the list is
    exactly the commands there are, each with its own short help."""
    assert set(cli.app.commands) == set(SUMMARIES)
    text = run("--help").stdout
    for name, command in cli.app.commands.items():
        assert command.short_help == SUMMARIES[name][1]
        assert one_line(f"{name} {command.short_help}") in one_line(text)


def test_a_command_help_names_its_options() -> None:
    text = run("migrate", "--help").stdout
    for option in ("--to", "--dry-run", "--no-backup", "--backup-dir", "--local", "--json"):
        assert option in text


# -- optional_local_value ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status", "--local"], ["status", "--local="]),
        (["status", "--local", "--json"], ["status", "--local=", "--json"]),
        (["status", "--local", "-v"], ["status", "--local=", "-v"]),
        (["status", "--local", "db.sqlite"], ["status", "--local", "db.sqlite"]),
        (["status", "--local=db.sqlite"], ["status", "--local=db.sqlite"]),
        (["status", "--local="], ["status", "--local="]),
        (["exec", "--command", "SELECT 1", "--", "--local"], None),
        ([], []),
        # An argument after a bare --local is taken as its path, as the help says.
        (["verify", "--local", "001_x"], ["verify", "--local", "001_x"]),
    ],
)
def test_optional_local_value(args: list[str], expected: list[str] | None) -> None:
    original = list(args)
    assert cli.optional_local_value(args) == (original if expected is None else expected)
    assert args == original  # the caller's list is left alone


def test_a_bare_local_uses_the_default_path(project: Path) -> None:
    run("migrate", *cli.optional_local_value(["--local"]), "--no-backup")
    assert (project / ".d1deploy" / "local.sqlite").is_file()


# -- every command on a local file -------------------------------------------------------------
def pasted(command: str, code: int = 0) -> Result:
    """Run a command d1deploy suggested, as a shell would split it."""
    words = shlex.split(command)
    assert words[0] == "d1deploy", command
    return run(*words[1:], code=code)


def test_migrate_local_applies_backs_up_and_says_how_to_return(project: Path) -> None:
    result = run("migrate", LOCAL)
    assert "applied 2 migration(s)" in result.stderr
    assert result.stdout == ""
    assert len(list((project / "backups").glob("*.sql"))) == 1
    assert local_rows("SELECT name FROM d1_migrations ORDER BY id") == [
        ("000_base_schema.sql",),
        (M001,),
    ]
    # Run again: nothing left to do.
    assert "nothing to do" in run("migrate", LOCAL, "--no-backup").stderr
    # The command it printed goes back to before the deploy, pasted as it is.
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("To return to it: ")]
    pasted(line.removeprefix("To return to it: "))
    assert local_rows("SELECT name FROM d1_migrations") == []


def test_migrate_json_reports_what_was_applied(project: Path) -> None:
    payload = run_json("migrate", LOCAL, "--no-backup")
    assert [a["name"] for a in payload["applied"]] == ["000_base_schema.sql", M001]
    bookmark = payload["bookmark_before"]
    assert payload["restore_command"] == (
        f"d1deploy restore --bookmark {bookmark} --yes --local=db.sqlite"
    )


def test_migrate_dry_run_changes_nothing(project: Path) -> None:
    # A dry run only reads: on a missing file it says so and creates nothing.
    missing = run("migrate", LOCAL, "--dry-run", code=3)
    assert "db.sqlite does not exist" in missing.stderr and not Path("db.sqlite").exists()
    Path("db.sqlite").touch()
    result = run("migrate", LOCAL, "--dry-run")
    assert "Dry run: nothing was changed." in result.stderr
    assert local_rows("SELECT name FROM sqlite_master WHERE name = 'd1_migrations'") == []
    payload = run_json("migrate", LOCAL, "--dry-run")
    assert [p["name"] for p in payload["pending"]] == ["000_base_schema.sql", M001]


def test_migrate_to_stops_after_the_named_migration(project: Path) -> None:
    run("migrate", LOCAL, "--no-backup", "--to", "000_base_schema")
    assert run_json("status", LOCAL)["pending"] == [M001]


def test_status_local(deployed: Path) -> None:
    result = run("status", LOCAL)
    assert re.search(r"^001_schema_enhancements\.sql\s+applied", result.stdout, re.MULTILINE)
    assert "2 applied, 0 pending, 0 drifted" in result.stderr
    payload = run_json("status", LOCAL)
    assert payload["applied"] == ["000_base_schema.sql", M001]
    assert payload["pending"] == []


def test_plan_local_lists_pending_and_runs_prechecks(project: Path) -> None:
    run("migrate", LOCAL, "--no-backup", "--to", "000_base_schema")
    result = run("plan", LOCAL)
    assert "1 migration(s) would be applied" in result.stderr
    assert "ok   no negative balances" in result.stderr
    payload = run_json("plan", LOCAL)
    assert [p["name"] for p in payload["pending"]] == [M001]
    assert all(check["ok"] for check in payload["prechecks"])
    assert local_rows("SELECT name FROM d1_migrations") == [("000_base_schema.sql",)]


def test_plan_on_a_fresh_database_defers_prechecks_instead_of_failing_them(
    project: Path,
) -> None:
    Path("db.sqlite").touch()  # an empty file is an empty database
    result = run("plan", LOCAL)
    assert "2 migration(s) would be applied" in result.stderr
    assert "FAIL" not in result.stderr
    # SQLite can only compile 001's prechecks once 000 has created their tables: all
    # three wait for it (none is run, none fails).
    assert "3 precheck(s) read what earlier pending migrations create" in result.stderr
    assert "Prechecks:" not in result.stderr


def test_verify_local(deployed: Path) -> None:
    result = run("verify", LOCAL)
    assert "ok   a negative balance is refused" in result.stderr
    payload = run_json("verify", LOCAL, M001)
    assert payload["checks"] and all(check["ok"] for check in payload["checks"])
    assert local_rows("SELECT count(*) FROM user_deposits") == [(0,)]


def test_rollback_local_with_yes(deployed: Path) -> None:
    result = run("rollback", LOCAL, "--yes", "--no-backup")
    assert f"rolled back {M001}" in result.stderr
    assert local_rows("SELECT name FROM sqlite_master WHERE name = 'audit_logs'") == []
    payload = run_json("rollback", LOCAL, "--yes", "--no-backup", "--to", "000_base_schema")
    assert payload["rolled_back"] == []
    assert run_json("status", LOCAL)["applied"] == ["000_base_schema.sql"]


def test_rollback_refuses_to_and_steps_together(deployed: Path) -> None:
    result = run("rollback", LOCAL, "--yes", "--to", "000_base_schema", "--steps", "1", code=2)
    assert "--to or --steps" in result.stderr


def test_baseline_local_records_without_running(project: Path) -> None:
    # The empty database does not hold what 000 creates: refused, naming what lacks.
    refused = run("baseline", "000_base_schema", LOCAL, code=5)
    assert "table users missing" in refused.stderr
    assert "`d1deploy baseline 000_base_schema.sql --force --local=db.sqlite`" in refused.stderr
    assert local_rows("SELECT name FROM d1_migrations") == []
    result = run("baseline", "000_base_schema", LOCAL, "--force")
    assert "recorded 000_base_schema.sql as applied (not run)" in result.stderr
    assert "recorded with --force although" in result.stderr
    assert local_rows("SELECT name FROM sqlite_master WHERE name = 'users'") == []
    payload = run_json("baseline", M001, LOCAL, "--force")
    assert payload["recorded"] == [M001]
    assert payload["already_applied"] == ["000_base_schema.sql"]
    assert {"change": "missing", "type": "table", "name": "audit_logs"}.items() <= (
        payload["forced_over"][0].items()
    )


def test_exec_local_prints_a_table_and_binds_params(deployed: Path) -> None:
    run("exec", LOCAL, "--command", "INSERT INTO users (telegram_id, username) VALUES ('1', 'a')")
    result = run("exec", LOCAL, "--command", "SELECT telegram_id, username FROM users")
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["telegram_id", "username"],
        ["-----------", "--------"],
        ["1", "a"],
    ]
    assert "Executed 1 statement(s)" in result.stderr
    payload = run_json(
        "exec", LOCAL, "--command", "SELECT ? AS n, ? AS s", "--param", "7", "--param", "x"
    )
    assert payload["results"][0]["results"] == [{"n": "7", "s": "x"}]


def test_exec_local_runs_a_file(deployed: Path) -> None:
    Path("q.sql").write_text(
        "INSERT INTO users (telegram_id) VALUES ('2');\nSELECT count(*) AS n FROM users;\n",
        encoding="utf-8",
    )
    payload = run_json("exec", LOCAL, "--file", "q.sql")
    assert [r["line"] for r in payload["results"]] == [1, 2]
    assert payload["results"][1]["results"] == [{"n": 1}]


def test_databases_local_lists_the_file(project: Path) -> None:
    Path("db.sqlite").touch()
    result = run("databases", LOCAL)
    assert "local:" in result.stdout and "db.sqlite" in result.stdout
    assert "1 database(s)" in result.stderr
    assert len(run_json("databases", LOCAL)["databases"]) == 1


def test_bookmark_then_restore_local(deployed: Path) -> None:
    mark = run("bookmark", LOCAL).stdout.strip()
    run("exec", LOCAL, "--command", "INSERT INTO users (telegram_id) VALUES ('late')")
    payload = run_json("bookmark", LOCAL)
    assert payload["bookmark"] != mark
    result = run("restore", LOCAL, "--bookmark", mark, "--yes")
    assert "To undo: d1deploy restore --bookmark" in result.stderr
    assert local_rows("SELECT count(*) FROM users") == [(0,)]
    restored = run_json("restore", LOCAL, "--bookmark", payload["bookmark"], "--yes")
    assert restored["undo_command"].startswith("d1deploy restore --bookmark")
    assert local_rows("SELECT telegram_id FROM users") == [("late",)]


def test_restore_timestamp_local(deployed: Path) -> None:
    mark = run("bookmark", LOCAL).stdout.strip()
    run("exec", LOCAL, "--command", "INSERT INTO users (telegram_id) VALUES ('late')")
    payload = run_json("restore", LOCAL, "--timestamp", datetime.now(UTC).isoformat(), "--yes")
    assert payload["bookmark"] == run("bookmark", LOCAL).stdout.strip()
    assert mark


def test_restore_refuses_without_yes_and_without_a_terminal(deployed: Path) -> None:
    mark = run("bookmark", LOCAL).stdout.strip()
    run("exec", LOCAL, "--command", "INSERT INTO users (telegram_id) VALUES ('kept')")
    result = run("restore", LOCAL, "--bookmark", mark, code=2)
    assert "--yes" in result.stderr
    assert local_rows("SELECT telegram_id FROM users") == [("kept",)]


def test_backup_then_restore_from_backup_local(deployed: Path) -> None:
    run("exec", LOCAL, "--command", "INSERT INTO users (telegram_id) VALUES ('42')")
    result = run("backup", LOCAL, "-o", "b.sql")
    assert result.stdout == "b.sql\n"
    assert "sha256" in result.stderr
    assert Path("b.sql").is_file() and Path("b.sql.json").is_file()
    payload = run_json("backup", LOCAL, "--no-data", "-o", "schema.sql")
    assert payload["path"] == "schema.sql"
    assert "INSERT" not in Path("schema.sql").read_text(encoding="utf-8")
    restored = run_json("restore", "--local=copy.sqlite", "--from-backup", "b.sql", "--yes")
    assert restored["path"] == "b.sql"
    assert local_rows("SELECT telegram_id FROM users", "copy.sqlite") == [("42",)]


def test_backup_to_the_default_folder(deployed: Path) -> None:
    result = run("backup", LOCAL, "--gzip")
    written = Path(result.stdout.strip())
    assert written.parent == deployed / "backups"
    assert written.name.endswith(".sql.gz")


def test_new_creates_the_next_migration_and_its_companions(project: Path) -> None:
    result = run("new", "add audit index")
    created = [Path(p) for p in result.stdout.split()]
    assert [p.relative_to(project / "migrations").as_posix() for p in created] == [
        "002_add_audit_index.sql",
        "002_add_audit_index/rollback.sql",
        "002_add_audit_index/verify.sql",
    ]
    assert all(p.is_file() for p in created)
    payload = run_json("new", "another", "--migrations-dir", "elsewhere")
    assert Path(payload["created"][0]).name == "0001_another.sql"
    assert (project / "elsewhere" / "0001_another.sql").is_file()


def test_lint_clean_and_with_findings(project: Path) -> None:
    result = run("lint")
    # The two migrations and 001's precheck and verify files; the verify's three INSERTs
    # are probes, shown to reviewers as notes.
    assert "4 file(s) checked: 0 error(s), 0 warning(s), 3 note(s)." in result.stderr
    payload = run_json("lint")
    assert (payload["ok"], payload["files"]) == (True, 4)
    assert [(f["code"], f["severity"], f["line"]) for f in payload["findings"]] == [
        ("probe", "note", 7),
        ("probe", "note", 11),
        ("probe", "note", 15),
    ]
    assert "writes (INSERT user_deposits)" in payload["findings"][0]["message"]
    Path("tx.sql").write_text("SELECT 1;\nBEGIN TRANSACTION;\nSELECT 2;\nCOMMIT;\n", "utf-8")
    result = run("lint", "tx.sql", code=2)
    assert "tx.sql:2: error:" in result.stderr
    assert "tx.sql:2" in result.stderr.splitlines()[-2]  # the Error: line names file:line


def test_unlock_without_a_lock(deployed: Path) -> None:
    assert "No deploy lock is held." in run("unlock", LOCAL).stderr
    assert run_json("unlock", LOCAL) == {"ok": True, "released": None}


def test_unlock_a_held_lock_needs_force(deployed: Path) -> None:
    backend = LocalBackend(Path("db.sqlite"))
    try:
        take_lock(backend, "ci-run-7 on host-x", 3600)
    finally:
        backend.close()
    result = run("unlock", LOCAL, code=5)
    assert "ci-run-7 on host-x" in result.stderr
    assert "unlock --force" in result.stderr
    # The held lock also refuses a deploy, naming its holder.
    assert "ci-run-7 on host-x" in run("migrate", LOCAL, "--no-backup", code=5).stderr
    payload = run_json("unlock", LOCAL, "--force")
    assert payload["released"]["holder"] == "ci-run-7 on host-x"
    assert "No deploy lock is held." in run("unlock", LOCAL).stderr


def test_rehearse_local(project: Path) -> None:
    run("migrate", LOCAL, "--no-backup", "--to", "000_base_schema")
    result = run("rehearse", LOCAL)
    assert "Rehearsal passed." in result.stderr
    payload = run_json("rehearse", LOCAL)
    assert payload["applied"] == [M001]
    # A rehearsal changes nothing.
    assert local_rows("SELECT name FROM d1_migrations") == [("000_base_schema.sql",)]


def test_verbose_shows_where_settings_came_from(project: Path) -> None:
    Path("db.sqlite").touch()
    result = run("status", LOCAL, "-v")
    assert "flag --local" in result.stderr


# -- --json on failure: one object, with the exit code -----------------------------------------
@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("databases",), 3),
        (("exec", LOCAL, "--command", "SELECT 1", "--file", "x.sql"), 2),
        (("exec", LOCAL, "--command", "SELECT * FROM nowhere"), 1),
        (("bookmark", LOCAL, "--timestamp", "2999-01-01T00:00:00Z"), 2),
        (("status",), 3),
        (("plan",), 3),
        (("migrate", LOCAL, "--to", "999_nothing"), 2),
        (("rollback", LOCAL), 2),
        (("verify",), 3),
        (("baseline", "999_nothing", LOCAL), 2),
        (("new", "a/b"), 2),
        (("backup", LOCAL, "--no-data", "--no-schema"), 2),
        (("restore", LOCAL, "--yes"), 2),
        (("unlock",), 3),
        (("rehearse",), 3),
    ],
)
def test_json_failure_is_one_object_with_the_exit_code(
    deployed: Path, args: tuple[str, ...], code: int
) -> None:
    payload = run_json(*args, code=code)
    assert payload["error"]["type"]


def test_json_lint_failure_carries_the_findings(project: Path) -> None:
    Path("tx.sql").write_text("BEGIN TRANSACTION;\nSELECT 1;\nCOMMIT;\n", "utf-8")
    payload = run_json("lint", "tx.sql", code=2)
    assert payload["error"]["line"] == 1
    assert payload["report"]["findings"]


# -- exit 2: bad usage, bad input files --------------------------------------------------------
def test_command_and_file_together_is_bad_usage(project: Path) -> None:
    result = run("exec", LOCAL, "--command", "SELECT 1", "--file", "q.sql", code=2)
    assert "exactly one of --command or --file" in result.stderr
    assert result.stdout == ""


def test_an_unknown_option_is_bad_usage(project: Path) -> None:
    result = run("status", LOCAL, "--bogus", code=2)
    # Click 8.5 words it "No such option '--bogus'", earlier releases "No such option: --bogus".
    assert re.search(r"No such option:? '?--bogus", result.stderr)


def test_rollback_without_yes_and_without_a_terminal_changes_nothing(deployed: Path) -> None:
    result = run("rollback", LOCAL, code=2)
    assert "refusing without confirmation" in result.stderr
    assert "--yes" in result.stderr
    assert run_json("status", LOCAL)["applied"] == ["000_base_schema.sql", M001]


def test_a_non_utf8_sql_file_is_refused_at_its_line(project: Path) -> None:
    Path("latin1.sql").write_bytes(b"SELECT 1;\nSELECT 'caf\xe9';\n")
    result = run("exec", LOCAL, "--file", "latin1.sql", code=2)
    assert "latin1.sql:2" in result.stderr
    assert "UTF-8" in result.stderr


def test_a_sqlite_database_given_as_sql_is_refused(deployed: Path) -> None:
    shutil.copy("db.sqlite", "dump.sql")
    result = run("exec", LOCAL, "--file", "dump.sql", code=2)
    assert "dump.sql" in result.stderr
    assert "SQLite database file" in result.stderr


def test_a_migration_with_begin_transaction_is_refused(project: Path) -> None:
    Path("migrations/002_tx.sql").write_text(
        "BEGIN TRANSACTION;\nCREATE TABLE t (id INTEGER);\nCOMMIT;\n", "utf-8"
    )
    result = run("lint", code=2)
    assert "002_tx.sql:1" in result.stderr
    result = run("migrate", LOCAL, "--no-backup", code=2)
    assert "002_tx.sql:1" in result.stderr
    # Refused before anything ran: not even 000 was applied.
    assert local_rows("SELECT name FROM sqlite_master WHERE name = 'users'") == []


def test_a_syntax_error_at_line_40_is_named_with_its_file_and_line(project: Path) -> None:
    lines = [f"INSERT INTO users (telegram_id) VALUES ('{n}');" for n in range(39)]
    Path("migrations/002_bulk.sql").write_text(
        "\n".join([*lines, "INSERT INTO users (telegram_id) VALUS ('x');", ""]), "utf-8"
    )
    Path("db.sqlite").touch()
    for command in ("lint", "plan", "migrate"):
        result = run(command, LOCAL, code=2) if command != "lint" else run("lint", code=2)
        assert re.search(r"002_bulk\.sql:40\b", result.stderr), command
        assert "syntax error" in result.stderr, command
    payload = run_json("migrate", LOCAL, code=2)
    assert (Path(payload["error"]["file"]).name, payload["error"]["line"]) == ("002_bulk.sql", 40)


def test_exec_names_the_line_of_a_syntax_error_before_sending_anything(deployed: Path) -> None:
    Path("q.sql").write_text("SELECT 1;\n" * 39 + "SELEC 2;\n", "utf-8")
    result = run("exec", LOCAL, "--file", "q.sql", code=2)
    assert "q.sql:40" in result.stderr


def test_exec_names_the_line_of_a_failing_statement(deployed: Path) -> None:
    Path("q.sql").write_text("SELECT 1;\n" * 39 + "INSERT INTO users (id) VALUES (NULL, 2);\n")
    result = run("exec", LOCAL, "--file", "q.sql", code=1)
    assert "q.sql:40" in result.stderr


def test_restore_to_a_future_timestamp_is_bad_usage(deployed: Path) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    result = run("restore", LOCAL, "--timestamp", future, "--yes", code=2)
    assert "is in the future" in result.stderr
    assert run("restore", LOCAL, "--timestamp", "yesterday", "--yes", code=2).stderr


# -- exit 5: refused before changing anything --------------------------------------------------
def edit_applied_migration(project: Path) -> None:
    path = project / "migrations" / M001
    path.write_text(path.read_text("utf-8") + "\n-- edited after it was applied\n", "utf-8")


def test_drift_refuses_status_and_migrate_unless_allowed(deployed: Path) -> None:
    edit_applied_migration(deployed)
    result = run("status", LOCAL, code=5)
    assert M001 in result.stderr
    assert re.search(r"001_schema_enhancements\.sql\s+applied \(drifted\)", result.stdout)
    assert M001 in run("migrate", LOCAL, "--no-backup", code=5).stderr
    payload = run_json("status", LOCAL, code=5)
    assert payload["report"]["drifted"] == [M001]
    run("status", LOCAL, "--allow-drift")
    assert "nothing to do" in run("migrate", LOCAL, "--no-backup", "--allow-drift").stderr
    run_json("plan", LOCAL, code=5)


def test_a_failed_precheck_refuses_and_shows_the_offending_row(project: Path) -> None:
    run("migrate", LOCAL, "--no-backup", "--to", "000_base_schema")
    run("exec", LOCAL, "--command", "INSERT INTO user_deposits (user_id, balance) VALUES (7, -350)")
    result = run("migrate", LOCAL, "--no-backup", code=5)
    assert "no negative balances" in result.stderr
    assert re.search(r"^\s+1\s+7\s+-350\s*$", result.stderr, re.MULTILINE)
    assert run_json("status", LOCAL)["pending"] == [M001]
    payload = run_json("migrate", LOCAL, "--no-backup", code=5)
    failed = [r for r in payload["error"]["results"] if not r["ok"]]
    assert [(r["check"]["label"], r["rows"]) for r in failed] == [
        ("no negative balances", [[1, 7, -350]])
    ]
    assert "-350" in run("plan", LOCAL, code=5).stderr
    assert run_json("plan", LOCAL, code=5)["report"]["prechecks"][0]["rows"] == [[1, 7, -350]]


# -- exit 1: failed while changing, and undone -------------------------------------------------
def test_a_failed_verify_rolls_back_and_leaves_no_probe_row(project: Path) -> None:
    path = project / "migrations" / M001
    path.write_text(
        path.read_text("utf-8").replace(" CHECK (balance >= 0)", "", 1), encoding="utf-8"
    )
    result = run("migrate", LOCAL, "--no-backup", code=1)
    assert "FAIL a negative balance is refused" in result.stderr
    assert f"rolled back {M001}" in result.stderr
    assert local_rows("SELECT count(*) FROM user_deposits WHERE balance = -1000") == [(0,)]
    assert local_rows("SELECT name FROM sqlite_master WHERE name = 'audit_logs'") == []
    assert run_json("status", LOCAL)["pending"] == [M001]
    payload = run_json("migrate", LOCAL, "--no-backup", code=1)
    assert [r["name"] for r in payload["report"]["rolled_back"]] == [M001]


def test_verify_exits_1_when_a_check_fails(project: Path) -> None:
    run("migrate", LOCAL, "--no-backup", "--to", "000_base_schema")
    run("baseline", M001, LOCAL, "--force")  # recorded, never run: its verify must fail
    result = run("verify", LOCAL, code=1)
    assert "FAIL audit_logs exists" in result.stderr
    assert re.search(r"001_schema_enhancements/verify\.sql:\d+", result.stderr)
    payload = run_json("verify", LOCAL, code=1)
    assert payload["error"]["type"] == "ChangeFailed"


def test_the_old_layout_is_refused_naming_the_command_that_moves_it(project: Path) -> None:
    other = project / "elsewhere"
    other.mkdir()
    (other / "001_a.sql").write_text("CREATE TABLE a (id INTEGER);\n")
    (other / "001_a.rollback.sql").write_text("DROP TABLE a;\n")
    Path("db.sqlite").touch()
    refused = run("status", LOCAL, "--migrations-dir", "elsewhere", code=2)
    assert "001_a.rollback.sql (-> 001_a/rollback.sql)" in refused.stderr
    suggested = "d1deploy move-companions --migrations-dir elsewhere"
    assert f"`{suggested}`" in refused.stderr
    pasted(suggested)
    assert (other / "001_a" / "rollback.sql").read_text() == "DROP TABLE a;\n"
    assert run("status", LOCAL, "--migrations-dir", "elsewhere", "--json").stdout


# -- errors: tracebacks only with --debug ------------------------------------------------------
def test_an_error_shows_a_traceback_only_with_debug(project: Path) -> None:
    result = run("exec", LOCAL, "--command", "SELECT * FROM nowhere", code=1)
    assert result.stderr.startswith("Error: ")
    assert "no such table: nowhere" in result.stderr
    debug = run("exec", LOCAL, "--command", "SELECT * FROM nowhere", "--debug", code=1)
    assert TRACEBACK in debug.stderr
    assert "no such table: nowhere" in debug.stderr


def test_a_bug_is_reported_plainly_and_scrubbed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"boom with {TOKEN}")

    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setattr("d1deploy.sqlexec.execute", broken)
    result = run("exec", LOCAL, "--command", "SELECT 1", code=1)
    assert "unexpected internal error: RuntimeError: boom with [redacted]" in result.stderr
    assert "--debug" in result.stderr
    debug = run("exec", LOCAL, "--command", "SELECT 1", "--debug", code=1)
    assert TRACEBACK in debug.stderr
    assert run_json("exec", LOCAL, "--command", "SELECT 1", code=1)["error"]["message"]


# -- against the D1 emulator on loopback -------------------------------------------------------
def test_remote_databases(remote: D1Emulator) -> None:
    remote.create_database("staging")
    result = run("databases")
    assert DB in result.stdout and "staging" in result.stdout
    assert "2 database(s)" in result.stderr
    names = {d["name"] for d in run_json("databases")["databases"]}
    assert names == {DB, "staging"}


def test_remote_deploy_cycle(remote: D1Emulator, project: Path) -> None:
    before = run_json("bookmark")["bookmark"]
    plan = run_json("plan")
    assert [p["name"] for p in plan["pending"]] == ["000_base_schema.sql", M001]

    result = run("migrate")
    assert "applied 2 migration(s)" in result.stderr
    assert "Backup written:" in result.stderr
    assert len(list((project / "backups").glob("*.sql"))) == 1

    assert run_json("status")["applied"] == ["000_base_schema.sql", M001]
    assert "ok   a negative balance is refused" in run("verify").stderr
    assert remote_rows(remote, "SELECT count(*) FROM user_deposits") == [(0,)]

    run("exec", "--command", "INSERT INTO users (telegram_id) VALUES ('t1')")
    rows = run_json("exec", "--command", "SELECT telegram_id FROM users")["results"]
    assert rows[0]["results"] == [{"telegram_id": "t1"}]

    backup = run_json("backup", "-o", "prod.sql")
    assert Path(backup["path"]).read_text("utf-8").count("INSERT INTO") >= 1

    rolled = run_json("rollback", "--yes", "--no-backup")
    assert [r["name"] for r in rolled["rolled_back"]] == [M001]
    assert run_json("status")["pending"] == [M001]

    result = run("restore", "--bookmark", before, "--yes")
    assert "To undo: d1deploy restore --bookmark" in result.stderr
    assert run_json("status")["pending"] == ["000_base_schema.sql", M001]


def test_remote_migrate_json(remote: D1Emulator) -> None:
    payload = run_json("migrate", "--no-backup", "-d", DB)
    assert [a["name"] for a in payload["applied"]] == ["000_base_schema.sql", M001]
    assert payload["database"] == DB


def test_remote_database_by_uuid(remote: D1Emulator) -> None:
    payload = run_json("status", "-d", remote.default_db.uuid)
    assert payload["database"] == DB


# -- exit 3: setup -----------------------------------------------------------------------------
def test_missing_token_names_the_variable(
    remote: D1Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    result = run("status", code=3)
    assert "CLOUDFLARE_API_TOKEN" in result.stderr
    assert "--local" in result.stderr
    assert remote.count() == 0


def test_missing_account_names_how_to_set_it(
    remote: D1Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDFLARE_ACCOUNT_ID")
    result = run("databases", code=3)
    assert "CLOUDFLARE_ACCOUNT_ID" in result.stderr
    assert "--account-id" in result.stderr
    run_json("databases", "--account-id", remote.account_id)


def test_a_wrong_token_is_an_auth_error(remote: D1Emulator) -> None:
    remote.token = "the-real-token"
    result = run("status", code=3)
    assert "the API token was refused: Authentication error [code 10000]" in result.stderr
    assert "check that CLOUDFLARE_API_TOKEN is valid" in result.stderr
    payload = run_json("databases", code=3)
    assert payload["error"]["type"] == "AuthError"


def test_an_unknown_database_lists_those_that_exist(remote: D1Emulator) -> None:
    result = run("status", "-d", "telegram-conversation", code=3)
    assert "'telegram-conversation' not found" in result.stderr
    assert f"databases in this account: {DB}" in result.stderr
    assert run_json("plan", "-d", "nope", code=3)["error"]["type"] == "NotFound"


# -- exit 4: unavailable -----------------------------------------------------------------------
def test_a_few_503s_are_retried(remote: D1Emulator, sleeps: list[float]) -> None:
    remote.faults.add("GET", r"/d1/database$", status=503, times=2)
    result = run("databases")
    assert DB in result.stdout
    assert "503 from D1, retrying in" in result.stderr
    assert len(sleeps) == 2


def test_a_persistent_503_exits_4(remote: D1Emulator, sleeps: list[float]) -> None:
    remote.faults.add(None, r"/d1/database", status=503)
    result = run("status", code=4)
    assert "gave up after 5 attempts" in result.stderr
    assert len(sleeps) == 4  # five attempts, four pauses, none of them real
    assert run_json("status", code=4)["error"]["type"] == "ServerError"


def test_connection_refused_exits_4(
    remote: D1Emulator, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", f"http://127.0.0.1:{port}/client/v4")
    result = run("databases", code=4)
    # Nothing listens there: retrying would not change that, so it fails at once, naming
    # the URL it tried.
    assert f"could not reach http://127.0.0.1:{port}/client/v4/accounts/" in result.stderr
    assert "connection refused" in result.stderr
    assert sleeps == []


def test_a_plain_http_api_base_is_refused_unless_loopback(
    remote: D1Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", "http://api.example.com/client/v4")
    result = run("databases", code=2)
    assert "CLOUDFLARE_API_BASE_URL" in result.stderr
    assert remote.count() == 0


# -- exit 5 and 1 on the emulator --------------------------------------------------------------
def test_remote_drift_is_refused(remote: D1Emulator, project: Path) -> None:
    run("migrate", "--no-backup")
    edit_applied_migration(project)
    assert M001 in run("status", code=5).stderr
    assert run_json("migrate", "--no-backup", code=5)["error"]["type"] == "DriftDetected"
    run("migrate", "--no-backup", "--allow-drift")


def test_remote_failed_precheck_shows_the_row(remote: D1Emulator) -> None:
    run("migrate", "--no-backup", "--to", "000_base_schema")
    run("exec", "--command", "INSERT INTO user_deposits (user_id, balance) VALUES (9, -1)")
    result = run("migrate", "--no-backup", code=5)
    assert re.search(r"^\s+1\s+9\s+-1\s*$", result.stderr, re.MULTILINE)


def test_remote_failed_verify_is_undone(remote: D1Emulator, project: Path) -> None:
    path = project / "migrations" / M001
    path.write_text(path.read_text("utf-8").replace(" CHECK (balance >= 0)", "", 1), "utf-8")
    result = run("migrate", "--no-backup", code=1)
    assert f"rolled back {M001}" in result.stderr
    assert remote_rows(remote, "SELECT count(*) FROM user_deposits WHERE balance = -1000") == [(0,)]
    assert remote_rows(remote, "SELECT name FROM sqlite_master WHERE name = 'audit_logs'") == []


# -- suggested commands can be pasted ----------------------------------------------------------
PROJECT_WORDS = (
    *("--env", "staging", "--config", "conf dir/d1deploy.toml"),
    *("--migrations-dir", "my migrations", "--migrations-table", "ledger"),
)
TARGETS = {
    "local": suggest.Target(("--local=my db's.sqlite",), (), PROJECT_WORDS, ("-d", "DB")),
    "remote": suggest.Target(("-d", "prod db"), ("--account-id", "acc-1"), PROJECT_WORDS, ()),
}
REQUIRED_ARGS = {"new": ("add x",), "baseline": ("000_base_schema",)}


@pytest.mark.parametrize("target", TARGETS)
def test_every_suggested_command_parses_with_the_options_of_the_run(target: str) -> None:
    """Whatever d1deploy suggests (a restore, unlock, any command) carries the options
    that chose the database and project, quoted so that a shell splits them back."""
    with suggest.target(TARGETS[target]):
        texts = [suggest.restore("bm-1"), suggest.unlock()]
        texts += [suggest.command(name, *REQUIRED_ARGS.get(name, ())) for name in COMMANDS]
    group = cli.app
    assert isinstance(group, click.Group)
    for text in texts:
        words = shlex.split(text)
        assert words[0] == "d1deploy"
        ctx = group.make_context("d1deploy", words[1:])
        name, command, rest = group.resolve_command(
            ctx, [*getattr(ctx, "_protected_args", ()), *ctx.args]
        )
        assert name is not None and command is not None
        params = command.make_context(name, rest, parent=ctx).params
        assert params["env"] == "staging" and params["migrations_table"] == "ledger", text
        assert str(params["config"]) == "conf dir/d1deploy.toml", text
        assert str(params["migrations_dir"]) == "my migrations", text
        if name in suggest.PROJECT_COMMANDS:
            assert "local" not in params, text
            assert list(params["database"] or ()) == (["DB"] if target == "local" else []), text
        elif target == "local":
            assert params["local"] == "my db's.sqlite", text
        else:
            assert list(params["database"]) == ["prod db"], text
            assert params["account_id"] == "acc-1", text


def test_a_failed_remote_deploy_suggests_a_restore_that_works_when_pasted(
    remote: D1Emulator, project: Path
) -> None:
    shutil.move("migrations", "my migrations")
    Path("my migrations/001_schema_enhancements/rollback.sql").unlink()
    Path("my migrations/001_schema_enhancements/verify.sql").write_text(
        "-- expect: value = 2\nSELECT 1;\n", "utf-8"
    )
    failed = run_json("migrate", "-d", DB, "--migrations-dir", "my migrations", code=1)
    hint = failed["error"]["hint"]
    command = re.search(r"`(d1deploy restore [^`]+)`", hint)
    assert command is not None and "-d telegram-conversations" in command[1]
    # 001's failing check ran inside 001's request and aborted it (#19); 000 has no
    # rollback SQL: it could not be undone, and the report says so.
    assert failed["report"]["still_applied"] == ["000_base_schema.sql"]
    pasted(command[1])
    assert remote_rows(remote, "SELECT name FROM d1_migrations") == []


# -- commands that only read never create a file -----------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("plan",),
        ("verify",),
        ("bookmark",),
        ("backup",),
        ("unlock",),
        ("databases",),
        ("rehearse",),
        ("migrate", "--dry-run"),
        ("rollback", "--yes"),
        ("restore", "--bookmark", "b", "--yes"),
    ],
    ids=lambda args: "-".join(args),
)
def test_a_command_that_only_reads_never_creates_the_local_file(
    project: Path, args: tuple[str, ...]
) -> None:
    before = sorted(project.rglob("*"))
    result = run(*args, LOCAL, code=3)
    assert "the local database" in result.stderr and "db.sqlite does not exist" in result.stderr
    assert "d1deploy migrate --local=db.sqlite" in result.stderr  # what does create it
    assert sorted(project.rglob("*")) == before


def test_a_local_value_named_like_a_migration_says_how_to_give_both(project: Path) -> None:
    result = run("verify", "--local", "001_schema_enhancements", code=2)
    assert "that is a migration's name" in result.stderr
    assert "`--local=PATH 001_schema_enhancements`" in result.stderr
    assert not Path("001_schema_enhancements").exists()
    assert "is a directory, not a SQLite file" in run("status", "--local=/", code=2).stderr


def test_several_wrangler_entries_are_listed_with_how_to_choose(project: Path) -> None:
    Path("wrangler.toml").write_text(
        '[[d1_databases]]\nbinding = "DB"\ndatabase_name = "prod"\ndatabase_id = "id-1"\n'
        '[[d1_databases]]\nbinding = "LOGS"\ndatabase_name = "logs"\n',
        "utf-8",
    )
    payload = run_json("status", code=3)
    assert payload["error"]["message"] == (
        "no database chosen: wrangler.toml has 2 d1_databases entries: binding DB:"
        " database_name prod, database_id id-1; binding LOGS: database_name logs,"
        " database_id (none)"
    )
    assert "`-d DB`" in payload["error"]["hint"]


# -- --json: one object, also for Click's own errors -------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("migrat", "--json"), "No such command 'migrat'"),
        # Click 8.5 quotes the option; earlier releases put a colon before it.
        (("migrate", "--jsno", "--json"), "No such option:? .?--jsno"),
        (("rollback", "--steps", "zero", "--json"), "Invalid value for '--steps'"),
        (("status", "--json", "extra"), "Got unexpected extra argument"),
    ],
)
def test_json_is_one_object_even_for_click_s_own_usage_errors(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "d1deploy", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done
    payload = json.loads(done.stdout)
    assert payload["ok"] is False and payload["report"] is None
    assert payload["error"]["type"] == "UsageError" and payload["error"]["exit_code"] == 2
    assert re.search(says, payload["error"]["message"])
    assert re.search(says, done.stderr)  # people still get Click's usage line and message
    plain = subprocess.run(
        [sys.executable, "-m", "d1deploy", *(a for a in args if a != "--json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode == 2 and plain.stdout == ""
