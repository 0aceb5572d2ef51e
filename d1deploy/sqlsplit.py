"""SQL text -> statements with their line numbers, and reading SQL files safely.

SQLite itself decides where a statement ends: `sqlite3.complete_statement` says whether
the text up to a `;` is a whole statement, so `CREATE TRIGGER ... BEGIN ... END;` bodies
(in any case, with nested `CASE ... END`) stay in one piece. A regular expression only
skips string literals, quoted identifiers and comments to reach the next `;` that could
end a statement, which keeps the split linear even when a long string holds thousands of
`;` (asking SQLite at each of them would re-read the string every time).

Pure: no I/O except `read_sql_file`.
"""

from __future__ import annotations

import codecs
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from d1deploy.backend import Statement
from d1deploy.errors import InputError

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

# One string literal, quoted identifier or comment, tokenized as SQLite does. An
# unclosed one runs to the end of the text, as it does for SQLite.
_QUOTED = (
    r"'[^']*+(?:'|\Z)"
    r'|"[^"]*+(?:"|\Z)'
    r"|`[^`]*+(?:`|\Z)"
    r"|\[[^\]]*+(?:\]|\Z)"
    r"|--[^\n]*+\n?"
    r"|/\*(?s:.*?)(?:\*/|\Z)"
)
_QUOTED_RE = re.compile(_QUOTED)
_QUOTED_OR_CRLF = re.compile(rf"{_QUOTED}|\r\n")
# Everything up to and including the next `;` outside quotes and comments. Possessive
# quantifiers never backtrack, so even a failed match costs one pass.
_CODE = rf"(?:[^;'\"`\[/-]++|{_QUOTED}|[/-])*+;"
_TO_SEMICOLON = re.compile(_CODE)
# SQLite's whitespace, and closed comments: what may come between tokens.
_GAP = r"[ \t\n\v\f\r]++|--[^\n]*+\n?|/\*(?s:.*?)\*/"
_PRELUDE = re.compile(rf"(?:{_GAP})*+")
# The gap before a statement, then the statement up to its first candidate `;`.
_STATEMENT = re.compile(rf"(?:{_GAP})*+(?P<sql>){_CODE}")
# After a `;` inside a trigger body, only `END ;` can finish the statement.
_TRIGGER_END = re.compile(rf"(?:{_GAP})*+END(?:{_GAP})*+;", re.IGNORECASE)
# A character that may continue an SQLite identifier (any non-ASCII one may).
_ID_CHAR = r"[0-9A-Za-z_$\x80-\U0010ffff]"
_TRANSACTION = re.compile(
    rf"(?:BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)(?!{_ID_CHAR})",
    re.IGNORECASE | re.ASCII,
)
_PARAMETER = re.compile(r"\?([0-9]*)")
# What an unclosed token is, by its first character: (name, opener length, closer).
_UNCLOSED = {
    "'": ("string", 1, "'"),
    '"': ("quoted identifier", 1, '"'),
    "`": ("quoted identifier", 1, "`"),
    "[": ("quoted identifier", 1, "]"),
    "/": ("comment", 2, "*/"),
}


@dataclass(frozen=True)
class Chunk:
    """A slice of SQL text: the comments and whitespace before a statement, then the
    statement. Concatenating every chunk's `raw` gives back the text exactly.

    `sql` runs from the statement's first significant character through its `;` (or to
    the end of the text for a last statement without one); it is empty for trailing
    whitespace and comments. `line` is the 1-based line where `sql` starts.
    """

    raw: str
    sql: str
    line: int
    prelude: str

    @property
    def prelude_line(self) -> int:
        """The line where the chunk (its prelude) starts."""
        return self.line - self.prelude.count("\n")


def split_chunks(text: str, *, file: str | None = None) -> list[Chunk]:
    """Cut `text` into chunks, one per statement plus one for trailing comments.

    :raises InputError: naming `file` and the line where an incomplete statement (an
        unclosed string or comment, a trigger without `END;`) starts.
    """
    return [
        Chunk(raw=text[start:end], sql=text[begin:end], line=line, prelude=text[start:begin])
        for start, begin, end, line in _spans(text, file)
    ]


def split(text: str, *, file: str | None = None) -> list[Statement]:
    """The statements of `text`, in order, each with `file` and its starting line.

    Empty statements (a lone `;`) are dropped.

    :raises InputError: as `split_chunks` does.
    """
    statements = (
        Statement(sql=text[begin:end], file=file, line=line)
        for _, begin, end, line in _spans(text, file)
    )
    return [s for s in statements if s.sql not in ("", ";")]


def _spans(text: str, file: str | None) -> Iterator[tuple[int, int, int, int]]:
    """(chunk start, statement start, chunk end, statement line) for each chunk."""
    nul = text.find("\x00")
    if nul >= 0:
        raise InputError(
            "the SQL text contains a NUL character",
            hint="SQL text never holds NUL; a UTF-16 or binary file does. Re-save it as UTF-8.",
            file=file,
            line=text.count("\n", 0, nul) + 1,
        )
    start, line, size = 0, 1, len(text)
    while start < size:
        # One match finds both the statement's start and its first candidate `;`.
        match = _STATEMENT.match(text, start)
        begin = match.start("sql") if match else _skip_gap(text, start)
        line += text.count("\n", start, begin)
        if match:
            end = _statement_end(text, begin, match.end(), line, file)
        else:
            end = _last_statement_end(text, begin, line, file) if begin < size else size
        yield start, begin, end, line
        line += text.count("\n", begin, end)
        start = end


def _skip_gap(text: str, pos: int) -> int:
    """The position of the first character after whitespace and comments at `pos`."""
    match = _PRELUDE.match(text, pos)
    return match.end() if match else pos


def _statement_end(text: str, begin: int, end: int, line: int, file: str | None) -> int:
    """Where the statement starting at `begin` ends (just after its `;`), given the
    first `;` outside quotes and comments after it, which ends at `end`."""
    if _complete(text[begin:end], line, file):
        return end
    # A `;` outside quotes is incomplete only inside a trigger body (SQLite's state
    # machine), which can end only at `END ;`: ask SQLite only there.
    while (match := _TO_SEMICOLON.match(text, end)) is not None:
        pos, end = end, match.end()
        if _TRIGGER_END.fullmatch(text, pos, end) and _complete(text[begin:end], line, file):
            return end
    return _last_statement_end(text, begin, line, file)


def _last_statement_end(text: str, begin: int, line: int, file: str | None) -> int:
    """The end of the text, when the statement at `begin` is complete without a `;`."""
    rest = text[begin:]
    # A newline first, so that a trailing `--` comment cannot swallow the `;`.
    if _complete(rest + "\n;", line, file):
        return len(text)
    reason, hint = _why_incomplete(rest, line)
    raise InputError(
        f"statement starting at line {line} is incomplete: {reason}",
        hint=hint,
        file=file,
        line=line,
    )


def _complete(sql: str, line: int, file: str | None) -> bool:
    try:
        return sqlite3.complete_statement(sql)
    except UnicodeEncodeError:  # a lone surrogate, e.g. from undecodable argv bytes
        raise InputError(
            f"statement starting at line {line} contains text that is not valid Unicode",
            hint="Give the SQL as UTF-8 text.",
            file=file,
            line=line,
        ) from None


def _why_incomplete(fragment: str, line: int) -> tuple[str, str]:
    """Why SQLite finds `fragment` (a statement to the end of the text) incomplete."""
    # An unclosed token runs to the end, so only the last one can be unclosed.
    tokens = list(_QUOTED_RE.finditer(fragment))
    if tokens and tokens[-1][0][0] in _UNCLOSED:
        token = tokens[-1][0]
        kind, opener, closer = _UNCLOSED[token[0]]
        if len(token) < opener + len(closer) or not token.endswith(closer):
            where = line + fragment.count("\n", 0, tokens[-1].start())
            escape = " (a quote inside a string is written twice: '')" if kind == "string" else ""
            return (
                f"the {kind} opened at line {where} is never closed",
                f"Close it with {closer}{escape}.",
            )
    return (
        "the CREATE TRIGGER body never ends with `END;`",
        "End the trigger body with `END;` after its last statement's `;`.",
    )


def normalize_line_endings(sql: str) -> str:
    """CRLF -> LF outside string literals and quoted identifiers.

    D1's server-side splitter mishandles CRLF inside trigger bodies; line breaks inside
    a string are data and stay as they are.
    """

    def fix(match: re.Match[str]) -> str:
        token = match[0]
        return token if token[0] in "'\"`[" else token.replace("\r\n", "\n")

    return _QUOTED_OR_CRLF.sub(fix, sql)


def without_literals(sql: str) -> str:
    """`sql` with each comment replaced by a space and each string literal or quoted
    identifier by `_`, so that keyword patterns cannot match inside them."""
    return _QUOTED_RE.sub(lambda m: " " if m[0][0] in "-/" else "_", sql)


def strip_leading_comments(sql: str) -> str:
    """`sql` without the whitespace and comments before its first token."""
    return sql[_skip_gap(sql, 0) :]


def is_transaction_control(sql: str) -> bool:
    """True for BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT and RELEASE statements (leading
    comments and case ignored). A `CREATE TRIGGER ... BEGIN ... END` is not one."""
    return _TRANSACTION.match(sql, _skip_gap(sql, 0)) is not None


def count_parameters(sql: str) -> int:
    """How many values the statement binds: each `?` takes the next number, `?NNN` the
    number NNN; SQLite binds up to the highest. Named parameters (D1 refuses them) and
    anything inside strings, identifiers or comments do not count."""
    count = 0
    for match in _PARAMETER.finditer(without_literals(sql)):
        count = max(count, int(match[1])) if match[1] else count + 1
    return count


def read_sql_file(path: Path, *, display_name: str | None = None) -> str:
    """The text of a SQL file: strict UTF-8, a leading BOM dropped.

    `display_name` is how errors name the file (default: the path).

    :raises InputError: when the file cannot be read, is a SQLite database, or is not
        UTF-8 (naming the line of the first bad byte).
    """
    name = display_name or str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(
            f"cannot read {name}: {err.strerror or err}",
            hint="Check the path and the file's permissions.",
            file=name,
        ) from None
    if data.startswith(SQLITE_HEADER):
        raise InputError(
            f"{name} is a SQLite database file, not SQL text",
            hint="Give a .sql file; `sqlite3 FILE .dump` turns a database into SQL.",
            file=name,
        )
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"{name} is not valid UTF-8 (byte 0x{data[err.start]:02x} at line {line})",
            hint="Re-save the file as UTF-8.",
            file=name,
            line=line,
        ) from None
