"""Precheck and verify files: their format, and running their checks safely.

A check file holds SQL statements, each optionally preceded by `-- check: LABEL` and
`-- expect: FORM` comment lines. Whether a statement reads or writes is SQLite's
judgement: it is compiled on a schema-only copy of the database it will meet
(`lint.SchemaModel`, see `d1sqlite`), and a statement SQLite cannot compile, or a pragma
outside `d1sqlite.READ_PRAGMAS` (or with a value), is refused at its file:line before
anything runs. Reads run batched, held to being reads by the backend (`Backend.run`'s
`read_only`). A statement that writes is a *probe*: it never takes effect. On a database
proven to discard aborted batches it runs in a batch that is forced to abort; elsewhere
it runs on an in-memory SQLite copy of the live schema. This module owns that proof and
its memory (`_d1deploy_meta`, `_d1deploy_scratch`). Reads that run inside a
migration's own request, as assertions, are `assertions.py`.

Why ~670 lines: the file format, SQLite's judgement of each statement and running them
are one idea, and the write probes (their proof, the shadow copy) are judged by the
same `judge` and chosen by `run_checks`: splitting them out (`probes.py`) would need
the check types in a third module to keep imports one way. Worth doing when the probes
grow.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from d1deploy import d1sqlite, errors, guard, sqlsplit, suggest
from d1deploy.backend import Backend, QueryResult, SqlValue, Statement
from d1deploy.lint import Finding, SchemaModel

ROW_SAMPLE = 10
"""How many offending rows a failed row expectation keeps."""

META_TABLE = "_d1deploy_meta"
SCRATCH_TABLE = "_d1deploy_scratch"
PROOF_KEY = "aborted_batches_discarded"
PROBE_ABORT = "probe rolled back"
_PROOF_ABORT = "proof of aborted batches"

EXPECT_FORMS = (
    "no rows | rows = N | rows >= N | rows <= N | value = LITERAL (42, 1.5, 'text', NULL)"
    " | error | error ~ TEXT"
)

ExpectKind = Literal["succeeds", "no_rows", "rows", "value", "error"]
RowsOp = Literal["=", ">=", "<="]


@dataclass(frozen=True)
class Expectation:
    """What a check statement must do."""

    kind: ExpectKind
    op: RowsOp | None = None
    count: int | None = None
    value: SqlValue = None
    error_text: str | None = None

    def describe(self) -> str:
        if self.kind == "succeeds":
            return "succeeds"
        if self.kind == "no_rows":
            return "no rows"
        if self.kind == "rows":
            return f"rows {self.op} {self.count}"
        if self.kind == "value":
            return f"value = {sql_literal(self.value)}"
        return f"error ~ {self.error_text}" if self.error_text else "error"

    @property
    def reads_rows(self) -> bool:
        return self.kind in ("no_rows", "rows", "value")


@dataclass(frozen=True)
class Check:
    """One statement of a check file and what it must do."""

    label: str
    file: str
    line: int
    sql: str
    expect: Expectation
    writes: bool
    columns: tuple[str, ...] | None = None
    """The columns it answers with, when it is a read expecting rows or a value that can
    stand as a subquery: then it may run inside a migration's own batch (`in_batch`)."""

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class CheckResult:
    """What one check did. `rows` holds up to ROW_SAMPLE offending rows.

    `judged` is False for a probe that `plan` could only run on a schema-only copy and
    that did not meet its expectation there: its outcome depends on rows the copy does
    not have, so `migrate` judges it on the database; it is neither passed nor failed."""

    check: Check
    ok: bool
    outcome: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[SqlValue, ...], ...] = ()
    probe: Literal["abort", "shadow"] | None = None
    judged: bool = True

    @property
    def failed(self) -> bool:
        return not self.ok and self.judged


# --- the file format ----------------------------------------------------------------

_DIRECTIVE = re.compile(r"--\s*(check|expect)\b\s*(:?)\s*(.*?)\s*$", re.IGNORECASE)
_ROWS = re.compile(r"rows\s*(>=|<=|=)\s*(\d+)", re.IGNORECASE)
_VALUE = re.compile(r"value\s*=\s*(.+)", re.IGNORECASE)
_ERROR = re.compile(r"error(?:\s*~\s*(.*))?", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_TEXT = re.compile(r"'((?:[^']|'')*)'")


def parse_expectation(text: str) -> Expectation | None:
    """The expectation written after `-- expect:`, or None when it is not a valid form."""
    form = text.strip()
    if re.fullmatch(r"no\s+rows", form, re.IGNORECASE):
        return Expectation("no_rows")
    if m := _ROWS.fullmatch(form):
        op: RowsOp = ">=" if m[1] == ">=" else "<=" if m[1] == "<=" else "="
        return Expectation("rows", op=op, count=int(m[2]))
    if m := _VALUE.fullmatch(form):
        literal = m[1].strip()
        if literal.upper() == "NULL":
            return Expectation("value", value=None)
        if _INTEGER.fullmatch(literal):
            return Expectation("value", value=int(literal))
        if _FLOAT.fullmatch(literal):
            return Expectation("value", value=float(literal))
        if t := _TEXT.fullmatch(literal):
            return Expectation("value", value=t[1].replace("''", "'"))
        return None
    if m := _ERROR.fullmatch(form):
        if m[1] is None:
            return Expectation("error")
        return Expectation("error", error_text=m[1].strip()) if m[1].strip() else None
    return None


def parse_check_file(
    path: Path, *, schema: SchemaModel, display_name: str | None = None, strict: bool = True
) -> list[Check]:
    """Read a precheck/verify file into its checks, judged on `schema`, the schema the
    checks will meet; errors.InputError names file:line.

    `strict`: `schema` is what the migrations will leave, so a statement naming what it
    lacks is a mistake in the file. Without it (`verify`, where `schema` is the database
    as it is, and the database is what is under test), such a statement runs as a probe
    and the database's own error is its outcome."""
    name = display_name or str(path)
    text = sqlsplit.read_sql_file(path, display_name=name)
    return parse_checks(text, file=name, schema=schema, strict=strict)


def parse_checks(text: str, *, file: str, schema: SchemaModel, strict: bool = True) -> list[Check]:
    """Parse check-file text (see parse_check_file)."""
    checks: list[Check] = []
    for chunk, label, expectation in _statements(text, file):
        judged = _classify(chunk.sql, expectation, schema, strict=strict)
        if judged.problem is not None:
            _, message, hint = judged.problem
            raise errors.InputError(message, hint=hint, file=file, line=chunk.line)
        checks.append(
            Check(
                label=label or _default_label(chunk.sql),
                file=file,
                line=chunk.line,
                sql=chunk.sql,
                expect=expectation,
                writes=judged.writes,
                columns=schema.result_columns(chunk.sql)
                if expectation.reads_rows and not judged.writes
                else None,
            )
        )
    return checks


def lint_check_file(
    path: Path, *, schema: SchemaModel, display_name: str | None = None
) -> list[Finding]:
    """What `lint` says of a precheck/verify file: every problem that would refuse it
    (errors), and every statement that writes, which runs as a probe (notes)."""
    name = display_name or str(path)
    try:
        entries = _statements(sqlsplit.read_sql_file(path, display_name=name), name)
    except errors.InputError as err:
        return [Finding("error", "input-error", err.message, err.file, err.line, err.hint)]
    findings: list[Finding] = []
    for chunk, _, expectation in entries:
        judged = _classify(chunk.sql, expectation, schema, strict=True)
        if judged.problem is not None:
            code, message, hint = judged.problem
            if code != "check-compile" or schema.known or judged.syntax:
                findings.append(Finding("error", code, message, name, chunk.line, hint))
        elif judged.writes:
            findings.append(
                Finding(
                    "note",
                    "probe",
                    f"this statement writes ({judged.why}): it runs as a probe, in a batch"
                    " forced to abort or on a schema-only copy, and never takes effect",
                    name,
                    chunk.line,
                    "Nothing to do if it tests that a write is refused or accepted; a check"
                    " that should only read must not write.",
                )
            )
    return findings


def _statements(text: str, file: str) -> list[tuple[sqlsplit.Chunk, str | None, Expectation]]:
    """Each statement of check-file text with its label and expectation (the format,
    before SQLite's judgement)."""
    entries: list[tuple[sqlsplit.Chunk, str | None, Expectation]] = []
    for chunk in sqlsplit.split_chunks(sqlsplit.normalize_line_endings(text), file=file):
        label, expect = _directives(chunk, file)
        if chunk.sql in ("", ";"):
            if label is not None or expect is not None:
                raise errors.InputError(
                    "a `-- check:` or `-- expect:` line has no statement after it",
                    hint="put the SQL statement the check runs right below its comment lines",
                    file=file,
                    line=min(d[0] for d in (label, expect) if d is not None),
                )
            continue
        expectation = parse_expectation(expect[1]) if expect else Expectation("succeeds")
        if expectation is None:
            assert expect is not None
            raise errors.InputError(
                f"unknown expectation `{expect[1]}`",
                hint=f"write `-- expect: FORM` with FORM one of: {EXPECT_FORMS}",
                file=file,
                line=expect[0],
            )
        entries.append((chunk, label[1] if label and label[1] else None, expectation))
    return entries


@dataclass(frozen=True)
class _Judged:
    """SQLite's judgement of one check statement: whether it writes (and why), or the
    problem (lint code, message, hint) that refuses it."""

    writes: bool = False
    why: str = ""
    problem: tuple[str, str, str] | None = None
    syntax: bool = False


_PRAGMA_HINT = (
    f"a check file may only read pragmas: {', '.join(sorted(d1sqlite.INTROSPECTION_PRAGMAS))}"
    " (with the table or index they describe) and, without a value,"
    f" {', '.join(sorted(d1sqlite.READABLE_SETTINGS))}; a pragma that sets something would"
    " outlive the check (D1 keeps its connection)"
)


def _classify(sql: str, expect: Expectation, schema: SchemaModel, *, strict: bool) -> _Judged:
    try:
        compiled = schema.compile(sql)
    except d1sqlite.CompileError as exc:
        if not exc.syntax and (expect.kind == "error" or not strict):
            # It names something the schema lacks, which it expects (or which the
            # database under test may have): only running it can tell, so it runs as a
            # probe, never as a read SQLite has not judged.
            return _Judged(writes=True, why=f"SQLite cannot compile it here: {exc}")
        return _Judged(
            problem=(
                "check-compile",
                f"SQLite cannot compile this statement on the schema it will meet: {exc}",
                "fix the statement; if it must fail that way, say so with `-- expect: error ~"
                " TEXT`",
            ),
            syntax=exc.syntax,
        )
    pragmas = [a for a in compiled.write_actions if a.is_pragma]
    if pragmas:
        return _Judged(
            problem=(
                "check-pragma",
                f"`{pragmas[0].describe()}` is refused in a check file",
                _PRAGMA_HINT,
            )
        )
    if compiled.writes and expect.reads_rows:
        return _Judged(
            problem=(
                "check-expect",
                f"a statement that writes ({compiled.describe_write()}) cannot expect"
                f" `{expect.describe()}`",
                "a write runs as a probe that is always rolled back, so its rows are never"
                " seen: expect `error`, `error ~ TEXT`, or nothing (it must succeed)",
            )
        )
    return _Judged(writes=compiled.writes, why=compiled.describe_write() if compiled.writes else "")


def _directives(
    chunk: sqlsplit.Chunk, file: str
) -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """The `-- check:` and `-- expect:` lines before a statement, with their lines."""
    found: dict[str, tuple[int, str]] = {}
    for line, raw in enumerate(chunk.prelude.splitlines(), start=chunk.prelude_line):
        m = _DIRECTIVE.fullmatch(raw.strip())
        if not m:
            continue
        key, colon, value = m[1].lower(), m[2], m[3]
        if not colon:
            if key == "check":
                continue  # an ordinary comment that happens to start with "check"
            raise errors.InputError(
                "`-- expect` needs a colon",
                hint=f"write `-- expect: FORM` with FORM one of: {EXPECT_FORMS}",
                file=file,
                line=line,
            )
        if key in found:
            raise errors.InputError(
                f"a second `-- {key}:` for the same statement (first at line {found[key][0]})",
                hint=f"give each statement at most one `-- {key}:` line",
                file=file,
                line=line,
            )
        found[key] = (line, value)
    return found.get("check"), found.get("expect")


def _default_label(sql: str) -> str:
    first = next((ln.strip() for ln in sql.splitlines() if ln.strip()), sql.strip())
    return first if len(first) <= 60 else first[:57] + "..."


# --- judging ------------------------------------------------------------------------


def sql_literal(value: SqlValue) -> str:
    """A value written as SQL (how outcomes and expectations show values)."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return "X'" + value.hex().upper() + "'"
    return repr(value)


def _same_value(actual: SqlValue, expected: SqlValue) -> bool:
    numeric = (int, float)
    if isinstance(actual, numeric) and isinstance(expected, numeric):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def _rows_outcome(n: int) -> str:
    return "no rows" if n == 0 else "1 row" if n == 1 else f"{n} rows"


def judge(
    check: Check,
    *,
    result: QueryResult | None = None,
    error: str | None = None,
    probe: Literal["abort", "shadow"] | None = None,
    count: int | None = None,
) -> CheckResult:
    """Compare what a statement did (a result, or an error message) with its expectation;
    `count`: how many rows it found, when `result` holds only a sample of them."""
    exp = check.expect
    if error is not None:
        wanted = exp.kind == "error" and (
            exp.error_text is None or exp.error_text.lower() in error.lower()
        )
        return CheckResult(check, wanted, f"error: {error}", probe=probe)
    if exp.kind == "error":
        return CheckResult(check, False, _succeeded(result, probe), probe=probe)
    if result is None or exp.kind == "succeeds":
        return CheckResult(check, True, _succeeded(result, probe), probe=probe)
    n = len(result.rows) if count is None else count
    if exp.kind == "value":
        if n == 0:
            ok, outcome = False, "no rows"
        else:
            actual = result.rows[0][0] if result.rows[0] else None
            ok, outcome = _same_value(actual, exp.value), f"value {sql_literal(actual)}"
    elif exp.kind == "no_rows":
        ok, outcome = n == 0, _rows_outcome(n)
    else:
        assert exp.count is not None
        target = exp.count
        ok = n == target if exp.op == "=" else n >= target if exp.op == ">=" else n <= target
        outcome = _rows_outcome(n)
    if ok:
        return CheckResult(check, True, outcome, probe=probe)
    return CheckResult(check, False, outcome, result.columns, result.rows[:ROW_SAMPLE], probe)


def _succeeded(result: QueryResult | None, probe: Literal["abort", "shadow"] | None) -> str:
    if probe == "abort":
        return "succeeded (probe rolled back)"
    if probe == "shadow":
        return "succeeded (probe ran on a schema-only copy)"
    return "succeeded" if result is None else f"succeeded, {_rows_outcome(len(result.rows))}"


# --- running ------------------------------------------------------------------------


def run_checks(
    backend: Backend, checks: Sequence[Check], *, allow_writes_proof: bool = True
) -> list[CheckResult]:
    """Run checks and judge them, in order. Failed checks are results, not exceptions;
    only infrastructure errors (Unavailable, AuthError...) raise, and `ReadWrote` when a
    read turns out to write: the run stops there, nothing is sent again.

    Reads go in as few read-only requests as possible; remotely a Time Travel bookmark
    is taken first, so that a read that wrote can be undone. Write probes use
    forced-abort batches on a database proven, in this run, to discard them; without
    `allow_writes_proof` (`plan`, which writes nothing at all), or where the proof fails,
    they run on a schema-only in-memory copy. In `plan` a probe that fails there is left
    unjudged (`CheckResult.judged`): the copy lacks the rows `migrate` will run it on.
    """
    results: dict[int, CheckResult] = {}
    reads = [i for i, c in enumerate(checks) if not c.writes]
    before = backend.bookmark() if reads and backend.is_remote else None
    batched = [i for i in reads if checks[i].expect.kind != "error"]
    # A statement expected to fail would fail the whole batch, so it runs alone.
    alone = [i for i in reads if checks[i].expect.kind == "error"]
    if batched:
        try:
            answers = _read(backend, [checks[i] for i in batched], before)
        except errors.SqlError:
            alone = sorted(alone + batched)
        else:
            for i, answer in zip(batched, answers, strict=True):
                results[i] = judge(checks[i], result=answer)
    for i in alone:
        try:
            answer = _read(backend, [checks[i]], before)[0]
        except errors.SqlError as exc:
            results[i] = judge(checks[i], error=exc.message)
        else:
            results[i] = judge(checks[i], result=answer)

    probes = [i for i, c in enumerate(checks) if c.writes]
    if probes:
        if allow_writes_proof and _proven_this_run(backend):
            for i in probes:
                results[i] = _abort_probe(backend, checks[i])
        else:
            shadow = _Shadow.build(backend)
            try:
                for i in probes:
                    result = shadow.probe(checks[i])
                    if not allow_writes_proof and not result.ok:
                        result = _judged_later(result)
                    results[i] = result
            finally:
                shadow.close()
    return [results[i] for i in range(len(checks))]


def in_batch(check: Check) -> bool:
    """Whether `check` can run inside a migration's batch as an assertion
    (`assertions.py`): a read expecting rows or a value, which can stand as a subquery
    (`Check.columns`)."""
    return check.columns is not None and not check.writes and check.expect.reads_rows


def _judged_later(result: CheckResult) -> CheckResult:
    """`plan`'s word on a probe the schema-only copy could not pass: the rows `migrate`
    runs it against may well change the outcome, so it is not a refusal."""
    why = result.outcome.removeprefix("not run: ")
    if why == result.outcome:
        why = f"on a schema-only copy, without rows: {why}"
    return replace(
        result, outcome=f"judged at deploy time ({why})", columns=(), rows=(), judged=False
    )


def _read(backend: Backend, checks: Sequence[Check], before: str | None) -> list[QueryResult]:
    """Send checks that read, held to it by the backend. A read that wrote stops the run
    naming it, with `before` (remotely, a bookmark taken before any read was sent)."""
    try:
        return backend.run([_statement(c) for c in checks], read_only=True)
    except errors.ReadWrote as exc:
        if not exc.changed or before is None:
            raise
        raise errors.ReadWrote(
            f"{exc.message}; bookmark from before the checks ran: {before}",
            changed=True,
            index=exc.index,
            bookmark=before,
            hint=f"see what it changed, then put the database back with"
            f" `{suggest.restore(before)}` (writes made since the checks"
            " started are undone too)",
            file=exc.file,
            line=exc.line,
        ) from exc


def _statement(check: Check) -> Statement:
    return Statement(check.sql, file=check.file, line=check.line)


def _abort(message: str) -> Statement:
    return Statement(guard.abort_if("1", guard.quote_text(message)))


def _abort_probe(backend: Backend, check: Check) -> CheckResult:
    try:
        backend.run([_statement(check), _abort(PROBE_ABORT)])
    except errors.SqlError as exc:
        if guard.parse_abort(exc.message) == PROBE_ABORT:
            return judge(check, probe="abort")
        return judge(check, error=exc.message, probe="abort")
    # The database committed a batch whose last statement cannot succeed: the probe
    # has taken effect, and the proof recorded for this database is wrong.
    raise errors.ChangeFailed(
        f"the write probe at {check.location} took effect: its forced abort did not fail",
        hint=f"inspect what `{check.label}` wrote and undo it by hand, then delete the row"
        f" key = '{PROOF_KEY}' from {META_TABLE} so the proof runs again",
        file=check.file,
        line=check.line,
    )


_CREATE_META = (
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT, at TEXT)"
)
_CREATE_SCRATCH = f"CREATE TABLE IF NOT EXISTS {SCRATCH_TABLE} (marker TEXT PRIMARY KEY, at TEXT)"


_PROVEN: weakref.WeakKeyDictionary[Backend, bool] = weakref.WeakKeyDictionary()


def _proven_this_run(backend: Backend) -> bool:
    """Prove once per run (per backend object) that aborted batches leave nothing.

    The stored proof is a record, not a promise: D1 does not document REST batch
    atomicity, so what held yesterday is proven again before a probe relies on it today.
    Runs without write probes pay nothing; runs with them pay three requests."""
    if backend not in _PROVEN:
        _PROVEN[backend] = prove_aborted_batches(backend)
    return _PROVEN[backend]


def read_proof(backend: Backend) -> bool | None:
    """The remembered proof for this database: True, False, or None when never run."""
    exists = backend.run(
        [
            Statement(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                (META_TABLE,),
            )
        ],
        read_only=True,
    )[0].first_value()
    if not exists:
        return None
    value = backend.run(
        [Statement(f"SELECT value FROM {META_TABLE} WHERE key = ?", (PROOF_KEY,))],
        read_only=True,
    )[0].first_value()
    return None if value is None else value == "true"


def prove_aborted_batches(backend: Backend) -> bool:
    """Prove on d1deploy's scratch table that a batch forced to abort leaves nothing
    behind, remove any trace the attempt left, and remember the answer in _d1deploy_meta.
    """
    marker = uuid.uuid4().hex
    backend.run([Statement(_CREATE_META), Statement(_CREATE_SCRATCH)])
    insert = Statement(
        f"INSERT INTO {SCRATCH_TABLE} (marker, at) VALUES (?, datetime('now'))", (marker,)
    )
    try:
        backend.run([insert, _abort(_PROOF_ABORT)])
        aborted = False
    except errors.SqlError as exc:
        aborted = guard.parse_abort(exc.message) == _PROOF_ABORT
    left = backend.run(
        [Statement(f"SELECT count(*) FROM {SCRATCH_TABLE} WHERE marker = ?", (marker,))],
        read_only=True,
    )[0].first_value()
    discarded = aborted and left == 0
    remember = [
        Statement(
            f"INSERT INTO {META_TABLE} (key, value, at) VALUES (?, ?, datetime('now'))"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, at = excluded.at",
            (PROOF_KEY, "true" if discarded else "false"),
        )
    ]
    if left:
        remember.insert(0, Statement(f"DELETE FROM {SCRATCH_TABLE} WHERE marker = ?", (marker,)))
    backend.run(remember)
    return discarded


# --- shadow probes ------------------------------------------------------------------

_SCHEMA_SQL = (
    "SELECT type, name, sql FROM sqlite_master"
    " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    " AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'"
    " ORDER BY type <> 'table', rowid"
)


class _Shadow:
    """An in-memory SQLite database holding the live schema (no rows), where write
    probes run inside a transaction that is always rolled back."""

    def __init__(self, db: sqlite3.Connection | None, problem: str | None) -> None:
        self._db = db
        self._problem = problem

    @classmethod
    def build(cls, backend: Backend) -> _Shadow:
        rows = backend.run([Statement(_SCHEMA_SQL)], read_only=True)[0].rows
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")
        for kind, name, sql in (tuple(str(v) for v in row) for row in rows):
            try:
                db.execute(sql)
            except sqlite3.Error as exc:
                # A virtual table creates its own shadow tables, listed again after it.
                if kind == "table" and "already exists" in str(exc):
                    continue
                db.close()
                return cls(None, f"cannot copy {kind} {name} locally: {_d1_message(exc)}")
        return cls(db, None)

    def probe(self, check: Check) -> CheckResult:
        if self._db is None:
            return CheckResult(check, False, f"not run: {self._problem}", probe="shadow")
        self._db.execute("BEGIN")
        try:
            self._db.execute(check.sql).fetchall()
        except sqlite3.Error as exc:
            return judge(check, error=_d1_message(exc), probe="shadow")
        finally:
            # Some errors end the transaction by themselves.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        return judge(check, probe="shadow")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _d1_message(exc: sqlite3.Error) -> str:
    """SQLite's message with the result class D1 appends (and the extended code, as D1
    sometimes adds it), e.g. `...: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_CHECK)`."""
    name = getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"
    code = "_".join(name.split("_")[:2])
    return f"{exc}: {code}" + (f" (extended: {name})" if name != code else "")
