"""`exec`: run ad-hoc SQL from the command line or a file.

Small inputs go as one batch request (one item per statement, so triggers survive);
large files go through the import flow, which D1 applies all-or-nothing and which has no
request-size concerns. A statement over D1's per-statement limits (100 KB, 100 bound
parameters) is refused before anything is sent: neither route accepts it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from d1deploy import limits, lint, sqlsplit
from d1deploy.backend import Backend, ImportResult, QueryResult, SqlValue, Statement, locate
from d1deploy.errors import InputError, SqlError, UsageError


@dataclass(frozen=True)
class StatementOutcome:
    sql: str
    line: int | None
    result: QueryResult


@dataclass(frozen=True)
class ExecReport:
    database: str
    mode: str  # "batch" or "import"
    statements: tuple[StatementOutcome, ...] = ()
    imported: ImportResult | None = None

    @property
    def rows_read(self) -> int:
        if self.imported:
            return self.imported.rows_read
        return sum(s.result.rows_read for s in self.statements)

    @property
    def rows_written(self) -> int:
        if self.imported:
            return self.imported.rows_written
        return sum(s.result.rows_written for s in self.statements)

    @property
    def duration_ms(self) -> float:
        if self.imported:
            return self.imported.duration_ms
        return sum(s.result.duration_ms for s in self.statements)


def execute(
    backend: Backend,
    *,
    command: str | None = None,
    file: Path | None = None,
    params: tuple[SqlValue, ...] = (),
    notify: Callable[[str], None] | None = None,
) -> ExecReport:
    """Run `command` or `file` on `backend`.

    :raises UsageError: for `--param` with several statements, or nothing to run.
    :raises InputError: for a file that is not UTF-8 SQL.
    :raises SqlError: with file:line of the failing statement when it is known.
    """
    if file is not None:
        text = sqlsplit.read_sql_file(file)
        source = str(file)
    else:
        text = command or ""
        source = "--command"
    statements = sqlsplit.split(text, file=source)
    if not statements:
        raise UsageError(f"{source} contains no SQL statement", hint="give at least one statement")
    if params:
        if len(statements) != 1:
            raise UsageError(
                f"--param binds values to one statement, but {source} has {len(statements)}",
                hint="split the statements, or inline the values",
            )
        statements = [Statement(statements[0].sql, params, statements[0].file, statements[0].line)]

    _refuse_what_d1_refuses(statements)
    if file is not None and _needs_import(text, statements):
        return _import(backend, text, file, notify)

    try:
        results = backend.run(statements)
    except SqlError as err:
        raise locate(err, statements) from None
    return ExecReport(
        database=backend.info.name,
        mode="batch",
        statements=tuple(
            StatementOutcome(s.sql, s.line, r) for s, r in zip(statements, results, strict=True)
        ),
    )


def _refuse_what_d1_refuses(statements: list[Statement]) -> None:
    """Lint's errors (a syntax error, BEGIN/COMMIT, a statement over 100 KB, over 100
    parameters) would fail on D1 whichever way the SQL travels; say so before sending,
    naming the user's file:line (D1 does not say which statement of a batch failed)."""
    findings = [f for f in lint.lint_statements(statements) if f.severity == "error"]
    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise InputError(first.message + more, hint=first.hint, file=first.file, line=first.line)


def _needs_import(text: str, statements: list[Statement]) -> bool:
    return (
        len(text.encode()) > limits.BATCH_MAX_BYTES or len(statements) > limits.BATCH_MAX_STATEMENTS
    )


def _import(
    backend: Backend, text: str, file: Path, notify: Callable[[str], None] | None
) -> ExecReport:
    if notify and backend.is_remote:
        notify(
            "Large file: running it through D1's import flow. The database will not serve "
            "queries until the import finishes; it applies all or nothing."
        )
    # The import flow uploads exactly these bytes: send the normalised text, not the file.
    with tempfile.TemporaryDirectory(prefix="d1deploy-exec-") as tmp:
        path = Path(tmp) / "import.sql"
        path.write_text(sqlsplit.normalize_line_endings(text), encoding="utf-8")
        try:
            imported = backend.import_file(path, on_message=notify)
        except SqlError as err:
            # Name the user's file, never the temporary copy; its lines are the same.
            raise SqlError(
                err.message.replace(str(path), str(file)).replace(
                    f" {path.name} ", f" {file.name} "
                ),
                sqlite_code=err.sqlite_code,
                index=err.index,
                hint=err.hint,
                file=str(file),
                line=err.line,
            ) from None
    return ExecReport(database=backend.info.name, mode="import", imported=imported)
