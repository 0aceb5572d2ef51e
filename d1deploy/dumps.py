"""D1 dump files: check them as they stream, read them back, and make them importable.

A D1 dump (D1's export, `wrangler d1 export`, d1deploy's `--local` export) starts with
`PRAGMA defer_foreign_keys=TRUE;`, then writes per table its `CREATE TABLE` and one
`INSERT INTO "t" ("c",...) VALUES(...);` line per row (newlines inside values are
escaped, so a row is one line), and indexes, triggers and views last. `DumpScanner`
reads such bytes in any chunking, in one pass, and says what they hold: the objects
created, the rows inserted per table, and that every statement is complete. SQLite's own
`sqlite3_complete()` decides where statements end. Runs of one table's rows are counted
with a few `bytes.count` calls per chunk instead of a Python step per row, so checking a
download costs a fraction of hashing it.

D1's exporter writes each table's CREATE TABLE followed by its rows, in the order the
tables appear in `sqlite_schema`. After a parent table has been rebuilt (create new,
copy, drop, rename: what the row-loss guard asks for), it comes after its children, so
the dump inserts child rows into a table whose parent does not exist yet and the import
fails, even with `PRAGMA defer_foreign_keys` (which defers rows, not missing tables;
workers-sdk #13272). `write_importable()` moves every CREATE TABLE to the front, keeping
everything else in order, so a d1deploy backup always restores.
"""

from __future__ import annotations

import codecs
import ctypes
import gzip
import importlib
import os
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

START = b"PRAGMA defer_foreign_keys=TRUE;"
"""How every D1 dump starts."""

MAX_STATEMENT_BYTES = 16 << 20
"""A statement longer than this is not from a dump: D1 rows are at most 2 MB (4 MB as
hex), and without a bound a body that never ends a statement would fill memory."""

GZIP_MAGIC = b"\x1f\x8b"
_READ = 1 << 20

# Statement heads, after any whitespace and comments. A name is quoted in any of
# SQLite's four ways, or bare; a schema prefix (`main.`) is skipped.
_LEAD = rb"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*"
_NAME = rb"\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|\[[^\]]*\]|'(?:[^']|'')*'|[^\s(),;.\"'`\[]+"
_QUALIFIED = rb"(?:(?:" + _NAME + rb")\s*\.\s*)?(" + _NAME + rb")"
_CREATE = re.compile(
    _LEAD + rb"CREATE\s+(?:TEMP(?:ORARY)?\s+)?(?:UNIQUE\s+|VIRTUAL\s+)?"
    rb"(TABLE|INDEX|TRIGGER|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _QUALIFIED,
    re.IGNORECASE | re.DOTALL,
)
_INSERT = re.compile(_LEAD + rb"INSERT\s+INTO\s+" + _QUALIFIED, re.IGNORECASE | re.DOTALL)
_DELETE = re.compile(_LEAD + rb"DELETE\s+FROM\s+" + _QUALIFIED, re.IGNORECASE | re.DOTALL)
_PRAGMA = re.compile(_LEAD + rb"PRAGMA\b", re.IGNORECASE | re.DOTALL)
# The exact head D1 writes before each row's values: the same for every row of a table.
_D1_ROW_HEAD = re.compile(rb'INSERT INTO "(?:[^"]|"")*" \((?:"(?:[^"]|"")*",?)*\) VALUES\(')

OnStatement = Callable[[str, "str | None", bytes], None]
"""`(kind, name, text)` for each statement, in order; `kind` is `pragma`, `table`,
`index`, `trigger`, `view`, `insert`, `delete` or `other`. A run of one table's rows
may come as one call of kind `rows` whose text holds them all."""


class NotADump(ValueError):
    """The bytes are not a complete D1 dump. `line` is the 1-based line it is about."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class TooLarge(ValueError):
    """A compressed dump inflates to more than the limit it was read with."""


@dataclass(frozen=True)
class DumpContents:
    """What a dump holds, as read from its bytes."""

    objects: dict[str, str]
    """Every object it creates: name -> `table`, `index`, `trigger` or `view`."""
    rows: dict[str, int]
    """Rows it inserts, per table that has any."""
    statements: int
    bytes: int
    """Size of the dump itself (inflated, when it is stored gzipped)."""


def _sqlite_complete() -> Callable[[bytes], bool]:
    """SQLite's `sqlite3_complete()` on UTF-8 bytes: the function behind
    `sqlite3.complete_statement`, from the same library, called without decoding the
    bytes and without holding the GIL (ctypes releases it), so it can run beside the
    download. Where the symbol cannot be reached, `sqlite3.complete_statement` itself."""
    try:
        library = ctypes.CDLL(importlib.import_module("_sqlite3").__file__)
        function = library.sqlite3_complete
    except (ImportError, OSError, AttributeError, TypeError):
        return lambda text: sqlite3.complete_statement(text.decode("utf-8", "replace"))
    function.argtypes = [ctypes.c_char_p]
    function.restype = ctypes.c_int
    return lambda text: bool(function(text))


complete = _sqlite_complete()


class DumpScanner:
    """Checks a D1 dump fed to it in chunks of any size; `finish()` says what it holds.

    `feed()` raises `NotADump` as soon as the bytes cannot be a dump (they do not start
    as one, or a statement grows past `MAX_STATEMENT_BYTES`); `finish()` raises it when
    the bytes end inside a statement. `on_statement` sees every statement in order.
    """

    def __init__(self, on_statement: OnStatement | None = None) -> None:
        self._on_statement = on_statement
        self._head = b""  # the first bytes, until there are enough to check the start
        self._started = False
        self._partial: list[bytes] = []  # the line being received
        self._partial_bytes = 0
        self._statement: list[bytes] = []  # lines of a statement that is not complete yet
        self._statement_bytes = 0
        self._statement_line = 0
        self._lines = 0
        self._row_head: bytes | None = None  # `\n` + the head of the current table's rows
        self._table = ""
        self._objects: dict[str, str] = {}
        self._rows: dict[str, int] = {}
        self._count = 0
        self._bytes = 0

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._bytes += len(data)
        if not self._started:
            data = self._head + data
            if len(data) <= len(START):
                self._head = data
                return
            self._check_start(data)
        last = data.rfind(b"\n")
        if last < 0:
            self._add_partial(data)
            return
        start = 0
        if self._partial:
            start = data.index(b"\n") + 1
            self._add_partial(data[:start])
            line = b"".join(self._partial)
            self._partial, self._partial_bytes = [], 0
            self._take_line(line)
        self._region(data, start, last + 1)
        if last + 1 < len(data):
            self._add_partial(data[last + 1 :])

    def finish(self) -> DumpContents:
        if not self._started:
            if self._head != START:
                raise NotADump(describe(self._head), 1)
            self._started = True
            self._add_partial(self._head)
        if self._partial:
            line = b"".join(self._partial)
            self._partial = []
            self._take_line(line)
        if self._statement:
            raise NotADump(
                f"it ends inside the statement at line {self._statement_line}"
                f" ({_quote_start(b''.join(self._statement)).removeprefix(', ')}): the rest "
                "is missing",
                self._statement_line,
            )
        return DumpContents(dict(self._objects), dict(self._rows), self._count, self._bytes)

    # -- internals ---------------------------------------------------------------------
    def _check_start(self, data: bytes) -> None:
        if not (data.startswith(START) and data[len(START) : len(START) + 1] in b"\r\n"):
            raise NotADump(describe(data), 1)
        self._started = True
        self._head = b""

    def _add_partial(self, data: bytes) -> None:
        self._partial.append(data)
        self._partial_bytes += len(data)
        if self._partial_bytes + self._statement_bytes > MAX_STATEMENT_BYTES:
            self._too_long()

    def _too_long(self) -> None:
        first = self._statement_line if self._statement else self._lines + 1
        raise NotADump(
            f"the statement at line {first} runs past {MAX_STATEMENT_BYTES >> 20} MB "
            "without ending",
            first,
        )

    def _region(self, data: bytes, start: int, end: int) -> None:
        """Whole lines `data[start:end]`. A run of the current table's rows is counted
        at once when SQLite agrees it ends at a statement boundary; the rest goes line
        by line."""
        pos = start
        no_run_before = start
        while pos < end:
            head = self._row_head
            if (
                head is not None
                and pos >= no_run_before
                and not self._statement
                and data.startswith(head[1:], pos)
            ):
                stop, lines = _run(data, pos, end, head)
                if complete(data[pos:stop]):
                    self._rows[self._table] += lines
                    self._count += lines
                    self._lines += lines
                    if self._on_statement is not None:
                        self._on_statement("rows", self._table, data[pos:stop])
                    pos = stop
                    continue
                no_run_before = stop  # SQLite disagrees: take these lines one by one
            newline = data.index(b"\n", pos, end)
            self._take_line(data[pos : newline + 1])
            pos = newline + 1

    def _take_line(self, line: bytes) -> None:
        self._lines += 1
        if self._statement:
            self._statement.append(line)
            self._statement_bytes += len(line)
            if self._statement_bytes > MAX_STATEMENT_BYTES:
                self._too_long()
            if b";" in line:
                text = b"".join(self._statement)
                if complete(text):
                    self._statement, self._statement_bytes = [], 0
                    self._classify(text, self._statement_line)
            return
        if b";" in line and complete(line):
            self._classify(line, self._lines)
        elif line.strip():
            self._statement = [line]
            self._statement_bytes = len(line)
            self._statement_line = self._lines

    def _classify(self, text: bytes, line: int) -> None:
        self._count += 1
        kind, name = "other", None
        if match := _INSERT.match(text):
            kind, name = "insert", _identifier(match[1], line)
            self._rows[name] = self._rows.get(name, 0) + 1
            if name != self._table or self._row_head is None:
                row_head = _D1_ROW_HEAD.match(text, len(text) - len(text.lstrip()))
                self._row_head = b"\n" + row_head[0] if row_head else None
                self._table = name
        elif match := _CREATE.match(text):
            kind, name = match[1].decode().lower(), _identifier(match[2], line)
            self._objects[name] = kind
        elif match := _DELETE.match(text):  # D1 writes `DELETE FROM sqlite_sequence;`
            kind, name = "delete", _identifier(match[1], line)
        elif _PRAGMA.match(text):
            kind = "pragma"
        if self._on_statement is not None:
            self._on_statement(kind, name, text)


def _run(data: bytes, start: int, end: int, head: bytes) -> tuple[int, int]:
    """Where the lines from `start` (which starts with `head` minus its newline) stop all
    starting with it, within the whole lines `data[start:end]`, and how many they are.

    D1 writes a table's rows together, so the run normally ends with the last line that
    starts with `head`: one check. Otherwise a binary search over line ends finds it,
    each step one `bytes.count` pair (counting is monotone: a prefix of a run is a run).
    """

    def lines_if_run(stop: int) -> int:
        lines = data.count(b"\n", start, stop)
        return lines if lines == 1 + data.count(head, start, stop) else 0

    last = data.rfind(head, start, end)
    high = data.index(b"\n", start if last < 0 else last + 1, end) + 1
    if lines := lines_if_run(high):
        return high, lines
    low, low_lines = data.index(b"\n", start, end) + 1, 1  # the first line is one
    while True:
        middle = data.find(b"\n", (low + high) // 2, high - 1)
        if middle < 0:
            middle = data.rfind(b"\n", low, high - 1)
        if middle < low:
            return low, low_lines
        if lines := lines_if_run(middle + 1):
            low, low_lines = middle + 1, lines
        else:
            high = middle + 1


def _identifier(raw: bytes, line: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotADump(f"line {line} names an object in bytes that are not UTF-8", line) from None
    quote = text[0]
    if quote == "[":
        return text[1:-1]
    if quote in "\"'`":
        return text[1:-1].replace(quote * 2, quote)
    return text


def describe(head: bytes) -> str:
    """What bytes that should be a dump look like instead, for a message."""
    text = head.lstrip()
    lowered = text[:100].lower()
    if not head:
        return "it is empty"
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "it is an HTML page"
    if lowered.startswith((b"<?xml", b"<error")):
        return "it is an XML document"
    if text.startswith((b"{", b"[")):
        return "it is a JSON document" + _quote_start(text)
    if head.startswith(GZIP_MAGIC):
        return "it is gzip-compressed"
    if head.startswith(b"SQLite format 3\x00"):
        return "it is a SQLite database file, not SQL text"
    if head.startswith(codecs.BOM_UTF8 + START):
        return "it starts with a byte-order mark (BOM) before PRAGMA, which D1 dumps never have"
    shown = _quote_start(head).removeprefix(", ")
    return f"it starts with {shown or 'bytes that are not text'}, not with {START.decode()}"


def _quote_start(data: bytes, limit: int = 60) -> str:
    shown = data[:limit].decode("utf-8", "replace")
    shown = "".join(c if c.isprintable() else " " for c in shown).strip()
    return f", {shown + ('...' if len(data) > limit else '')!r}" if shown else ""


# -- files -----------------------------------------------------------------------------


def is_gzip(path: Path) -> bool:
    """Whether the file at `path` is gzip (by its first bytes, whatever its name)."""
    with path.open("rb") as fh:
        return fh.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def chunks(path: Path, *, limit: int | None = None) -> Iterator[bytes]:
    """The dump at `path` as it is to be imported, 1 MiB at a time: inflated on the fly
    when it is gzip, never more than 1 MiB of it in memory.

    :raises TooLarge: a gzip file inflates to more than `limit` bytes.
    :raises OSError, EOFError, zlib.error: the file cannot be read, or is damaged gzip.
    """
    if not is_gzip(path):
        with path.open("rb") as fh:
            while block := fh.read(_READ):
                yield block
        return
    inflated = 0
    with gzip.open(path, "rb") as fh:
        while block := fh.read(_READ):
            inflated += len(block)
            if limit is not None and inflated > limit:
                raise TooLarge(f"it inflates to more than {limit:,} bytes")
            yield block


GZIP_ERRORS = (OSError, EOFError, zlib.error)


def scan(blocks: Iterable[bytes], on_statement: OnStatement | None = None) -> DumpContents:
    """Read a whole dump with a `DumpScanner`."""
    scanner = DumpScanner(on_statement)
    for block in blocks:
        scanner.feed(block)
    return scanner.finish()


def private_file(path: Path) -> int:
    """Create `path` for writing, readable by its owner only: dumps hold the data."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def write_importable(
    blocks: Iterable[bytes],
    dest: Path,
    schema: Iterable[bytes],
    *,
    skip: Callable[[str, str | None], bool] = lambda _kind, _name: False,
) -> DumpContents:
    """Write the dump read from `blocks` to `dest` (mode 0600) with `schema` (its PRAGMA
    and CREATE TABLE statements, gathered by an earlier pass) first, then every other
    statement in order; statements for which `skip(kind, name)` holds are left out.
    Returns what the dump read this time holds, to compare with that earlier pass."""
    with open(private_file(dest), "wb") as out:
        for text in schema:
            out.write(text if text.endswith(b"\n") else text + b"\n")

        def write(kind: str, name: str | None, text: bytes) -> None:
            if kind not in ("pragma", "table") and not skip(kind, name):
                out.write(text if text.endswith(b"\n") else text + b"\n")

        return scan(blocks, write)


def schema_statements(
    blocks: Iterable[bytes],
) -> tuple[DumpContents, list[tuple[str, str | None, bytes]]]:
    """One pass over a dump: what it holds, and its PRAGMA and CREATE TABLE statements
    as (kind, name, text), the head of `write_importable`."""
    schema: list[tuple[str, str | None, bytes]] = []

    def keep(kind: str, name: str | None, text: bytes) -> None:
        if kind in ("pragma", "table"):
            schema.append((kind, name, text))

    return scan(blocks, keep), schema


def importable(source: Path, dest: Path) -> Path:
    """Write the dump at `source` to `dest` with its PRAGMA and CREATE TABLE statements
    first (two passes over `source`, which may be gzip)."""
    _, schema = schema_statements(chunks(source))
    write_importable(chunks(source), dest, [text for _, _, text in schema])
    return dest
