"""The deploy lock: a lease row in `_d1deploy_lock`, so two deploys never interleave.

The lease is taken in ONE request (an upsert that only replaces an expired lease,
then a read of whoever holds it), with every time taken from the database's clock so
that clock skew between machines does not matter. A crashed run's lease simply
expires. Each migration batch starts with `check_and_extend`, which fails the batch
(through `guard.abort_if`) when the lease is no longer ours, and pushes the expiry on;
until the first change, the lease is short (START_TTL).

A run keeps one token from start to end, so the request that takes the lease can be
sent again when its answer was lost: the run then finds its own lease and goes on. After
a failure the run `fence`s its lease (a new token, in the same request that reads what
landed), so a request of its own still on its way can no longer land afterwards.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from d1deploy import guard, suggest
from d1deploy.backend import Backend, QueryResult, Statement
from d1deploy.errors import LockHeld

LOCK_TABLE = "_d1deploy_lock"
START_TTL = 120
"""Seconds a freshly taken lease lasts until the first change extends it. Short, because
the Time Travel bookmark of a deploy is taken while the lease is held: restoring it
brings the lease back, and it should not block the next deploy for long."""
LOST_PREFIX = "deploy lock lost"
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE}("
    "id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, token TEXT NOT NULL,"
    " acquired_at TEXT NOT NULL, expires_at TEXT NOT NULL)"
)
_READ = f"SELECT holder, token, acquired_at, expires_at, {NOW} FROM {LOCK_TABLE} WHERE id = 1"


@dataclass(frozen=True)
class Lease:
    """Who holds the lock, with times from the database clock (ISO 8601, UTC)."""

    holder: str
    token: str
    acquired_at: str
    expires_at: str
    now: str = ""
    """The database clock when the lease was read."""

    @property
    def expired(self) -> bool:
        # ISO timestamps in one format compare as text.
        return bool(self.now) and self.expires_at <= self.now


def _expiry(ttl_seconds: int) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+{int(ttl_seconds)} seconds')"


def acquire_statements(
    holder: str, token: str, ttl_seconds: int, *, only_if: str | None = None
) -> list[Statement]:
    """Create the table if needed, take the lease unless someone else holds an unexpired
    one, and read who holds it. `lease_from` interprets the last result.

    `only_if`, an SQL condition, takes the lease only when it holds (a deploy asks
    whether anything is pending in the same request, so a database with nothing to do
    costs no lock and no release); whether it was taken is in the read."""
    take = Statement(
        f"INSERT INTO {LOCK_TABLE}(id, holder, token, acquired_at, expires_at)"
        # INSERT ... SELECT needs a WHERE before ON CONFLICT (SQLite's parsing rule).
        f" SELECT 1, ?, ?, {NOW}, {_expiry(ttl_seconds)} WHERE {only_if or 'true'}"
        " ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, token = excluded.token,"
        " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"
        # Never its own token back: a run that gave its lease up before knowing whether
        # it got it left it expired under that token (`give_up_statements`).
        f" WHERE {LOCK_TABLE}.expires_at <= {NOW} AND {LOCK_TABLE}.token <> excluded.token",
        (holder, token),
    )
    return [Statement(CREATE_TABLE), take, Statement(_READ)]


def lease_of(result: QueryResult) -> Lease | None:
    """The lease a read of the lock table found (None: nobody holds it)."""
    if not result.rows:
        return None
    holder, token, acquired_at, expires_at, now = result.rows[0]
    return Lease(str(holder), str(token), str(acquired_at), str(expires_at), str(now))


def describe(lease: Lease) -> str:
    """`holder, since T, until T` for messages."""
    return f"{lease.holder}, since {lease.acquired_at}, until {lease.expires_at}"


def lease_if_taken(result: QueryResult, token: str) -> Lease | None:
    """The lease read by `acquire_statements(only_if=...)`: ours, or None when it was
    not taken (the condition did not hold) and nobody else holds one.

    :raises LockHeld: another unexpired lease exists, as `lease_from`.
    """
    lease = lease_of(result)
    if lease is None or (lease.token != token and lease.expired):
        return None
    return lease_from(result, token)


def lease_from(result: QueryResult, token: str) -> Lease:
    """The lease read by `acquire_statements`, when it is ours.

    :raises LockHeld: naming the holder and when the lease expires.
    """
    lease = lease_of(result)
    if lease is None:
        raise LockHeld("the deploy lock could not be taken: its row is missing after the upsert")
    if lease.token != token:
        raise LockHeld(
            f"another deploy holds the lock: {describe(lease)}",
            hint="wait for that deploy to finish. If it is no longer running, its lock expires"
            f" by itself at {lease.expires_at}, or release it now with `{suggest.unlock()}`",
        )
    return lease


def new_token() -> str:
    return secrets.token_hex(16)


def check_and_extend(lease: Lease, ttl_seconds: int) -> list[Statement]:
    """Statements that fail their batch unless `lease` is still ours, then extend it.

    Only the token is compared: a lease can only change hands after it expired, and
    then the token changes, so an expired lease that nobody took is still safe to use.
    """
    token = guard.quote_text(lease.token)
    # Who holds it now, in the words of `describe`, or that nobody does.
    holder = (
        f"coalesce((SELECT 'it is now held by ' || holder || ', since ' || acquired_at"
        f" || ', until ' || expires_at FROM {LOCK_TABLE} WHERE id = 1),"
        " 'someone released it (`unlock --force`, or a restore to a bookmark from before"
        " this run took it)')"
    )
    return [
        Statement(
            guard.abort_if(
                f"NOT EXISTS (SELECT 1 FROM {LOCK_TABLE} WHERE id = 1 AND token = {token})",
                f"'{LOST_PREFIX}: ' || {holder}",
            )
        ),
        Statement(
            f"UPDATE {LOCK_TABLE} SET expires_at = {_expiry(ttl_seconds)}"
            " WHERE id = 1 AND token = ?",
            (lease.token,),
        ),
    ]


def fence_statements(lease: Lease, token: str, ttl_seconds: int) -> list[Statement]:
    """Give `lease` the new `token` (and a fresh expiry) if it is still ours, then read
    the lease: a request sent earlier with the old token fails its `check_and_extend`
    from now on. Sent again after a lost answer, it changes nothing more."""
    return [
        Statement(CREATE_TABLE),
        Statement(
            f"UPDATE {LOCK_TABLE} SET token = ?, expires_at = {_expiry(ttl_seconds)}"
            " WHERE id = 1 AND token IN (?, ?)",
            (token, lease.token, token),
        ),
        Statement(_READ),
    ]


def release_statements(lease: Lease, also: str | None = None) -> list[Statement]:
    """Release `lease` (and nothing else: a lease taken over by someone stays theirs);
    `also` is the token a fence whose answer never came may have given it."""
    tokens = (lease.token,) if also is None else (lease.token, also)
    marks = ", ".join("?" for _ in tokens)
    return [Statement(f"DELETE FROM {LOCK_TABLE} WHERE id = 1 AND token IN ({marks})", tokens)]


def give_up_statements(holder: str, token: str) -> list[Statement]:
    """Release a lease this run may or may not hold (its lock request was sent, its
    answer never read): the row is left expired under the run's token, so that the
    request, were it to land late, cannot take it (`acquire_statements` never takes its
    own token back) while anyone else can. A lease someone else holds is left alone."""
    return [
        Statement(CREATE_TABLE),
        Statement(
            f"INSERT INTO {LOCK_TABLE}(id, holder, token, acquired_at, expires_at)"
            f" VALUES (1, ?, ?, {NOW}, {NOW})"
            " ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, token = excluded.token,"
            " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"
            f" WHERE {LOCK_TABLE}.token = excluded.token OR {LOCK_TABLE}.expires_at <= {NOW}",
            (f"{holder}, given up", token),
        ),
    ]


def release(backend: Backend, lease: Lease) -> None:
    backend.run(release_statements(lease))


def current(backend: Backend) -> Lease | None:
    """Who holds the lock now (possibly expired), read-only; None when nobody does."""
    exists = backend.run(
        [Statement("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOCK_TABLE,))],
        read_only=True,
    )[0]
    if not exists.rows:
        return None
    return lease_of(backend.run([Statement(_READ)], read_only=True)[0])


def force_release(backend: Backend) -> Lease | None:
    """Remove whatever lease exists, in one request; returns the lease that was removed."""
    results = backend.run(
        [Statement(CREATE_TABLE), Statement(_READ), Statement(f"DELETE FROM {LOCK_TABLE}")]
    )
    return lease_of(results[1])


def is_lost(message: str) -> bool:
    """Whether a batch failed because `check_and_extend` found the lease gone: this
    run's own abort (its nonce, see `guard.RUN_NONCE`), never text that merely says so."""
    found = guard.parse_abort(message)
    return found is not None and found.startswith(LOST_PREFIX)
