"""The migration engine's write side: migrate, rollback, baseline, verify.

Each migration is applied as ONE request (`ledger.Session.send`): the lease check,
the row-loss guard, its statements (split locally, one per batch item), its ledger and
history rows. With `--atomic` every pending migration goes in that same one request when
they fit D1's limits (else in as few requests as fit). After any failed or unanswered
request the engine re-reads the ledger to tell "not applied", "applied" (the answer was
lost) and "partly applied" (D1 did not abort the batch), and never applies a migration
twice. A deploy that fails after changing something undoes this run's migrations,
newest first, with their rollback SQL sent together (or a Time Travel restore, when
asked to).

Discovery lives in `discovery.py`, status and plan in `planning.py`, the tables and the
one-request changes in `ledger.py`; this module re-exports what the CLI needs. Core
functions take explicit arguments, report progress through `notify`, return frozen
reports and raise `errors.*`; they never print.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NoReturn

from d1deploy import checks, guard, ledger, lint, lock, schema, sqlsplit
from d1deploy.backend import Backend
from d1deploy.checks import CheckResult
from d1deploy.discovery import Migration, discover, new_migration, resolve
from d1deploy.errors import (
    ChangeFailed,
    D1DeployError,
    InputError,
    PrecheckFailed,
    ReadWrote,
    Refused,
    Unavailable,
    UsageError,
)
from d1deploy.ledger import DEFAULT_TABLE, DbState
from d1deploy.planning import (
    PlannedMigration,
    PlanReport,
    StatusReport,
    model_of,
    plan,
    prechecks_now,
    predict,
    prepare,
    refuse_drift,
    select,
    status,
    status_of,
)

__all__ = [
    "AppliedMigration",
    "BaselineReport",
    "DeployFailed",
    "LintFailed",
    "MigrateOptions",
    "MigrateReport",
    "Migration",
    "PlanReport",
    "PrechecksFailed",
    "RollbackRefused",
    "RollbackReport",
    "RolledBackMigration",
    "StatusReport",
    "VerifyReport",
    "baseline",
    "discover",
    "migrate",
    "new_migration",
    "plan",
    "refuse_drift",
    "rollback",
    "status",
    "verify",
]

Notify = Callable[[str], None]
DEFAULT_LOCK_TTL = 900


def _quiet(_: str) -> None:
    return None


# --- reports and errors --------------------------------------------------------------

OnFailure = Literal["rollback", "restore"]


@dataclass(frozen=True)
class MigrateOptions:
    """`on_failure="restore"` restores the Time Travel bookmark where rollback SQL is
    missing (or the database was left partly applied); the default stops and says how.

    `atomic=True` sends all the pending migrations (up to `to`) with their ledger rows,
    guards and the lease check in ONE request, so a failure anywhere leaves none of them
    (on D1, as far as its batches are atomic; the ledger tells otherwise). When they do
    not fit one request (`ledger.Limits`), or a migration's prechecks must wait for the
    ones before it, the deploy says so and uses as few requests as fit, undoing the
    earlier ones with their rollback SQL when a later one fails, as without `atomic`.
    Verify checks then run once, after the request, on the final state (not after each
    migration). `limits` bounds what shares a request (also when undoing)."""

    to: str | None = None
    dry_run: bool = False
    allow_drift: bool = False
    on_failure: OnFailure = "rollback"
    atomic: bool = False
    limits: ledger.Limits = field(default_factory=ledger.Limits)


@dataclass(frozen=True)
class AppliedMigration:
    """`rows_written` is None when the answer was lost (the ledger says it landed);
    `duration_ms` is measured by the database inside the batch."""

    name: str
    duration_ms: float | None
    rows_written: int | None
    statements: int
    answer_lost: bool = False


@dataclass(frozen=True)
class RolledBackMigration:
    """`source` says which rollback SQL ran: the file, or the copy stored at apply time."""

    name: str
    source: Literal["file", "history"]
    duration_ms: float | None
    rows_written: int | None
    answer_lost: bool = False


@dataclass(frozen=True)
class MigrateReport:
    ok: bool
    database: str
    applied: tuple[AppliedMigration, ...] = ()
    skipped: tuple[str, ...] = ()
    bookmark_before: str | None = None
    backup: object = None
    checks: tuple[CheckResult, ...] = ()
    rolled_back: tuple[RolledBackMigration, ...] = ()
    restored_to: str | None = None
    error: str | None = None
    plan: PlanReport | None = None


@dataclass(frozen=True)
class RollbackReport:
    ok: bool
    database: str
    rolled_back: tuple[RolledBackMigration, ...] = ()
    bookmark_before: str | None = None
    backup: object = None
    error: str | None = None


@dataclass(frozen=True)
class BaselineReport:
    """`forced_over`: how the live schema differed from what the recorded migrations
    leave (recorded anyway with `force`); `schema_unchecked` why that was not known."""

    database: str
    recorded: tuple[str, ...]
    already_applied: tuple[str, ...]
    forced_over: tuple[schema.Difference, ...] = ()
    schema_unchecked: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    database: str
    migrations: tuple[str, ...]
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.checks)


class DeployFailed(ChangeFailed):
    """A change failed; `report` says what was applied, checked and undone."""

    def __init__(
        self,
        message: str,
        *,
        report: MigrateReport | RollbackReport,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, file=file, line=line)
        self.report = report


class RollbackRefused(Refused):
    """A rollback that cannot undo its targets refuses before changing anything."""

    def __init__(self, message: str, *, report: RollbackReport, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class PrechecksFailed(PrecheckFailed):
    """Prechecks refused the deploy; `results` holds every precheck's result."""

    def __init__(self, message: str, *, results: Sequence[CheckResult], hint: str) -> None:
        failed = next(r for r in results if not r.ok)
        super().__init__(message, hint=hint, file=failed.check.file, line=failed.check.line)
        self.results = tuple(results)


class LintFailed(InputError):
    """Lint errors block a deploy; `findings` holds all of them."""

    def __init__(self, findings: Sequence[lint.Finding]) -> None:
        first = findings[0]
        super().__init__(
            f"{len(findings)} lint error(s) in the pending migrations; first: {first.message}",
            hint="fix the statements named by `d1deploy lint`",
            file=first.file,
            line=first.line,
        )
        self.findings = tuple(findings)


def restore_command(bookmark: str) -> str:
    return f"d1deploy restore --bookmark {bookmark} --yes"


# --- migrate -------------------------------------------------------------------------


def migrate(
    backend: Backend,
    migrations_dir: Path,
    *,
    actor: str,
    pattern: str | None = None,
    table: str = DEFAULT_TABLE,
    lock_ttl: int = DEFAULT_LOCK_TTL,
    guard_tables: Sequence[str] | None = None,
    options: MigrateOptions = MigrateOptions(),
    before_change: Callable[[], object] | None = None,
    notify: Notify | None = None,
) -> MigrateReport:
    """Apply the pending migrations (up to `options.to`): lock, refuse on drift, lint
    errors or failed prechecks, call `before_change` (the backup) and take a bookmark,
    apply each migration in one request (all of them in one with `options.atomic`) and
    run its verify checks; on failure undo this run's migrations newest first.

    :raises LockHeld, DriftDetected, PrechecksFailed: refused before changing anything.
    :raises LintFailed, InputError: a migration or check file is unusable.
    :raises DeployFailed: a change failed; its report says what was undone.
    """
    say = notify or _quiet
    migrations = discover(migrations_dir, pattern)
    if options.dry_run:
        shown = plan(
            backend,
            migrations_dir,
            pattern=pattern,
            table=table,
            to=options.to,
            guard_tables=guard_tables,
        )
        return MigrateReport(shown.ok, backend.info.name, skipped=shown.skipped, plan=shown)
    session = ledger.Session(backend, table, actor, lock_ttl, guard_tables, say)
    # Only --atomic, which asks for the fewest round trips, fetches the bookmark while
    # the lock is taken (see _open_taking_bookmark). Without it the bookmark is taken
    # under the lock, so restoring it brings back this run's short lease, as documented
    # at lock.START_TTL. With a backup the bookmark waits for it: taken before a long
    # export, restoring it would lose every write made meanwhile.
    early = options.atomic and before_change is None and backend.is_remote
    state, bookmark = _open_taking_bookmark(session) if early else (session.open(), None)
    try:
        return _Deploy(session, migrations, options).run(state, before_change, bookmark)
    finally:
        session.close()


BATCH_SECONDS = 30
"""D1 ends a request after 30 s: a batch commits at most this long after it started."""


def _open_taking_bookmark(session: ledger.Session) -> tuple[DbState, str | None]:
    """Open the session (take the lock) while the Time Travel bookmark is fetched in
    parallel, saving a round trip. The bookmark comes back only when it is as good as
    one taken after the lock; else None, and the deploy takes one as usual.

    The bookmark is "before this deploy": restoring it must undo this run and nothing
    else d1deploy did. Taken after the lock, no other deploy can change the database
    between it and this run's first change. Sent beside the request that takes the
    lock, D1 may serve it first, and another deploy may commit its last batch (and
    release the lock) in between: restoring that bookmark would silently undo the other
    deploy too. Every change a deploy makes starts with a history event timed by the
    database's clock, and both requests ran within `window` seconds. So when no event
    started within window + BATCH_SECONDS (a batch may commit that long after its
    event) + 1 s (clock granularity) before the lock was taken, nothing happened in
    between and the bookmark is kept; after a deploy moments ago it is dropped. Writes
    by others than d1deploy are not the lock's business either way.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        fetched = pool.submit(session.backend.bookmark)
        state = session.open()
        window = time.monotonic() - started
        try:
            bookmark = fetched.result()
        except D1DeployError:
            return state, None
    return state, bookmark if session.quiet_for(window + BATCH_SECONDS + 1) else None


class _Deploy:
    """The state of one `migrate` run, so failures can say what this run did."""

    def __init__(
        self, session: ledger.Session, migrations: Sequence[Migration], options: MigrateOptions
    ) -> None:
        self.s = session
        self.migrations = migrations
        self.options = options
        self.applied: list[tuple[Migration, PlannedMigration]] = []
        self.report = MigrateReport(ok=True, database=session.backend.info.name)

    def run(
        self,
        state: DbState,
        before_change: Callable[[], object] | None,
        bookmark: str | None = None,
    ) -> MigrateReport:
        """Deploy from `state` (read as the lock was taken); `bookmark`, when given, was
        taken with the lock and stands for "before this deploy"."""
        say = self.s.notify
        status_report = status_of(self.report.database, self.migrations, state)
        if status_report.schema is not None and not status_report.schema.compared:
            say(f"schema not compared: {status_report.schema.reason}")
        if not self.options.allow_drift:
            refuse_drift(status_report)
        for name in status_report.out_of_order:
            say(f"{name} is numbered below an applied migration; applying it out of order")
        todo, later = select(self.migrations, status_report, self.options.to)
        planned = prepare(todo, state, self.s.guard_tables)
        findings = [f for p in planned for f in p.findings]
        if errors := [f for f in findings if f.severity == "error"]:
            raise LintFailed(errors)
        for f in findings:
            say(f"warning: {f.file}:{f.line}: {f.message}")
        # The check files were read and judged by `prepare`: a broken one has already
        # stopped the deploy, before any change.
        deferred = [p.name for p in planned if p.prechecks_wait]
        prechecks = checks.run_checks(self.s.backend, prechecks_now(planned))
        failed = [r for r in prechecks if not r.ok]
        self.report = replace(self.report, checks=tuple(prechecks), skipped=tuple(later))
        if failed:
            raise PrechecksFailed(
                f"{len(failed)} precheck(s) failed: " + "; ".join(r.check.label for r in failed),
                results=prechecks,
                hint="fix the data the checks show (first rows listed), then deploy again",
            )
        if not todo:
            say("nothing to apply: the database is up to date")
            return self.report
        backup = before_change() if before_change else None
        if bookmark is None:
            bookmark = self.s.backend.bookmark()
        say(f"bookmark before this deploy: {bookmark}")
        self.report = replace(self.report, backup=backup, bookmark_before=bookmark)
        changes = [_apply(m, p) for m, p in zip(todo, planned, strict=True)]
        groups = self._groups(changes, bookmark, todo, deferred)
        for n, group in enumerate(groups):
            ms = [todo[i] for i in group]
            if ms[0].name in deferred:
                not_reached = [x.name for x in todo[group.start :]]
                self._checks("precheck", ms[:1], planned[group.start].prechecks, not_reached)
            verifying = [c for i in group for c in planned[i].verifies]
            sent = self.s.send(
                [changes[i] for i in group],
                bookmark=bookmark,
                release=n == len(groups) - 1 and not verifying,
            )
            if sent.verdict != "done":
                self._failed(ms, sent, [x.name for x in todo[group.start :]])
            self.applied += [(todo[i], planned[i]) for i in group]
            self._record_apply([planned[i] for i in group], sent)
            if verifying:
                self._checks("verify", ms, verifying, [x.name for x in todo[group.stop :]])
        return self.report

    def _groups(
        self,
        changes: Sequence[ledger.Change],
        bookmark: str,
        todo: Sequence[Migration],
        deferred: Sequence[str],
    ) -> tuple[range, ...]:
        """The requests the migrations go in: one each, or with --atomic as few as fit
        D1's limits (one, unless they are too big or prechecks must run in between)."""
        if not self.options.atomic:
            return tuple(range(i, i + 1) for i in range(len(changes)))
        breaks = {
            i: f"the prechecks of {m.name} can only run once the migrations before it are applied"
            for i, m in enumerate(todo)
            if m.name in deferred
        }
        packing = self.s.pack(changes, bookmark, limits=self.options.limits, breaks=breaks)
        if len(packing.groups) == 1:
            self.s.notify(f"--atomic: applying {len(changes)} migration(s) in one request")
        else:
            self.s.notify(
                f"--atomic: the {len(changes)} migrations do not fit in one request"
                f" ({'; '.join(packing.cuts)}), so they go in {len(packing.groups)} requests;"
                " if a later one fails, the earlier ones are undone with their rollback SQL"
            )
        return packing.groups

    def _checks(
        self,
        kind: Literal["precheck", "verify"],
        ms: Sequence[Migration],
        found: Sequence[checks.Check],
        not_reached: list[str],
    ) -> None:
        """Run the verify checks of `ms` (just applied), or the prechecks of `ms[0]`
        (deferred until now: nothing of it is applied yet); a failure undoes this run's
        migrations."""
        try:
            results = checks.run_checks(self.s.backend, found)
        except ReadWrote as err:
            # Something wrote that was promised not to: undoing more by machine could
            # only make it worse; say where things stand and how to go back.
            done = ", ".join(m.name for m, _ in self.applied) or "nothing"
            self._raise(
                f"{err.message}; the deploy stopped there, nothing was undone (this run"
                f" applied: {done}; bookmark before this deploy: {self.report.bookmark_before})",
                err.file,
                err.line,
                hint=err.hint,
            )
        except Unavailable as err:
            if kind == "precheck":
                raise
            # Applied, but not proven: say exactly that, and leave undoing to a person
            # (the API that just failed would have to carry the rollback too).
            bookmark = self.report.bookmark_before
            self._raise(
                f"{_label(ms)} was applied, but its verification could not run ({err.message});"
                " the database holds it unverified",
                hint="run `d1deploy verify` once the API answers; to undo it, `d1deploy rollback`"
                + (f" or `{restore_command(bookmark)}`" if bookmark else ""),
            )
        self.report = replace(self.report, checks=self.report.checks + tuple(results))
        if bad := [r for r in results if not r.ok]:
            what = "; ".join(f"{r.check.label} ({r.outcome})" for r in bad)
            when = (
                f"verification failed after {_label(ms)}"
                if kind == "verify"
                else f"prechecks of {ms[0].name} failed"
            )
            self._undo_and_raise(f"{when}: {what}", not_reached=not_reached)

    def _record_apply(self, planned: Sequence[PlannedMigration], sent: ledger.Sent) -> None:
        for p, landed in zip(planned, sent.landed, strict=True):
            applied = AppliedMigration(
                p.name, landed.duration_ms, landed.rows_written, len(p.statements), sent.answer_lost
            )
            self.report = replace(self.report, applied=(*self.report.applied, applied))
            took = "" if landed.duration_ms is None else f" in {landed.duration_ms:.0f} ms"
            if sent.answer_lost:
                self.s.notify(f"applied {p.name}{took} (its answer was lost; the ledger shows it)")
            else:
                self.s.notify(f"applied {p.name}{took}, {landed.rows_written} rows written")

    def _failed(self, ms: Sequence[Migration], sent: ledger.Sent, not_done: list[str]) -> NoReturn:
        bookmark = self.report.bookmark_before
        assert bookmark is not None
        skipped = tuple(not_done) + self.report.skipped
        self.report = replace(self.report, skipped=skipped)
        label = _label(ms)
        if sent.verdict == "not_applied":
            if len(ms) == 1:
                what = f"{label} failed and was not applied"
            elif sent.failed:
                what = f"{sent.failed} failed, so none of {label} was applied"
            else:
                what = f"the one request applying {label} failed and none of them was applied"
            self._undo_and_raise(f"{what}: {sent.error}", file=sent.file, line=sent.line)
        if sent.verdict == "lock_lost":
            self._raise(
                f"stopped before {ms[0].name}: {sent.error}; this run's migrations were not"
                " undone because another deploy now holds the lock",
                hint="check `d1deploy status` once the other deploy is done",
            )
        torn = f"{label} {'was' if len(ms) == 1 else 'were'} partly applied"
        if sent.verdict == "partly" and self.options.on_failure == "restore":
            self._restore(bookmark)
            self._raise(
                f"{torn} (D1 did not roll back its failed batch: {sent.error});"
                f" the database was restored to {bookmark}",
                file=sent.file,
                line=sent.line,
            )
        what = (
            f"{torn}: D1 did not roll back its failed batch ({sent.error})"
            if sent.verdict == "partly"
            else f"could not tell whether {label} {'was' if len(ms) == 1 else 'were'} applied"
            f" ({sent.error})"
        )
        self._raise(
            f"{what}; the database is as the failure left it, bookmark before this deploy:"
            f" {bookmark}",
            hint=f"restore it with `{restore_command(bookmark)}`",
            file=sent.file,
            line=sent.line,
        )

    def _undo_and_raise(
        self,
        reason: str,
        *,
        not_reached: Sequence[str] = (),
        file: str | None = None,
        line: int | None = None,
    ) -> NoReturn:
        """Undo this run's migrations newest first (together, in as few requests as fit
        D1's limits), then raise DeployFailed saying so."""
        bookmark = self.report.bookmark_before
        assert bookmark is not None
        self.report = replace(self.report, skipped=(*not_reached, *self.report.skipped))
        undoable: list[tuple[Migration, str]] = []
        for m, p in reversed(self.applied):
            if p.rollback_sql is None:
                break
            undoable.append((m, p.rollback_sql))
        changes = _rollback_changes(
            self.s, [(m.name, sql, m.sha256, str(m.rollback_path)) for m, sql in undoable]
        )
        for group in self.s.pack(changes, bookmark, limits=self.options.limits).groups:
            sent = self.s.send([changes[i] for i in group], bookmark=bookmark)
            if sent.verdict != "done":
                names = _label([undoable[i][0] for i in group])
                if self.options.on_failure == "restore" and sent.verdict != "lock_lost":
                    self._restore(bookmark)
                    self._raise(
                        f"{reason}; rolling back {names} failed too ({sent.error});"
                        f" restored the database to {bookmark}",
                        file,
                        line,
                    )
                self._raise(
                    f"{reason}; rolling back {names} failed ({sent.error}) after"
                    f" {self._undone()}; bookmark before this deploy: {bookmark}",
                    file,
                    line,
                    hint=f"restore it with `{restore_command(bookmark)}`",
                )
            for landed in sent.landed:
                self.applied.pop()
                undone = RolledBackMigration(
                    landed.name, "file", landed.duration_ms, landed.rows_written, sent.answer_lost
                )
                self.report = replace(self.report, rolled_back=(*self.report.rolled_back, undone))
                self.s.notify(f"rolled back {landed.name}")
        if self.applied:
            m = self.applied[-1][0]
            if self.options.on_failure == "restore":
                self._restore(bookmark)
                self._raise(f"{reason}; restored the database to {bookmark}", file, line)
            self._raise(
                f"{reason}; {m.name} has no rollback SQL, so the rollback stopped there"
                f" ({self._undone()}); bookmark before this deploy: {bookmark}",
                file,
                line,
                hint=f"restore it with `{restore_command(bookmark)}`",
            )
        self._raise(f"{reason}; {self._undone()}", file, line)

    def _undone(self) -> str:
        names = [r.name for r in self.report.rolled_back]
        return f"rolled back {', '.join(names)}" if names else "nothing was rolled back"

    def _restore(self, bookmark: str) -> None:
        self.s.notify(f"restoring the database to {bookmark}")
        self.s.backend.restore(bookmark)
        self.s.restored()
        self.applied.clear()
        self.report = replace(self.report, restored_to=bookmark)

    def _raise(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        *,
        hint: str | None = None,
    ) -> NoReturn:
        self.report = replace(self.report, ok=False, error=message)
        raise DeployFailed(message, report=self.report, hint=hint, file=file, line=line)


def _label(ms: Sequence[Migration]) -> str:
    """One migration's name, or several sent in one request."""
    if len(ms) == 1:
        return ms[0].name
    return f"the {len(ms)} migrations {ms[0].name} to {ms[-1].name}"


def _apply(m: Migration, p: PlannedMigration) -> ledger.Change:
    return ledger.Change(
        m.name,
        "apply",
        p.statements,
        m.sha256,
        p.rollback_sql,
        p.guarded_tables,
        p.dropped_tables,
        p.allowed_row_loss,
    )


def _rollback_changes(
    session: ledger.Session, items: Sequence[tuple[str, str, str | None, str]]
) -> list[ledger.Change]:
    """Rollbacks (name, rollback SQL, sha256 of the migration, file label) to run in this
    order, each with the removal of its ledger row and a guard planned on the schema the
    rollbacks before it leave."""
    changes: list[ledger.Change] = []
    with model_of(session.known) as model:
        for name, sql, sha256, source in items:
            statements = sqlsplit.split(sql, file=source or f"rollback of {name}")
            watched, _, _ = predict(
                model, statements, session.table, session.guard_tables, undoing=True
            )
            changes.append(
                ledger.Change(
                    name,
                    "rollback",
                    tuple(statements),
                    sha256,
                    sql,
                    tuple(watched),
                    allowed=tuple(sorted(guard.allowed_row_loss(sql))),
                )
            )
    return changes


# --- rollback ------------------------------------------------------------------------


def rollback(
    backend: Backend,
    migrations_dir: Path,
    *,
    actor: str,
    pattern: str | None = None,
    table: str = DEFAULT_TABLE,
    lock_ttl: int = DEFAULT_LOCK_TTL,
    guard_tables: Sequence[str] | None = None,
    to: str | None = None,
    steps: int | None = None,
    before_change: Callable[[], object] | None = None,
    notify: Notify | None = None,
) -> RollbackReport:
    """Undo applied migrations newest first: the last one by default, the newest
    `steps`, or every one applied after `to`. Each runs in one request with the removal
    of its ledger row. The rollback SQL stored at apply time is used when the file
    changed or is gone. The CLI asks for confirmation; this function does not.

    :raises UsageError: bad `to`/`steps`.
    :raises RollbackRefused: a target has no rollback SQL (nothing changed).
    :raises DeployFailed: a rollback failed.
    """
    if to is not None and steps is not None:
        raise UsageError("give --to or --steps, not both")
    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    say = notify or _quiet
    found = discover(migrations_dir, pattern) if migrations_dir.is_dir() else []
    files = {m.name: m for m in found}
    session = ledger.Session(backend, table, actor, lock_ttl, guard_tables, say)
    state = session.open()
    try:
        rows = list(reversed(state.ledger))
        if to is not None:
            target = _resolve_applied(to, [r.name for r in rows])
            targets = [r.name for r in rows[: [r.name for r in rows].index(target)]]
        else:
            targets = [r.name for r in rows[: steps or 1]]
        report = RollbackReport(ok=True, database=backend.info.name)
        if not targets:
            say("nothing to roll back")
            return report
        stored = ledger.rollback_sql_of(backend, targets)
        chosen = [_rollback_source(n, files.get(n), stored.get(n)) for n in targets]
        if missing := [n for n, (sql, _) in zip(targets, chosen, strict=True) if sql is None]:
            event = state.last_event(missing[0])
            mark = event.bookmark_before if event else None
            raise RollbackRefused(
                f"{missing[0]} has no rollback SQL (no rollback file, none stored when it was"
                " applied); nothing was rolled back",
                report=replace(report, ok=False, error=f"{missing[0]} has no rollback SQL"),
                hint=f"restore the database with `{restore_command(mark)}`"
                if mark
                else "restore the database from a backup or a Time Travel bookmark taken"
                " before it was applied (`d1deploy restore --timestamp T`)",
            )
        backup = before_change() if before_change else None
        bookmark = backend.bookmark()
        say(f"bookmark before this rollback: {bookmark}")
        report = replace(report, backup=backup, bookmark_before=bookmark)
        items = []
        for name, (sql, source) in zip(targets, chosen, strict=True):
            assert sql is not None
            m = files.get(name)
            label = str(m.rollback_path) if m and m.rollback_path and source == "file" else ""
            items.append((name, sql, m.sha256 if m else None, label))
        # One request per migration, so a failure stops between two rollbacks.
        changes = _rollback_changes(session, items)
        for i, (change, (_, source)) in enumerate(zip(changes, chosen, strict=True)):
            name = change.name
            sent = session.send([change], bookmark=bookmark, release=i == len(changes) - 1)
            if sent.verdict != "done":
                done = ", ".join(r.name for r in report.rolled_back) or "nothing"
                message = f"rolling back {name} failed ({sent.error}); rolled back: {done}"
                if sent.verdict == "partly":
                    message = (
                        f"{name}'s rollback was partly applied ({sent.error});"
                        f" rolled back before it: {done}"
                    )
                raise DeployFailed(
                    message,
                    report=replace(report, ok=False, error=message),
                    hint="restore the state before this rollback with"
                    f" `{restore_command(bookmark)}`",
                    file=sent.file,
                    line=sent.line,
                )
            (landed,) = sent.landed
            undone = RolledBackMigration(
                name, source, landed.duration_ms, landed.rows_written, sent.answer_lost
            )
            report = replace(report, rolled_back=(*report.rolled_back, undone))
            say(f"rolled back {name} using the rollback SQL from the {_SOURCE_WORDS[source]}")
        return report
    finally:
        session.close()


_SOURCE_WORDS = {"file": "file", "history": "copy stored when it was applied"}


def _resolve_applied(name: str, applied: Sequence[str]) -> str:
    wanted = name.replace("\\", "/").rsplit("/", 1)[-1]
    for candidate in applied:
        if wanted in (candidate, candidate.removesuffix(".sql")):
            return candidate
    raise UsageError(f"{name!r} is not an applied migration", hint="see `d1deploy status`")


def _rollback_source(
    name: str, migration: Migration | None, stored: str | None
) -> tuple[str | None, Literal["file", "history"]]:
    """The rollback SQL to run: the file's, unless it changed since the migration was
    applied (or is gone) and a copy was stored then."""
    current = migration.rollback_text() if migration else None
    if stored is not None and current != stored:
        return stored, "history"
    return current, "file"


# --- baseline ------------------------------------------------------------------------


def baseline(
    backend: Backend,
    migrations_dir: Path,
    name: str,
    *,
    actor: str,
    pattern: str | None = None,
    table: str = DEFAULT_TABLE,
    lock_ttl: int = DEFAULT_LOCK_TTL,
    force: bool = False,
    notify: Notify | None = None,
) -> BaselineReport:
    """Record every migration up to `name` as applied without running it, for a
    database that already has their effect (production before d1deploy).

    :raises SchemaDrift: unless `force`, when the live schema is not the one those
        migrations leave (or that cannot be checked); nothing is recorded.
    """
    say = notify or _quiet
    migrations = discover(migrations_dir, pattern)
    target = resolve(migrations, name)
    session = ledger.Session(backend, table, actor, lock_ttl, None, say)
    state = session.open()
    try:
        applied = state.applied()
        upto = migrations[: migrations.index(target) + 1]
        todo = [m for m in upto if m.name not in applied]
        report = BaselineReport(
            backend.info.name,
            tuple(m.name for m in todo),
            tuple(m.name for m in upto if m.name in applied),
        )
        if not todo:
            say(f"nothing to record: every migration up to {target.name} is already applied")
            return report
        found = schema.refuse_baseline(
            migrations, state, target.name, [m.name for m in todo], force=force
        )
        report = replace(report, forced_over=found.differences, schema_unchecked=found.reason)
        assert session.lease is not None
        batch = lock.check_and_extend(session.lease, lock_ttl)
        for m in todo:
            batch += [
                ledger.insert_ledger(table, m.name),
                ledger.start_event(
                    m.name,
                    "baseline",
                    sha256=m.sha256,
                    rollback_sql=m.rollback_text(),
                    bookmark_before=None,
                    actor=actor,
                    duration_ms=0,
                ),
            ]
        backend.run(batch + lock.release_statements(session.lease))
        session.lease = None
        for m in todo:
            say(f"recorded {m.name} as applied (not run)")
        return report
    finally:
        session.close()


# --- verify --------------------------------------------------------------------------


def verify(
    backend: Backend,
    migrations_dir: Path,
    *,
    pattern: str | None = None,
    table: str = DEFAULT_TABLE,
    name: str | None = None,
    notify: Notify | None = None,
) -> VerifyReport:
    """Run the verify checks of the applied migrations (or of `name` only)."""
    say = notify or _quiet
    migrations = discover(migrations_dir, pattern)
    state = ledger.read_state(backend, table)
    applied = state.applied()
    if name is not None:
        chosen = [resolve(migrations, name)]
        if chosen[0].name not in applied:
            raise UsageError(f"{chosen[0].name} is not applied", hint="see `d1deploy status`")
    else:
        chosen = [m for m in migrations if m.name in applied]
    chosen = [m for m in chosen if m.verify_path is not None]
    if not chosen:
        say("no verify checks to run")
    with model_of(state) as live:
        found = [
            c
            for m in chosen
            if m.verify_path is not None
            for c in checks.parse_check_file(m.verify_path, schema=live, strict=False)
        ]
    results = checks.run_checks(backend, found)
    return VerifyReport(backend.info.name, tuple(m.name for m in chosen), tuple(results))
