"""Tests for d1deploy.sqlsplit: the corpus in tests/data/sqlsplit, properties of
generated SQL, error cases, and the helpers around splitting."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1deploy import sqlsplit
from d1deploy.errors import InputError

CORPUS = Path(__file__).parent / "data" / "sqlsplit"
CASES = sorted(p.stem for p in CORPUS.glob("*.sql"))


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 12
    assert all((CORPUS / f"{name}.json").is_file() for name in CASES)


@pytest.mark.parametrize("name", CASES)
def test_corpus(name: str) -> None:
    path = CORPUS / f"{name}.sql"
    expected = [tuple(item) for item in json.loads((CORPUS / f"{name}.json").read_text("utf-8"))]
    text = sqlsplit.read_sql_file(path, display_name=f"{name}.sql")

    statements = sqlsplit.split(text, file=f"{name}.sql")

    assert [(s.line, s.sql) for s in statements] == expected
    assert all(s.file == f"{name}.sql" and s.params == () for s in statements)
    assert "".join(c.raw for c in sqlsplit.split_chunks(text)) == text


def test_corpus_crlf_file_really_has_crlf() -> None:
    # Guards the corpus itself: a checkout that rewrote line endings would test nothing.
    assert b"\r\n" in (CORPUS / "crlf.sql").read_bytes()
    assert (CORPUS / "bom.sql").read_bytes().startswith(b"\xef\xbb\xbf")


def test_chunks_carry_prelude_sql_and_lines() -> None:
    text = "-- one\n-- two\nSELECT 1; -- after\n\nSELECT\n 2;\n-- tail\n"
    chunks = sqlsplit.split_chunks(text)

    assert [(c.prelude, c.sql, c.line, c.prelude_line) for c in chunks] == [
        ("-- one\n-- two\n", "SELECT 1;", 3, 1),
        (" -- after\n\n", "SELECT\n 2;", 5, 3),
        ("\n-- tail\n", "", 8, 6),
    ]
    assert all(c.raw == c.prelude + c.sql for c in chunks)


def test_empty_text_has_no_chunks() -> None:
    assert sqlsplit.split_chunks("") == []
    assert sqlsplit.split("   \n") == []


def test_lone_semicolons_are_chunks_but_not_statements() -> None:
    assert [c.sql for c in sqlsplit.split_chunks(";\n;SELECT 1;")] == [";", ";", "SELECT 1;"]
    assert [s.sql for s in sqlsplit.split(";\n;SELECT 1;")] == ["SELECT 1;"]


def test_last_statement_without_semicolon_runs_to_the_end() -> None:
    statements = sqlsplit.split("SELECT 1;\nSELECT 2 -- done", file="f.sql")
    assert [(s.line, s.sql) for s in statements] == [(1, "SELECT 1;"), (2, "SELECT 2 -- done")]


def test_trigger_without_final_semicolon_is_a_statement() -> None:
    sql = "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END"
    assert [s.sql for s in sqlsplit.split(sql)] == [sql]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("SELECT 1;\n\nSELECT 'abc;\nSELECT 2;\n", 3, "the string opened at line 3"),
        ("SELECT 1;\nSELECT 2,\n  'ok', \"id\n;", 2, "the quoted identifier opened at line 3"),
        ("SELECT [a;\n", 1, "the quoted identifier opened at line 1"),
        ("SELECT 1;\n/* forgot to close;\nSELECT 2;", 2, "the comment opened at line 2"),
        (
            "SELECT 1;\nCREATE TRIGGER t AFTER INSERT ON x BEGIN\n SELECT 1;\n SELECT 2;\n",
            2,
            "the CREATE TRIGGER body never ends with `END;`",
        ),
    ],
)
def test_incomplete_statement_names_file_and_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        sqlsplit.split(text, file="m.sql")
    err = caught.value
    assert (err.file, err.line) == ("m.sql", line)
    assert err.message.startswith(f"statement starting at line {line} is incomplete: {reason}")
    assert err.hint
    assert str(err).startswith(f"m.sql:{line}: ")


def test_nul_character_is_refused_with_its_line() -> None:
    with pytest.raises(InputError, match="NUL") as caught:
        sqlsplit.split("SELECT 1;\nSELECT '\x00';", file="f.sql")
    assert caught.value.line == 2


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InputError, match="not valid Unicode") as caught:
        sqlsplit.split("SELECT 1;\nSELECT '\udcff';", file="--command")
    assert (caught.value.file, caught.value.line) == ("--command", 2)


def test_huge_string_full_of_semicolons_is_one_statement() -> None:
    # Asking SQLite at every `;` would re-read the string each time (quadratic).
    value = "a;" * 200_000
    text = f"INSERT INTO t VALUES ('{value}');\nSELECT 1;"
    assert [s.line for s in sqlsplit.split(text)] == [1, 2]


def test_unfinished_trigger_before_many_statements_fails_fast() -> None:
    # Every later `;` is inside the unfinished trigger body as far as SQLite knows.
    text = "CREATE TRIGGER t AFTER INSERT ON x BEGIN\n" + "SELECT 1;\n" * 50_000
    with pytest.raises(InputError, match="never ends with `END;`"):
        sqlsplit.split(text)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("BEGIN", True),
        ("begin transaction;", True),
        ("BEGIN IMMEDIATE TRANSACTION;", True),
        ("Begin Deferred;", True),
        ("BEGIN EXCLUSIVE;", True),
        ("COMMIT;", True),
        ("commit transaction", True),
        ("END;", True),
        ("end transaction;", True),
        ("ROLLBACK;", True),
        ("ROLLBACK TO SAVEPOINT s1;", True),
        ("SAVEPOINT s1;", True),
        ("RELEASE SAVEPOINT s1;", True),
        ("-- note\n/* x */  COMMIT;", True),
        ("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END;", False),
        ("SELECT 'BEGIN';", False),
        ('"begin";', False),
        ("-- COMMIT\nSELECT 1;", False),
        ("ENDING;", False),
        ("end_date;", False),
        ("END홍;", False),
        ("UPDATE t SET end = 1;", False),
    ],
)
def test_is_transaction_control(sql: str, expected: bool) -> None:
    assert sqlsplit.is_transaction_control(sql) is expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;", 0),
        ("SELECT ?, ?, ?;", 3),
        ("SELECT ?3;", 3),
        ("SELECT ?1, ?1, ?2;", 2),
        ("SELECT ?2, ?;", 3),
        ("SELECT ?, ?1;", 1),
        ("SELECT '?', \"?\", [?], `?` -- ?\n, ? /* ? */;", 1),
        ("INSERT INTO t VALUES " + ", ".join(["(?, ?)"] * 60) + ";", 120),
    ],
)
def test_count_parameters(sql: str, expected: int) -> None:
    assert sqlsplit.count_parameters(sql) == expected


def test_count_parameters_agrees_with_sqlite() -> None:
    db = sqlite3.connect(":memory:")
    for sql in ("SELECT ?, ?5, ?, '?'", "SELECT ?2, ?1, ? -- ?"):
        count = sqlsplit.count_parameters(sql)
        db.execute(sql, [None] * count)
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute(sql, [None] * (count + 1))


def test_normalize_line_endings_keeps_literals() -> None:
    sql = (
        "CREATE TRIGGER t AFTER INSERT ON x\r\nBEGIN\r\n"
        "  INSERT INTO y VALUES ('a\r\nb', \"c\r\nd\", [e\r\nf]); -- it's\r\n"
        "  /* x\r\n */ SELECT 1;\r\nEND;\r\n"
    )
    assert sqlsplit.normalize_line_endings(sql) == (
        "CREATE TRIGGER t AFTER INSERT ON x\nBEGIN\n"
        "  INSERT INTO y VALUES ('a\r\nb', \"c\r\nd\", [e\r\nf]); -- it's\n"
        "  /* x\n */ SELECT 1;\nEND;\n"
    )


def test_without_literals_masks_strings_identifiers_and_comments() -> None:
    assert sqlsplit.without_literals("SELECT 'a;b', \"c\" -- x\nFROM [t] /* y */;") == (
        "SELECT _, _  FROM _  ;"
    )


# --- read_sql_file ---------------------------------------------------------------------


def test_read_sql_file_refuses_a_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "backup.sql"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="SQLite database file") as caught:
        sqlsplit.read_sql_file(path)
    assert caught.value.file == str(path)
    assert caught.value.hint


def test_read_sql_file_names_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.sql"
    path.write_bytes(b"SELECT 1;\n-- ok\nSELECT '\xe9t\xe9';\n")
    with pytest.raises(InputError) as caught:
        sqlsplit.read_sql_file(path, display_name="migrations/m.sql")
    err = caught.value
    assert (err.file, err.line) == ("migrations/m.sql", 3)
    assert "migrations/m.sql" in err.message
    assert "line 3" in err.message
    assert err.hint is not None and "UTF-8" in err.hint


def test_read_sql_file_strips_a_bom_and_keeps_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.sql"
    path.write_bytes(b"\xef\xbb\xbfSELECT 1;\n\xed\x99\x8d;\n")
    text = sqlsplit.read_sql_file(path)
    assert text == "SELECT 1;\n홍;\n"
    assert [s.line for s in sqlsplit.split(text)] == [1, 2]


def test_read_sql_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        sqlsplit.read_sql_file(tmp_path / "nope.sql")


# --- properties ------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        *("a", "b", " ", ";", "'", '"', "`", "[", "]", "-", "--", "/*", "*/", "\n", "\r\n"),
        *("END", "end;", "BEGIN", "CASE", "홍길동", "?"),
    ]
)
_TEXT = st.lists(_PIECES, max_size=8).map("".join)


def _quote(text: str, kind: str) -> str:
    if kind == "[":
        return "[" + text.replace("]", "") + "]"
    return kind + text.replace(kind, kind * 2) + kind


_LITERAL = st.one_of(
    st.builds(_quote, _TEXT, st.sampled_from(["'", '"', "`", "["])),
    st.integers(0, 999).map(str),
)
_BLOCK_COMMENT = _TEXT.map(lambda t: "/*" + t.replace("*", "") + "*/")
_LINE_COMMENT = _TEXT.map(lambda t: "--" + t.replace("\n", " ").replace("\r", " ") + "\n")
_GAP = st.lists(
    st.one_of(st.sampled_from([" ", "\n", "\r\n", "\t"]), _BLOCK_COMMENT, _LINE_COMMENT),
    max_size=3,
).map("".join)


@st.composite
def _expression(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_LITERAL, min_size=1, max_size=3))
    expression = (draw(_GAP) + " || ").join(parts)
    if draw(st.booleans()):
        end = draw(st.sampled_from(["END", "end", "End"]))
        expression = f"CASE WHEN {draw(_LITERAL)} THEN {expression} ELSE {draw(_LITERAL)} {end}"
    return expression + draw(st.sampled_from(["", " /* ; */", " -- ;\n"]))


@st.composite
def _statement(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["select", "insert", "trigger"]))
    if kind == "select":
        return f"SELECT {draw(_expression())};"
    if kind == "insert":
        values = ", ".join(draw(st.lists(_expression(), min_size=1, max_size=3)))
        return f"INSERT INTO t VALUES ({values});"
    begin = draw(st.sampled_from(["BEGIN", "begin", "Begin"]))
    end = draw(st.sampled_from(["END", "end", "End"]))
    body = "".join(
        f"\n{draw(_GAP)}UPDATE t SET a = {expression};"
        for expression in draw(st.lists(_expression(), min_size=1, max_size=3))
    )
    return f"CREATE TRIGGER tr AFTER INSERT ON t {begin}{body}\n{end};"


@st.composite
def _script(draw: st.DrawFn) -> tuple[str, list[tuple[int, str]]]:
    """SQL text and the statements it was built from, with their lines."""
    statements = draw(st.lists(_statement(), max_size=6))
    text, expected = "", list[tuple[int, str]]()
    for sql in statements:
        text += draw(_GAP)
        expected.append((text.count("\n") + 1, sql))
        text += sql
    tail = draw(_GAP)
    drop_last_semicolon = draw(st.booleans())
    if expected and drop_last_semicolon:
        # The last statement without its `;`: it runs to the end of the text.
        line, sql = expected[-1]
        text = text[:-1] + tail
        expected[-1] = (line, sql[:-1] + tail)
    else:
        text += tail
    return text, expected


@settings(max_examples=200, deadline=None)
@given(_script())
def test_generated_sql_splits_into_its_statements(
    script: tuple[str, list[tuple[int, str]]],
) -> None:
    text, expected = script

    statements = sqlsplit.split(text, file="gen.sql")
    chunks = sqlsplit.split_chunks(text)

    assert [(s.line, s.sql) for s in statements] == expected
    assert "".join(c.raw for c in chunks) == text
    offset = 0
    for chunk in chunks:
        assert chunk.raw == chunk.prelude + chunk.sql
        assert chunk.line == text.count("\n", 0, offset + len(chunk.prelude)) + 1
        offset += len(chunk.raw)
    # CRLF -> LF outside literals changes no boundary and no line number.
    normalized = sqlsplit.split(sqlsplit.normalize_line_endings(text))
    assert [(s.line, s.sql) for s in normalized] == [
        (line, sqlsplit.normalize_line_endings(sql)) for line, sql in expected
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab ;'\"`[]-/*\n\r"), max_size=40))
def test_any_text_rejoins_or_fails_cleanly(text: str) -> None:
    try:
        chunks = sqlsplit.split_chunks(text)
    except InputError as err:
        assert err.line is not None and 1 <= err.line <= text.count("\n") + 1
        return
    assert "".join(c.raw for c in chunks) == text
    for chunk in chunks[:-1]:
        assert sqlite3.complete_statement(chunk.sql)
