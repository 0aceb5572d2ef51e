"""All printing: human text to stderr, data to stdout, `--json`, and GitHub Actions.

Nothing else in d1deploy writes to the terminal. Commands hand this module a report
(a frozen dataclass) and it either renders it for people on stderr or serialises it as
exactly one JSON object on stdout (`--json`). In GitHub Actions (`GITHUB_ACTIONS=true`)
it also appends a Markdown report to `$GITHUB_STEP_SUMMARY`, writes step outputs to
`$GITHUB_OUTPUT`, and turns errors into `::error file=...,line=...::` annotations.

Every string that leaves through here is scrubbed of the registered secrets (the API
token), so even a message that somehow carried it cannot print it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Literal

from d1deploy.errors import D1DeployError

REDACTED = "[redacted]"
# GitHub refuses a step summary over 1 MiB and shows none of it.
SUMMARY_LIMIT = 1024 * 1024
SUMMARY_CUT = "_d1deploy: the rest of this report did not fit here; see the job log._\n\n"
_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def to_jsonable(value: Any) -> Any:
    """Turn reports (dataclasses, paths, datetimes, bytes...) into JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return {"blob_hex": value.hex()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class GitHub:
    """The GitHub Actions side channels: step summary, step outputs, annotations.

    The runner reads workflow commands (`::error ...::`) from stdout and stderr alike;
    d1deploy writes them to stderr so that `--json` keeps stdout to one object.
    """

    def __init__(self, environ: Mapping[str, str], cwd: Path | None = None) -> None:
        self.enabled = environ.get("GITHUB_ACTIONS") == "true"
        self.summary_path = environ.get("GITHUB_STEP_SUMMARY") or None
        self.output_path = environ.get("GITHUB_OUTPUT") or None
        self.workspace = environ.get("GITHUB_WORKSPACE") or None
        self._cwd = cwd

    @staticmethod
    def escape_data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    @staticmethod
    def escape_property(text: str) -> str:
        return GitHub.escape_data(text).replace(":", "%3A").replace(",", "%2C")

    @staticmethod
    def command(name: str, message: str, properties: Mapping[str, object | None]) -> str:
        """One workflow command line, `::name k=v,k=v::message`, escaped as the runner
        unescapes it (a newline in a message must not end the command early)."""
        props = ",".join(
            f"{key}={GitHub.escape_property(str(value))}"
            for key, value in properties.items()
            if value is not None and value != ""
        )
        return f"::{name}{' ' + props if props else ''}::{GitHub.escape_data(message)}"

    @staticmethod
    def output_entry(name: str, value: str) -> str:
        """One `$GITHUB_OUTPUT` entry: `name=value`, or a heredoc for multi-line values."""
        if not _OUTPUT_NAME.fullmatch(name):
            raise ValueError(f"not a valid step output name: {name!r}")
        if "\n" not in value and "\r" not in value:
            return f"{name}={value}\n"
        # A fresh random delimiter (as actions/toolkit does): no value can contain it, by
        # chance or on purpose, so a value cannot end its block early and forge outputs.
        import uuid  # only in GitHub Actions: it costs start-up time

        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"

    def repo_path(self, file: str) -> str:
        """`file` relative to the repository root, which is what annotations are matched
        against; d1deploy may run in a subdirectory (the workflow's working-directory)."""
        if not self.workspace:
            return file
        path = Path(file)
        if not path.is_absolute():
            path = (self._cwd or Path.cwd()) / path
        try:
            return Path(os.path.normpath(path)).relative_to(self.workspace).as_posix()
        except ValueError:  # outside the checkout: GitHub cannot place it anyway
            return file


class Output:
    """The one printer. Create one per command run; core code never sees it."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        verbose: bool = False,
        environ: Mapping[str, str] | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        hold_json: bool = False,
    ) -> None:
        self.json_mode = json_mode
        self.hold_json = hold_json
        self.verbose = verbose
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.github = GitHub(environ or {})
        self._secrets: list[str] = []
        self._json_written = False
        self._held: Mapping[str, Any] | None = None

    # -- secrets ---------------------------------------------------------------
    def add_secret(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    # -- people (stderr) ----------------------------------------------------------
    def _err(self, text: str, *, command: bool = False) -> None:
        text = self.scrub(text)
        if self.github.enabled and not command:
            # A message line starting with "::" would be run as a workflow command.
            text = "\n".join(
                " " + ln if ln.lstrip().startswith("::") else ln for ln in text.split("\n")
            )
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def info(self, text: str) -> None:
        self._err(text)

    @contextlib.contextmanager
    def byte_progress(self, label: str) -> Iterator[Callable[[int, int | None], None]]:
        """A progress bar (bytes, speed) on stderr for a download, when stderr is a
        terminal; elsewhere (CI logs, pipes) a no-op, so logs stay line by line."""
        if not self.stderr.isatty():
            yield lambda _done, _total: None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        )
        with Progress(*columns, console=Console(file=self.stderr), transient=True) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    def detail(self, text: str) -> None:
        """Shown only with --verbose."""
        if self.verbose:
            self._err(text)

    def warn(self, text: str) -> None:
        self._err(f"Warning: {text}")
        self.annotate("warning", text)

    def error(self, err: D1DeployError) -> None:
        """Report a failure: one sentence, where, what to do next."""
        self._err(f"Error: {err}")
        if err.hint:
            self._err(f"  hint: {err.hint}")
        self.annotate(
            "error",
            err.message + (f" ({err.hint})" if err.hint else ""),
            file=err.file,
            line=err.line,
            title=f"d1deploy: {type(err).__name__}",
        )
        if self.json_mode:
            # The error object replaces a report held back by `hold_json` and carries it.
            held, self._held, self.hold_json = self._held, None, False
            self.json(error_payload(err, held))
        self.summary(
            f"### d1deploy failed\n\n{md_escape(str(err))}\n"
            + (f"\n{md_escape(err.hint)}\n" if err.hint else "")
        )

    # -- data (stdout) --------------------------------------------------------------
    def json(self, payload: Mapping[str, Any]) -> None:
        """Exactly one JSON object per run on stdout. With `hold_json` it waits for
        `flush()`, so that a command failing after it rendered its report prints the
        error object (which carries that report) instead."""
        if self._json_written or self._held is not None:
            return
        if self.hold_json:
            self._held = payload
            return
        self._json_written = True
        text = json.dumps(to_jsonable(payload), indent=2, ensure_ascii=False)
        self.stdout.write(self.scrub(text) + "\n")
        self.stdout.flush()

    def flush(self) -> None:
        """Print the JSON object held back by `hold_json`: the command succeeded."""
        held, self._held, self.hold_json = self._held, None, False
        if held is not None:
            self.json(held)

    def print(self, text: str = "") -> None:
        """Data for people who asked for it (tables, lists) on stdout."""
        self.stdout.write(self.scrub(text) + "\n")
        self.stdout.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A plain aligned table on stdout (no colours: it is data, meant to be piped)."""
        cells = [[cell(c) for c in columns]] + [[cell(v) for v in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for n, row in enumerate(cells):
            self.print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                self.print("  ".join("-" * w for w in widths))

    # -- GitHub ---------------------------------------------------------------------
    def annotate(
        self,
        level: Literal["error", "warning", "notice"],
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        title: str | None = None,
    ) -> None:
        """A GitHub annotation, placed on `file` at `line` when the failure has a place."""
        if not self.github.enabled:
            return
        properties = {
            "title": self.scrub(title) if title else None,
            "file": self.scrub(self.github.repo_path(file)) if file else None,
            "line": line if file else None,
        }
        self._err(GitHub.command(level, self.scrub(message), properties), command=True)

    def summary(self, markdown: str) -> None:
        """Append Markdown to the step summary (the page approvers read)."""
        if not (self.github.enabled and self.github.summary_path):
            return
        path = Path(self.github.summary_path)
        text = self.scrub(markdown).rstrip() + "\n\n"
        used = path.stat().st_size if path.exists() else 0
        if used + len(text.encode()) > SUMMARY_LIMIT:
            # GitHub drops an oversized summary whole: keep what fits, say once what is cut.
            if used + len(SUMMARY_CUT.encode()) > SUMMARY_LIMIT or path.read_text(
                encoding="utf-8"
            ).endswith(SUMMARY_CUT):
                return
            text = SUMMARY_CUT
        self._append(path, text, "step summary")

    def outputs(self, values: Mapping[str, Any]) -> None:
        """Step outputs: strings as they are, None as "", anything else as JSON."""
        if not (self.github.enabled and self.github.output_path):
            return
        entries = []
        for name, value in values.items():
            if value is None:
                text = ""
            elif isinstance(value, str):
                text = value
            else:
                text = json.dumps(to_jsonable(value), ensure_ascii=False)
            entries.append(GitHub.output_entry(name, self.scrub(text)))
        self._append(Path(self.github.output_path), "".join(entries), "step outputs")

    def _append(self, path: Path, text: str, what: str) -> None:
        """Append to a GitHub file; a full disk or the file size limit there must not
        hide the error being reported, so it is said and the run goes on."""
        try:
            with path.open("a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as err:
            self._err(f"Warning: could not write the GitHub {what} {path}: {err.strerror}")


def error_payload(err: D1DeployError, held: Any) -> dict[str, Any]:
    """The one JSON object of a failed run: the error, and the report it carries (else
    the report the command had rendered before failing, `held`)."""
    report = err.report
    return {
        "ok": False,
        "error": {
            "type": type(err).__name__,
            "message": err.message,
            "hint": err.hint,
            "file": err.file,
            "line": err.line,
            "exit_code": err.exit_code,
            # What a refusal found: the prechecks with their rows, lint findings,
            # the schema's differences.
            **{
                key: to_jsonable(found)
                for key in ("results", "findings", "schema")
                if (found := getattr(err, key, None))
            },
        },
        "report": to_jsonable(held if report is None else report),
    }


def cell(value: Any) -> str:
    """How a SQL value reads in a table: NULL, X'hex' for BLOBs."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    return str(value)


def md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table for the GitHub step summary."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_escape(cell(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines)
