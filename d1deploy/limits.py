"""D1's limits, in one place: what one statement, one request and one account may carry.

The numbers are Cloudflare's (D1's limits page, the API's rate limit) and workerd's
`setupSecurity` (D1 runs user SQL on the Durable Objects SQLite engine, see
`d1sqlite`); tests/test_d1_contract.py holds the SQLite ones to workerd. d1deploy's own
bounds, such as how much it packs into one request (`ledger.Limits`), are choices, not
D1's rules, and live with the code that makes them.
"""

from __future__ import annotations

import sqlite3

MAX_STATEMENT_BYTES = 100_000
"""One statement's text, its `;` included (SQLITE_LIMIT_SQL_LENGTH)."""

MAX_PARAMETERS = 100
"""Values bound to one statement (SQLITE_LIMIT_VARIABLE_NUMBER)."""

SQLITE_LIMITS: dict[int, int] = {
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: MAX_PARAMETERS,
    sqlite3.SQLITE_LIMIT_COLUMN: 100,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 50,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 5,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 10,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    # D1's documented limits, stricter than the workerd wrangler runs locally (4 MB or
    # more, 127 arguments): a rehearsal must fail where production D1 would.
    sqlite3.SQLITE_LIMIT_LENGTH: 2_000_000,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32,
}
"""`sqlite3_limit` categories as D1 sets them. Statement length is checked by
`d1sqlite.run` (Python's sqlite3 reports that limit as its own DataError, not as
SQLite's text)."""

REQUEST_SECONDS = 30
"""D1 ends a request after 30 s: a batch commits at most this long after it started."""

BATCH_MAX_BYTES = 2_000_000
BATCH_MAX_STATEMENTS = 1000
"""Beyond these, `exec` sends a file through the import flow instead of one batch."""

API_LIMIT = 1200
API_WINDOW = 300.0
"""Cloudflare's API limit: 1200 requests per five minutes per user, across the account."""
