"""SQLite's judgement of a statement: what it asks permission for, and whether it writes.

Whether a statement reads or writes is never read off its text. SQLite compiles it on a
connection holding the schema (`EXPLAIN` prepares a statement without running it) while
an authorizer records every action SQLite asks permission for (`Action`: read a column,
insert into a table, run a pragma, attach a file...). The statement writes when one of
those actions writes (`writes`), or when its compiled program opens a write
transaction or vacuums (VACUUM asks no permission at all). `compile_statement` returns the record
(`Compiled`); a statement SQLite cannot compile raises `CompileError`.

`authorizer` installs any policy over the same record on a live connection:
`deny_writes` is how the local backend makes SQLite refuse a read's writes, and D1's own
allow/deny rules (workerd's authorizer) can be written as another policy.

Pragmas: a read may only use the pragmas of `READ_PRAGMAS` (documented in the README),
the introspection ones with their table or index name, the settings without a value. A
pragma with a value, or any other pragma, writes: it changes the database or the
connection, and a connection setting outlives the batch that changed it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from d1deploy import sqlsplit
from d1deploy.backend import SqlValue

ACTION_NAMES: dict[int, str] = {
    getattr(sqlite3, name): name.removeprefix("SQLITE_")
    for name in (
        "SQLITE_CREATE_INDEX",
        "SQLITE_CREATE_TABLE",
        "SQLITE_CREATE_TEMP_INDEX",
        "SQLITE_CREATE_TEMP_TABLE",
        "SQLITE_CREATE_TEMP_TRIGGER",
        "SQLITE_CREATE_TEMP_VIEW",
        "SQLITE_CREATE_TRIGGER",
        "SQLITE_CREATE_VIEW",
        "SQLITE_DELETE",
        "SQLITE_DROP_INDEX",
        "SQLITE_DROP_TABLE",
        "SQLITE_DROP_TEMP_INDEX",
        "SQLITE_DROP_TEMP_TABLE",
        "SQLITE_DROP_TEMP_TRIGGER",
        "SQLITE_DROP_TEMP_VIEW",
        "SQLITE_DROP_TRIGGER",
        "SQLITE_DROP_VIEW",
        "SQLITE_INSERT",
        "SQLITE_PRAGMA",
        "SQLITE_READ",
        "SQLITE_SELECT",
        "SQLITE_TRANSACTION",
        "SQLITE_UPDATE",
        "SQLITE_ATTACH",
        "SQLITE_DETACH",
        "SQLITE_ALTER_TABLE",
        "SQLITE_REINDEX",
        "SQLITE_ANALYZE",
        "SQLITE_CREATE_VTABLE",
        "SQLITE_DROP_VTABLE",
        "SQLITE_FUNCTION",
        "SQLITE_SAVEPOINT",
        "SQLITE_RECURSIVE",
    )
    if hasattr(sqlite3, name)
}
"""SQLite's authorizer action codes by name (`sqlite3.h`, "Authorizer Action Codes")."""

INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
"""Pragmas that only describe the schema or check it. Their argument names a table or
an index (or bounds the number of problems listed); it never sets anything."""

READABLE_SETTINGS = frozenset(
    {
        "data_version",
        "foreign_keys",
        "defer_foreign_keys",
        "ignore_check_constraints",
        "legacy_alter_table",
        "recursive_triggers",
        "reverse_unordered_selects",
        "case_sensitive_like",
        "page_size",
    }
)
"""Settings (D1 allows them) that a read may ask the value of, never give one."""

READ_PRAGMAS = INTROSPECTION_PRAGMAS | READABLE_SETTINGS
"""Every pragma a read may use: the allowlist of precheck and verify files."""

_READ_CODES = frozenset(
    getattr(sqlite3, name) for name in ("SQLITE_SELECT", "SQLITE_FUNCTION", "SQLITE_RECURSIVE")
)
_ROW_WRITES = frozenset((sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE))
# SQLite asks to write its schema table while it codes a schema change (which asks for its
# own CREATE/DROP/ALTER action) and while it connects an eponymous virtual table such as
# json_each or pragma_table_info for the first time on a connection (which writes
# nothing). A statement of its own can never write the schema table unless
# `writable_schema` is on, and turning that on is a pragma with a value: a write.
_SCHEMA_TABLES = frozenset(
    ("sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema")
)
# Opcodes of a compiled program that change the database without asking permission
# (VACUUM), or that `sqlite3_stmt_readonly` counts as writes; and transaction control.
_WRITE_OPCODES = frozenset(("Vacuum", "JournalMode", "Checkpoint", "AutoCommit", "Savepoint"))
_SYNTAX = re.compile(r"syntax error|incomplete input|unrecognized token")
_EXPLAIN = re.compile(r"EXPLAIN(?![0-9A-Za-z_$\x80-\U0010ffff])", re.IGNORECASE)


@dataclass(frozen=True)
class Action:
    """One thing SQLite asked permission for while it compiled a statement: the
    authorizer's arguments (`sqlite3_set_authorizer`) as they came, for `code`."""

    code: int
    arg1: str | None = None
    arg2: str | None = None
    database: str | None = None
    source: str | None = None
    """The innermost trigger or view whose code asked, if any."""

    @property
    def name(self) -> str:
        """SQLite's name of the action: INSERT, READ, PRAGMA, CREATE_TEMP_TABLE..."""
        return ACTION_NAMES.get(self.code, f"action {self.code}")

    @property
    def writes(self) -> bool:
        """Whether SQLite asking for this means the statement changes something: the
        database, the schema, a connection setting, the attached files, the transaction.
        Only reading (tables, read-only pragmas), functions and SELECT itself do not."""
        if self.code in _READ_CODES:
            return False
        if self.code == sqlite3.SQLITE_READ:
            # A table-valued pragma (pragma_table_info, pragma_optimize) runs its pragma.
            table = (self.arg1 or "").lower()
            return table.startswith("pragma_") and table[7:] not in READ_PRAGMAS
        if self.code == sqlite3.SQLITE_PRAGMA:
            return not is_read_pragma(self.arg1 or "", self.arg2)
        return not (self.code in _ROW_WRITES and (self.arg1 or "").lower() in _SCHEMA_TABLES)

    @property
    def is_pragma(self) -> bool:
        """A pragma, run as a statement or as a table-valued function (`pragma_*`)."""
        if self.code == sqlite3.SQLITE_READ:
            return (self.arg1 or "").lower().startswith("pragma_")
        return self.code == sqlite3.SQLITE_PRAGMA

    def describe(self) -> str:
        """The action in words, e.g. `UPDATE accounts.balance`, `PRAGMA foreign_keys = OFF`."""
        if self.code == sqlite3.SQLITE_PRAGMA:
            name = self.arg1 or ""
            if self.arg2 is None:
                return f"PRAGMA {name}"
            if name.lower() in INTROSPECTION_PRAGMAS:
                return f"PRAGMA {name}({self.arg2})"
            return f"PRAGMA {name} = {self.arg2}"
        if self.is_pragma:
            return f"PRAGMA {(self.arg1 or '')[7:]} (as the table-valued function {self.arg1})"
        target = ".".join(a for a in (self.arg1, self.arg2) if a)
        return f"{self.name} {target}".strip()


def is_read_pragma(name: str, value: str | None) -> bool:
    """Whether `PRAGMA name` (given `value`, its argument if any) only reads."""
    name = name.lower()
    if name in INTROSPECTION_PRAGMAS:
        return True
    return name in READABLE_SETTINGS and value is None


@dataclass(frozen=True)
class Compiled:
    """What SQLite made of one statement: the actions it asked permission for, in order,
    and whether its program opens a write transaction (or vacuums, or controls the
    transaction) without having asked."""

    sql: str
    actions: tuple[Action, ...]
    program_writes: bool = False

    @property
    def write_actions(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.writes)

    @property
    def writes(self) -> bool:
        return self.program_writes or bool(self.write_actions)

    def describe_write(self) -> str:
        """What makes it write, in words."""
        first = self.write_actions[:1]
        return first[0].describe() if first else "its compiled program writes"


class CompileError(Exception):
    """SQLite could not compile the statement; `str()` is SQLite's message."""

    @property
    def syntax(self) -> bool:
        """SQLite could not even parse it (as opposed to a name it could not resolve)."""
        return _SYNTAX.search(str(self)) is not None


Policy = Callable[[Action], int]
"""Answers the authorizer for one action: SQLITE_OK, SQLITE_IGNORE or SQLITE_DENY."""


@contextmanager
def authorizer(db: sqlite3.Connection, policy: Policy) -> Iterator[list[Action]]:
    """Record every action SQLite asks permission for on `db`, answering each with
    `policy`, until the block ends (then `db` has no authorizer).

    Installing an authorizer expires every statement `db` has prepared, so statements
    from its cache are compiled again and asked about too.
    """
    seen: list[Action] = []

    def callback(
        code: int, arg1: str | None, arg2: str | None, database: str | None, source: str | None
    ) -> int:
        action = Action(code, arg1, arg2, database, source)
        seen.append(action)
        return policy(action)

    db.set_authorizer(callback)
    try:
        yield seen
    finally:
        db.set_authorizer(None)


def allow(action: Action) -> int:
    """The policy of `compile_statement`: everything, except that a pragma is recorded
    and not run (some take effect while they are compiled, and the connection is reused)."""
    return sqlite3.SQLITE_IGNORE if action.code == sqlite3.SQLITE_PRAGMA else sqlite3.SQLITE_OK


def deny_writes(action: Action) -> int:
    """The policy of a read: SQLite refuses every action that writes."""
    return sqlite3.SQLITE_DENY if action.writes else sqlite3.SQLITE_OK


def compile_statement(
    db: sqlite3.Connection, sql: str, params: Sequence[SqlValue] | None = None
) -> Compiled:
    """Compile `sql` on `db` without running it, recording what SQLite asks for.

    Parameters are bound as NULL unless given. `db` only needs the schema; nothing on it
    changes (the statement is prepared under EXPLAIN, whose own run lists the program).

    :raises CompileError: SQLite cannot compile it (a syntax error, an unknown table...).
    """
    bound = tuple(params) if params is not None else (None,) * sqlsplit.count_parameters(sql)
    # EXPLAIN of an EXPLAIN does not parse; an EXPLAIN runs nothing, so it is its own.
    explained = _EXPLAIN.match(sqlsplit.strip_leading_comments(sql)) is not None
    with authorizer(db, allow) as seen:
        try:
            rows = db.execute(sql if explained else f"EXPLAIN {sql}", bound).fetchall()
        except (sqlite3.Error, sqlite3.Warning, OverflowError) as exc:
            raise CompileError(str(exc)) from exc
    program_writes = not explained and any(_opcode_writes(row) for row in rows)
    return Compiled(sql, tuple(seen), program_writes)


def _opcode_writes(row: Sequence[object]) -> bool:
    # EXPLAIN's columns: addr, opcode, p1, p2, p3, p4, p5, comment.
    opcode, p2 = row[1], row[3]
    return opcode in _WRITE_OPCODES or (opcode == "Transaction" and p2 != 0)
