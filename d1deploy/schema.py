"""The live schema, and the schema the migrations should have left.

`check_schema(migrations, state)` replays the migrations the ledger lists, in ledger order, on
an empty local database that behaves like D1, reads its `sqlite_master` with the same
statement the engine reads the live one with (`ledger.SCHEMA_SQL`), and compares the two
object by object: each table, index, trigger and view is `added` (only the live database
has it), `missing` (the migrations create it, the live database lacks it) or `changed`
(both have it, defined differently), with both definitions.

Choices, and why:

- **The replay runs on `LocalBackend`** on a temporary file, not on `lint.SchemaModel`:
  it is the engine's own D1 (foreign keys always on, so `ALTER TABLE ... RENAME` rewrites
  references as on D1; D1's limits; transaction control refused with D1's message), and a
  migration replays as D1 applies it, one all-or-nothing batch, rows included.
  `SchemaModel` discards the rows each statement writes, which is right for linting but
  not for replaying what a database went through.
- **Normalised, not textual.** Two definitions are the same when SQLite's tokens are:
  whitespace, comments, the case of keywords and identifiers, and identifier quoting (a
  table renamed by `ALTER TABLE` reads `CREATE TABLE "name"`) do not count; literals do.
  A changed table is explained by SQLite's own reading of each definition
  (`pragma_table_xinfo`, `pragma_foreign_key_list`, `pragma_index_list`) on an in-memory
  copy, plus its CHECK constraints and table options read from the tokens.
- **What is compared**: every object with SQL in `sqlite_master`, except D1's (`_cf_*`),
  SQLite's (`sqlite_*`), d1deploy's (`_d1deploy_*`), the ledger (the configured
  migrations table) and anything defined on those tables.
- **Cost**: no request of its own. The live schema is the `sqlite_master` read the engine
  makes anyway (`ledger.read_state` for status and plan; the one opening request of
  `ledger.Session` for migrate and baseline). The pragmas are SQLite's reading of exactly
  that text, so they run locally on both sides: the same answer with no bytes on the
  wire, and never two SQLite versions' answers compared with each other.
- **Migrations applied by wrangler before d1deploy** (ledger rows with no history) are
  replayed from their files like any other; nothing recorded the text they ran, so an
  edit made since shows as schema drift, which it is. A file changed since d1deploy
  applied it is replayed as it is now; its checksum drift is reported on its own.
- **Not compared**, said why (`reason`) and never refused for: an applied migration whose
  file is missing (there is nothing to replay), and a migration that fails to replay on
  an empty database (it needs rows or objects that no migration creates).
- **Adoption**: when the live schema differs and the ledger is behind (its migrations are
  the first files, in order, and more follow), the pending migrations are replayed one
  by one: `matches_up_to` is the longest prefix of the migrations whose schema is the
  live one, which `d1deploy baseline` then records without running. A migration that
  changes no schema (data only) cannot be told ran or not from the schema: the other
  matching prefixes are listed in `also_matches_up_to`.
- **Why ~580 lines, one module**: the replay, the token-normalised comparison and the
  explanation of a changed table answer one question, and adoption is the same replay
  run prefix by prefix; apart, each part would import the others' private readers.

Why one module over 500 lines: replaying, comparing, explaining a change and searching
for the prefix to adopt all work on the same normalised `sqlite_master` rows and the
same scratch replay; they are one comparison, told in the words its report uses.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from d1deploy import ledger, suggest
from d1deploy.backend import Statement
from d1deploy.discovery import Migration
from d1deploy.errors import D1DeployError, DriftDetected
from d1deploy.ledger import DbState, SchemaObject
from d1deploy.local import LocalBackend

Change = Literal["added", "missing", "changed"]

_TYPES = ("table", "view", "index", "trigger")
_SHOWN = 8
"""Objects named in a refusal's message (the report lists all of them)."""


# --- definitions as SQLite's tokens ---------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<gap>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<string>'(?:[^']|'')*'?)
    |(?P<blob>[xX]'[^']*'?)
    |(?P<quoted>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<word>[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*)
    |(?P<op>\|\||->>|->|<<|>>|<=|>=|==|!=|<>|[?:@$#]\w*|.)""",
    re.VERBOSE | re.DOTALL,
)
_SAME_OPERATOR = {"==": "=", "<>": "!="}


@dataclass(frozen=True)
class _Token:
    """One token: `key` is what counts when comparing (identifiers unquoted and in
    lower case, keywords in lower case, literals as written)."""

    kind: str
    key: str
    start: int
    end: int

    @property
    def norm(self) -> tuple[str, str]:
        # A quoted identifier is the same identifier as the bare word.
        return ("word" if self.kind == "quoted" else self.kind, self.key)

    def is_op(self, text: str) -> bool:
        return self.kind == "op" and self.key == text

    def is_word(self, text: str) -> bool:
        return self.kind == "word" and self.key == text


def _unquote(text: str) -> str:
    close = {'"': '"', "`": "`", "[": "]"}[text[0]]
    inner = text[1:-1] if len(text) > 1 and text.endswith(close) else text[1:]
    return inner if close == "]" else inner.replace(close * 2, close)


@lru_cache(maxsize=8192)
def _tokens(sql: str) -> tuple[_Token, ...]:
    found = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "op"
        text = m.group()
        if kind == "gap":
            continue
        if kind == "quoted":
            key = _unquote(text).lower()
        elif kind in ("word", "blob", "number"):
            key = text.lower()
        elif kind == "op":
            key = _SAME_OPERATOR.get(text, text)
        else:
            key = text
        found.append(_Token(kind, key, m.start(), m.end()))
    return tuple(found)


@lru_cache(maxsize=8192)
def canonical(sql: str) -> tuple[tuple[str, str], ...]:
    """`sql` as comparable data: its tokens, formatting, case and quoting left out."""
    return tuple(t.norm for t in _tokens(sql))


def _closing(tokens: Sequence[_Token], opening: int) -> int:
    """The index of the `)` matching the `(` at `opening` (the last token if unclosed)."""
    depth = 0
    for i in range(opening, len(tokens)):
        if tokens[i].is_op("("):
            depth += 1
        elif tokens[i].is_op(")"):
            depth -= 1
            if depth == 0:
                return i
    return len(tokens) - 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- what a table is made of ----------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    text: str
    key: tuple[object, ...]


@dataclass(frozen=True)
class _Table:
    """A table as SQLite reads its definition: columns in order, and the rest as facts
    (CHECK, FOREIGN KEY, UNIQUE, table options), each keyed for comparison."""

    columns: Mapping[str, _Column]
    facts: Mapping[tuple[object, ...], str]


def _table(sql: str, name: str) -> _Table | None:
    """Read one table's definition with SQLite (None when this SQLite cannot create it,
    e.g. a virtual table of a module it lacks)."""
    with closing(sqlite3.connect(":memory:")) as db:
        try:
            db.execute(sql)
        except sqlite3.Error:
            return None
        rows = db.execute(
            'SELECT name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?)'
            " ORDER BY cid",
            (name,),
        ).fetchall()
        keys = [r[0] for r in sorted((r for r in rows if r[4]), key=lambda r: r[4])]
        facts: dict[tuple[object, ...], str] = {}
        columns: dict[str, _Column] = {}
        for col, type_, notnull, default, pk, hidden in rows:
            text = f"{col} {type_}".strip()
            text += " NOT NULL" if notnull else ""
            text += f" DEFAULT {default}" if default is not None else ""
            text += " PRIMARY KEY" if pk and len(keys) == 1 else ""
            text += {2: " GENERATED VIRTUAL", 3: " GENERATED STORED"}.get(hidden, "")
            key = (
                canonical(type_),
                bool(notnull),
                canonical(default) if default is not None else None,
                bool(pk),
                hidden,
            )
            columns[col.lower()] = _Column(text, key)
        if len(keys) > 1:
            pk_text = f"PRIMARY KEY ({', '.join(keys)})"
            facts[("pk", tuple(k.lower() for k in keys))] = pk_text
        fks: dict[int, list[tuple[str, str, str | None, str, str, str]]] = {}
        for fk_id, table, src, dst, on_update, on_delete, match in db.execute(
            'SELECT id, "table", "from", "to", on_update, on_delete, "match"'
            " FROM pragma_foreign_key_list(?) ORDER BY id, seq",
            (name,),
        ):
            fks.setdefault(fk_id, []).append((table, src, dst, on_update, on_delete, match))
        for parts in fks.values():
            table, _, _, on_update, on_delete, match = parts[0]
            text = f"FOREIGN KEY ({', '.join(p[1] for p in parts)}) REFERENCES {table}"
            if any(p[2] is not None for p in parts):
                text += f" ({', '.join(str(p[2]) for p in parts)})"
            text += f" ON DELETE {on_delete}" if on_delete != "NO ACTION" else ""
            text += f" ON UPDATE {on_update}" if on_update != "NO ACTION" else ""
            text += f" MATCH {match}" if match != "NONE" else ""
            facts[("fk", text.lower())] = text
        for (index,) in db.execute(
            "SELECT name FROM pragma_index_list(?) WHERE origin = 'u'", (name,)
        ).fetchall():
            cols = [
                str(c)
                for (c,) in db.execute(
                    "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
                )
            ]
            facts[("unique", tuple(c.lower() for c in cols))] = f"UNIQUE ({', '.join(cols)})"
    facts.update(_text_facts(sql))
    return _Table(columns, facts)


def _text_facts(sql: str) -> dict[tuple[object, ...], str]:
    """What no pragma tells: the CHECK constraints, AUTOINCREMENT and the table options
    (WITHOUT ROWID, STRICT), read from the definition's tokens."""
    tokens = _tokens(sql)
    opening = next((i for i, t in enumerate(tokens) if t.is_op("(")), None)
    if opening is None:
        return {}
    end = _closing(tokens, opening)
    facts: dict[tuple[object, ...], str] = {}
    depth, i = 0, opening
    while i < end:
        t = tokens[i]
        if t.is_op("("):
            depth += 1
        elif t.is_op(")"):
            depth -= 1
        elif depth == 1 and t.is_word("check") and tokens[i + 1].is_op("("):
            stop = _closing(tokens, i + 1)
            key = ("check", tuple(x.norm for x in tokens[i + 2 : stop]))
            facts[key] = _one_line(sql[t.start : tokens[stop].end])
            i = stop
        elif depth == 1 and t.is_word("autoincrement"):
            facts[("autoincrement",)] = "AUTOINCREMENT"
        i += 1
    options = [t.key for t in tokens[end + 1 :] if t.kind == "word"]
    if "rowid" in options:
        facts[("without rowid",)] = "WITHOUT ROWID"
    if "strict" in options:
        facts[("strict",)] = "STRICT"
    return facts


def _table_details(expected: str, live: str, name: str) -> tuple[str, ...]:
    """How a table's two definitions differ, in words."""
    want, have = _table(expected, name), _table(live, name)
    if want is None or have is None:
        return ()
    details = [f"added column {c.text}" for n, c in have.columns.items() if n not in want.columns]
    details += [
        f"missing column {c.text}" for n, c in want.columns.items() if n not in have.columns
    ]
    for n, c in want.columns.items():
        if n in have.columns and have.columns[n].key != c.key:
            details.append(f"changed column {c.text} (live: {have.columns[n].text})")
    shared = [n for n in want.columns if n in have.columns]
    if not details and shared != [n for n in have.columns if n in want.columns]:
        details.append("the columns are in another order")
    details += [f"added {text}" for key, text in have.facts.items() if key not in want.facts]
    details += [f"missing {text}" for key, text in want.facts.items() if key not in have.facts]
    return tuple(details)


# --- the comparison -----------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One object that is not as the migrations leave it. `expected` and `live` are the
    two definitions as `sqlite_master` holds them (None on the side that lacks it);
    `details` says in words what differs in a changed table."""

    change: Change
    type: str
    name: str
    expected: str | None
    live: str | None
    details: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.type} {self.name} {self.change}"

    def describe(self) -> str:
        return self.label + (f" ({'; '.join(self.details)})" if self.details else "")


Objects = dict[tuple[str, str], SchemaObject]


def user_objects(schema: Sequence[SchemaObject], table: str) -> Objects:
    """The user's objects by (type, lower-case name): not SQLite's, D1's, d1deploy's or
    the ledger's, nor defined on one of those."""
    return {
        (o.type, o.name.lower()): o
        for o in schema
        if o.sql
        and not ledger.is_internal(o.name, table)
        and not ledger.is_internal(o.tbl_name, table)
    }


def _same(a: SchemaObject, b: SchemaObject) -> bool:
    return canonical(a.sql or "") == canonical(b.sql or "")


def same_schema(expected: Objects, live: Objects) -> bool:
    return expected.keys() == live.keys() and all(_same(o, live[k]) for k, o in expected.items())


def compare(expected: Objects, live: Objects) -> list[Difference]:
    """Every object that differs, tables first, then views, indexes and triggers."""
    found: list[Difference] = []
    for key in sorted(expected.keys() | live.keys(), key=lambda k: (_TYPES.index(k[0]), k[1])):
        want, have = expected.get(key), live.get(key)
        if want is not None and have is not None:
            if _same(want, have):
                continue
            assert want.sql and have.sql
            details = _table_details(want.sql, have.sql, have.name) if key[0] == "table" else ()
            found.append(Difference("changed", key[0], have.name, want.sql, have.sql, details))
        elif have is not None:
            found.append(Difference("added", key[0], have.name, None, have.sql))
        elif want is not None:
            found.append(Difference("missing", key[0], want.name, want.sql, None))
    return found


@dataclass(frozen=True)
class SchemaCheck:
    """The live schema against the one the `replayed` migrations leave.

    `compared` is False when that schema could not be known (`reason` says why).
    When the ledger is behind, `matches_up_to` names the last migration of the longest
    prefix of the migrations whose schema is the live one, and `baseline_records` the
    pending migrations a baseline up to it records; `also_matches_up_to` names the
    shorter prefixes that match too (the migrations in between change no schema)."""

    compared: bool
    replayed: tuple[str, ...] = ()
    differences: tuple[Difference, ...] = ()
    reason: str | None = None
    matches_up_to: str | None = None
    baseline_records: tuple[str, ...] = ()
    also_matches_up_to: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        return bool(self.differences)


class _Replay:
    """An empty local database that behaves like D1, with migrations applied to it."""

    def __init__(self, backend: LocalBackend, table: str) -> None:
        self.backend = backend
        self.table = table

    def apply(self, migration: Migration) -> None:
        """:raises D1DeployError: the migration fails on this database."""
        self.backend.run(migration.statements())

    def objects(self) -> Objects:
        (result,) = self.backend.run([Statement(ledger.SCHEMA_SQL)], read_only=True)
        return user_objects(ledger.state_from(self.table, result).schema, self.table)


@contextmanager
def _replaying(table: str) -> Iterator[_Replay]:
    with tempfile.TemporaryDirectory(prefix="d1deploy-replay-") as tmp:
        path = Path(tmp) / "replay.sqlite"
        backend = LocalBackend(path, name="replay", durable=False)
        try:
            # A migration may read the ledger or d1deploy's history: they exist, empty.
            backend.run(ledger.setup_statements(table))
            yield _Replay(backend, table)
        finally:
            backend.close()


def check_schema(
    migrations: Sequence[Migration], state: DbState, *, recording: Sequence[str] = ()
) -> SchemaCheck:
    """Compare the live schema in `state` with the one its ledger's migrations leave,
    followed by `recording` (what a baseline is about to record). Local work only."""
    names = [row.name for row in state.ledger]
    names += [n for n in recording if n not in names]
    files = {m.name: m for m in migrations}
    if missing := [n for n in names if n not in files]:
        return SchemaCheck(
            False,
            reason=f"the file of applied migration {', '.join(missing)} is missing, so the"
            " schema the migrations leave cannot be replayed",
        )
    live = user_objects(state.schema, state.table)
    with _replaying(state.table) as replay:
        for name in names:
            try:
                replay.apply(files[name])
            except D1DeployError as err:
                return SchemaCheck(
                    False,
                    reason=f"{name} fails on an empty database ({err}), so the schema the"
                    " migrations leave cannot be replayed",
                )
        differences = compare(replay.objects(), live)
        if not differences:
            return SchemaCheck(True, tuple(names))
        pending, matches = _matching_prefixes(replay, migrations, names, live)
    last = matches[-1] if matches else None
    return SchemaCheck(
        True,
        tuple(names),
        tuple(differences),
        matches_up_to=None if last is None else pending[last],
        baseline_records=() if last is None else tuple(pending[: last + 1]),
        also_matches_up_to=tuple(pending[i] for i in matches[:-1]),
    )


def _matching_prefixes(
    replay: _Replay, migrations: Sequence[Migration], replayed: Sequence[str], live: Objects
) -> tuple[list[str], list[int]]:
    """The pending migrations replayed in file order after `replayed`, and the positions
    among them after which the schema is the live one. Only when the ledger is behind:
    what it lists are the first files, in order."""
    if [m.name for m in migrations[: len(replayed)]] != list(replayed):
        return [], []
    pending: list[str] = []
    found: list[int] = []
    for m in migrations[len(replayed) :]:
        try:
            replay.apply(m)
        except D1DeployError:
            break
        pending.append(m.name)
        if same_schema(replay.objects(), live):
            found.append(len(pending) - 1)
    return pending, found


# --- refusing -----------------------------------------------------------------------------


def adoption(check: SchemaCheck) -> str | None:
    """The sentence that says which baseline adopts the live schema, if one does."""
    if check.matches_up_to is None:
        return None
    name = check.matches_up_to
    before = check.baseline_records[:-1]
    text = (
        f"The live schema already matches {name}: `{suggest.command('baseline', name)}` records "
        + (
            f"it and {', '.join(before)} without running them"
            if before
            else "it without running it"
        )
    )
    if check.also_matches_up_to:
        text += (
            f". It matches after {', '.join(check.also_matches_up_to)} too (the migrations"
            " in between leave the schema as it was), so the schema cannot say which of them"
            " ran: baseline the last one that did"
        )
    return text


class SchemaDrift(DriftDetected):
    """The live schema is not the one the migrations leave (or, for a baseline, it could
    not be checked). `check` says how; `schema` is it too, unless the report already
    shown carries it (`shown`), so that it is printed once."""

    def __init__(
        self,
        check: SchemaCheck,
        *,
        baseline: str | None = None,
        instead: str | None = None,
        shown: bool = False,
    ) -> None:
        self.check = check
        self.baseline = baseline
        self.instead = instead
        self.shown = shown
        # Shown already, they are named; else described.
        listed = "; ".join(d.label if shown else d.describe() for d in check.differences[:_SHOWN])
        if len(check.differences) > _SHOWN:
            listed += f"; and {len(check.differences) - _SHOWN} more"
        if baseline is None:
            message = f"the live schema differs from what the applied migrations leave: {listed}"
        elif not check.compared:
            message = (
                f"cannot check that the live schema is what the migrations up to {baseline}"
                f" leave: {check.reason}"
            )
        else:
            message = (
                f"the live schema is not what the migrations up to {baseline} leave, so"
                f" recording them as applied would be wrong: {listed}"
            )
        super().__init__(message, hint=self._hint())

    @property
    def schema(self) -> SchemaCheck | None:
        return None if self.shown else self.check

    def _hint(self) -> str:
        command = suggest.command
        if self.baseline is not None:
            force = f"`{command('baseline', self.baseline, '--force')}` records them anyway"
            if self.instead is None:
                return force
            return (
                f"the live schema matches the migrations up to {self.instead}:"
                f" `{command('baseline', self.instead)}` records those; {force}"
            )
        adopt = adoption(self.check)
        if adopt is not None:
            return adopt
        return (
            "undo the change by hand, or write a migration that makes the same change"
            f" (`{command('status')}` then names the baseline that records it without"
            " running it), or pass --allow-drift to go on anyway"
        )


def refuse_baseline(
    migrations: Sequence[Migration],
    state: DbState,
    target: str,
    recording: Sequence[str],
    *,
    force: bool = False,
) -> SchemaCheck:
    """The live schema against the one the migrations leave once `recording` (up to
    `target`) is recorded as applied.

    :raises SchemaDrift: unless `force`, when they differ or that cannot be checked;
        it names a baseline that matches instead, if one does.
    """
    after = check_schema(migrations, state, recording=recording)
    if force or (after.compared and not after.drifted):
        return after
    instead = check_schema(migrations, state).matches_up_to
    raise SchemaDrift(after, baseline=target, instead=instead)
