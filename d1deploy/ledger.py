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
lease, read schema, ledger and history) and sends each change as ONE request, judging any
failure or lost answer by re-reading the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from d1deploy import guard, lock
from d1deploy.backend import Backend, QueryResult, SqlValue, Statement
from d1deploy.errors import D1DeployError, SqlError, Unavailable
from d1deploy.guard import quote_ident, quote_text

DEFAULT_TABLE = "d1_migrations"
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


def outcome_statements(table: str, name: str) -> list[Statement]:
    """Reads that tell what happened to `name`'s last batch: its ledger row, its newest
    history event (complete or not), and the schema. Read-only; the tables exist."""
    return [
        Statement(f"SELECT id, name, applied_at FROM {quote_ident(table)} WHERE name = ?", (name,)),
        Statement(
            f"SELECT {_HISTORY_COLUMNS} FROM {HISTORY_TABLE} WHERE name = ?"
            " ORDER BY id DESC LIMIT 1",
            (name,),
        ),
        Statement(SCHEMA_SQL),
    ]


@dataclass(frozen=True)
class Outcome:
    """What the database says after a batch's answer was an error or never came."""

    in_ledger: bool
    last_event: HistoryEvent | None
    state: DbState


def read_outcome(backend: Backend, table: str, name: str) -> Outcome:
    ledger, event, schema = backend.run(outcome_statements(table, name), read_only=True)
    state = state_from(table, schema, ledger, event)
    return Outcome(bool(ledger.rows), state.events[0] if state.events else None, state)


def rollback_sql_of(backend: Backend, names: Iterable[str]) -> dict[str, str | None]:
    """The rollback SQL stored with the newest complete apply/baseline event of each name."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    # Literals, not parameters: D1 allows at most 100 bound parameters per statement.
    names_sql = ", ".join(quote_text(n) for n in wanted)
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


# --- one change per request, judged by the ledger when it fails ------------------------

Verdict = Literal["done", "not_applied", "partly", "unknown", "lock_lost"]


@dataclass(frozen=True)
class Sent:
    """What became of one change request. `verdict`: done (also when the answer was lost
    but the ledger shows the change), not_applied, partly (D1 kept part of a failed batch),
    unknown (the ledger could not be read afterwards), lock_lost (another run holds it)."""

    verdict: Verdict
    duration_ms: float | None = None
    rows_written: int | None = None
    answer_lost: bool = False
    error: str = ""
    file: str | None = None
    line: int | None = None


class Session:
    """One locked run against one database: the lease, and what the engine knows of the
    database between its requests."""

    def __init__(
        self,
        backend: Backend,
        table: str,
        actor: str,
        lock_ttl: int,
        guard_tables: Sequence[str] | None,
        notify: Notify,
    ) -> None:
        self.backend = backend
        self.table = table
        self.actor = actor
        self.ttl = lock_ttl
        self.guard_tables = guard_tables
        self.notify = notify
        self.lease: lock.Lease | None = None
        self.history_mark = 0
        self.known = DbState(table, ())
        """The schema as of the last answer (what the next batch should start from)."""

    def open(self) -> DbState:
        """One request: create the tables if needed, take the lock, read everything."""
        token = lock.new_token()
        reads = [Statement(SCHEMA_SQL), *read_statements(self.table)]
        reads.append(Statement(f"SELECT coalesce(max(id), 0) FROM {HISTORY_TABLE}"))
        start_ttl = min(self.ttl, lock.START_TTL)
        head = setup_statements(self.table) + lock.acquire_statements(self.actor, token, start_ttl)
        results = self.backend.run(head + reads)
        self.lease = lock.lease_from(results[len(head) - 1], token)
        schema, rows, events, mark = results[len(head) :]
        self.history_mark = int(mark.first_value() or 0)
        self.known = state_from(self.table, schema, rows, events)
        return self.known

    def close(self) -> None:
        if self.lease is None:
            return
        try:
            lock.release(self.backend, self.lease)
        except D1DeployError as exc:
            self.notify(
                f"could not release the deploy lock ({exc}); it expires by itself at"
                f" {self.lease.expires_at} or `d1deploy unlock --force` releases it"
            )
        self.lease = None

    def change(
        self,
        name: str,
        event: Event,
        body: Sequence[Statement],
        *,
        sha256: str | None,
        rollback_sql: str | None,
        bookmark: str | None,
        watched: Sequence[str],
        dropped: Sequence[str],
        allowed: Sequence[str],
        release: bool = False,
    ) -> Sent:
        """Apply (or roll back) one migration in one request: lease check and extension,
        history event, guard counts, `body`, guard checks, ledger row, event completion,
        a read of the schema (and the lock's release when `release`). Any failure or lost
        answer is judged by re-reading the ledger: never sent twice."""
        assert self.lease is not None
        before, after = guard.guard_statements(watched, set(allowed), set(dropped))
        row = (
            insert_ledger(self.table, name) if event == "apply" else delete_ledger(self.table, name)
        )
        head = [
            *lock.check_and_extend(self.lease, self.ttl),
            start_event(
                name,
                event,
                sha256=sha256,
                rollback_sql=rollback_sql,
                bookmark_before=bookmark,
                actor=self.actor,
            ),
            *before,
        ]
        tail = [*after, row, finish_event(name), Statement(SCHEMA_SQL)]
        if release:
            tail += lock.release_statements(self.lease)
        try:
            results = self.backend.run([*head, *body, *tail])
        except (SqlError, Unavailable) as exc:
            return self._judge(name, event, exc, len(head), body)
        if release:
            self.lease = None
        done = results[len(head) : len(head) + len(body)]
        finish = len(head) + len(body) + len(after) + 1
        self.known = state_from(self.table, results[finish + 1])
        return Sent(
            "done",
            duration_ms=_float(results[finish]),
            rows_written=sum(r.rows_written for r in done),
        )

    def _judge(
        self,
        name: str,
        event: Event,
        exc: SqlError | Unavailable,
        offset: int,
        body: Sequence[Statement],
    ) -> Sent:
        error, file, line = _describe(exc, offset, body)
        if isinstance(exc, SqlError) and lock.is_lost(exc.message):
            return Sent("lock_lost", error=error)
        try:
            outcome = read_outcome(self.backend, self.table, name)
        except D1DeployError as read_exc:
            return Sent("unknown", error=f"{error}; then reading the ledger failed: {read_exc}")
        if outcome.in_ledger == (event == "apply"):
            self.known = outcome.state
            last = outcome.last_event
            return Sent(
                "done",
                duration_ms=None if last is None else last.duration_ms,
                answer_lost=True,
                error=error,
            )
        last = outcome.last_event
        torn = (
            last is not None
            and last.id > self.history_mark
            and last.event == event
            and last.duration_ms is None
        )
        if torn or outcome.state.fingerprint() != self.known.fingerprint():
            return Sent("partly", error=error, file=file, line=line)
        return Sent("not_applied", error=error, file=file, line=line)


def _float(result: QueryResult) -> float | None:
    value = result.first_value()
    return float(value) if isinstance(value, int | float) else None


def _describe(
    exc: SqlError | Unavailable, offset: int, body: Sequence[Statement]
) -> tuple[str, str | None, int | None]:
    """What failed, in words, with the statement's file:line when it is known."""
    aborted = guard.parse_abort(exc.message) if isinstance(exc, SqlError) else None
    file, line = exc.file, exc.line
    if isinstance(exc, SqlError) and exc.index is not None and file is None:
        i = exc.index - offset
        if 0 <= i < len(body):
            file, line = body[i].file, body[i].line
    if aborted is not None:
        return aborted, None, None
    return exc.message, file, line
