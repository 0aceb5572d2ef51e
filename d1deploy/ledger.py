"""The ledger: wrangler's migrations table, d1deploy's history table, and reading both.

The migrations table is byte-for-byte wrangler's (`d1_migrations` by default), so a
project moves between `wrangler d1 migrations apply` and d1deploy without re-running
anything. d1deploy's own facts live beside it in `_d1deploy_history`, one row per event
(apply, rollback, baseline): the sha256 of the file, the rollback SQL as it was when
applied, the Time Travel bookmark before, the duration and who ran it.

An apply or rollback event is written at the START of its migration's batch with no
duration, and completed at the end of the same batch. A batch that D1 did not abort
therefore leaves a visible trace (an event without duration), which is how the engine
tells "partly applied" from "not applied".

`Session` is one locked run: it opens with ONE request (create the tables, take the
lease, read schema, ledger and history), then sends changes (a migration's apply or
rollback) one request at a time, each request holding one change or several consecutive
ones (`pack` says how many fit D1's limits), and judges any failure or lost answer by
re-reading the ledger of every change the request held.

Why one module of ~800 lines: the tables' statements and their reading (the first half)
are what `Session` sends and judges by, and the judge must read exactly what the
statements wrote. The split that fits is `session.py` (`Session`, `Change`, `Sent`,
packing) beside this module; it waits for #17's `Project`, which changes how
`Session` is built in a parallel branch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from d1deploy import guard, interrupts, lock, suggest
from d1deploy.backend import Backend, QueryResult, SqlValue, Statement
from d1deploy.errors import (
    D1DeployError,
    NetworkError,
    OutOfTime,
    ServerError,
    SqlError,
    Unavailable,
    Unreachable,
    UsageError,
)
from d1deploy.guard import quote_ident, quote_text

if TYPE_CHECKING:
    from d1deploy.project import Project

HISTORY_TABLE = "_d1deploy_history"

Event = Literal["apply", "rollback", "baseline"]
Notify = Callable[[str], None]

CREATE_HISTORY = f"""CREATE TABLE IF NOT EXISTS {HISTORY_TABLE}(
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('apply', 'rollback', 'baseline')),
    sha256          TEXT,
    rollback_sql    TEXT,
    bookmark_before TEXT,
    duration_ms     INTEGER,
    actor           TEXT,
    at              TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"""

SCHEMA_SQL = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type <> 'table', rowid"
"""The live schema; tables first so that replaying it creates what indexes need."""

_HISTORY_COLUMNS = "id, name, event, sha256, bookmark_before, duration_ms, actor, at"


def create_ledger_sql(table: str) -> str:
    """Wrangler's exact DDL (`getCreateMigrationsTableQuery`)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(table)}(\n"
        "\t\tid         INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "\t\tname       TEXT UNIQUE,\n"
        "\t\tapplied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL\n"
        ");"
    )


@dataclass(frozen=True)
class LedgerRow:
    id: int
    name: str
    applied_at: str


@dataclass(frozen=True)
class HistoryEvent:
    id: int
    name: str
    event: str
    sha256: str | None
    bookmark_before: str | None
    duration_ms: int | None
    actor: str | None
    at: str


@dataclass(frozen=True)
class SchemaObject:
    type: str
    name: str
    tbl_name: str
    sql: str | None


def is_internal(name: str, table: str) -> bool:
    """Objects that are not the user's: SQLite's, Cloudflare's, d1deploy's, the ledger."""
    return name.startswith(("sqlite_", "_cf_", "_d1deploy_")) or name == table


@dataclass(frozen=True)
class DbState:
    """What the database says: schema, ledger rows, the last complete event per name."""

    table: str
    schema: tuple[SchemaObject, ...]
    ledger: tuple[LedgerRow, ...] = ()
    events: tuple[HistoryEvent, ...] = ()

    @property
    def has_ledger(self) -> bool:
        return any(o.type == "table" and o.name == self.table for o in self.schema)

    @property
    def has_history(self) -> bool:
        return any(o.type == "table" and o.name == HISTORY_TABLE for o in self.schema)

    def applied(self) -> dict[str, LedgerRow]:
        return {row.name: row for row in self.ledger}

    def last_event(self, name: str) -> HistoryEvent | None:
        """The newest complete event recorded for `name`, if any."""
        found = [e for e in self.events if e.name == name]
        return found[-1] if found else None

    def user_schema(self) -> list[SchemaObject]:
        return [o for o in self.schema if o.sql and not is_internal(o.name, self.table)]

    def user_tables(self) -> list[str]:
        return [o.name for o in self.user_schema() if o.type == "table"]

    def fingerprint(self) -> tuple[tuple[str, str, str], ...]:
        """The user's schema as comparable data (to tell whether a batch changed it)."""
        return tuple(sorted((o.type, o.name, o.sql or "") for o in self.user_schema()))


def read_statements(table: str) -> list[Statement]:
    """Reads of the ledger and of the newest complete history event per migration; the
    two tables must exist (see `setup_statements`)."""
    return [
        Statement(f"SELECT id, name, applied_at FROM {quote_ident(table)} ORDER BY id"),
        Statement(
            f"SELECT {_HISTORY_COLUMNS} FROM {HISTORY_TABLE} WHERE id IN ("
            f"SELECT max(id) FROM {HISTORY_TABLE} WHERE duration_ms IS NOT NULL GROUP BY name"
            ") ORDER BY id"
        ),
    ]


def setup_statements(table: str) -> list[Statement]:
    return [Statement(create_ledger_sql(table)), Statement(CREATE_HISTORY)]


def state_from(
    table: str,
    schema: QueryResult,
    ledger: QueryResult | None = None,
    events: QueryResult | None = None,
) -> DbState:
    return DbState(
        table=table,
        schema=tuple(
            SchemaObject(str(r[0]), str(r[1]), str(r[2]), _text(r[3])) for r in schema.rows
        ),
        ledger=tuple(LedgerRow(int(_num(r[0])), str(r[1]), str(r[2])) for r in _rows(ledger)),
        events=tuple(
            HistoryEvent(
                id=int(_num(r[0])),
                name=str(r[1]),
                event=str(r[2]),
                sha256=_text(r[3]),
                bookmark_before=_text(r[4]),
                duration_ms=None if r[5] is None else int(_num(r[5])),
                actor=_text(r[6]),
                at=str(r[7]),
            )
            for r in _rows(events)
        ),
    )


def _rows(result: QueryResult | None) -> Sequence[tuple[SqlValue, ...]]:
    return result.rows if result is not None else ()


def _text(value: SqlValue) -> str | None:
    return None if value is None else str(value)


def _num(value: SqlValue) -> int | float:
    return value if isinstance(value, int | float) else int(str(value))


def read_state(backend: Backend, table: str) -> DbState:
    """Read the schema, then the ledger and history when they exist. Read-only: a
    database without a ledger reads as "nothing applied" and nothing is created."""
    schema = backend.run([Statement(SCHEMA_SQL)], read_only=True)[0]
    state = state_from(table, schema)
    reads = read_statements(table)
    wanted = [reads[0]] if state.has_ledger else []
    if state.has_history:
        wanted.append(reads[1])
    if not wanted:
        return state
    results = backend.run(wanted, read_only=True)
    ledger = results[0] if state.has_ledger else None
    events = results[-1] if state.has_history else None
    return state_from(table, schema, ledger, events)


def insert_ledger(table: str, name: str) -> Statement:
    """Wrangler's bookkeeping row (it only ever writes `name`)."""
    return Statement(f"INSERT INTO {quote_ident(table)} (name) VALUES (?)", (name,))


def delete_ledger(table: str, name: str) -> Statement:
    return Statement(f"DELETE FROM {quote_ident(table)} WHERE name = ?", (name,))


def start_event(
    name: str,
    event: Event,
    *,
    sha256: str | None,
    rollback_sql: str | None,
    bookmark_before: str | None,
    actor: str,
    duration_ms: int | None = None,
) -> Statement:
    """A history row. Without `duration_ms` it is incomplete until `finish_event` runs
    in the same batch (the trace that tells a torn batch from one D1 rolled back)."""
    return Statement(
        f"INSERT INTO {HISTORY_TABLE}"
        " (name, event, sha256, rollback_sql, bookmark_before, duration_ms, actor)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, event, sha256, rollback_sql, bookmark_before, duration_ms, actor),
    )


def finish_event(name: str) -> Statement:
    """Complete the newest incomplete event of `name` with the time its batch took, from
    the database clock (SQLite's 'now' advances between the statements of a batch)."""
    return Statement(
        f"UPDATE {HISTORY_TABLE} SET duration_ms ="
        " max(0, CAST(round((julianday('now') - julianday(at)) * 86400000) AS INTEGER))"
        f" WHERE id = (SELECT max(id) FROM {HISTORY_TABLE}"
        " WHERE name = ? AND duration_ms IS NULL) RETURNING duration_ms",
        (name,),
    )


def _literals(names: Iterable[str]) -> str:
    # Literals, not parameters: D1 allows at most 100 bound parameters per statement.
    return ", ".join(quote_text(n) for n in dict.fromkeys(names))


def outcome_statements(table: str, names: Sequence[str]) -> list[Statement]:
    """Reads that tell what happened to a batch changing `names`: their ledger rows, the
    newest history event of each (complete or not), and the schema. Read-only; the
    tables exist."""
    wanted = _literals(names)
    return [
        Statement(
            f"SELECT id, name, applied_at FROM {quote_ident(table)} WHERE name IN ({wanted})"
            " ORDER BY id"
        ),
        Statement(
            f"SELECT {_HISTORY_COLUMNS} FROM {HISTORY_TABLE} WHERE id IN ("
            f"SELECT max(id) FROM {HISTORY_TABLE} WHERE name IN ({wanted}) GROUP BY name"
            ") ORDER BY id"
        ),
        Statement(SCHEMA_SQL),
    ]


@dataclass(frozen=True)
class Outcome:
    """What the database says after a batch's answer was an error or never came:
    `state.ledger` holds the ledger rows of the batch's names, `state.events` the newest
    event of each name, complete or not."""

    state: DbState

    @property
    def in_ledger(self) -> frozenset[str]:
        return frozenset(row.name for row in self.state.ledger)

    def landed(self, parts: Sequence[_Part]) -> list[str]:
        """The changes of `parts` the ledger shows done (applied, recorded, rolled back)."""
        return [
            p.change.name
            for p in parts
            if (p.change.name in self.in_ledger) == (p.change.event != "rollback")
        ]


def read_outcome(backend: Backend, table: str, names: Sequence[str]) -> Outcome:
    ledger, events, schema = backend.run(outcome_statements(table, names), read_only=True)
    return Outcome(state_from(table, schema, ledger, events))


def rollback_sql_of(backend: Backend, names: Iterable[str]) -> dict[str, str | None]:
    """The rollback SQL stored with the newest complete apply/baseline event of each name."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    names_sql = _literals(wanted)
    result = backend.run(
        [
            Statement(
                f"SELECT name, rollback_sql FROM {HISTORY_TABLE} WHERE id IN ("
                f"SELECT max(id) FROM {HISTORY_TABLE} WHERE duration_ms IS NOT NULL"
                f" AND event IN ('apply', 'baseline') AND name IN ({names_sql}) GROUP BY name)"
            )
        ],
        read_only=True,
    )[0]
    return {str(r[0]): _text(r[1]) for r in result.rows}


# --- changes in one request, judged by the ledger when it fails --------------------------


@dataclass(frozen=True)
class Change:
    """One migration's apply or rollback: its statements (`body`) and what its part of
    a batch records. `watched`, `dropped` and `allowed` configure its row-loss guard.
    `checks` (assertions, see `assertions.batch_statements`) run right after the body
    and the guard, before the ledger row: a failing one aborts the batch, and were D1
    ever to keep part of it, the ledger would not say the change landed."""

    name: str
    event: Event
    body: tuple[Statement, ...]
    sha256: str | None
    rollback_sql: str | None = field(default=None, repr=False)
    watched: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    checks: tuple[Statement, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Limits:
    """How much one request may carry when several changes share it.

    D1 documents 100 KB per statement (lint refuses longer ones) and 30 s per request,
    but no body size. `max_body_bytes` is a conservative guess at a safe body.
    `max_guard_scan_bytes` bounds the part of the 30 s that d1deploy adds itself: each
    guarded change counts its tables before and after, reading up to the whole database
    (its size as D1 reports it) each time. 1 GB read in all takes 10 s even at a
    pessimistic 100 MB/s, which leaves two thirds of the 30 s to the migrations' own SQL
    (which nobody can predict: a request that runs out of time fails, the ledger then
    says nothing landed, and the engine sends its migrations again one per request).
    """

    max_body_bytes: int = 1_000_000
    max_guard_scan_bytes: int = 1_000_000_000


@dataclass(frozen=True)
class Packing:
    """Consecutive groups of changes, one request each; `cuts` says why each group after
    the first could not join the one before it."""

    groups: tuple[range, ...]
    cuts: tuple[str, ...] = ()


Verdict = Literal["done", "not_applied", "partly", "unknown", "lock_lost"]


@dataclass(frozen=True)
class Landed:
    """One change of a request that landed. `rows_written` is None when the answer was
    lost; `duration_ms` is measured by the database inside the batch; `checks` holds
    the answers to its `Change.checks` (none when the answer was lost)."""

    name: str
    duration_ms: float | None
    rows_written: int | None
    checks: tuple[QueryResult, ...] = ()


@dataclass(frozen=True)
class Sent:
    """What became of one request of changes. `verdict`: done (also when the answer was
    lost but the ledger shows every change), not_applied (none of them), partly (D1 kept
    part of a failed batch), unknown (the ledger could not be read afterwards), lock_lost
    (another run holds the lock). `failed` names the change whose statement failed, when
    the error says which. `whole`: D1 refused the request as a whole, not a statement it
    placed (its size or time, a server error, a timeout, an SQL error it did not place),
    so its changes may fare otherwise one per request."""

    verdict: Verdict
    landed: tuple[Landed, ...] = ()
    answer_lost: bool = False
    error: str = ""
    failed: str | None = None
    whole: bool = False
    file: str | None = None
    line: int | None = None
    head: tuple[QueryResult, ...] = ()
    """The answers to the request's `head` statements (when it was done)."""


@dataclass(frozen=True)
class _Part:
    """Where one change sits in a batch: its first statement's index, its body's, its
    checks', its finish_event's (its last statement)."""

    change: Change
    start_at: int
    body_at: int
    checks_at: int
    finish_at: int
    releases: bool = False
    """The request ends with the lock's release."""


class Session:
    """One locked run against one database: the lease, and what the engine knows of the
    database between its requests.

    The run's token is made once: the request that takes the lock goes again when its
    answer was lost, and finds the run's own lease. `in_flight` holds the changes of a
    request that was sent and neither answered nor judged (an interrupt landed while it
    was on its way); the engine's settle reads the ledger for them (`fenced_outcome`)."""

    def __init__(self, backend: Backend, project: Project) -> None:
        self.backend = backend
        self.project = project
        self.table = project.table
        self.actor = project.actor
        self.ttl = project.lock_ttl
        self.guard_tables = project.guard_tables
        self.notify = project.notify
        self.token = lock.new_token()
        self.holder = f"{self.actor} (run {self.token[:8]})"
        """Who the lease names: the actor, and this run among the actor's runs."""
        self.lease: lock.Lease | None = None
        self.asked = False
        """The lock request was sent but its answer not read: the lease may be ours."""
        self.in_flight: tuple[_Part, ...] = ()
        self.lost: str | None = None
        """Why the lease is no longer this run's, once a request found it so."""
        self.fencing: str | None = None
        """The token a fence whose answer never came may have given the lease."""
        self.history_mark = 0
        self.last_event_at: str | None = None
        """When the newest history event started (database clock), as the lock was taken."""
        self.known = DbState(self.table, ())
        """The schema as of the last answer (what the next batch should start from)."""
        self.size: int | None = None
        """The database's size in bytes as the lock was taken, when D1 said (the list
        of databases does not; `backend.info.file_size` otherwise)."""

    def open(self, wanted: Sequence[str] | None = None) -> DbState:
        """One request: create the tables if needed, take the lock, read everything.

        With `wanted` (migration names), the lock is taken only when one of them is not
        in the ledger: a database with nothing to do is read in this one request and
        never locked (`lease` stays None and `close` sends nothing).

        :raises LockHeld: another run holds the lock (naming it)."""
        interrupts.checkpoint()
        reads = [Statement(SCHEMA_SQL), *read_statements(self.table)]
        reads.append(Statement(f"SELECT coalesce(max(id), 0), max(at) FROM {HISTORY_TABLE}"))
        start_ttl = min(self.ttl, lock.START_TTL)
        only_if = None
        names = quote_text(json.dumps(list(wanted or ())))
        if wanted is not None and len(names) < _MAX_NAMES_BYTES:
            only_if = (
                f"EXISTS (SELECT 1 FROM json_each({names})"
                f" WHERE value NOT IN (SELECT name FROM {quote_ident(self.table)}))"
            )
        head = setup_statements(self.table) + lock.acquire_statements(
            self.holder, self.token, start_ttl, only_if=only_if
        )
        self.asked = True
        results = self._idempotent(head + reads, "the lock request")
        self.asked = False  # answered: the lease is ours, or LockHeld names whose it is
        read = results[len(head) - 1]
        taken = lock.lease_if_taken if only_if is not None else lock.lease_from
        self.lease = taken(read, self.token)
        self.size = read.size_after
        schema, rows, events, mark = results[len(head) :]
        self.history_mark = int(mark.first_value() or 0)
        self.last_event_at = _text(mark.rows[0][1]) if mark.rows else None
        self.known = state_from(self.table, schema, rows, events)
        return self.known

    def _idempotent(self, statements: list[Statement], what: str) -> list[QueryResult]:
        """Send a request that changes nothing more when sent twice, and send it once
        more when its answer did not come (a write is otherwise never re-sent)."""
        try:
            return self.backend.run(statements)
        except Unavailable as exc:
            if interrupts.out_of_time():
                raise
            self.notify(f"{exc.message}; sending {what} again, which is safe to repeat")
            return self.backend.run(statements)

    def restored(self) -> None:
        """After a Time Travel restore: the lease is still this session's only if the
        restored state holds it (the bookmark may predate the lock). When that cannot be
        read, the lease is kept: `close` then tries to release it and says if it cannot."""
        try:
            held = lock.current(self.backend)
        except D1DeployError:
            return
        if self.lease is not None and (held is None or held.token != self.lease.token):
            self.lease = None

    def quiet_for(self, seconds: float) -> bool:
        """Whether no history event (apply, rollback, baseline: every change d1deploy
        makes under the lock) started within `seconds` before this session took the
        lock, by the database's clock. Unreadable times count as not quiet."""
        assert self.lease is not None
        if self.last_event_at is None:
            return True
        try:
            now = datetime.fromisoformat(self.lease.now)
            last = datetime.fromisoformat(self.last_event_at)
        except ValueError:
            return False
        return (now - last).total_seconds() > seconds

    def close(self) -> str | None:
        """Release the lock if this run holds it (or may: its request was never
        answered), within a bound of its own; None when released (or never held), else
        a sentence saying it could not be and when it expires."""
        if self.lease is None and not self.asked:
            return None
        lease = self.lease or lock.Lease(self.holder, self.token, "", "")
        release = (
            lock.release_statements(lease, self.fencing)
            if self.lease is not None
            else lock.give_up_statements(self.holder, self.token)
        )
        with interrupts.settling("releasing the deploy lock", interrupts.RELEASE_SECONDS):
            try:
                self._idempotent(release, "the release of the lock")
            except D1DeployError as exc:
                until = lease.expires_at or f"within {lock.START_TTL} s of when it was taken"
                said = (
                    f"could not release the deploy lock ({exc}); it expires by itself"
                    f" {'at ' if lease.expires_at else ''}{until}, or `{suggest.unlock()}`"
                    " releases it now"
                )
                self.notify(said)
                return said
            finally:
                self.lease = None
                self.asked = False
        return None

    def _part(self, change: Change, bookmark: str | None) -> tuple[list[Statement], int, int, int]:
        """`change`'s statements in a batch: history event, guard counts, body, guard
        checks, its own checks, ledger row, event completion; with where its body, its
        checks and its finish sit."""
        before, after = guard.guard_statements(
            change.watched, set(change.allowed), set(change.dropped)
        )
        row = (
            delete_ledger(self.table, change.name)
            if change.event == "rollback"
            else insert_ledger(self.table, change.name)
        )
        head = [
            start_event(
                change.name,
                change.event,
                sha256=change.sha256,
                rollback_sql=change.rollback_sql,
                bookmark_before=bookmark,
                actor=self.actor,
            ),
            *before,
        ]
        checks_at = len(head) + len(change.body) + len(after)
        tail = [*after, *change.checks, row, finish_event(change.name)]
        statements = [*head, *change.body, *tail]
        return statements, len(head), checks_at, len(statements) - 1

    def pack(
        self,
        changes: Sequence[Change],
        bookmark: str | None,
        *,
        limits: Limits = Limits(),
        breaks: Mapping[int, str] | None = None,
    ) -> Packing:
        """Group consecutive `changes` into as few requests as `limits` allow, starting a
        new group at each index of `breaks` (which says why). A change too big for
        `limits` on its own gets a group of its own: alone, it is what a one-per-request
        deploy sends."""
        lease = self.lease or lock.Lease(self.holder, self.token, "", "")
        frame = [
            *lock.check_and_extend(lease, self.ttl),
            Statement(SCHEMA_SQL),
            *lock.release_statements(lease),
        ]
        scan = 2 * (self.size or self.backend.info.file_size or 0)
        groups: list[range] = []
        cuts: list[str] = []
        start, body, scanned = 0, _json_bytes(frame), 0
        for i, change in enumerate(changes):
            size = _json_bytes(self._part(change, bookmark)[0])
            cost = scan if set(change.watched) - set(change.allowed) else 0
            cut = (breaks or {}).get(i)
            if cut is None and body + size > limits.max_body_bytes:
                cut = f"with {change.name} the request would exceed {limits.max_body_bytes:,} bytes"
            if cut is None and scanned + cost > limits.max_guard_scan_bytes:
                cut = (
                    f"with {change.name} the row-loss guard would read over"
                    f" {limits.max_guard_scan_bytes:,} bytes of a {scan // 2:,}-byte database"
                )
            if i > start and cut is not None:
                groups.append(range(start, i))
                cuts.append(cut)
                start, body, scanned = i, _json_bytes(frame), 0
            body += size
            scanned += cost
        if changes:
            groups.append(range(start, len(changes)))
        return Packing(tuple(groups), tuple(cuts))

    def send(
        self,
        changes: Sequence[Change],
        *,
        bookmark: str | None,
        release: bool = False,
        head: Sequence[Statement] = (),
    ) -> Sent:
        """Apply (or roll back, or record) `changes` in ONE request: the lease check and
        extension, `head` (prechecks), each change's part (see `_part`, with its verify
        checks), a read of the schema, and the lock's release when `release`. Any failed
        or lost answer, whatever the error, is judged by re-reading the ledger: never
        sent twice. Anything else on the way (an interrupt) leaves the request
        `in_flight` for the settle to judge."""
        interrupts.checkpoint()
        assert changes
        if self.lease is None:
            return Sent("lock_lost", error=self.lost or f"{lock.LOST_PREFIX} before this request")
        batch = lock.check_and_extend(self.lease, self.ttl)
        head_at = len(batch)
        batch += head
        parts: list[_Part] = []
        for change in changes:
            statements, body_at, checks_at, finish_at = self._part(change, bookmark)
            at = len(batch)
            parts.append(_Part(change, at, at + body_at, at + checks_at, at + finish_at, release))
            batch += statements
        schema_at = len(batch)
        batch.append(Statement(SCHEMA_SQL))
        if release:
            batch += lock.release_statements(self.lease)
        self.in_flight = tuple(parts)
        try:
            results = self.backend.run(batch)
        except D1DeployError as exc:
            self.in_flight = ()
            if isinstance(exc, OutOfTime):  # never sent: nothing to judge
                return Sent("not_applied", error=exc.message)
            if isinstance(exc, SqlError) and lock.is_lost(exc.message):
                self.lost = guard.parse_abort(exc.message)
                return Sent("lock_lost", error=self.lost or exc.message)
            return self._judge(parts, *_describe(exc, parts), whole=_whole(exc))
        self.in_flight = ()
        if release:
            self.lease = None
        self.known = state_from(self.table, results[schema_at])
        landed = []
        for part in parts:
            done = results[part.body_at : part.body_at + len(part.change.body)]
            landed.append(
                Landed(
                    part.change.name,
                    _float(results[part.finish_at]),
                    sum(r.rows_written for r in done),
                    tuple(results[part.checks_at : part.checks_at + len(part.change.checks)]),
                )
            )
        return Sent("done", tuple(landed), head=tuple(results[head_at : head_at + len(head)]))

    def fenced_outcome(self, names: Sequence[str], sent: Sequence[_Part] = ()) -> Outcome:
        """What the ledger says of `names`, read in one request that also fences the
        lease (`lock.fence_statements`): whatever this run sent before and had not
        reached the database by then never lands. Afterwards `lease` is None if the lock
        is no longer this run's, and `lost` says why, unless `sent` (the request whose
        fate is read) landed whole and ended with the lock's release.

        :raises D1DeployError: the request failed twice."""
        lease = self.lease or lock.Lease(self.holder, self.token, "", "")
        token = lock.new_token()
        fence = lock.fence_statements(lease, token, self.ttl)
        self.fencing = token  # until answered, the lease may hold either token
        results = self._idempotent(
            fence + outcome_statements(self.table, names), "the read of the ledger"
        )
        self.fencing = None
        ledger_rows, event_rows, schema = results[len(fence) :]
        outcome = Outcome(state_from(self.table, schema, ledger_rows, event_rows))
        self.known = outcome.state
        held = lock.lease_of(results[len(fence) - 1])
        if held is not None and held.token == token:
            self.lease = held
        elif sent and sent[-1].releases and len(outcome.landed(sent)) == len(sent):
            self.lease = None  # released by that request, which landed
        elif self.lease is not None:
            self.lease = None
            self.lost = f"{lock.LOST_PREFIX}: " + (
                f"it is now held by {lock.describe(held)}"
                if held is not None
                else "someone released it (`unlock --force`, or a restore to a bookmark"
                " from before this run took it)"
            )
        return outcome

    def torn(self, outcome: Outcome) -> list[str]:
        """The names whose newest event this run started and never completed: a batch
        D1 kept part of."""
        return [
            e.name
            for e in outcome.state.events
            if e.id > self.history_mark and e.duration_ms is None
        ]

    def _judge(
        self,
        parts: Sequence[_Part],
        error: str,
        failed: str | None,
        file: str | None,
        line: int | None,
        *,
        whole: bool = False,
    ) -> Sent:
        """Judge a request whose answer was an error or never came (`fenced_outcome`)."""
        names = [p.change.name for p in parts]
        before = self.known.fingerprint()
        try:
            outcome = self.fenced_outcome(names, parts)
        except D1DeployError as read_exc:
            return Sent(
                "unknown",
                error=f"{error}; then reading the ledger failed: {read_exc}",
                failed=failed,
            )
        events = {e.name: e for e in outcome.state.events}
        landed = outcome.landed(parts)
        if len(landed) == len(parts):
            return Sent(
                "done",
                tuple(Landed(n, _duration(events.get(n)), None) for n in names),
                answer_lost=True,
                error=error,
            )
        if landed or self.torn(outcome) or outcome.state.fingerprint() != before:
            return Sent("partly", error=error, failed=failed, file=file, line=line)
        if self.lost is not None:
            return Sent("lock_lost", error=f"{error}; {self.lost}", failed=failed)
        return Sent("not_applied", error=error, failed=failed, file=file, line=line, whole=whole)


_MAX_NAMES_BYTES = 50_000
"""Past this, the names are left out of the lock's condition (the lock is taken as
before): the statement stays well within D1's 100 KB per statement."""


def _json_bytes(statements: Sequence[Statement]) -> int:
    """The size of `statements` as batch items in a request body (ASCII-escaped JSON,
    so never less than what the client sends)."""
    return len(json.dumps([{"sql": s.sql, "params": list(s.params)} for s in statements]))


def _float(result: QueryResult) -> float | None:
    value = result.first_value()
    return float(value) if isinstance(value, int | float) else None


def _duration(event: HistoryEvent | None) -> float | None:
    return None if event is None or event.duration_ms is None else float(event.duration_ms)


def _whole(exc: D1DeployError) -> bool:
    """Whether `exc` refused a request as a whole (see `Sent.whole`)."""
    if isinstance(exc, SqlError):
        return exc.index is None
    if isinstance(exc, Unreachable):  # nothing got there: no size or time to blame
        return False
    return isinstance(exc, UsageError | ServerError | NetworkError)


def _describe(
    exc: D1DeployError, parts: Sequence[_Part]
) -> tuple[str, str | None, str | None, int | None]:
    """What failed, in words; which change failed (always known for a request of one);
    the failing statement's file:line when it is known."""
    aborted = guard.parse_abort(exc.message) if isinstance(exc, SqlError) else None
    failed = parts[0].change.name if len(parts) == 1 else None
    file, line = exc.file, exc.line
    index = exc.index if isinstance(exc, SqlError) else None
    if index is not None:
        for part in parts:
            if part.start_at <= index <= part.finish_at:
                failed = part.change.name
                i = index - part.body_at
                if file is None and 0 <= i < len(part.change.body):
                    file, line = part.change.body[i].file, part.change.body[i].line
                break
    if aborted is not None:
        return aborted, failed, None, None
    return exc.message, failed, file, line
