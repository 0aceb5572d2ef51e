"""`rehearse`: prove a deploy on a copy of production before touching production.

The target is exported (or a given backup is verified), loaded into a local SQLite
database that behaves like D1, and the full deploy runs there: `migrate` (prechecks,
row-loss guard, verify), `rollback` of what it applied, and `migrate` again. The report
has each step's timing and outcome, every check, and row counts per table before and
after. The target is only ever read (its export).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from d1deploy import backups, migrations, restoring
from d1deploy.backend import Backend, Statement
from d1deploy.checks import CheckResult
from d1deploy.errors import D1DeployError
from d1deploy.ledger import is_internal
from d1deploy.local import LocalBackend
from d1deploy.project import Project

Notify = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    duration_ms: float
    detail: str


@dataclass(frozen=True)
class RehearsalReport:
    ok: bool
    database: str
    source: str
    """Where the copy came from: the target's export, or a backup file."""
    steps: tuple[Step, ...] = ()
    applied: tuple[str, ...] = ()
    checks: tuple[CheckResult, ...] = ()
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class RehearsalFailed(D1DeployError):
    """A rehearsal step failed; the exit code is that step's (5 for a refused precheck,
    1 for a failed change...), so CI can tell "the data is not ready" from "it broke"."""

    def __init__(self, cause: D1DeployError, report: RehearsalReport) -> None:
        super().__init__(
            f"rehearsal failed: {cause.message}",
            hint=cause.hint,
            file=cause.file,
            line=cause.line,
        )
        self.exit_code = cause.exit_code
        self.report = report


def rehearse(
    target: Backend,
    project: Project,
    *,
    from_backup: Path | None = None,
    workdir: Path | None = None,
) -> RehearsalReport:
    """Run migrate -> rollback -> migrate on a local copy of `target` (or of `from_backup`).

    :raises RehearsalFailed: when any step fails; its `report` says which and why.
    """
    say = project.notify
    table = project.table
    steps: list[Step] = []
    checks: list[CheckResult] = []
    applied: tuple[str, ...] = ()
    rows_before: dict[str, int] = {}
    source = str(from_backup) if from_backup else f"export of {target.info.name}"

    def report(
        ok: bool, error: str | None = None, rows_after: dict[str, int] | None = None
    ) -> RehearsalReport:
        return RehearsalReport(
            ok=ok,
            database=target.info.name,
            source=source,
            steps=tuple(steps),
            applied=applied,
            checks=tuple(checks),
            rows_before=rows_before,
            rows_after=rows_after or {},
            error=error,
        )

    with _workspace(workdir) as work:
        copy = LocalBackend(work / "rehearsal.sqlite", name=f"{target.info.name} (rehearsal)")
        try:
            step = _Stepper(steps, say)
            try:
                dump = step("copy", lambda: _load_copy(target, copy, from_backup, work, say))
                say(f"Rehearsing on a local copy ({dump})")
                rows_before = row_counts(copy, table)
                first = step("migrate", lambda: migrations.migrate(copy, project))
                applied = tuple(a.name for a in first.applied)
                checks.extend(first.checks)
                undoable = _undoable(project.migrations_dir, project.pattern, applied)
                if len(undoable) < len(applied):
                    stuck = applied[len(applied) - len(undoable) - 1]
                    steps.append(
                        Step(
                            "rollback limit",
                            True,
                            0.0,
                            f"{stuck} has no rollback SQL: only the "
                            f"{len(undoable)} migration(s) after it can be rehearsed back; "
                            "undoing it would take a Time Travel restore",
                        )
                    )
                if undoable:
                    step(
                        "rollback",
                        lambda: migrations.rollback(
                            copy, project, migrations.RollbackOptions(steps=len(undoable))
                        ),
                    )
                    again = step("migrate again", lambda: migrations.migrate(copy, project))
                    checks.extend(again.checks)
            except D1DeployError as err:
                checks.extend(_checks_of(err))
                failed = report(False, str(err), row_counts(copy, table))
                raise RehearsalFailed(err, failed) from err
            return report(True, rows_after=row_counts(copy, table))
        finally:
            copy.close()


class _Stepper:
    """Times a step and records its outcome, failed or not."""

    def __init__(self, steps: list[Step], say: Notify) -> None:
        self.steps = steps
        self.say = say

    def __call__(self, name: str, action: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            result = action()
        except D1DeployError as err:
            self.steps.append(Step(name, False, _ms(started), str(err)))
            raise
        self.steps.append(Step(name, True, _ms(started), _describe(result)))
        self.say(f"rehearsal step {name}: ok ({_ms(started):.0f} ms)")
        return result


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _describe(result: object) -> str:
    if isinstance(result, migrations.MigrateReport):
        names = [a.name for a in result.applied]
        return f"applied {len(names)}: {', '.join(names)}" if names else "nothing pending"
    if isinstance(result, migrations.RollbackReport):
        return f"rolled back {len(result.rolled_back)}"
    return str(result)


def _undoable(
    migrations_dir: Path, pattern: str | None, applied: tuple[str, ...]
) -> tuple[str, ...]:
    """The newest applied migrations that have rollback SQL, up to the first that has
    none (rollback goes newest first and stops there)."""
    has_rollback = {
        m.name: m.rollback_path is not None for m in migrations.discover(migrations_dir, pattern)
    }
    undoable: list[str] = []
    for name in reversed(applied):
        if not has_rollback.get(name, False):
            break
        undoable.append(name)
    return tuple(undoable)


def _checks_of(err: D1DeployError) -> tuple[CheckResult, ...]:
    if isinstance(err, migrations.PrechecksFailed):
        return err.results
    if isinstance(err, migrations.DeployFailed) and isinstance(
        err.report, migrations.MigrateReport
    ):
        return err.report.checks
    return ()


def _load_copy(
    target: Backend, copy: LocalBackend, from_backup: Path | None, work: Path, say: Notify
) -> str:
    """Fill the empty copy the way a backup is restored (verified, tables first)."""
    if from_backup is None:
        taken = backups.backup(target, dest=None, backup_dir=work, notify=say)
        restoring.restore_from_backup(copy, taken.path, notify=say)
        return f"export of {target.info.name}, {taken.bytes} bytes"
    restoring.restore_from_backup(copy, from_backup, notify=say)
    return f"backup {from_backup.name}"


def row_counts(backend: Backend, table: str) -> dict[str, int]:
    """Rows per user table (d1deploy's and the ledger's own tables left out)."""
    names = backend.run(
        [
            Statement(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' ORDER BY name"
            )
        ],
        read_only=True,
    )[0]
    tables = [str(r[0]) for r in names.rows if not is_internal(str(r[0]), table)]
    if not tables:
        return {}
    counts = backend.run(
        [Statement(f'SELECT count(*) FROM "{t.replace(chr(34), chr(34) * 2)}"') for t in tables],
        read_only=True,
    )
    return {t: int(c.first_value() or 0) for t, c in zip(tables, counts, strict=True)}


@contextmanager
def _workspace(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="d1deploy-rehearse-") as tmp:
        yield Path(tmp)
