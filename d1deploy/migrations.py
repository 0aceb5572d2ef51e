"""The migration engine's write side: migrate, rollback, baseline, verify.

Consecutive migrations are applied together, in as few requests as fit D1's limits
(`ledger.Session.send`): the lease check, then for each migration the row-loss guard,
its statements (split locally, one per batch item), its read verify checks as
assertions and its ledger and history rows. Checks that cannot ride in a request end
their migration's request; a request D1 refused without saying which statement failed
goes again one migration each. `--atomic` verifies the final state once instead, and
never splits a request that failed. After any failed or unanswered request the engine
re-reads the ledger to tell "not applied", "applied" (the answer was lost) and "partly
applied" (D1 did not abort the batch), and never applies a migration twice. Whatever
stops a run after its first change (an error of any kind, SIGINT, SIGTERM, a bug) ends
it the same way (`_Run.settle`): the ledger says what landed, this run's migrations are
undone newest first with their rollback SQL sent together (or a Time Travel restore,
when asked to), the lock is released and the report says what stands.

Discovery lives in `discovery.py`, status and plan in `planning.py`, the tables and the
one-request changes in `ledger.py`; this module re-exports what the CLI needs. Core
functions take explicit arguments, report progress through `notify`, return frozen
reports and raise `errors.*`; they never print.

Why one module of ~1250 lines: migrate, rollback and baseline are three `_Run`s of the
one settle (`_Run.settle`), whose ways out are the hard part and are read together; the
split that fits is `runs.py` (reports, `_Run`, the settle) beside `migrate.py`,
`rollback.py` and `baseline.py`. It waits for #17's `Project`, which changes this
module's entry points in a parallel branch: moving them now would make that merge a
rewrite.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NoReturn

from d1deploy import (
    assertions,
    checks,
    guard,
    interrupts,
    ledger,
    limits,
    lint,
    schema,
    sqlsplit,
    suggest,
)
from d1deploy.backend import Backend, Statement
from d1deploy.checks import CheckResult
from d1deploy.discovery import Migration, discover, new_migration, resolve
from d1deploy.errors import (
    ChangeFailed,
    D1DeployError,
    InputError,
    Interrupt,
    Interrupted,
    PrecheckFailed,
    ReadWrote,
    Refused,
    UsageError,
)
from d1deploy.ledger import DbState
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
from d1deploy.project import Project

__all__ = [
    "AppliedMigration",
    "BaselineReport",
    "DeployFailed",
    "DeployInterrupted",
    "LintFailed",
    "MigrateOptions",
    "MigrateReport",
    "Migration",
    "PlanReport",
    "PrechecksFailed",
    "RollbackOptions",
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
_Verifying = tuple[Sequence[Migration], Sequence[checks.Check]]
"""Verify checks riding in a request: the migrations they verify, and the checks."""


# --- reports and errors --------------------------------------------------------------

OnFailure = Literal["rollback", "restore"]


@dataclass(frozen=True)
class MigrateOptions:
    """`on_failure="restore"` restores the Time Travel bookmark where rollback SQL is
    missing (or the database was left partly applied); the default stops and says how.

    The pending migrations (up to `to`) share requests as far as `limits` allow (also
    when undoing), each verified right after it; a migration whose verify checks run
    outside a request ends its request. `atomic=True` verifies the final state once
    instead, so all of them go in ONE request, and a failure anywhere leaves none of
    them (on D1, as far as its batches are atomic; the ledger tells otherwise). When
    they do not fit one request (`ledger.Limits`), or a migration's prechecks must wait
    for the ones before it, the deploy says so and uses as few requests as fit, undoing
    the earlier ones with their rollback SQL when a later one fails. Without `atomic`, a
    request D1 refused without saying which statement failed goes again one migration
    per request; with it, the deploy stops there."""

    to: str | None = None
    dry_run: bool = False
    allow_drift: bool = False
    on_failure: OnFailure = "rollback"
    atomic: bool = False
    limits: ledger.Limits = field(default_factory=ledger.Limits)


@dataclass(frozen=True)
class RollbackOptions:
    """The last applied migration by default, the newest `steps`, or every one applied
    after `to`."""

    to: str | None = None
    steps: int | None = None


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
    """`still_applied` names this run's migrations that a failure left applied (not
    undone); `lock_held` says why the deploy lock could not be released, when it could
    not; `interrupted` names the signal that stopped the run."""

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
    restore_command: str | None = None
    still_applied: tuple[str, ...] = ()
    lock_held: str | None = None
    interrupted: str | None = None


@dataclass(frozen=True)
class RollbackReport:
    """`not_rolled_back` names the targets a failure left applied."""

    ok: bool
    database: str
    rolled_back: tuple[RolledBackMigration, ...] = ()
    bookmark_before: str | None = None
    backup: object = None
    error: str | None = None
    restore_command: str | None = None
    not_rolled_back: tuple[str, ...] = ()
    lock_held: str | None = None
    interrupted: str | None = None


@dataclass(frozen=True)
class BaselineReport:
    """`forced_over`: how the live schema differed from what the recorded migrations
    leave (recorded anyway with `force`); `schema_unchecked` why that was not known."""

    database: str
    recorded: tuple[str, ...]
    already_applied: tuple[str, ...]
    forced_over: tuple[schema.Difference, ...] = ()
    schema_unchecked: str | None = None
    ok: bool = True
    error: str | None = None
    lock_held: str | None = None
    interrupted: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    database: str
    migrations: tuple[str, ...]
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.checks)

    def raise_for_verdict(self) -> None:
        """:raises ChangeFailed: when a verify check failed."""
        if not self.ok:
            failed = next(r for r in self.checks if not r.ok)
            raise ChangeFailed(
                f"{sum(not r.ok for r in self.checks)} verify check(s) failed on {self.database}",
                hint="the deployed schema does not do what its verify file expects; undo it with"
                f" `{suggest.command('rollback')}`, or restore a bookmark from before the deploy",
                file=failed.check.file,
                line=failed.check.line,
            )


class DeployFailed(ChangeFailed):
    """A run (migrate, rollback, baseline) failed after it began changing and settled:
    `report` says what was applied, checked and undone, and what still stands."""

    def __init__(
        self,
        message: str,
        *,
        report: MigrateReport | RollbackReport | BaselineReport,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, file=file, line=line)
        self.report = report


class DeployInterrupted(DeployFailed, Interrupted):
    """SIGINT or SIGTERM stopped the run; it settled as after a failure (`report`)."""

    exit_code = 130


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
            hint=f"fix the statements named by `{suggest.command('lint')}`",
            file=first.file,
            line=first.line,
        )
        self.findings = tuple(findings)


# --- how every run ends when it does not succeed ---------------------------------------


class _Failure(Exception):
    """A way out that a run found itself (a request that did not apply as sent, checks
    that failed); `settle` does the rest. `undo=False` where undoing more by machine
    could only make things worse; `unknown` names changes whose fate the run could not
    read."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        hint: str | None = None,
        undo: bool = True,
        unknown: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.hint = hint
        self.undo = undo
        self.unknown = tuple(unknown)


def _stop_reason(
    exc: BaseException, step: str
) -> tuple[str, str | None, int | None, str | None, bool, tuple[str, ...]]:
    """What stopped a run, in words: (reason, file, line, hint, whether to undo, the
    changes whose fate is unknown)."""
    if isinstance(exc, _Failure):
        return exc.message, exc.file, exc.line, exc.hint, exc.undo, exc.unknown
    if isinstance(exc, KeyboardInterrupt):
        return f"{_signal_of(exc)} received while {step}", None, None, None, True, ()
    if isinstance(exc, ReadWrote):
        return exc.message, exc.file, exc.line, exc.hint, False, ()
    if isinstance(exc, D1DeployError):
        return f"{step} failed: {exc.message}", exc.file, exc.line, None, True, ()
    what = f"unexpected internal error while {step}: {type(exc).__name__}: {exc}"
    return what, None, None, None, True, ()


def _signal_of(exc: BaseException) -> str | None:
    if isinstance(exc, Interrupt):
        return exc.signal_name
    return "SIGINT" if isinstance(exc, KeyboardInterrupt) else None


def _was(names: Sequence[str]) -> str:
    return "was" if len(names) == 1 else "were"


class _Run(ABC):
    """One locked run (migrate, rollback, baseline) and the one way it ends when
    anything stops it: `settle`, for every error, any status or code of the API, a
    timeout, a lost connection, SIGINT, SIGTERM or a bug.

    Before its first change the run only releases the lock and passes the error on
    (with its report). From the first change on it settles: it reads the ledger (in one
    request that also fences its lease, so nothing of its own still on its way lands
    afterwards), takes what landed as done, undoes what it applied where that is safe
    (`_settle_changes`), releases the lock, and raises `DeployFailed` (exit 1) or
    `DeployInterrupted` (exit 130) with a message saying what stands and a report. A
    settle is bounded in time (`interrupts.settling`) and refuses a second signal."""

    noun = "deploy"

    def __init__(self, session: ledger.Session) -> None:
        self.s = session
        self.step = "taking the deploy lock"
        """What the run is doing, for the message when it stops there."""
        self.changing = False
        self.bookmark: str | None = None
        self.torn: str | None = None
        """Why the database is not known to stand on whole migrations, when it is not."""

    @property
    def database(self) -> str:
        return self.s.backend.info.name

    def at(self, step: str) -> None:
        """Say what the run does next; stop here if a signal asked for it."""
        self.step = step
        interrupts.checkpoint()

    def send(self, changes: Sequence[ledger.Change], **kwargs: Any) -> ledger.Sent:
        self.changing = True
        return self.s.send(changes, bookmark=self.bookmark, **kwargs)

    def settle(self, exc: BaseException) -> NoReturn:
        signal_name = _signal_of(exc)
        reporting = f"reporting the {self.noun} of {self.database}"
        if not self.changing:
            # From here to the report, a signal is refused: nothing may cut it short.
            interrupts.finishing(reporting)
            lock_held = self.s.close()
            if signal_name is None:
                if isinstance(exc, D1DeployError) and exc.report is None:
                    exc.report = self.final(str(exc), lock_held, None)
                raise exc
            said = (f"{signal_name} received while {self.step}", "nothing was changed", lock_held)
            message = "; ".join(x for x in said if x)
            raise DeployInterrupted(
                message, report=self.final(message, lock_held, signal_name)
            ) from exc
        reason, file, line, hint, undo, unknown = _stop_reason(exc, self.step)
        self.s.notify(f"{reason}; settling: reading the ledger, undoing, releasing the lock")
        with interrupts.settling(
            f"settling the {self.noun} of {self.database}: reading what landed, undoing"
            " this run's changes, releasing the lock"
        ):
            try:
                settled = self._settle_changes(undo, unknown)
            except BaseException as failed:  # the API, a bug: say so
                detail = failed.message if isinstance(failed, D1DeployError) else repr(failed)
                settled = f"undoing this run's changes failed ({detail})"
                self.torn = self.torn or settled
            if interrupts.out_of_time():
                settled = (
                    f"d1deploy gave up after {interrupts.SETTLE_SECONDS:g} s, the time it"
                    f" allows itself to settle: {settled}"
                )
            interrupts.finishing(reporting)
            lock_held = self.s.close()  # within a bound of its own, even out of time
        remains = self.remains()
        parts = [reason, settled]
        if remains:
            parts.append(f"still applied by this {self.noun}: {', '.join(remains)}")
        if (remains or self.torn) and self.bookmark:
            parts.append(f"bookmark before this {self.noun}: {self.bookmark}")
            hint = hint or f"restore it with `{suggest.restore(self.bookmark)}`"
        message = "; ".join(p for p in [*parts, lock_held] if p)
        report = self.final(message, lock_held, signal_name)
        error = DeployInterrupted if signal_name else DeployFailed
        raise error(message, report=report, hint=hint, file=file, line=line) from exc

    def read_outcome(self, names: Sequence[str], unknown: Sequence[str]) -> ledger.Outcome | None:
        """The ledger of `names` after a failure (fenced), or None when it cannot be
        read; then `torn` says which changes' fate is unknown."""
        in_flight, self.s.in_flight = self.s.in_flight, ()
        unknown = [*unknown, *(p.change.name for p in in_flight)]
        try:
            outcome = self.s.fenced_outcome(names, in_flight)
        except D1DeployError as exc:
            if unknown:
                self.torn = (
                    f"could not tell whether {', '.join(dict.fromkeys(unknown))}"
                    f" {_was(unknown)} applied (reading the ledger failed: {exc.message});"
                    " the database is as the failure left it"
                )
            return None
        if torn := self.s.torn(outcome):
            self.torn = (
                f"{', '.join(torn)} {_was(torn)} partly applied (D1 did not roll back its"
                " failed batch); the database is as the failure left it"
            )
        return outcome

    # What each kind of run does and says.
    @abstractmethod
    def _settle_changes(self, undo: bool, unknown: Sequence[str]) -> str:
        """Judge from the ledger what landed and undo what is safe to undo (when `undo`);
        what stands, in a sentence."""

    @abstractmethod
    def remains(self) -> tuple[str, ...]:
        """The migrations the failure leaves applied: ones this run applied (migrate), or
        meant to undo and did not (rollback)."""

    @abstractmethod
    def final(self, error: str, lock_held: str | None, interrupted: str | None) -> Any:
        """The run's report (with `error` when it failed)."""


# --- migrate -------------------------------------------------------------------------


def migrate(
    backend: Backend,
    project: Project,
    options: MigrateOptions = MigrateOptions(),
    *,
    before_change: Callable[[], object] | None = None,
) -> MigrateReport:
    """Apply the pending migrations (up to `options.to`): lock, refuse on drift, lint
    errors or failed prechecks, call `before_change` (the backup) and take a bookmark,
    apply the migrations in as few requests as fit, each verified right after it (with
    `options.atomic`, the final state); on any failure or interrupt after the first
    change, settle (`_Run.settle`): undo this run's migrations newest first, release the
    lock, report.

    :raises LockHeld, DriftDetected, PrechecksFailed: refused before changing anything.
    :raises LintFailed, InputError: a migration or check file is unusable.
    :raises DeployFailed: a change failed; its report says what was undone.
    :raises DeployInterrupted: SIGINT or SIGTERM; settled the same way.
    """
    migrations = discover(project.migrations_dir, project.pattern)
    if options.dry_run:
        shown = plan(backend, project, to=options.to)
        return MigrateReport(shown.ok, backend.info.name, skipped=shown.skipped, plan=shown)
    session = ledger.Session(backend, project)
    deploy = _Deploy(session, migrations, options)
    try:
        return deploy.run(before_change)
    except BaseException as exc:
        deploy.settle(exc)


def _open_taking_bookmark(
    session: ledger.Session, wanted: Sequence[str]
) -> tuple[DbState, str | None]:
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
    started within window + limits.REQUEST_SECONDS (a batch may commit that long after its
    event) + 1 s (clock granularity) before the lock was taken, nothing happened in
    between and the bookmark is kept; after a deploy moments ago it is dropped. Writes
    by others than d1deploy are not the lock's business either way.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        fetched = pool.submit(session.backend.bookmark)
        state = session.open(wanted)
        window = time.monotonic() - started
        try:
            bookmark = fetched.result()
        except D1DeployError:
            return state, None
    if session.lease is None:  # nothing pending: no lock taken, no bookmark wanted
        return state, None
    return state, bookmark if session.quiet_for(window + limits.REQUEST_SECONDS + 1) else None


class _Deploy(_Run):
    """The state of one `migrate` run, so a failure can say (and undo) what it did."""

    def __init__(
        self, session: ledger.Session, migrations: Sequence[Migration], options: MigrateOptions
    ) -> None:
        super().__init__(session)
        self.migrations = migrations
        self.options = options
        self.todo: list[Migration] = []
        self.planned: list[PlannedMigration] = []
        self.later: tuple[str, ...] = ()
        self.deferred: list[str] = []
        self.heading: list[checks.Check] = []
        """Prechecks to run at the head of the first request."""
        self.listed = False
        """Their results were reported already (they also ran before the backup)."""
        self.applied: list[tuple[Migration, PlannedMigration]] = []
        """This run's migrations that are applied and not undone, in order."""
        # What the report says, collected as the run goes; `_report` builds it once.
        self.landed: list[AppliedMigration] = []
        self.results: list[CheckResult] = []
        self.undone: list[RolledBackMigration] = []
        self.backup: object = None
        self.restored_to: str | None = None

    def _report(
        self, lock_held: str | None, error: str | None = None, interrupted: str | None = None
    ) -> MigrateReport:
        """The run's report: as it succeeded, or (with `error`) as it stopped."""
        done = {a.name for a in self.landed}
        stopped = tuple(m.name for m in self.todo if m.name not in done) if error else ()
        return MigrateReport(
            ok=error is None,
            database=self.database,
            applied=tuple(self.landed),
            skipped=stopped + self.later,
            bookmark_before=self.bookmark,
            backup=self.backup,
            checks=tuple(self.results),
            rolled_back=tuple(self.undone),
            restored_to=self.restored_to,
            error=error,
            restore_command=suggest.restore(self.bookmark) if self.bookmark else None,
            still_applied=self.remains() if error else (),
            lock_held=lock_held,
            interrupted=interrupted,
        )

    def run(self, before_change: Callable[[], object] | None) -> MigrateReport:
        # Only --atomic, which asks for the fewest round trips, fetches the bookmark while
        # the lock is taken (see _open_taking_bookmark). Without it the bookmark is taken
        # under the lock, so restoring it brings back this run's short lease, as documented
        # at lock.START_TTL. With a backup the bookmark waits for it: taken before a long
        # export, restoring it would lose every write made meanwhile.
        backend = self.s.backend
        early = self.options.atomic and before_change is None and backend.is_remote
        # The lock is taken only if a migration is missing from the ledger: a database
        # with nothing to do costs this one request.
        wanted = [m.name for m in self.migrations]
        state, bookmark = (
            _open_taking_bookmark(self.s, wanted) if early else (self.s.open(wanted), None)
        )
        return self._planned(state, bookmark, before_change)

    def _planned(
        self, state: DbState, bookmark: str | None, before_change: Callable[[], object] | None
    ) -> MigrateReport:
        backend = self.s.backend
        say = self.s.notify
        self.at("reading the migrations and the ledger")
        status_report = status_of(self.database, self.migrations, state)
        if status_report.schema is not None and not status_report.schema.compared:
            say(f"schema not compared: {status_report.schema.reason}")
        if not self.options.allow_drift:
            refuse_drift(status_report)
        for name in status_report.out_of_order:
            say(f"{name} is numbered below an applied migration; applying it out of order")
        todo, later = select(self.migrations, status_report, self.options.to)
        if todo and self.s.lease is None:
            # Not expected: the lock's condition and this read came in one request. Were
            # they ever to disagree, take the lock as usual and plan again.
            return self._planned(self.s.open(), None, before_change)
        self.todo, self.later = list(todo), tuple(later)
        planned = prepare(todo, state, self.s.guard_tables)
        self.planned = list(planned)
        findings = [f for p in planned for f in p.findings]
        if errors := [f for f in findings if f.severity == "error"]:
            raise LintFailed(errors)
        for f in findings:
            say(f"warning: {f.file}:{f.line}: {f.message}")
        # The check files were read and judged by `prepare`: a broken one has already
        # stopped the deploy, before any change.
        deferred = self.deferred = [p.name for p in planned if p.prechecks_wait]
        # Prechecks that read rows run as assertions at the head of the first request
        # (no window between check and change, no request of their own); the others
        # (probes, expected errors, pragmas) run now. With a backup to take they all run
        # now too, so that a refusal comes before the backup's cost, and the reads once
        # more at the head of the request, closing the window the backup opened.
        now = prechecks_now(planned)
        self.heading = [c for c in now if checks.in_batch(c)]
        self.listed = before_change is not None
        self.at("running the prechecks")
        early = now if self.listed else [c for c in now if not checks.in_batch(c)]
        prechecks = checks.run_checks(backend, early)
        self.results = list(prechecks)
        if any(not r.ok for r in prechecks):
            self._refuse(prechecks)
        if not todo:
            say("nothing to apply: the database is up to date")
            return self._done()
        self.at("taking the backup")
        self.backup = before_change() if before_change else None
        if bookmark is None:
            self.at("taking a Time Travel bookmark")
            bookmark = backend.bookmark()
        say(f"bookmark before this deploy: {bookmark}")
        self.bookmark = bookmark
        # Verify checks that read rows are assertions inside the request, right after
        # their migration (with --atomic, after the request's last one: the final state),
        # so a failing one aborts the request. Each change carries its own from the start,
        # so that packing counts their bytes. The others run after the request, so
        # without --atomic a migration that has them ends its request.
        inside = [[c for c in p.verifies if checks.in_batch(c)] for p in planned]
        outside = [[c for c in p.verifies if not checks.in_batch(c)] for p in planned]
        changes = [_apply(m, p, v) for m, p, v in zip(todo, planned, inside, strict=True)]
        groups = self._groups(changes, bookmark, todo, deferred, outside)
        while groups:
            group = groups.pop(0)
            ms = [todo[i] for i in group]
            head, self.heading = self.heading, []
            listed, self.listed = self.listed, False  # head's results already reported
            if ms[0].name in deferred:
                waited = planned[group.start].prechecks
                head = [c for c in waited if checks.in_batch(c)]
                if rest := [c for c in waited if not checks.in_batch(c)]:
                    self.at(f"running the prechecks of {ms[0].name}")
                    self._checks("precheck", ms[:1], rest)
            verifying = self._verifying(group, inside)
            after = [c for i in group for c in outside[i]]
            self.at(f"applying {_label(ms)}")
            sent = self.send(
                self._sending(group, changes, verifying),
                release=not groups and not after,
                head=assertions.batch_statements(head, assertions.PRECHECKS_ABORT),
            )
            if sent.verdict != "done":
                self._failed_checks(ms, sent, head, verifying)
                if self._one_by_one(group, sent):
                    groups[:0] = [range(i, i + 1) for i in group]
                    if ms[0].name not in deferred:
                        self.heading, self.listed = head, listed
                    continue
                raise self._failure(ms, sent)
            self.applied += [(todo[i], planned[i]) for i in group]
            self._record_apply([planned[i] for i in group], sent)
            # Their SELECTs' answers: the results as listed, and a read that wrote.
            judged = assertions.judge_batch(head, sent.head[: len(head)])
            self._checked("precheck", ms, [r for r in judged if not (listed and r.ok)])
            for i, landed in zip(group, sent.landed, strict=True):
                if i in verifying:
                    verified, found = verifying[i]
                    judged = assertions.judge_batch(found, landed.checks[: len(found)])
                    self._checked("verify", verified, judged)
            if after:
                self.at(f"verifying {_label(ms)}")
                self._checks("verify", ms, after)
        return self._done()

    def _refuse(self, results: Sequence[CheckResult]) -> NoReturn:
        failed = [r for r in results if not r.ok]
        raise PrechecksFailed(
            f"{len(failed)} precheck(s) failed: " + "; ".join(r.check.label for r in failed),
            results=results,
            hint="fix the data the checks show (first rows listed), then deploy again",
        )

    def _failed_checks(
        self,
        ms: Sequence[Migration],
        sent: ledger.Sent,
        head: Sequence[checks.Check],
        verifying: Mapping[int, _Verifying],
    ) -> None:
        """When a request failed on its checks' assertion (nothing of it applied), say
        so as checks that failed: the prechecks of the first request refuse the deploy
        as before it changed anything (exit 5); other failures stop it (settled)."""
        if sent.verdict != "not_applied":
            return
        results = assertions.failed_batch(head, assertions.PRECHECKS_ABORT, sent.error)
        if results is not None:
            # Listed once: a precheck that passed before the backup, failing now.
            self.results = [r for r in self.results if r.check not in head]
            if not self.applied and ms[0].name not in self.deferred:
                self.changing = False  # its one request was aborted: nothing changed
                self.results += results
                self._refuse(self.results)
            self._checked("precheck", ms, results)
        for i, (verified, found) in verifying.items():
            abort = assertions.verify_abort(self.todo[i].name)
            results = assertions.failed_batch(found, abort, sent.error)
            if results is not None:
                self._checked("verify", verified, results, aborted=ms)

    def _done(self) -> MigrateReport:
        return self._report(self.s.close())

    def _groups(
        self,
        changes: Sequence[ledger.Change],
        bookmark: str,
        todo: Sequence[Migration],
        deferred: Sequence[str],
        after: Sequence[Sequence[checks.Check]],
    ) -> list[range]:
        """The requests the migrations go in: as few as fit D1's limits (one, unless
        they are too big). Prechecks that wait for the migrations before theirs start a
        request; without --atomic, so does the migration after one whose verify checks
        cannot ride in its request (probes, expected errors), as they run in between."""
        breaks = {
            i: f"the prechecks of {m.name} can only run once the migrations before it are applied"
            for i, m in enumerate(todo)
            if m.name in deferred
        }
        if not self.options.atomic:
            for i, m in enumerate(todo[:-1]):
                if after[i]:
                    breaks.setdefault(i + 1, f"the verify checks of {m.name} run after it")
        packing = self.s.pack(changes, bookmark, limits=self.options.limits, breaks=breaks)
        if not self.options.atomic:
            return list(packing.groups)
        if len(packing.groups) == 1:
            self.s.notify(f"--atomic: applying {len(changes)} migration(s) in one request")
        else:
            self.s.notify(
                f"--atomic: the {len(changes)} migrations do not fit in one request"
                f" ({'; '.join(packing.cuts)}), so they go in {len(packing.groups)} requests;"
                " if a later one fails, the earlier ones are undone with their rollback SQL"
            )
        return list(packing.groups)

    def _verifying(
        self, group: range, inside: Sequence[Sequence[checks.Check]]
    ) -> dict[int, _Verifying]:
        """The verify checks that ride in the request of `group`, by the migration they
        follow, with the migrations they verify: each its own, or with --atomic all of
        them after the last one, verifying the whole group (the final state)."""
        if self.options.atomic:
            found = [c for i in group for c in inside[i]]
            return {group[-1]: (self.todo[group.start : group.stop], found)} if found else {}
        return {i: ([self.todo[i]], inside[i]) for i in group if inside[i]}

    def _sending(
        self, group: range, changes: Sequence[ledger.Change], verifying: Mapping[int, _Verifying]
    ) -> list[ledger.Change]:
        """The changes of `group` as sent: each already carries its own verify checks;
        with --atomic they follow the last one instead (`_verifying`)."""
        sending = [changes[i] for i in group]
        if not self.options.atomic:
            return sending
        return [
            replace(c, checks=_asserting(verifying[i][1], c.name) if i in verifying else ())
            for i, c in zip(group, sending, strict=True)
        ]

    def _one_by_one(self, group: range, sent: ledger.Sent) -> bool:
        """Whether to send the migrations of a failed request again, one per request:
        without --atomic, when none of them landed and D1 refused the request as a whole
        (`Sent.whole`: its limits on a request's size or time, an error it did not place).
        Each then fails or lands on its own, as if it had never shared a request."""
        if self.options.atomic or len(group) == 1 or sent.verdict != "not_applied":
            return False
        if not sent.whole:
            return False
        self.s.notify(
            f"the request applying {len(group)} migrations failed ({sent.error}) and none"
            " of them was applied; applying them one per request"
        )
        return True

    def _checks(
        self,
        kind: Literal["precheck", "verify"],
        ms: Sequence[Migration],
        found: Sequence[checks.Check],
    ) -> None:
        """Run the verify checks of `ms` (just applied), or the prechecks of `ms[0]`
        (deferred until now: nothing of it is applied yet); a failure stops the run."""
        self._checked(kind, ms, checks.run_checks(self.s.backend, found))

    def _checked(
        self,
        kind: Literal["precheck", "verify"],
        ms: Sequence[Migration],
        results: Sequence[CheckResult],
        *,
        aborted: Sequence[Migration] = (),
    ) -> None:
        """List the results of checks of `ms`; a failure stops the run. `aborted`: the
        request they failed took these migrations with it."""
        self.results += results
        if bad := [r for r in results if not r.ok]:
            what = "; ".join(f"{r.check.label} ({r.outcome})" for r in bad)
            when = (
                f"verification failed after {_label(ms)}"
                if kind == "verify"
                else f"prechecks of {ms[0].name} failed"
            )
            if len(aborted) > len(ms):
                what += f"; none of {_label(aborted)}, sent as one request, was applied"
            raise _Failure(f"{when}: {what}")

    def _record_apply(self, planned: Sequence[PlannedMigration], sent: ledger.Sent) -> None:
        for p, landed in zip(planned, sent.landed, strict=True):
            applied = AppliedMigration(
                p.name, landed.duration_ms, landed.rows_written, len(p.statements), sent.answer_lost
            )
            self.landed.append(applied)
            took = "" if landed.duration_ms is None else f" in {landed.duration_ms:.0f} ms"
            if sent.answer_lost:
                self.s.notify(f"applied {p.name}{took} (its answer was lost; the ledger shows it)")
            else:
                self.s.notify(f"applied {p.name}{took}, {landed.rows_written} rows written")

    def _failure(self, ms: Sequence[Migration], sent: ledger.Sent) -> _Failure:
        """What to say of a request of `ms` that did not apply as sent."""
        label = _label(ms)
        if sent.verdict == "not_applied":
            if len(ms) == 1:
                what = f"{label} failed and was not applied"
            elif sent.failed:
                what = f"{sent.failed} failed, so none of {label} was applied"
            else:
                what = f"the one request applying {label} failed and none of them was applied"
            return _Failure(f"{what}: {sent.error}", file=sent.file, line=sent.line)
        if sent.verdict == "lock_lost":  # the settle says whose it is now
            return _Failure(f"stopped before {ms[0].name}", undo=False)
        unknown = [m.name for m in ms] if sent.verdict == "unknown" else []
        return _Failure(
            f"{label} failed ({sent.error})", file=sent.file, line=sent.line, unknown=unknown
        )

    def _settle_changes(self, undo: bool, unknown: Sequence[str]) -> str:
        outcome = self.read_outcome([m.name for m in self.todo], unknown)
        if outcome is not None:
            self._reconcile(outcome)
        restore = self.options.on_failure == "restore" and self.bookmark is not None
        if self.torn:
            if restore and self.s.lost is None:
                return f"{self.torn}; {self._restore()}"
            return self.torn
        if self.s.lost is not None:
            if not self.applied:
                return f"{self.s.lost}; nothing of this run was applied"
            return f"{self.s.lost}; this run's migrations were not undone: that needs the lock"
        if not undo:
            return "the deploy stopped there, nothing was undone"
        if self.s.lease is None:
            return "the deploy had finished: its last request landed and released the lock"
        return self._undo(restore)

    def _reconcile(self, outcome: ledger.Outcome) -> None:
        """Take the ledger's word for which of this run's migrations are applied: one
        whose answer never came (an interrupt, a lost connection) is this run's too."""
        recorded = {a.name for a in self.landed}
        events = {e.name: e for e in outcome.state.events}
        for m, p in zip(self.todo, self.planned, strict=False):
            if m.name in outcome.in_ledger and m.name not in recorded:
                event = events.get(m.name)
                took = None if event is None or event.duration_ms is None else event.duration_ms
                applied = AppliedMigration(m.name, took, None, len(p.statements), True)
                self.landed.append(applied)
                self.s.notify(f"applied {m.name} (its answer never came; the ledger shows it)")
        self.applied = [
            (m, p)
            for m, p in zip(self.todo, self.planned, strict=False)
            if m.name in outcome.in_ledger
        ]

    def _undo(self, restore: bool) -> str:
        """Undo this run's migrations newest first (together, in as few requests as fit
        D1's limits); the bookmark where that stops, when asked to."""
        assert self.bookmark is not None
        undoable: list[tuple[Migration, str]] = []
        for m, p in reversed(self.applied):
            if p.rollback_sql is None:
                break
            undoable.append((m, p.rollback_sql))
        changes = _rollback_changes(
            self.s, [(m.name, sql, m.sha256, str(m.rollback_path)) for m, sql in undoable]
        )
        for group in self.s.pack(changes, self.bookmark, limits=self.options.limits).groups:
            self.step = f"rolling back {_label([undoable[i][0] for i in group])}"
            sent = self.send([changes[i] for i in group])
            if sent.verdict != "done":
                names = _label([undoable[i][0] for i in group])
                if sent.verdict in ("partly", "unknown"):
                    self.torn = f"rolling back {names} failed ({sent.error})"
                if restore and sent.verdict != "lock_lost":
                    return f"rolling back {names} failed too ({sent.error}); {self._restore()}"
                after = f" after {self._undone()}" if self.undone else ""
                return f"rolling back {names} failed ({sent.error}){after}"
            for landed in sent.landed:
                self.applied.pop()
                undone = RolledBackMigration(
                    landed.name, "file", landed.duration_ms, landed.rows_written, sent.answer_lost
                )
                self.undone.append(undone)
                self.s.notify(f"rolled back {landed.name}")
        if self.applied:
            m = self.applied[-1][0]
            if restore:
                return self._restore()
            return f"{m.name} has no rollback SQL, so the rollback stopped there ({self._undone()})"
        return self._undone()

    def _undone(self) -> str:
        names = [r.name for r in self.undone]
        return f"rolled back {', '.join(names)}" if names else "nothing was rolled back"

    def _restore(self) -> str:
        assert self.bookmark is not None
        self.step = f"restoring the database to {self.bookmark}"
        self.s.notify(self.step)
        self.s.backend.restore(self.bookmark)
        self.s.restored()
        self.applied.clear()
        self.torn = None
        self.restored_to = self.bookmark
        return f"the database was restored to {self.bookmark}"

    def remains(self) -> tuple[str, ...]:
        return tuple(m.name for m, _ in self.applied)

    def final(self, error: str, lock_held: str | None, interrupted: str | None) -> MigrateReport:
        return self._report(lock_held, error, interrupted)


def _label(ms: Sequence[Migration]) -> str:
    """One migration's name, or several sent in one request."""
    if len(ms) == 1:
        return ms[0].name
    return f"the {len(ms)} migrations {ms[0].name} to {ms[-1].name}"


def _asserting(found: Sequence[checks.Check], name: str) -> tuple[Statement, ...]:
    """`found`, the verify checks that follow migration `name` in its request, as
    assertions."""
    return tuple(assertions.batch_statements(found, assertions.verify_abort(name)))


def _apply(m: Migration, p: PlannedMigration, verifies: Sequence[checks.Check]) -> ledger.Change:
    """`m` as a change, carrying `verifies` (its read verify checks) as assertions."""
    return ledger.Change(
        m.name,
        "apply",
        p.statements,
        m.sha256,
        p.rollback_sql,
        p.guarded_tables,
        p.dropped_tables,
        p.allowed_row_loss,
        _asserting(verifies, m.name),
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
    project: Project,
    options: RollbackOptions = RollbackOptions(),
    *,
    before_change: Callable[[], object] | None = None,
) -> RollbackReport:
    """Undo applied migrations newest first: the last one by default, the newest
    `steps`, or every one applied after `to`. Each runs in one request with the removal
    of its ledger row. The rollback SQL stored at apply time is used when the file
    changed or is gone. The CLI asks for confirmation; this function does not. A failure
    or interrupt settles as a deploy's does (`_Run.settle`): what was rolled back stays
    so, the rest is named.

    :raises UsageError: bad `to`/`steps`.
    :raises RollbackRefused: a target has no rollback SQL (nothing changed).
    :raises DeployFailed, DeployInterrupted: a rollback failed, or a signal stopped it.
    """
    to, steps = options.to, options.steps
    if to is not None and steps is not None:
        raise UsageError("give --to or --steps, not both")
    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    folder = project.migrations_dir
    found = discover(folder, project.pattern) if folder.is_dir() else []
    session = ledger.Session(backend, project)
    run = _Rollback(session, {m.name: m for m in found})
    try:
        return run.run(to, steps, before_change)
    except BaseException as exc:
        run.settle(exc)


_SOURCE_WORDS = {"file": "file", "history": "copy stored when it was applied"}


class _Rollback(_Run):
    """The state of one `rollback` run."""

    noun = "rollback"

    def __init__(self, session: ledger.Session, files: dict[str, Migration]) -> None:
        super().__init__(session)
        self.files = files
        self.targets: list[str] = []
        self.sources: dict[str, Literal["file", "history"]] = {}
        self.report = RollbackReport(ok=True, database=session.backend.info.name)

    def run(
        self, to: str | None, steps: int | None, before_change: Callable[[], object] | None
    ) -> RollbackReport:
        say, backend = self.s.notify, self.s.backend
        state = self.s.open()
        rows = list(reversed(state.ledger))
        if to is not None:
            target = _resolve_applied(to, [r.name for r in rows])
            self.targets = [r.name for r in rows[: [r.name for r in rows].index(target)]]
        else:
            self.targets = [r.name for r in rows[: steps or 1]]
        if not self.targets:
            say("nothing to roll back")
            return self._done()
        stored = ledger.rollback_sql_of(backend, self.targets)
        chosen = [_rollback_source(n, self.files.get(n), stored.get(n)) for n in self.targets]
        self.sources = {n: source for n, (_, source) in zip(self.targets, chosen, strict=True)}
        if missing := [n for n, (sql, _) in zip(self.targets, chosen, strict=True) if sql is None]:
            event = state.last_event(missing[0])
            mark = event.bookmark_before if event else None
            raise RollbackRefused(
                f"{missing[0]} has no rollback SQL (no rollback file, none stored when it was"
                " applied); nothing was rolled back",
                report=replace(self.report, ok=False, error=f"{missing[0]} has no rollback SQL"),
                hint=f"restore the database with `{suggest.restore(mark)}`"
                if mark
                else "restore the database from a backup or a Time Travel bookmark taken"
                f" before it was applied (`{suggest.command('restore', '--timestamp', 'T')}`)",
            )
        self.at("taking the backup")
        backup = before_change() if before_change else None
        self.at("taking a Time Travel bookmark")
        self.bookmark = backend.bookmark()
        say(f"bookmark before this rollback: {self.bookmark}")
        self.report = replace(
            self.report,
            backup=backup,
            bookmark_before=self.bookmark,
            restore_command=suggest.restore(self.bookmark),
        )
        items = []
        for name, (sql, source) in zip(self.targets, chosen, strict=True):
            assert sql is not None
            m = self.files.get(name)
            label = str(m.rollback_path) if m and m.rollback_path and source == "file" else ""
            items.append((name, sql, m.sha256 if m else None, label))
        # One request per migration, so a failure stops between two rollbacks.
        changes = _rollback_changes(self.s, items)
        for i, change in enumerate(changes):
            self.at(f"rolling back {change.name}")
            sent = self.send([change], release=i == len(changes) - 1)
            if sent.verdict != "done":
                unknown = [change.name] if sent.verdict == "unknown" else []
                raise _Failure(
                    f"rolling back {change.name} failed ({sent.error})",
                    file=sent.file,
                    line=sent.line,
                    undo=False,
                    unknown=unknown,
                )
            (landed,) = sent.landed
            self._record(change.name, landed.duration_ms, landed.rows_written, sent.answer_lost)
        return self._done()

    def _record(self, name: str, took: float | None, rows: int | None, answer_lost: bool) -> None:
        source = self.sources[name]
        undone = RolledBackMigration(name, source, took, rows, answer_lost)
        self.report = replace(self.report, rolled_back=(*self.report.rolled_back, undone))
        self.s.notify(f"rolled back {name} using the rollback SQL from the {_SOURCE_WORDS[source]}")

    def _done(self) -> RollbackReport:
        return replace(self.report, lock_held=self.s.close())

    def _settle_changes(self, undo: bool, unknown: Sequence[str]) -> str:
        outcome = self.read_outcome(self.targets, unknown)
        if outcome is not None:
            done = {r.name for r in self.report.rolled_back}
            events = {e.name: e for e in outcome.state.events}
            for name in self.targets:
                if name not in outcome.in_ledger and name not in done:
                    event = events.get(name)
                    took = None if event is None else event.duration_ms
                    self._record(name, None if took is None else float(took), None, True)
        if self.torn:
            return self.torn
        names = [r.name for r in self.report.rolled_back]
        return f"rolled back: {', '.join(names) or 'nothing'}"

    def remains(self) -> tuple[str, ...]:
        done = {r.name for r in self.report.rolled_back}
        return tuple(n for n in self.targets if n not in done)

    def final(self, error: str, lock_held: str | None, interrupted: str | None) -> RollbackReport:
        return replace(
            self.report,
            ok=False,
            error=error,
            not_rolled_back=self.remains(),
            lock_held=lock_held,
            interrupted=interrupted,
        )


def _resolve_applied(name: str, applied: Sequence[str]) -> str:
    wanted = name.replace("\\", "/").rsplit("/", 1)[-1]
    for candidate in applied:
        if wanted in (candidate, candidate.removesuffix(".sql")):
            return candidate
    raise UsageError(
        f"{name!r} is not an applied migration", hint=f"see `{suggest.command('status')}`"
    )


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
    project: Project,
    name: str,
    *,
    force: bool = False,
) -> BaselineReport:
    """Record every migration up to `name` as applied without running it, for a
    database that already has their effect (production before d1deploy), in one
    request with the lock's release; settled as a deploy is when it fails.

    :raises SchemaDrift: unless `force`, when the live schema is not the one those
        migrations leave (or that cannot be checked); nothing is recorded.
    """
    migrations = discover(project.migrations_dir, project.pattern)
    target = resolve(migrations, name)
    session = ledger.Session(backend, project)
    run = _Baseline(session)
    try:
        return run.run(migrations, target.name, force=force)
    except BaseException as exc:
        run.settle(exc)


class _Baseline(_Run):
    """The state of one `baseline` run."""

    noun = "baseline"

    def __init__(self, session: ledger.Session) -> None:
        super().__init__(session)
        self.todo: list[Migration] = []
        self.report = BaselineReport(session.backend.info.name, (), ())

    def run(self, migrations: Sequence[Migration], target: str, *, force: bool) -> BaselineReport:
        state = self.s.open()
        applied = state.applied()
        upto = migrations[: [m.name for m in migrations].index(target) + 1]
        self.todo = [m for m in upto if m.name not in applied]
        already = tuple(m.name for m in upto if m.name in applied)
        self.report = replace(self.report, already_applied=already)
        if not self.todo:
            self.s.notify(f"nothing to record: every migration up to {target} is already applied")
            return replace(self.report, lock_held=self.s.close())
        found = schema.refuse_baseline(
            migrations, state, target, [m.name for m in self.todo], force=force
        )
        self.report = replace(
            self.report, forced_over=found.differences, schema_unchecked=found.reason
        )
        changes = [
            ledger.Change(m.name, "baseline", (), m.sha256, m.rollback_text()) for m in self.todo
        ]
        self.at(f"recording {_label(self.todo)} as applied")
        sent = self.send(changes, release=True)
        if sent.verdict != "done":
            unknown = [m.name for m in self.todo] if sent.verdict == "unknown" else []
            raise _Failure(
                f"recording {_label(self.todo)} failed ({sent.error})", undo=False, unknown=unknown
            )
        self.report = replace(self.report, recorded=tuple(m.name for m in self.todo))
        for m in self.todo:
            self.s.notify(f"recorded {m.name} as applied (not run)")
        return replace(self.report, lock_held=self.s.close())

    def _settle_changes(self, undo: bool, unknown: Sequence[str]) -> str:
        outcome = self.read_outcome([m.name for m in self.todo], unknown)
        if outcome is not None:
            recorded = tuple(m.name for m in self.todo if m.name in outcome.in_ledger)
            self.report = replace(self.report, recorded=recorded)
        return self.torn or f"recorded: {', '.join(self.report.recorded) or 'nothing'}"

    def remains(self) -> tuple[str, ...]:
        return ()

    def final(self, error: str, lock_held: str | None, interrupted: str | None) -> BaselineReport:
        return replace(
            self.report, ok=False, error=error, lock_held=lock_held, interrupted=interrupted
        )


# --- verify --------------------------------------------------------------------------


def verify(
    backend: Backend,
    project: Project,
    *,
    name: str | None = None,
) -> VerifyReport:
    """Run the verify checks of the applied migrations (or of `name` only)."""
    say = project.notify
    migrations = discover(project.migrations_dir, project.pattern)
    state = ledger.read_state(backend, project.table)
    applied = state.applied()
    if name is not None:
        chosen = [resolve(migrations, name)]
        if chosen[0].name not in applied:
            raise UsageError(
                f"{chosen[0].name} is not applied", hint=f"see `{suggest.command('status')}`"
            )
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
