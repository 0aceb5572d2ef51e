"""Fleet mode: one operation over many D1 databases (one database per tenant or region).

Owns choosing the databases (`select_databases`), running one task per database with
bounded concurrency and canaries first (`run_fleet`) into a `FleetReport`,
and `remote_task`, which runs a backend operation on each database through one shared
`D1Client`.

Sharing one client is safe and is the intended set-up: httpx.Client is thread-safe,
and `D1Client` keeps its retry state per call (`_Call`, and tenacity's per-thread
iteration state). So the whole fleet uses one connection pool and one
`ratelimit.RateLimitTransport` (a 429 on any database pauses every worker, instead of N
independent backoffs, and the account's request budget holds for the fleet)::

    client = D1Client(..., transport=RateLimitTransport())
    report = run_fleet(select_databases(client, matching="tenant-*"),
                       remote_task(client, lambda backend: migrate(backend, ...)))

A task signals a database's failure by raising; a returned report counts as "ok", so
wrap operations that report failure in their result (`verify`) to raise.
"""

from __future__ import annotations

import fnmatch
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from d1deploy import errors
from d1deploy.backend import Backend, DatabaseInfo
from d1deploy.client import D1Client
from d1deploy.remote import RemoteBackend

R = TypeVar("R")

Status = Literal["ok", "failed", "skipped"]

EXIT_PRIORITY: tuple[int, ...] = (1, 130, 5, 3, 2, 4)
"""Exit codes from the most to the least severe; a fleet exits with the first one any
database failed with, so CI sees the worst thing that happened:

1 a database failed after changes began (its report says what was undone): a person
  must look at that database before anything else;
130 a signal stopped databases mid-run (each settled: its report says what stands);
5 refused (lock held, drift, failed precheck): that database's state needs a decision;
3 setup (token, permission, a database gone): the configuration needs fixing;
2 bad usage or input files: the files need fixing, nothing changed;
4 the API stayed unavailable: the only transient one, so it ranks last. Exit 4 thus
  means every failure was transient and re-running (which continues where the run
  stopped) is the whole fix.
A task's exception that is not a `D1DeployError` is a bug with unknown effects: 1.
"""

INTERRUPTED_EXIT = 130
"""Exit code when databases were skipped by Ctrl-C or `stop` and none failed (the
CLI's code for Ctrl-C)."""

_LISTED = 20


# --- choosing the databases ------------------------------------------------------------


class DatabaseLister(Protocol):
    """What `select_databases` needs from a client (`D1Client` is one)."""

    def list_databases(self) -> list[DatabaseInfo]: ...


def select_databases(
    source: DatabaseLister | Sequence[DatabaseInfo],
    *,
    names: Sequence[str] = (),
    matching: str | None = None,
) -> list[DatabaseInfo]:
    """The databases named (by name or UUID) plus those whose name matches the glob
    `matching` (fnmatch, case-sensitive, whole name), without duplicates, sorted by name
    so canaries and reports are the same on every run.

    `source` is a client (its database list is read once, whatever the number of names)
    or an already-read list.

    :raises UsageError: neither names nor a glob were given.
    :raises NotFound: a name does not exist, or the glob matches no database.
    """
    if not names and matching is None:
        raise errors.UsageError(
            "no databases selected for the fleet",
            hint="give --database NAME (repeatable) or --databases-matching GLOB",
        )
    known = list(source) if isinstance(source, Sequence) else source.list_databases()
    by_name = {d.name: d for d in known}
    by_uuid = {d.uuid.lower(): d for d in known}
    chosen: dict[str, DatabaseInfo] = {}
    missing: list[str] = []
    for wanted in names:
        found = by_name.get(wanted) or by_uuid.get(wanted.lower())
        if found is None:
            missing.append(wanted)
        else:
            chosen[found.uuid] = found
    if missing:
        shown = ", ".join(repr(n) for n in dict.fromkeys(missing))
        raise errors.NotFound(
            f"database(s) {shown} not found; {_listing(known)}",
            hint="check the --database values (`d1deploy databases` lists them) and the "
            "account id (CLOUDFLARE_ACCOUNT_ID)",
        )
    if matching is not None:
        matched = [d for d in known if fnmatch.fnmatchcase(d.name, matching)]
        if not matched:
            raise errors.NotFound(
                f"no database name matches {matching!r}; {_listing(known)}",
                hint="the glob is matched case-sensitively against whole names "
                "(`*` any text, `?` one character, `[abc]` one of a set)",
            )
        chosen.update((d.uuid, d) for d in matched)
    return sorted(chosen.values(), key=lambda d: (d.name, d.uuid))


def _listing(known: Sequence[DatabaseInfo]) -> str:
    if not known:
        return "the account has no D1 databases"
    names = sorted(d.name for d in known)
    more = f" (and {len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return "databases in this account: " + ", ".join(names[:_LISTED]) + more


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetError:
    """Why one database failed. `report` is the partial report the exception carried
    (`DeployFailed.report`: what was applied and undone); `traceback` is kept only for
    exceptions that are not `D1DeployError`s, i.e. bugs."""

    type: str
    message: str
    exit_code: int
    hint: str | None = None
    report: object = None
    traceback: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> FleetError:
        if isinstance(exc, errors.D1DeployError):
            return cls(
                type(exc).__name__,
                str(exc),
                exc.exit_code,
                exc.hint,
                report=getattr(exc, "report", None),
            )
        return cls(
            type(exc).__name__,
            str(exc) or type(exc).__name__,
            1,
            "this is a bug in d1deploy; the traceback is in the fleet report",
            traceback="".join(traceback.format_exception(exc)),
        )


@dataclass(frozen=True)
class FleetResult(Generic[R]):
    """One database's outcome: `value` is what the task returned (when ok), `error` why
    it failed, `reason` why it was skipped."""

    name: str
    uuid: str
    status: Status
    value: R | None = None
    error: FleetError | None = None
    reason: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class FleetReport(Generic[R]):
    """Every database's result, in the order the databases were given.

    `canary_failed` names the canary whose failure stopped the run; `interrupted` says
    Ctrl-C or the `stop` event kept databases from starting.
    """

    results: tuple[FleetResult[R], ...]
    canary_failed: str | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def counts(self) -> dict[Status, int]:
        found: dict[Status, int] = {"ok": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            found[r.status] += 1
        return found

    @property
    def failed(self) -> tuple[FleetResult[R], ...]:
        return tuple(r for r in self.results if r.status == "failed")

    def raise_for_verdict(self) -> None:
        """:raises FleetFailed: unless every database succeeded."""
        if not self.ok:
            raise FleetFailed(self)

    @property
    def exit_code(self) -> int:
        """0 when every database is ok; else the most severe failure (`EXIT_PRIORITY`),
        or `INTERRUPTED_EXIT` when databases were only skipped."""
        codes = {r.error.exit_code for r in self.results if r.error is not None}
        for code in EXIT_PRIORITY:
            if code in codes:
                return code
        if codes:
            return min(codes)
        return 0 if self.ok else INTERRUPTED_EXIT


class FleetFailed(errors.D1DeployError):
    """Some databases failed; the exit code is the most severe one (`EXIT_PRIORITY`) and
    `report` holds every database's result."""

    def __init__(self, report: FleetReport[Any]) -> None:
        failed = [r.name for r in report.failed]
        skipped = report.counts["skipped"]
        super().__init__(
            f"{len(failed)} of {len(report.results)} database(s) failed"
            + (f": {', '.join(failed[:10])}" if failed else "")
            + (f"; {skipped} skipped" if skipped else ""),
            hint="fix what each failed database reports, then run the same command again: "
            "databases already done have nothing pending",
        )
        self.exit_code = report.exit_code
        self.report = report


# --- running ---------------------------------------------------------------------------


def run_fleet(
    databases: Sequence[DatabaseInfo],
    task: Callable[[DatabaseInfo], R],
    *,
    concurrency: int = 8,
    canary: int = 0,
    notify: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FleetReport[R]:
    """Run `task` once per database: the first `canary` databases one at a time, and
    only if all of them succeed, the rest on `concurrency` worker threads.

    Every task runs in a worker thread and its exception (any exception) is captured in
    that database's result, so one database's failure never touches another and nothing
    propagates. Ctrl-C (KeyboardInterrupt in the calling thread) or setting `stop` stops
    starting databases: running ones finish (the CLI's signal handling makes them stop at
    their next step and settle, see `interrupts`), the others are marked skipped, and the
    report is returned. A second Ctrl-C while waiting for running ones propagates, unless
    the CLI's handler refuses it.
    `notify` gets one line per finished database, from worker threads, one at a time.

    :raises UsageError: `concurrency` below 1 or `canary` below 0.
    """
    if concurrency < 1:
        raise errors.UsageError(f"--concurrency must be at least 1 (got {concurrency})")
    if canary < 0:
        raise errors.UsageError(f"--canary must be 0 or more (got {canary})")
    dbs = list(databases)
    canaries = min(canary, len(dbs))
    slots: list[FleetResult[R] | None] = [None] * len(dbs)
    say = _Progress(notify, len(dbs))

    def job(i: int) -> None:
        result = slots[i] = _run_one(dbs[i], task, clock)
        say.finished(result, canary=i < canaries)

    def failed_canary() -> str | None:
        return next((r.name for r in slots[:canaries] if r is not None and not r.ok), None)

    interrupted = False
    with ThreadPoolExecutor(concurrency, thread_name_prefix="d1deploy-fleet") as pool:
        running: set[Future[None]] = set()
        try:
            # The calling thread only schedules, so Ctrl-C lands here and never inside
            # a task; it submits one database per free worker so that stopping leaves
            # nothing queued. Canaries run alone, and all finish before the rest start.
            for i in range(len(dbs)):
                width = 1 if i < canaries else concurrency
                while running and (len(running) >= width or i == canaries):
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                if failed_canary() or (stop is not None and stop.is_set()):
                    break
                running.add(pool.submit(job, i))
            for future in running:
                future.result()
        except KeyboardInterrupt:
            interrupted = True
            say.line("interrupted: waiting for the running databases to finish")
    culprit = failed_canary()
    if culprit:
        reason = f"canary {culprit} failed"
    else:
        interrupted = interrupted or any(r is None for r in slots)
        reason = "interrupted before it started"
    skipped = [i for i, r in enumerate(slots) if r is None]
    if skipped:
        say.line(f"{reason}: skipped {len(skipped)} database(s)")
    results = tuple(
        r if r is not None else FleetResult(d.name, d.uuid, "skipped", reason=reason)
        for d, r in zip(dbs, slots, strict=True)
    )
    return FleetReport(results, canary_failed=culprit, interrupted=interrupted)


def _run_one(
    info: DatabaseInfo, task: Callable[[DatabaseInfo], R], clock: Callable[[], float]
) -> FleetResult[R]:
    started = clock()
    try:
        value = task(info)
    # Worker threads never receive Ctrl-C, so even a BaseException here is the task's
    # own failure (sys.exit in a task, say) and must not escape its database.
    except BaseException as exc:
        took = (clock() - started) * 1000
        return FleetResult(
            info.name, info.uuid, "failed", error=FleetError.of(exc), duration_ms=took
        )
    return FleetResult(
        info.name, info.uuid, "ok", value=value, duration_ms=(clock() - started) * 1000
    )


class _Progress:
    """Serialises `notify` across worker threads and numbers finished databases."""

    def __init__(self, notify: Callable[[str], None] | None, total: int) -> None:
        self._notify = notify
        self._total = total
        self._done = 0
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        if self._notify is not None:
            with self._lock:
                self._notify(text)

    def finished(self, result: FleetResult[Any], *, canary: bool) -> None:
        with self._lock:
            self._done += 1
            if self._notify is None:
                return
            took = f"{result.duration_ms / 1000:.1f} s"
            what = f"[{self._done}/{self._total}] {'canary ' if canary else ''}{result.name}"
            if result.error is None:
                self._notify(f"{what}: ok in {took}")
            else:
                self._notify(
                    f"{what}: failed after {took} (exit {result.error.exit_code}): "
                    f"{result.error.message}"
                )


# --- sharing one client ----------------------------------------------------------------


class _SharedClientBackend(RemoteBackend):
    """A `RemoteBackend` whose `close()` leaves the fleet's shared client open."""

    def close(self) -> None:
        return None


def remote_task(client: D1Client, operation: Callable[[Backend], R]) -> Callable[[DatabaseInfo], R]:
    """A fleet task running `operation` on each database through the shared `client`
    (closing a backend does not close the client: its owner closes it once)."""

    def task(info: DatabaseInfo) -> R:
        # The list's entry, without a GET per database: the one fact it may lack that
        # an operation uses, the size, comes with the deploy's first answer (D1's
        # `size_after`, see `ledger.Session.size`).
        return operation(_SharedClientBackend(client, info))

    return task
