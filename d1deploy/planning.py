"""The read-only side of the engine: status (applied, pending, drifted, missing, out of
order, and the live schema against the one the migrations leave: `schema.py`) and plan
(what `migrate` would do: statements, lint findings, row-loss guard, prechecks). Nothing
here writes to the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from d1deploy import checks, guard, ledger, lint, suggest
from d1deploy.backend import Backend, Statement
from d1deploy.checks import CheckResult
from d1deploy.discovery import Migration, discover, leading_number, order_findings, resolve
from d1deploy.errors import DriftDetected, InputError, PrecheckFailed, UsageError
from d1deploy.ledger import DbState
from d1deploy.project import Project
from d1deploy.schema import Difference, SchemaCheck, SchemaDrift, check_schema

# --- status --------------------------------------------------------------------------

State = Literal["applied", "pending", "missing"]


@dataclass(frozen=True)
class MigrationStatus:
    """One migration as the files and the ledger see it.

    `applied_sha256` is None for a migration applied by wrangler (or before d1deploy
    kept history): applied, checksum unknown, which is not drift.
    """

    name: str
    state: State
    number: int | None = None
    drifted: bool = False
    out_of_order: bool = False
    applied_at: str | None = None
    file_sha256: str | None = None
    applied_sha256: str | None = None
    actor: str | None = None
    bookmark_before: str | None = None


@dataclass(frozen=True)
class StatusReport:
    """`schema` compares the live schema with the one the applied migrations leave."""

    database: str
    table: str
    ledger_exists: bool
    migrations: tuple[MigrationStatus, ...]
    schema: SchemaCheck | None = None

    def _names(self, keep: Callable[[MigrationStatus], bool]) -> tuple[str, ...]:
        return tuple(m.name for m in self.migrations if keep(m))

    @property
    def applied(self) -> tuple[str, ...]:
        return self._names(lambda m: m.state == "applied")

    @property
    def pending(self) -> tuple[str, ...]:
        return self._names(lambda m: m.state == "pending")

    @property
    def missing(self) -> tuple[str, ...]:
        return self._names(lambda m: m.state == "missing")

    @property
    def drifted(self) -> tuple[str, ...]:
        return self._names(lambda m: m.drifted)

    @property
    def out_of_order(self) -> tuple[str, ...]:
        return self._names(lambda m: m.out_of_order)

    @property
    def schema_drift(self) -> tuple[Difference, ...]:
        return self.schema.differences if self.schema else ()

    def raise_for_verdict(self, *, allow_drift: bool = False, shown: bool = False) -> None:
        """Drift fails the command unless `allow_drift` (`refuse_drift`)."""
        if not allow_drift:
            refuse_drift(self, shown=shown)


def status_of(database: str, migrations: Sequence[Migration], state: DbState) -> StatusReport:
    applied = state.applied()
    known = {m.name for m in migrations}
    # Out of order: pending, yet wrangler's order puts it before an applied migration.
    last = max((i for i, m in enumerate(migrations) if m.name in applied), default=-1)
    rows: list[MigrationStatus] = []
    for i, m in enumerate(migrations):
        row = applied.get(m.name)
        if row is None:
            late = i < last
            rows.append(MigrationStatus(m.name, "pending", m.number, False, late, None, m.sha256))
            continue
        event = state.last_event(m.name)
        recorded = event.sha256 if event and event.event in ("apply", "baseline") else None
        rows.append(
            MigrationStatus(
                m.name,
                "applied",
                m.number,
                drifted=recorded is not None and recorded != m.sha256,
                applied_at=row.applied_at,
                file_sha256=m.sha256,
                applied_sha256=recorded,
                actor=event.actor if event else None,
                bookmark_before=event.bookmark_before if event else None,
            )
        )
    for row in state.ledger:
        if row.name not in known:
            event = state.last_event(row.name)
            rows.append(
                MigrationStatus(
                    row.name,
                    "missing",
                    leading_number(row.name),
                    applied_at=row.applied_at,
                    applied_sha256=event.sha256 if event else None,
                    actor=event.actor if event else None,
                    bookmark_before=event.bookmark_before if event else None,
                )
            )
    return StatusReport(
        database, state.table, state.has_ledger, tuple(rows), check_schema(migrations, state)
    )


def status(backend: Backend, project: Project) -> StatusReport:
    """Applied, pending, drifted, missing and out-of-order migrations. Read-only: on a
    database without a ledger everything is pending and nothing is created."""
    migrations = discover(project.migrations_dir, project.pattern)
    return status_of(backend.info.name, migrations, ledger.read_state(backend, project.table))


def refuse_drift(report: StatusReport, *, shown: bool = False) -> None:
    """`shown`: the report (with its schema differences) was already shown.

    :raises DriftDetected: when an applied migration's file changed since.
    :raises SchemaDrift: when the live schema is not the one the migrations leave.
    """
    if report.drifted:
        raise DriftDetected(
            f"applied migration(s) changed since they were applied: {', '.join(report.drifted)}",
            hint="restore the applied version of each file (put new changes in a new migration),"
            " or pass --allow-drift to go on anyway",
        )
    if report.schema is not None and report.schema_drift:
        raise SchemaDrift(report.schema, shown=shown)


# --- plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedMigration:
    """What applying one migration would do. `prechecks` are judged on the schema it
    will meet, `verifies` on the schema it leaves; `prechecks_wait` says its prechecks
    name what only the pending migrations before it create, so they run right before it
    instead of before anything changes."""

    name: str
    file: str
    statements: tuple[Statement, ...]
    findings: tuple[lint.Finding, ...]
    guarded_tables: tuple[str, ...]
    dropped_tables: tuple[str, ...]
    allowed_row_loss: tuple[str, ...]
    rollback_sql: str | None = field(default=None, repr=False)
    prechecks: tuple[checks.Check, ...] = ()
    verifies: tuple[checks.Check, ...] = ()
    prechecks_wait: bool = False


@dataclass(frozen=True)
class PlanReport:
    """`deferred` names the migrations whose prechecks cannot run yet (SQLite can only
    compile them on the schema earlier pending migrations leave): `migrate` runs them
    right before their migration. `precheck_failures` holds the judged failures only."""

    status: StatusReport
    pending: tuple[PlannedMigration, ...]
    skipped: tuple[str, ...] = ()
    prechecks: tuple[CheckResult, ...] = ()
    deferred: tuple[str, ...] = ()
    precheck_failures: tuple[CheckResult, ...] = ()

    @property
    def lint_errors(self) -> tuple[lint.Finding, ...]:
        return tuple(f for p in self.pending for f in p.findings if f.severity == "error")

    @property
    def ok(self) -> bool:
        drifted = self.status.drifted or self.status.schema_drift
        return not drifted and not self.lint_errors and not self.precheck_failures

    def raise_for_verdict(self, *, allow_drift: bool = False) -> None:
        """A plan that `migrate` would refuse fails too, so a CI plan job goes red early.

        :raises DriftDetected, SchemaDrift, InputError, PrecheckFailed:"""
        self.status.raise_for_verdict(allow_drift=allow_drift, shown=True)
        if self.lint_errors:
            first = self.lint_errors[0]
            raise InputError(
                f"{len(self.lint_errors)} lint error(s) in the pending migrations: {first.message}",
                hint="fix the statements listed above",
                file=first.file,
                line=first.line,
            )
        if self.precheck_failures:
            first_check = self.precheck_failures[0].check
            raise PrecheckFailed(
                f"{len(self.precheck_failures)} precheck(s) failed: migrate would refuse",
                hint="fix the data shown above, then plan again",
                file=first_check.file,
                line=first_check.line,
            )


def model_of(state: DbState) -> lint.SchemaModel:
    """A schema-only copy of the database as `state` saw it. The ledger and d1deploy's
    tables are copied too: a migration may read them."""
    return lint.SchemaModel.from_sql(
        o.sql for o in state.schema if o.sql and not o.name.startswith(("sqlite_", "_cf_"))
    )


def predict(
    model: lint.SchemaModel,
    statements: Sequence[Statement],
    table: str,
    guard_tables: Sequence[str] | None,
    *,
    undoing: bool,
) -> tuple[list[str], list[str], list[lint.Finding]]:
    """Lint `statements` on the schema model, which they change: (tables the guard
    watches, tables dropped for good, findings).

    A migration that drops a table must find it empty (or declare the loss); a rollback
    exists to drop what its migration created, so tables it drops are simply not watched.
    """

    def keep(name: str) -> bool:
        return not ledger.is_internal(name, table) and (
            guard_tables is None or name in guard_tables
        )

    before = [t for t in model.tables() if keep(t)]
    findings = lint.lint_statements(statements, schema=model)
    after = set(model.tables())
    dropped = [t for t in before if t not in after]
    return ([t for t in before if t in after] if undoing else before), dropped, findings


def prepare(
    todo: Sequence[Migration], state: DbState, guard_tables: Sequence[str] | None
) -> list[PlannedMigration]:
    """Split each migration, lint it against the schema it will meet (the live one,
    changed by the migrations before it) and plan its row-loss guard; read its precheck
    file on that schema and its verify file on the schema it leaves.

    :raises InputError: a check file is unusable (SQLite cannot compile a statement, a
        refused pragma...), before anything runs.
    """
    planned: list[PlannedMigration] = []
    # `live` stays as the database is now; only later migrations' prechecks consult it.
    today = model_of(state) if len(todo) > 1 else nullcontext(None)
    tables_now = set(state.user_tables())
    with model_of(state) as model, today as live:
        for m in todo:
            prechecks = _read_checks(m.precheck_path, model)
            # Compiled on the schema the migrations before it leave, but not on today's:
            # it can only run once they are applied (never true of the first one).
            wait = live is not None and any(
                model.compiles(c.sql) and not live.compiles(c.sql) for c in prechecks
            )
            statements = m.statements()
            watched, dropped, findings = predict(
                model, statements, state.table, guard_tables, undoing=False
            )
            prechecks += _empty_table_checks(findings, tables_now)
            planned.append(
                PlannedMigration(
                    name=m.name,
                    file=str(m.path),
                    statements=tuple(statements),
                    findings=tuple(findings),
                    guarded_tables=tuple(watched),
                    dropped_tables=tuple(dropped),
                    allowed_row_loss=tuple(sorted(guard.allowed_row_loss(m.text))),
                    rollback_sql=m.rollback_text(),
                    prechecks=tuple(prechecks),
                    verifies=tuple(_read_checks(m.verify_path, model)),
                    prechecks_wait=wait,
                )
            )
    return planned


def lint_project(
    migrations_dir: Path, paths: Sequence[Path] | None = None, *, pattern: str | None = None
) -> tuple[list[lint.Finding], int]:
    """`lint`: (findings, files linted). Every migration in order on one schema model,
    each with its precheck file (judged on the schema before it) and its verify file
    (on the schema after it); or the given `paths` in order, a migration's precheck or
    verify file among them linted as the check file it is."""
    findings: list[lint.Finding] = []
    if paths is None:
        found = discover(migrations_dir, pattern)
        findings += order_findings(found)
        ordered = [
            (path, kind)
            for m in found
            for path, kind in (
                (m.precheck_path, "check"),
                (m.path, "sql"),
                (m.verify_path, "check"),
            )
            if path is not None
        ]
    else:
        try:
            found = discover(migrations_dir, pattern) if migrations_dir.is_dir() else []
        except InputError:
            found = []  # the files given are linted all the same
        companions = {
            p.resolve() for m in found for p in (m.precheck_path, m.verify_path) if p is not None
        }
        ordered = [(p, "check" if p.resolve() in companions else "sql") for p in paths]
    with lint.SchemaModel() as model:
        for path, kind in ordered:
            if kind == "check":
                findings += checks.lint_check_file(path, schema=model)
            else:
                findings += lint.lint_files([path], schema=model)
    return findings, len(ordered)


def _empty_table_checks(findings: Sequence[lint.Finding], tables: set[str]) -> list[checks.Check]:
    """A precheck per `ADD COLUMN ... NOT NULL` without a default: SQLite refuses it on a
    table with rows (D1 accepts it on an empty one), so the table must have none. Counted
    in the prechecks' read; only for tables that exist before the deploy (the only rows a
    read can count before anything runs)."""
    return [
        checks.Check(
            label=f"{f.table} must be empty: the migration adds a NOT NULL column without a"
            " default, which SQLite refuses on a table with rows",
            file=f.file or "",
            line=f.line or 0,
            sql=f"SELECT count(*) AS rows FROM {guard.quote_ident(f.table)}",
            expect=checks.Expectation("value", value=0),
            writes=False,
        )
        for f in findings
        if f.code == "not-null-without-default" and f.table in tables
    ]


def _read_checks(path: Path | None, schema: lint.SchemaModel) -> list[checks.Check]:
    return [] if path is None else checks.parse_check_file(path, schema=schema)


def select(
    migrations: Sequence[Migration], report: StatusReport, to: str | None
) -> tuple[list[Migration], list[str]]:
    """Pending migrations to apply (up to `to`), and the pending ones left for later."""
    pending = [m for m in migrations if m.name in set(report.pending)]
    if to is None:
        return pending, []
    target = resolve(migrations, to)
    if target not in pending:
        raise UsageError(
            f"{target.name} is already applied",
            hint=f"`--to` names a pending migration; see `{suggest.command('status')}`",
        )
    cut = pending.index(target) + 1
    return pending[:cut], [m.name for m in pending[cut:]]


def plan(backend: Backend, project: Project, *, to: str | None = None) -> PlanReport:
    """What `migrate` would do: status, each pending migration's statements, lint
    findings and guard, and the prechecks' results. Writes nothing at all: write probes
    run on a schema-only copy, and one that fails there is left for `migrate` to judge
    on the database's rows (never reported as a refusal `migrate` might not make)."""
    migrations = discover(project.migrations_dir, project.pattern)
    state = ledger.read_state(backend, project.table)
    report = status_of(backend.info.name, migrations, state)
    todo, skipped = select(migrations, report, to)
    planned = prepare(todo, state, project.guard_tables)
    prechecks = checks.run_checks(backend, prechecks_now(planned), allow_writes_proof=False)
    return PlanReport(
        report,
        tuple(planned),
        tuple(skipped),
        tuple(prechecks),
        tuple(p.name for p in planned if p.prechecks_wait),
        tuple(r for r in prechecks if r.failed),
    )


def prechecks_now(planned: Sequence[PlannedMigration]) -> list[checks.Check]:
    """The prechecks that run before anything changes (the others wait, see
    `PlannedMigration.prechecks_wait`)."""
    return [c for p in planned if not p.prechecks_wait for c in p.prechecks]
