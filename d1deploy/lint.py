"""D1-specific static checks of SQL statements: no database needed.

Pattern checks catch what D1 refuses or ignores (transaction control, `PRAGMA
foreign_keys = OFF`, the 100 KB and 100-parameter limits, `ADD COLUMN ... NOT NULL`
without a default). Then every statement is dry-run on a `SchemaModel`, an in-memory
SQLite holding only the schema: SQLite's own parser finds syntax errors at the
statement's file:line, schema changes carry over to later statements and files, and
a dropped table's `ON DELETE CASCADE` children are read from the model.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from d1deploy import d1sqlite, limits, sqlsplit
from d1deploy.backend import SqlValue, Statement
from d1deploy.errors import InputError

Severity = Literal["error", "warning", "note"]
"""`note`: nothing wrong, but a reviewer should see it (a check that runs as a probe)."""

_FOREIGN_KEYS_OFF = re.compile(
    r"PRAGMA\s+(?:\w+\s*\.\s*)?foreign_keys\s*(?:=|\()\s*"
    r"""(['"]?)(?:off|false|no|0)\1(?!\w)""",
    re.IGNORECASE,
)
_ADD_COLUMN = re.compile(
    r"ALTER\s+TABLE\s+(?:\S+\s*\.\s*)?\S+\s+ADD\s+(?:COLUMN\s+)?(?P<column>.*)",
    re.IGNORECASE | re.DOTALL,
)
# The table an ALTER TABLE names, read from the statement as written (quotes included).
_IDENT = r'"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[^\s.("`\[]+'
_ALTER_TABLE = re.compile(
    rf"ALTER\s+TABLE\s+(?:(?:{_IDENT})\s*\.\s*)?(?P<table>{_IDENT})", re.IGNORECASE
)
_PARENS = re.compile(r"\([^()]*\)")
_NOT_NULL = re.compile(r"\bNOT\s+NULL\b", re.IGNORECASE)
# A DEFAULT other than NULL, or a generated column's AS (its expression is its default).
_HAS_DEFAULT = re.compile(r"\bDEFAULT\s+(?!NULL\b)\S|\bAS\b", re.IGNORECASE)
_SYNTAX = re.compile(r"syntax error|incomplete input|unrecognized token")
_UNKNOWN_OBJECT = re.compile(r"no such (?:table|column|index|view|trigger)\b")

# The dry run stops a statement after this many SQLite VM steps (in thousands), so a
# runaway recursive CTE cannot hang the lint.
_STEPS_PER_TICK = 1000
_MAX_TICKS = 20_000


@dataclass(frozen=True)
class Finding:
    """One problem in one statement."""

    severity: Severity
    code: str
    message: str
    file: str | None
    line: int | None
    hint: str | None
    table: str | None = None
    """The table the finding is about, where one is (`not-null-without-default`)."""

    @property
    def location(self) -> str | None:
        """`file:line` (or just `file`) when the finding points into a file."""
        if self.file is None:
            return None
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True)
class DryRun:
    """What running one statement on a `SchemaModel` did: SQLite's error, if any, and
    the tables it dropped that other tables reference with ON DELETE CASCADE."""

    error: sqlite3.Error | None = None
    cascades: dict[str, tuple[str, ...]] = field(default_factory=dict)


class SchemaModel:
    """An in-memory SQLite with a database's schema and no rows, to dry-run statements.

    A statement that changes the schema changes the model (so lint the files of a
    migration run in order against one model); rows a statement writes are discarded.
    `known` says the model started from a real database's schema, so a missing table
    is a real problem rather than one created before the statements being linted.
    """

    def __init__(self, *, known: bool = False) -> None:
        self.known = known
        self._db = sqlite3.connect(":memory:", isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")  # as on D1
        self._ticks = 0
        self._db.set_progress_handler(self._tick, _STEPS_PER_TICK)
        self._version = self._schema_version()
        self._tables = self._table_names()

    @classmethod
    def from_sql(cls, creates: Iterable[str | None]) -> SchemaModel:
        """A model of the database whose `sqlite_master.sql` values are `creates`."""
        model = cls(known=True)
        for sql in creates:
            if not sql:
                continue
            try:
                model._db.execute(sql)
            except sqlite3.Error:
                # Internal tables (sqlite_sequence, FTS shadow tables) come with their
                # owners and cannot be created by hand; a statement touching something
                # this SQLite cannot replay gets a dry-run warning later.
                continue
        model._version = model._schema_version()
        model._tables = model._table_names()
        return model

    def tables(self) -> tuple[str, ...]:
        """The model's tables (SQLite's internal ones left out)."""
        return self._tables

    def compile(self, sql: str) -> d1sqlite.Compiled:
        """SQLite's judgement of `sql` on this schema, without running it.

        :raises d1sqlite.CompileError: SQLite cannot compile it here.
        """
        self._ticks = 0
        return d1sqlite.compile_statement(self._db, sql)

    def result_columns(self, sql: str) -> tuple[str, ...] | None:
        """The columns `sql` answers with when it can stand as a subquery
        (`SELECT * FROM (sql)`: a SELECT, VALUES or WITH that only reads), else None.
        Run on this schema-only model, which holds no rows: nothing is read or written."""
        body = sql.rstrip()
        body = body[:-1] if body.endswith(";") else body
        wrapped = f"SELECT * FROM (\n{body}\n) LIMIT 0"
        try:
            if self.compile(wrapped).writes:
                return None
            self._ticks = 0
            cursor = self._db.execute(wrapped)
        except (d1sqlite.CompileError, sqlite3.Error):
            return None
        return tuple(d[0] for d in cursor.description or ())

    def compiles(self, sql: str) -> bool:
        try:
            self.compile(sql)
        except d1sqlite.CompileError:
            return False
        return True

    def dry_run(self, sql: str, params: Sequence[SqlValue] = ()) -> DryRun:
        """Run one statement: keep its schema changes, discard the rows it writes.

        Transaction control is not run (it would end the model's own transaction).
        """
        if sqlsplit.is_transaction_control(sql):
            return DryRun()
        before = self._tables
        self._db.execute("SAVEPOINT d1deploy_lint")
        try:
            self._ticks = 0
            self._db.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            self._undo()
            return DryRun(error=err)
        version = self._schema_version()
        if version == self._version:  # it wrote rows at most: forget them
            self._undo()
            return DryRun()
        self._db.execute("RELEASE d1deploy_lint")
        self._version, self._tables = version, self._table_names()
        remaining = {name.lower() for name in self._tables}
        dropped = [name for name in before if name.lower() not in remaining]
        cascades = {name: self.cascade_children(name) for name in dropped}
        return DryRun(cascades={name: kids for name, kids in cascades.items() if kids})

    def cascade_children(self, table: str) -> tuple[str, ...]:
        """Other tables whose foreign keys reference `table` with ON DELETE CASCADE."""
        rows = self._db.execute(
            "SELECT DISTINCT m.name FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f"
            " WHERE m.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE"
            " AND upper(f.on_delete) = 'CASCADE' AND m.name <> ?1 COLLATE NOCASE"
            " ORDER BY m.name",
            (table,),
        ).fetchall()
        return tuple(str(name) for (name,) in rows)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SchemaModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _undo(self) -> None:
        self._ticks = 0  # the rollback must not be interrupted too
        self._db.execute("ROLLBACK TO d1deploy_lint")
        self._db.execute("RELEASE d1deploy_lint")

    def _tick(self) -> int:
        self._ticks += 1
        return int(self._ticks > _MAX_TICKS)

    def _schema_version(self) -> int:
        return int(self._db.execute("PRAGMA schema_version").fetchone()[0])

    def _table_names(self) -> tuple[str, ...]:
        rows = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%'"
            " ESCAPE '\\' ORDER BY name"
        ).fetchall()
        return tuple(str(name) for (name,) in rows)


def lint_statements(
    statements: Sequence[Statement], *, schema: SchemaModel | None = None
) -> list[Finding]:
    """Check `statements` in order. `schema` (changed by the statements) is the schema
    they will meet; without it they start from an empty, unknown schema."""
    with SchemaModel() if schema is None else nullcontext(schema) as model:
        return [finding for st in statements for finding in _lint(st, model)]


def lint_files(paths: Sequence[Path], *, schema: SchemaModel | None = None) -> list[Finding]:
    """Lint SQL files in order, the schema evolving from one file to the next. A file
    that cannot be read or split is one `input-error` finding; the others still run."""
    findings: list[Finding] = []
    with SchemaModel() if schema is None else nullcontext(schema) as model:
        for path in paths:
            try:
                statements = sqlsplit.split(sqlsplit.read_sql_file(path), file=str(path))
            except InputError as err:
                findings.append(
                    Finding("error", "input-error", err.message, err.file, err.line, err.hint)
                )
                continue
            findings.extend(lint_statements(statements, schema=model))
    return findings


def _lint(st: Statement, model: SchemaModel) -> list[Finding]:
    found: list[Finding] = []

    def add(
        severity: Severity, code: str, message: str, hint: str, table: str | None = None
    ) -> None:
        found.append(Finding(severity, code, message, st.file, st.line, hint, table))

    if sqlsplit.is_transaction_control(st.sql):
        add(
            "error",
            "transaction-control",
            f"D1 refuses transaction control statements such as `{_head(st.sql)}`",
            "Remove it: each migration already runs as one batch.",
        )
        return found
    size = len(st.sql.encode("utf-8"))
    if size > limits.MAX_STATEMENT_BYTES:
        add(
            "error",
            "statement-too-big",
            f"the statement is {size:,} bytes; D1 refuses statements over"
            f" {limits.MAX_STATEMENT_BYTES:,} bytes (SQLITE_TOOBIG)",
            "Split it into several statements, for example fewer rows per INSERT.",
        )
    parameters = sqlsplit.count_parameters(st.sql)
    if parameters > limits.MAX_PARAMETERS:
        add(
            "error",
            "too-many-parameters",
            f"the statement binds {parameters} parameters; D1 allows at most "
            f"{limits.MAX_PARAMETERS}",
            "Split it into several statements.",
        )
    if _FOREIGN_KEYS_OFF.match(sqlsplit.strip_leading_comments(st.sql)):
        add(
            "warning",
            "foreign-keys-off",
            "`PRAGMA foreign_keys = OFF` has no effect on D1, which keeps foreign keys on",
            "Use `PRAGMA defer_foreign_keys = on` to check foreign keys only at the end of"
            " the migration (it does not stop ON DELETE CASCADE).",
        )
    if (table := _adds_not_null_without_default(st.sql)) is not None:
        # Fine on an empty table, which D1 accepts: `plan` and `migrate` count its rows.
        add(
            "warning",
            "not-null-without-default",
            f"ADD COLUMN ... NOT NULL without a non-NULL DEFAULT: SQLite refuses it when"
            f" {table} has rows (plan and migrate count them first)",
            "Give the column a DEFAULT, or drop NOT NULL, unless the table is always empty"
            " when this migration runs.",
            table,
        )

    run = model.dry_run(st.sql, st.params or (None,) * parameters)
    if run.error is not None and not any(f.severity == "error" for f in found):
        found.extend(_dry_run_findings(st, run.error, known=model.known))
    for table, children in run.cascades.items():
        names = ", ".join(children)
        add(
            "warning",
            "drop-cascade",
            f"dropping {table} deletes the rows of {names} that reference it"
            " (ON DELETE CASCADE; D1 keeps foreign keys on)",
            f"The row-loss guard will stop this migration. Copy the rows of {names} aside"
            f" and put them back after rebuilding {table} (`PRAGMA defer_foreign_keys = on`"
            " lets them wait, it does not stop the cascade), or declare"
            f" `-- d1deploy: allow-row-loss {' '.join(children)}` if losing them is intended.",
        )
    return found


def _dry_run_findings(st: Statement, error: sqlite3.Error, *, known: bool) -> list[Finding]:
    message = str(error)
    if _SYNTAX.search(message):
        return [
            Finding(
                "error",
                "syntax-error",
                f"SQLite cannot parse the statement: {message}",
                st.file,
                st.line,
                "Fix the SQL; SQLite names the first token it could not accept.",
            )
        ]
    if (
        (not known and _UNKNOWN_OBJECT.match(message))
        or message == "interrupted"
        # Depends on rows the live database has and the empty model lacks.
        or (isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in message)
    ):
        return []
    return [
        Finding(
            "warning",
            "dry-run",
            f"the statement fails on a copy of the schema: {message}",
            st.file,
            st.line,
            "It ran on an empty copy of the schema the earlier statements build; check"
            " it against the live database, whose schema may differ.",
        )
    ]


def _adds_not_null_without_default(sql: str) -> str | None:
    """The table, when `sql` adds a NOT NULL column without a non-NULL default to it."""
    stripped = sqlsplit.strip_leading_comments(sql)
    match = _ADD_COLUMN.match(sqlsplit.without_literals(stripped))
    if match is None:
        return None
    column = match["column"]
    # CHECK (...), DEFAULT (...) and REFERENCES t(...) hide their insides.
    while (flat := _PARENS.sub("_", column)) != column:
        column = flat
    if _NOT_NULL.search(column) is None or _HAS_DEFAULT.search(column) is not None:
        return None
    table = _ALTER_TABLE.match(stripped)
    if table is None:
        return None
    name = table["table"]
    if name[0] in '"`[':
        name = name[1:-1].replace('""', '"') if name[0] == '"' else name[1:-1]
    return name


def _head(sql: str) -> str:
    """The statement's first words, for messages."""
    words = sqlsplit.strip_leading_comments(sql).rstrip(";").split()
    return " ".join(words[:3])
