"""Hypothesis properties of the splitter and the check-file parser, judged by oracles that
are not d1deploy's own code.

The splitter: a generated script (string literals full of `;`, quotes, comment markers and
`END;`, odd quoted identifiers, comments between statements, triggers with CASE ... END in
their bodies) must have the same effect when its split statements run one at a time as
when SQLite runs the whole text itself (`executescript`). A statement lost, reordered,
duplicated or cut inside a string or a trigger changes the rows or fails to prepare.

The check-file parser: generated checks written out in the documented format read back
as exactly what was written, and no input makes it fail other than with `InputError`.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1deploy import checks, lint, sqlsplit
from d1deploy.checks import Expectation
from d1deploy.errors import InputError

pytestmark = pytest.mark.e2e

# Pieces that confuse a naive splitter when they sit inside literals and comments.
_TRICKY = ["a", "Z", " ", ";", ";;", "'", '"', "`", "[", "]", "--", "/*", "*/", "\n", "\r\n"]
_TRICKY += ["\t", "END", "END;", "end ;", "BEGIN", "CASE", "가나", "\\", "?", "%", "$1", "é"]
_TEXT = st.lists(st.sampled_from(_TRICKY), max_size=8).map("".join)
_LITERAL = _TEXT.map(lambda s: "'" + s.replace("'", "''") + "'")
_IDENT = st.one_of(
    _TEXT.map(lambda s: '"' + s.replace('"', '""') + '"'),
    _TEXT.map(lambda s: "`" + s.replace("`", "``") + "`"),
    _TEXT.filter(lambda s: "]" not in s).map(lambda s: f"[{s}]"),
)
_GAP = st.lists(
    st.sampled_from(["", " ", "\n", "\r\n", "\t", "-- a ; 'b \"c\n", "/* ; END; ' */", "\n\n"]),
    max_size=3,
).map("".join)
_SETUP = "CREATE TABLE log (v); CREATE TABLE src (id INTEGER PRIMARY KEY);"


@st.composite
def _value(draw: st.DrawFn) -> str:
    literal = draw(_LITERAL)
    if draw(st.booleans()):
        end = draw(st.sampled_from(["END", "end"]))
        return f"CASE WHEN {draw(_LITERAL)} <> '' THEN {literal} ELSE {draw(_LITERAL)} {end}"
    return literal + draw(st.sampled_from(["", " /* ; */", " -- ; END;\n"]))


@st.composite
def _statement(draw: st.DrawFn, n: int) -> str:
    kind = draw(st.sampled_from(["insert", "select-as", "trigger", "fire"]))
    if kind == "insert":
        return f"INSERT INTO log (v) VALUES ({draw(_value())});"
    if kind == "select-as":
        alias = draw(_IDENT)
        return f"INSERT INTO log (v) SELECT {alias} FROM (SELECT {draw(_value())} AS {alias});"
    if kind == "fire":
        return f"INSERT INTO src (id) VALUES ({n});"
    body = "".join(
        f"\n  {draw(_GAP)}INSERT INTO log (v) VALUES ({value} || NEW.id);"
        for value in draw(st.lists(_value(), min_size=1, max_size=3))
    )
    begin, end = draw(st.sampled_from([("BEGIN", "END"), ("begin", "end")]))
    return f"CREATE TRIGGER trg_{n} AFTER INSERT ON src {begin}{body}\n{end};"


@st.composite
def _script(draw: st.DrawFn) -> tuple[str, list[str]]:
    count = draw(st.integers(min_value=0, max_value=7))
    statements = [draw(_statement(n)) for n in range(count)]
    text = "".join(draw(_GAP) + sql for sql in statements) + draw(_GAP)
    return text, statements


def _effect(run: list[str] | str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """What a script did to a fresh database: the log rows and the schema."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(_SETUP)
        if isinstance(run, str):
            con.executescript(run)
        else:
            for sql in run:
                con.execute(sql)  # refuses more than one statement: a missed cut fails here
        log = con.execute("SELECT v FROM log ORDER BY rowid").fetchall()
        schema = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        return log, schema
    finally:
        con.close()


@settings(max_examples=150, deadline=None)
@given(_script())
def test_split_statements_do_what_sqlite_does_with_the_whole_text(
    script: tuple[str, list[str]],
) -> None:
    text, written = script

    statements = sqlsplit.split(text, file="gen.sql")

    assert [s.sql for s in statements] == written
    assert _effect([s.sql for s in statements]) == _effect(text)
    lines = text.split("\n")
    for stmt in statements:
        assert stmt.line is not None
        assert stmt.sql.split("\n")[0] in lines[stmt.line - 1] + "\n"


@settings(max_examples=150, deadline=None)
@given(_script())
def test_crlf_files_split_the_same_way(script: tuple[str, list[str]]) -> None:
    text, _ = script
    crlf = text.replace("\r\n", "\n").replace("\n", "\r\n")

    normalized = sqlsplit.split(sqlsplit.normalize_line_endings(crlf))

    # Line breaks in literals are data and stay CRLF; in the stored schema text only
    # the ones outside literals change.
    log, schema = _effect([s.sql for s in normalized])
    crlf_log, crlf_schema = _effect(crlf)
    assert log == crlf_log
    assert [str(row).replace("\\r\\n", "\\n") for row in schema] == [
        str(row).replace("\\r\\n", "\\n") for row in crlf_schema
    ]


# --- the check-file parser ------------------------------------------------------------

_ONE_LINE = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
        blacklist_characters="\x1c\x1d\x1e\x85",
    ),
    min_size=1,
    max_size=25,
).map(str.strip)
_EXPECTATIONS = st.one_of(
    st.just(Expectation("succeeds")),
    st.just(Expectation("no_rows")),
    st.builds(
        lambda op, n: Expectation("rows", op=op, count=n),
        st.sampled_from(["=", ">=", "<="]),
        st.integers(min_value=0, max_value=10**6),
    ),
    st.builds(
        lambda v: Expectation("value", value=v),
        st.one_of(
            st.none(),
            st.integers(min_value=-(10**18), max_value=10**18),
            st.floats(allow_nan=False, allow_infinity=False),
            _ONE_LINE,
        ),
    ),
    st.just(Expectation("error")),
    _ONE_LINE.filter(bool).map(lambda t: Expectation("error", error_text=t)),
)


@settings(max_examples=300, deadline=None)
@given(_EXPECTATIONS)
def test_every_expectation_reads_back_from_its_description(expectation: Expectation) -> None:
    if expectation.kind == "succeeds":  # written as no `-- expect:` line at all
        return
    assert checks.parse_expectation(expectation.describe()) == expectation


_SCHEMA = lint.SchemaModel.from_sql(["CREATE TABLE t (a)"])


@st.composite
def _check(draw: st.DrawFn) -> tuple[str | None, Expectation, str]:
    label = draw(st.one_of(st.none(), _ONE_LINE.filter(bool)))
    expectation = draw(_EXPECTATIONS)
    literal = draw(_LITERAL)
    if expectation.reads_rows or draw(st.booleans()):
        sql = f"SELECT count(*) FROM t\nWHERE a = {literal};"
    else:
        sql = f"INSERT INTO t (a) VALUES ({literal});"
    return label, expectation, sql


@settings(max_examples=200, deadline=None)
@given(st.lists(_check(), max_size=6), st.lists(_GAP, min_size=7, max_size=7))
def test_check_files_read_back_as_written(
    written: list[tuple[str | None, Expectation, str]], gaps: list[str]
) -> None:
    text, lines = "", []
    for (label, expectation, sql), gap in zip(written, gaps, strict=False):
        text += gap + "\n-- a note: not a directive\n"
        if label is not None:
            text += f"-- check: {label}\n"
        if expectation.kind != "succeeds":
            text += f"-- expect: {expectation.describe()}\n"
        lines.append(text.count("\n") + 1)
        text += sql + "\n"

    parsed = checks.parse_checks(text, file="gen.verify.sql", schema=_SCHEMA)

    assert [(c.expect, c.line) for c in parsed] == [
        (e, line) for (_, e, _), line in zip(written, lines, strict=True)
    ]
    for check, (label, _, sql) in zip(parsed, written, strict=True):
        if label is not None:
            assert check.label == label
        else:  # the statement's first line stands in, shortened
            assert check.label and check.label.removesuffix("...") in check.sql
        assert check.writes == sql.startswith("INSERT")
        assert check.sql == sql


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["-- check: x\n", "-- expect: ", "no rows", "rows >= 2", "value = 'a'"])
        | st.sampled_from(["error ~ ", "\n", "SELECT 1;", "INSERT INTO t VALUES (1);", "-- expect"])
        | st.sampled_from(["'", ";", "/*", "*/", "value = ", "x", " "]),
        max_size=12,
    ).map("".join)
)
def test_any_check_file_parses_or_names_its_bad_line(text: str) -> None:
    try:
        parsed = checks.parse_checks(text, file="any.sql", schema=_SCHEMA)
    except InputError as err:
        assert err.file == "any.sql"
        assert err.line is not None and 1 <= err.line <= text.count("\n") + 1
        return
    for check in parsed:
        assert check.sql.strip() and 1 <= check.line <= text.count("\n") + 1
