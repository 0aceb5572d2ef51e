"""d1deploy inside GitHub Actions: step summary, step outputs, annotations, no token.

The files and workflow commands are read back the way the runner reads them (its
`$GITHUB_OUTPUT` heredoc format and `::command k=v::data` unescaping), so what is
asserted is what GitHub would show, not the bytes d1deploy happens to write.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1deploy.cli import output as output_mod
from d1deploy.cli.output import GitHub, Output
from d1deploy.errors import InputError, SqlError

TOKEN = "cf-token-5ecret-A1b2C3"


# -- the runner's side ----------------------------------------------------------------------------
def read_outputs(path: Path) -> dict[str, str]:
    """Parse `$GITHUB_OUTPUT` as the runner does: `k=v`, or `k<<DELIM` ... `DELIM`, with
    lines ended by \\r\\n, \\r or \\n (.NET's ReadLine) and body lines joined by \\n."""
    lines = re.split(r"\r\n|\r|\n", path.read_text(encoding="utf-8"))
    values: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            values[line[:equals]] = line[equals + 1 :]
            continue
        name, delimiter = line[:heredoc], line[heredoc + 2 :]
        body = []
        while lines[i] != delimiter:
            body.append(lines[i])
            i += 1
        i += 1
        values[name] = "\n".join(body)
    return values


def _unescape(text: str, codes: tuple[tuple[str, str], ...]) -> str:
    for code, char in codes:
        text = text.replace(code, char)
    return text


_DATA = (("%0D", "\r"), ("%0A", "\n"), ("%25", "%"))
_PROPERTY = (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%"))


def read_commands(stream: str) -> list[tuple[str, dict[str, str], str]]:
    """The workflow commands in a stream: (name, properties, message), unescaped."""
    commands = []
    for line in stream.splitlines():
        if not line.startswith("::"):
            continue
        head, _, data = line[2:].partition("::")
        name, _, props = head.partition(" ")
        properties = {}
        for prop in filter(None, props.split(",")):
            key, _, value = prop.partition("=")
            properties[key] = _unescape(value, _PROPERTY)
        commands.append((name, properties, _unescape(data, _DATA)))
    return commands


# -- fixtures -------------------------------------------------------------------------------------
class Run:
    """One Output wired to temporary GitHub files and in-memory streams."""

    def __init__(self, tmp_path: Path, **environ: str) -> None:
        self.summary_path = tmp_path / "summary.md"
        self.output_path = tmp_path / "output.txt"
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        env = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(self.summary_path),
            "GITHUB_OUTPUT": str(self.output_path),
            **environ,
        }
        self.out = Output(environ=env, stdout=self.stdout, stderr=self.stderr)

    @property
    def summary(self) -> str:
        return self.summary_path.read_text(encoding="utf-8") if self.summary_path.exists() else ""

    @property
    def outputs(self) -> dict[str, str]:
        return read_outputs(self.output_path) if self.output_path.exists() else {}

    @property
    def commands(self) -> list[tuple[str, dict[str, str], str]]:
        return read_commands(self.stderr.getvalue())


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


# -- step summary ---------------------------------------------------------------------------------
def test_summary_is_appended_after_what_other_steps_wrote(run: Run) -> None:
    run.summary_path.write_text("## an earlier step\n\n", encoding="utf-8")
    run.out.summary("### Plan\n\n2 pending")
    run.out.summary("| a | b |\n|---|---|\n| 1 | 2 |\n\n\n")
    table = "| a | b |\n|---|---|\n| 1 | 2 |"
    assert run.summary == f"## an earlier step\n\n### Plan\n\n2 pending\n\n{table}\n\n"


def test_nothing_is_written_outside_github_actions(tmp_path: Path) -> None:
    run = Run(tmp_path, GITHUB_ACTIONS="false")
    run.out.summary("x")
    run.out.outputs({"pending": 1})
    run.out.annotate("error", "x", file="a.sql", line=1)
    run.out.warn("careful")
    assert not run.summary_path.exists() and not run.output_path.exists()
    assert run.commands == [] and run.stderr.getvalue() == "Warning: careful\n"


def test_a_summary_that_would_outgrow_githubs_limit_is_cut_once(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_mod, "SUMMARY_LIMIT", 300)
    run.out.summary("a" * 100)
    run.out.summary("b" * 250)  # would pass the limit: replaced by the note
    run.out.summary("c" * 250)  # the note is not repeated
    assert run.summary == "a" * 100 + "\n\n" + output_mod.SUMMARY_CUT
    assert len(run.summary.encode()) <= 300


# -- step outputs ---------------------------------------------------------------------------------
def test_outputs_are_written_for_later_steps(run: Run) -> None:
    run.out.outputs(
        {
            "pending": 2,
            "pending_names": ["001_schema_enhancements", "002_more"],
            "bookmark_before": None,
            "ok": True,
            "backup_path": "/tmp/backups/telegram-conversations.sql",
        }
    )
    run.out.outputs({"restore_command": "d1deploy restore \\\n  --bookmark b1 --yes"})
    assert run.outputs == {
        "pending": "2",
        "pending_names": '["001_schema_enhancements", "002_more"]',
        "bookmark_before": "",
        "ok": "true",
        "backup_path": "/tmp/backups/telegram-conversations.sql",
        "restore_command": "d1deploy restore \\\n  --bookmark b1 --yes",
    }
    assert json.loads(run.outputs["pending_names"]) == ["001_schema_enhancements", "002_more"]


def test_a_multiline_value_cannot_forge_other_outputs(run: Run) -> None:
    hostile = "line one\nEOF\nD1DEPLOY_EOF\nghadelimiter_x\npending=0\nlast"
    run.out.outputs({"message": hostile, "pending": 3, "cr": "a\rpending=9"})
    assert run.outputs == {"message": hostile, "pending": "3", "cr": "a\npending=9"}


@pytest.mark.parametrize("name", ["", "1st", "a b", "a=b", "x\ny", "p<<q"])
def test_output_names_that_would_corrupt_the_file_are_refused(run: Run, name: str) -> None:
    with pytest.raises(ValueError, match="output name"):
        run.out.outputs({name: "v"})
    assert not run.output_path.exists()


# -- annotations ----------------------------------------------------------------------------------
def test_a_sql_error_is_annotated_on_its_migration_line(run: Run) -> None:
    err = SqlError(
        "CHECK constraint failed: balance >= 0: SQLITE_CONSTRAINT",
        file="migrations/001_x.sql",
        line=40,
        hint="fix the rows listed by the precheck",
    )
    run.out.error(err)
    stderr = run.stderr.getvalue()
    assert (
        "::error title=d1deploy%3A SqlError,file=migrations/001_x.sql,line=40::"
        "CHECK constraint failed: balance >= 0: SQLITE_CONSTRAINT "
        "(fix the rows listed by the precheck)\n"
    ) in stderr
    assert run.summary.startswith("### d1deploy failed\n\nmigrations/001_x.sql:40: CHECK")


def test_annotation_text_is_escaped_so_the_runner_reads_it_back_whole(run: Run) -> None:
    message = "100% wrong:\nline two, still the message\r\n::warning::not a command"
    run.out.annotate("error", message, file="db/it's, odd: name.sql", line=7, title="a: b, c")
    stderr = run.stderr.getvalue()
    assert stderr.count("\n") == 1  # one line: the message cannot start a command of its own
    assert run.commands == [
        ("error", {"title": "a: b, c", "file": "db/it's, odd: name.sql", "line": "7"}, message)
    ]


@settings(max_examples=200, deadline=None)
@given(
    message=st.text(alphabet=st.sampled_from("ab%:,=\r\n 0AD25CE3")),
    file=st.text(alphabet=st.sampled_from("ab%:,=\r\n/.0AD25C3"), min_size=1),
    line=st.integers(min_value=1, max_value=10**6),
)
def test_any_message_and_path_survive_the_round_trip(message: str, file: str, line: int) -> None:
    command = GitHub.command("warning", message, {"file": file, "line": line})
    assert "\n" not in command and "\r" not in command
    assert read_commands(command) == [("warning", {"file": file, "line": str(line)}, message)]


def test_a_line_without_a_file_is_not_claimed(run: Run) -> None:
    run.out.annotate("notice", "no place", line=3)
    run.out.warn("careful")
    assert run.commands == [("notice", {}, "no place"), ("warning", {}, "careful")]


def test_paths_are_made_relative_to_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "repo"
    (workspace / "db").mkdir(parents=True)
    monkeypatch.chdir(workspace / "db")  # the reusable workflow's working-directory
    run = Run(tmp_path, GITHUB_WORKSPACE=str(workspace))
    run.out.annotate("error", "here", file="migrations/001_x.sql", line=1)
    run.out.annotate("error", "absolute", file=str(workspace / "db/./m/002.sql"), line=2)
    run.out.annotate("error", "outside", file="/etc/elsewhere.sql", line=3)
    assert [c[1]["file"] for c in run.commands] == [
        "db/migrations/001_x.sql",
        "db/m/002.sql",
        "/etc/elsewhere.sql",
    ]


# -- the token ------------------------------------------------------------------------------------
def test_a_registered_secret_never_leaves_through_any_channel(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.out = Output(
        json_mode=True,
        environ={
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(run.summary_path),
            "GITHUB_OUTPUT": str(run.output_path),
        },
        stdout=run.stdout,
        stderr=run.stderr,
    )
    run.out.add_secret(TOKEN)
    run.out.warn(f"token {TOKEN} looks odd")
    run.out.summary(f"### Plan\n\nAuthorization: Bearer {TOKEN}")
    run.out.outputs({"restore_command": f"CLOUDFLARE_API_TOKEN={TOKEN} d1deploy restore"})
    run.out.outputs({"multi": f"a\n{TOKEN}\nb"})
    run.out.annotate("notice", "n", file=f"{TOKEN}.sql", line=1, title=TOKEN)
    run.out.error(
        InputError(f"bad header {TOKEN}", hint=f"not {TOKEN}", file=f"m/{TOKEN}.sql", line=2)
    )
    channels = {
        "stdout": run.stdout.getvalue(),
        "stderr": run.stderr.getvalue(),
        "summary": run.summary,
        "outputs": run.output_path.read_text(encoding="utf-8"),
    }
    for name, text in channels.items():
        assert TOKEN not in text, name
        assert "[redacted]" in text, name
    assert json.loads(channels["stdout"])["error"]["message"] == "bad header [redacted]"


# -- end to end: the installed command ---------------------------------------------------------
def _run_d1deploy(tmp_path: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "CLOUDFLARE_", "D1DEPLOY_"))
    }
    env.update(
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
        GITHUB_OUTPUT=str(tmp_path / "output.txt"),
        GITHUB_WORKSPACE=str(tmp_path / "repo"),
        CLOUDFLARE_API_TOKEN=TOKEN,
    )
    return subprocess.run(
        [sys.executable, "-m", "d1deploy", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("json_mode", [False, True])
def test_a_failing_migration_line_is_annotated_by_the_command(
    tmp_path: Path, json_mode: bool
) -> None:
    workdir = tmp_path / "repo" / "db"
    (workdir / "migrations").mkdir(parents=True)
    # The failing statement names the token: it must come out redacted everywhere.
    (workdir / "migrations" / "001_x.sql").write_text(
        f'CREATE TABLE audit_logs (id INTEGER PRIMARY KEY);\n\nINSERT INTO "{TOKEN}" VALUES (1);\n',
        encoding="utf-8",
    )
    extra = ["--json"] if json_mode else []
    result = _run_d1deploy(
        tmp_path, workdir, "exec", "--local=db.sqlite", "--file", "migrations/001_x.sql", *extra
    )
    assert result.returncode == 1, result.stderr
    errors = [c for c in read_commands(result.stderr) if c[0] == "error"]
    assert len(errors) == 1
    _, properties, message = errors[0]
    assert properties["file"] == "db/migrations/001_x.sql" and properties["line"] == "3"
    assert "no such table" in message and "[redacted]" in message
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("### d1deploy failed")
    if json_mode:
        assert json.loads(result.stdout)["error"]["line"] == 3  # stdout: one JSON object
    else:
        assert result.stdout == ""
    for text in (result.stdout, result.stderr, summary):
        assert TOKEN not in text


@pytest.mark.parametrize("json_mode", [False, True])
def test_plan_hands_the_pending_migrations_to_later_steps(tmp_path: Path, json_mode: bool) -> None:
    workdir = tmp_path / "repo"
    (workdir / "migrations").mkdir(parents=True)
    (workdir / "migrations" / "001_create.sql").write_text("CREATE TABLE t (id INTEGER);\n")
    (workdir / "migrations" / "002_index.sql").write_text("CREATE INDEX t_id ON t (id);\n")
    (workdir / "db.sqlite").touch()  # an empty database: plan only reads
    extra = ["--json"] if json_mode else []
    result = _run_d1deploy(tmp_path, workdir, "plan", "--local=db.sqlite", *extra)
    assert result.returncode == 0, result.stderr
    outputs = read_outputs(tmp_path / "output.txt")
    assert outputs["pending"] == "2"
    names = json.loads(outputs["pending_names"])
    assert [n.removesuffix(".sql") for n in names] == ["001_create", "002_index"]
    summary_path = tmp_path / "summary.md"
    summary = summary_path.read_text(encoding="utf-8") if summary_path.exists() else ""
    if json_mode:
        json.loads(result.stdout)  # exactly one JSON object
    else:
        assert "001_create" in summary and "002_index" in summary
    # plan writes nothing to the database
    assert not (workdir / "db.sqlite").exists() or "t" not in _tables(workdir / "db.sqlite")
    for text in (result.stdout, result.stderr, summary):
        assert TOKEN not in text


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
