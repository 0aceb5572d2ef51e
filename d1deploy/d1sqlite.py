"""SQLite's judgement of a statement (what it asks permission for, whether it writes), and
D1's SQL rules (what D1 allows, its limits, its error texts, its values).

Whether a statement reads or writes is never read off its text. SQLite compiles it on a
connection holding the schema (`EXPLAIN` prepares a statement without running it) while
an authorizer records every action SQLite asks permission for (`Action`: read a column,
insert into a table, run a pragma, attach a file...). The statement writes when one of
those actions writes (`writes`), or when its compiled program opens a write
transaction or vacuums (VACUUM asks no permission at all). `compile_statement` returns the record
(`Compiled`); a statement SQLite cannot compile raises `CompileError`.

`authorizer` installs any policy over the same record on a live connection:
`deny_writes` is how the local backend makes SQLite refuse a read's writes, and
`d1_rules` is D1's own (workerd's authorizer). `run` executes one statement as D1
would: its rules, limits, error texts and JSON values; `LocalBackend` and the test
emulator both run every user statement through it (see the "D1's rules" section).

Pragmas: a read may only use the pragmas of `READ_PRAGMAS` (documented in the README),
the introspection ones with their table or index name, the settings without a value. A
pragma with a value, or any other pragma, writes: it changes the database or the
connection, and a connection setting outlives the batch that changed it.

Why one module over 500 lines: judging a statement and applying D1's rules are one
mechanism, SQLite's authorizer recording `Action`s, with one policy for reads and one for
D1; the rules' error texts and values belong with the `run` that produces them, and the
contract suite (tests/test_d1_contract.py) holds that whole surface to workerd at once.
"""

from __future__ import annotations

import ctypes
import enum
import math
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from d1deploy import limits, sqlsplit
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


# -- D1's rules ---------------------------------------------------------------------------
# D1 runs user SQL on the Durable Objects SQLite engine: workerd's
# `SqliteDatabase::isAuthorized` (src/workerd/util/sqlite.c++) under the
# `SqlStorageRegulator` (src/workerd/api/sql.c++), with the limits of `setupSecurity`.
# `LocalBackend` and the test emulator both run every statement through `run`, so this
# section is the one statement of them; tests/test_d1_contract.py holds it to workerd.

RESERVED_PREFIX = "_cf_"
"""Names D1 keeps for itself (any case): user SQL may not create, read or touch them."""

TRANSACTION_REFUSED = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because it interacts correctly with Durable Objects' automatic atomic "
    "write coalescing."
)
"""The engine's refusal of BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE, exactly as D1 answers
it (`SqlStorageRegulator::allowTransactions`): no `: SQLITE_...` suffix."""

IMPORT_BEGIN_REFUSED = "cannot start a transaction within a transaction: SQLITE_ERROR"
"""What D1's import answers for a BEGIN left in an imported file (D1's import docs): the
import runs in a transaction of its own."""

STATEMENT_TOO_LONG = "statement too long: SQLITE_TOOBIG"
TOO_MANY_PARAMETERS = "too many SQL variables: SQLITE_ERROR"


class PragmaArgument(enum.Enum):
    """What a D1 pragma may be given (workerd's `PragmaSignature`)."""

    NONE = "none"
    BOOLEAN = "boolean (or none, to read it)"
    NAME = "a table or index name"
    OPTIONAL_NAME = "a table name, or none"
    OPTIONAL_NUMBER = "a number, or none"
    OPTIONAL_NUMBER_OR_NAME = "a number, a table or index name, or none"


D1_PRAGMAS: dict[str, PragmaArgument] = {
    "data_version": PragmaArgument.NONE,
    "page_size": PragmaArgument.NONE,
    "case_sensitive_like": PragmaArgument.BOOLEAN,
    "foreign_keys": PragmaArgument.BOOLEAN,
    "defer_foreign_keys": PragmaArgument.BOOLEAN,
    "ignore_check_constraints": PragmaArgument.BOOLEAN,
    "legacy_alter_table": PragmaArgument.BOOLEAN,
    "recursive_triggers": PragmaArgument.BOOLEAN,
    "reverse_unordered_selects": PragmaArgument.BOOLEAN,
    "foreign_key_check": PragmaArgument.OPTIONAL_NAME,
    "foreign_key_list": PragmaArgument.NAME,
    "index_info": PragmaArgument.NAME,
    "index_list": PragmaArgument.NAME,
    "index_xinfo": PragmaArgument.NAME,
    "quick_check": PragmaArgument.OPTIONAL_NUMBER_OR_NAME,
    "optimize": PragmaArgument.OPTIONAL_NUMBER,
    # Handled before the table in workerd: any argument, and a table that is not reserved.
    "table_list": PragmaArgument.OPTIONAL_NAME,
    "table_info": PragmaArgument.NAME,
    "table_xinfo": PragmaArgument.NAME,
}
"""Every pragma D1 runs, with what it may be given (workerd's `ALLOWED_PRAGMAS`, plus
`table_list`/`table_info`/`table_xinfo`); every other pragma is "not authorized"."""

D1_FUNCTIONS = frozenset(
    # workerd's list, by the SQLite documentation page it follows: core, date, aggregate,
    # window, math, JSON, FTS5, R*Tree, and the functions ALTER TABLE runs internally.
    """abs changes char coalesce concat concat_ws format glob hex ifnull iif instr
    last_insert_rowid length like likelihood likely load_extension lower ltrim
    max_scalar min_scalar nullif octet_length printf quote random randomblob replace
    round rtrim sign soundex substr substring total_changes trim typeof unhex unicode
    unlikely upper zeroblob date time datetime julianday unixepoch strftime timediff
    current_date current_time current_timestamp avg count group_concat max min
    string_agg sum total row_number rank dense_rank percent_rank cume_dist ntile lag
    lead first_value last_value nth_value acos acosh asin asinh atan atan2 atanh ceil
    cos cosh degrees exp floor ln log log2 mod pi pow radians sin sinh sqrt tan tanh
    trunc json jsonb json_array jsonb_array json_array_length json_extract jsonb_extract
    -> ->> json_insert jsonb_insert json_object jsonb_object json_patch jsonb_patch
    json_remove jsonb_remove json_replace jsonb_replace json_set jsonb_set json_type
    json_valid json_quote json_group_array jsonb_group_array json_group_object
    jsonb_group_object json_each json_tree match highlight bm25 snippet rtreecheck
    sqlite_rename_column sqlite_rename_table sqlite_rename_test sqlite_drop_column
    sqlite_rename_quotefix""".split()  # noqa: SIM905
)
"""The functions D1 lets SQL call (workerd's `ALLOWED_SQLITE_FUNCTIONS`); others, such as
`sqlite_version()`, are "not authorized to use function". Some of them (concat, unhex,
jsonb...) are newer than the SQLite Python links here, which says "no such function"."""

D1_VIRTUAL_TABLE_MODULES = frozenset(("fts5", "fts5vocab", "rtree", "rtree_i32"))

_NAMED_ACTIONS = frozenset(
    getattr(sqlite3, name)
    for name in (
        "SQLITE_CREATE_TABLE",
        "SQLITE_DELETE",
        "SQLITE_DROP_TABLE",
        "SQLITE_INSERT",
        "SQLITE_CREATE_VIEW",
        "SQLITE_DROP_VIEW",
        "SQLITE_REINDEX",
        "SQLITE_READ",
        "SQLITE_UPDATE",
    )
)
_TWO_NAME_ACTIONS = frozenset(
    (
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_DROP_TRIGGER,
    )
)
_ALWAYS = frozenset(
    getattr(sqlite3, name) for name in ("SQLITE_SELECT", "SQLITE_RECURSIVE", "SQLITE_ANALYZE")
)
_VTABLE_ACTIONS = frozenset((sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE))
_TRANSACTION_ACTIONS = frozenset((sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT))
_SCHEMA_ACTIONS = frozenset(
    code
    for code, name in ACTION_NAMES.items()
    if name.startswith(("CREATE_", "DROP_")) or name in ("ALTER_TABLE", "REINDEX", "ANALYZE")
)
_C_INTEGER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[1-9][0-9]*|0[0-7]*)")
_BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def is_reserved(name: str | None) -> bool:
    """Whether D1 keeps `name` for itself (`_cf_` in any case)."""
    return name is not None and name[:4].lower() == RESERVED_PREFIX


def d1_allows(action: Action) -> bool:
    """Whether D1 lets user SQL do `action` (workerd's `isAuthorized` for D1)."""
    code, first, second, database = action.code, action.arg1, action.arg2, action.database
    if code in (sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_DETACH):
        # SQLite gives the database first for these two; workerd swaps them back.
        first, second, database = second, database, first

    def allowed(name: str | None) -> bool:
        return name is not None and not is_reserved(name)

    if database == "temp":
        # Temporary objects cannot be made; SQLite itself reads and updates temp's schema.
        return code in (sqlite3.SQLITE_READ, sqlite3.SQLITE_UPDATE) and allowed(first)
    if database not in (None, "main"):
        return False  # an attached database
    if code in _ALWAYS:
        return True
    if code in _NAMED_ACTIONS:
        return allowed(first)
    if code in _TWO_NAME_ACTIONS:
        return allowed(first) and allowed(second)
    if code == sqlite3.SQLITE_ALTER_TABLE:
        # workerd's SQLite also names a RENAME's new name here; stock SQLite does not.
        return allowed(first) and (second is None or allowed(second))
    if code == sqlite3.SQLITE_PRAGMA:
        return _pragma_allowed(first or "", second)
    if code == sqlite3.SQLITE_FUNCTION:
        return second in D1_FUNCTIONS
    if code in _VTABLE_ACTIONS:
        return (second or "").lower() in D1_VIRTUAL_TABLE_MODULES and allowed(first)
    # ATTACH, DETACH, temporary objects, transactions and savepoints, anything unknown.
    return False


def _pragma_allowed(name: str, value: str | None) -> bool:
    kind = D1_PRAGMAS.get(name.lower())
    if kind is None:
        return False
    if value is None:
        return kind is not PragmaArgument.NAME or name.lower() in ("table_info", "table_xinfo")
    if kind is PragmaArgument.NONE:
        return False
    if kind is PragmaArgument.BOOLEAN:
        if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        # workerd compares prefixes (strncasecmp), so `10` or `office` pass too.
        return value.lower().startswith(_BOOLEAN_WORDS)
    number = _c_integer(value)
    if kind is PragmaArgument.OPTIONAL_NUMBER:
        return number is not None and -(2**31) <= number < 2**31
    if kind is PragmaArgument.OPTIONAL_NUMBER_OR_NAME and number is not None and number >= 0:
        return True
    if name.lower() == "table_list":
        return True
    return not is_reserved(value)


def _c_integer(text: str) -> int | None:
    """`text` as C's strtol with base 0 reads a whole string (kj's tryParseAs)."""
    if not _C_INTEGER.fullmatch(text):
        return None
    digits = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if digits[:2].lower() == "0x":
        return sign * int(digits, 16)
    return sign * int(digits, 8 if len(digits) > 1 and digits[0] == "0" else 10)


def d1_rules(action: Action) -> int:
    """D1's authorizer as a `Policy`."""
    return sqlite3.SQLITE_OK if d1_allows(action) else sqlite3.SQLITE_DENY


def prepare(db: sqlite3.Connection) -> None:
    """Give `db` D1's limits and foreign keys on (set outside any transaction: inside one
    SQLite ignores it, which is also why user SQL can never switch enforcement off)."""
    for category, limit in limits.SQLITE_LIMITS.items():
        db.setlimit(category, limit)
    db.execute("PRAGMA foreign_keys = ON")


class D1Error(Exception):
    """A statement D1 fails: `message` is D1's text, `code` its primary SQLite code."""

    def __init__(self, message: str, code: str, action: Action | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.action = action
        """The action D1's rules refused, when that is why."""


@dataclass(frozen=True)
class Ran:
    """One statement run by D1's rules: the columns SQLite named (repeats included), the
    rows with their values as D1's JSON brings them back (`json_value`), and what the
    statement asked permission for."""

    columns: tuple[str, ...]
    rows: tuple[tuple[SqlValue, ...], ...]
    rowcount: int
    last_row_id: int | None
    actions: tuple[Action, ...]

    @property
    def changed_schema(self) -> bool:
        return any(a.code in _SCHEMA_ACTIONS for a in self.actions)


def run(
    db: sqlite3.Connection,
    sql: str,
    params: Sequence[SqlValue] = (),
    *,
    also: Policy | None = None,
    importing: bool = False,
) -> Ran:
    """Run one statement on `db` as D1 would: its limits, its authorizer (and `also`, a
    further policy asked only about what D1 allows), its error texts, its JSON values.

    `importing`: the statement comes from a file given to D1's import.

    :raises D1Error: D1 would fail the statement; nothing it did remains in `db`'s
        transaction beyond what SQLite itself keeps of a failed statement.
    :raises sqlite3.Error: without `sqlite_errorname`, from Python's binding layer
        (wrong number of parameters, several statements in one): the caller's input.
    """
    if len(sql.encode()) > limits.MAX_STATEMENT_BYTES:
        raise D1Error(STATEMENT_TOO_LONG, "SQLITE_TOOBIG")
    if len(params) > limits.MAX_PARAMETERS:
        raise D1Error(TOO_MANY_PARAMETERS, "SQLITE_ERROR")

    def policy(action: Action) -> int:
        if not d1_allows(action):
            return sqlite3.SQLITE_DENY
        return also(action) if also is not None else sqlite3.SQLITE_OK

    with authorizer(db, policy) as seen:
        try:
            cursor = db.execute(sql, tuple(params))
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", None) is None:
                raise
            refused = next((a for a in seen if not d1_allows(a)), None)
            raise _d1_error(exc, db, refused, importing) from exc
    return Ran(
        columns=tuple(d[0] for d in cursor.description or ()),
        rows=tuple(tuple(json_value(v) for v in row) for row in rows),
        rowcount=max(cursor.rowcount, 0),
        last_row_id=cursor.lastrowid,
        actions=tuple(seen),
    )


def _d1_error(
    exc: sqlite3.Error, db: sqlite3.Connection, refused: Action | None, importing: bool
) -> D1Error:
    if refused is not None and refused.code in _TRANSACTION_ACTIONS:
        if importing and refused.code == sqlite3.SQLITE_TRANSACTION and refused.arg1 == "BEGIN":
            return D1Error(IMPORT_BEGIN_REFUSED, "SQLITE_ERROR", refused)
        return D1Error(TRANSACTION_REFUSED, "SQLITE_AUTH", refused)
    return D1Error(*error_text(exc, db), refused)


def error_text(exc: sqlite3.Error, db: sqlite3.Connection) -> tuple[str, str]:
    """(D1's text, primary code) of a SQLite error, as the engine writes it
    (`dbErrorMessage`): `<message>[ at offset N]: SQLITE_X[ (extended: SQLITE_X_Y)]`.

    Call it right after the failure: the offset is the connection's latest error's."""
    name = str(getattr(exc, "sqlite_errorname", "") or "SQLITE_ERROR")
    primary = "_".join(name.split("_")[:2])
    offset = error_offset(db)
    text = f"{exc}{f' at offset {offset}' if offset >= 0 else ''}: {primary}"
    return text + (f" (extended: {name})" if name != primary else ""), primary


def error_offset(db: sqlite3.Connection) -> int:
    """`sqlite3_error_offset` of `db`'s latest error (where in the statement SQLite
    found it), or -1. Python's sqlite3 does not expose it, so it is read through ctypes
    from the library Python's sqlite3 uses, on CPython (whose connection object starts
    with the `sqlite3 *` handle); elsewhere -1, and D1's texts lack the offset."""
    if _sqlite3_error_offset is None:
        return -1
    handle = ctypes.c_void_p.from_address(id(db) + object.__basicsize__).value
    return int(_sqlite3_error_offset(handle)) if handle else -1


def _load_error_offset() -> Callable[[int], int] | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        import _sqlite3

        function = ctypes.CDLL(_sqlite3.__file__).sqlite3_error_offset
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


_sqlite3_error_offset = _load_error_offset()

JS_SAFE_INTEGER = 2**53
"""Beyond this an integer is not exact as a JavaScript number (a double)."""


def json_value(value: SqlValue) -> SqlValue:
    """`value` as it comes back from D1, which answers JSON written by JavaScript: every
    number is a double (an integer beyond 2**53 is rounded), an integral one is written
    without `.0` (JS's shortest digits, so it reads back as that integer), and NaN and
    infinities become null. Text and BLOBs pass unchanged."""
    if isinstance(value, int) and abs(value) > JS_SAFE_INTEGER:
        value = float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < 1e21:
            return int(Decimal(repr(value)))
    return value


def json_objects(
    columns: Sequence[str], rows: Sequence[Sequence[SqlValue]]
) -> tuple[tuple[str, ...], tuple[tuple[SqlValue, ...], ...]]:
    """Rows as D1 answers them, one JSON object per row: a column name that repeats
    keeps its first place and its last value (`SELECT 1 AS a, 2 AS a` gives a = 2)."""
    last = {name: i for i, name in enumerate(columns)}
    if len(last) == len(columns):
        return tuple(columns), tuple(tuple(row) for row in rows)
    names = tuple(dict.fromkeys(columns))
    picks = [last[name] for name in names]
    return names, tuple(tuple(row[i] for i in picks) for row in rows)
