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

import dataclasses
import enum
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from d1deploy.errors import D1DeployError

REDACTED = "[redacted]"


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
    """The GitHub Actions side channels: step summary, step outputs, annotations."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.enabled = environ.get("GITHUB_ACTIONS") == "true"
        self.summary_path = environ.get("GITHUB_STEP_SUMMARY") or None
        self.output_path = environ.get("GITHUB_OUTPUT") or None

    @staticmethod
    def escape_data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    @staticmethod
    def escape_property(text: str) -> str:
        return GitHub.escape_data(text).replace(":", "%3A").replace(",", "%2C")


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
    ) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.github = GitHub(environ or {})
        self._secrets: list[str] = []
        self._json_written = False

    # -- secrets ---------------------------------------------------------------
    def add_secret(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    # -- people (stderr) ----------------------------------------------------------
    def _err(self, text: str) -> None:
        self.stderr.write(self.scrub(text) + "\n")
        self.stderr.flush()

    def info(self, text: str) -> None:
        self._err(text)

    def detail(self, text: str) -> None:
        """Shown only with --verbose."""
        if self.verbose:
            self._err(text)

    def warn(self, text: str) -> None:
        self._err(f"Warning: {text}")
        if self.github.enabled:
            self._err(f"::warning::{GitHub.escape_data(text)}")

    def error(self, err: D1DeployError) -> None:
        """Report a failure: one sentence, where, what to do next."""
        self._err(f"Error: {err}")
        if err.hint:
            self._err(f"  hint: {err.hint}")
        if self.github.enabled:
            props = ""
            if err.file:
                props = f" file={GitHub.escape_property(err.file)}"
                if err.line is not None:
                    props += f",line={err.line}"
            message = err.message + (f" ({err.hint})" if err.hint else "")
            self._err(f"::error{props}::{GitHub.escape_data(message)}")
        if self.json_mode:
            self.json(
                {
                    "ok": False,
                    "error": {
                        "type": type(err).__name__,
                        "message": err.message,
                        "hint": err.hint,
                        "file": err.file,
                        "line": err.line,
                        "exit_code": err.exit_code,
                    },
                    "report": to_jsonable(getattr(err, "report", None)),
                }
            )
        self.summary(
            f"### d1deploy failed\n\n{_md_escape(str(err))}\n"
            + (f"\n{_md_escape(err.hint)}\n" if err.hint else "")
        )

    # -- data (stdout) --------------------------------------------------------------
    def json(self, payload: Mapping[str, Any]) -> None:
        """Exactly one JSON object per run on stdout."""
        if self._json_written:
            return
        self._json_written = True
        text = json.dumps(to_jsonable(payload), indent=2, ensure_ascii=False)
        self.stdout.write(self.scrub(text) + "\n")
        self.stdout.flush()

    def print(self, text: str = "") -> None:
        """Data for people who asked for it (tables, lists) on stdout."""
        self.stdout.write(self.scrub(text) + "\n")
        self.stdout.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A plain aligned table on stdout (no colours: it is data, meant to be piped)."""
        cells = [[_cell(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for n, row in enumerate(cells):
            self.print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                self.print("  ".join("-" * w for w in widths))

    # -- GitHub ---------------------------------------------------------------------
    def summary(self, markdown: str) -> None:
        if self.github.enabled and self.github.summary_path:
            with open(self.github.summary_path, "a", encoding="utf-8") as fh:
                fh.write(self.scrub(markdown).rstrip() + "\n\n")

    def outputs(self, values: Mapping[str, Any]) -> None:
        if not (self.github.enabled and self.github.output_path):
            return
        with open(self.github.output_path, "a", encoding="utf-8") as fh:
            for key, value in values.items():
                text = value if isinstance(value, str) else json.dumps(to_jsonable(value))
                text = self.scrub(text)
                if "\n" in text:
                    fh.write(f"{key}<<D1DEPLOY_EOF\n{text}\nD1DEPLOY_EOF\n")
                else:
                    fh.write(f"{key}={text}\n")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    return str(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table for the GitHub step summary."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_escape(_cell(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines)
