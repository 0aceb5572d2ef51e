"""Migration files: finding them, naming them, ordering them, and creating the next one.

The migrations are exactly the files current wrangler's `d1 migrations apply` would run
(`getD1MigrationFiles` in wrangler 4.164): those under the migrations directory that the
pattern matches, `*.sql` by default (not recursive, no dot files) or the binding's
`migrations_pattern` (for nested layouts such as `*/migration.sql`), glob as minimatch
reads it, regular files only (symbolic links are not followed). A migration's name is its
path relative to the directory, with `/`. They are ordered segment by segment by the
number before the first `_` (numbered names first, numerically), then by name.

Companions (rollback, precheck, verify) live where wrangler never looks, in a folder per
migration: `0001_add.sql` has `0001_add/rollback.sql`, `precheck.sql` and `verify.sql`; a
nested migration (`0001_add/migration.sql`) has them beside it in its own folder. The
first layout (`0001_add.rollback.sql` beside the migration, the seed's `001_rollback.sql`)
made wrangler apply a rollback as a migration: it is refused, naming each file and the one
command that moves them (`layout.py`). Every problem is reported before anything runs.
No database here.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from d1deploy import sqlsplit, suggest
from d1deploy.backend import Statement
from d1deploy.errors import InputError, OldLayout, UsageError

if TYPE_CHECKING:
    from d1deploy.lint import Finding

DEFAULT_PATTERN = "*.sql"
"""wrangler's default, relative to the migrations directory."""

COMPANION_KINDS = ("rollback", "precheck", "verify")

_OLD_COMPANION = re.compile(r"(?P<stem>.+)\.(?P<kind>rollback|precheck|verify)\.sql")
_OLD_ROLLBACK = re.compile(r"\d+_rollback\.sql")
# JavaScript's WhiteSpace and LineTerminator, which parseInt skips.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
_JS_SPACE += "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_LEADING_INT = re.compile(r"([+-]?)([0-9]+)")
# minimatch features whose reading d1deploy does not reproduce exactly.
_UNSUPPORTED = (
    (re.compile(r"^[!#]"), "a leading `!` or `#`"),
    (re.compile(r"[@!+*?]\("), "extglob `@(...)`, `!(...)`, `+(...)`, `*(...)` or `?(...)`"),
    (re.compile(r"\[\[?:"), "a POSIX class such as `[[:alpha:]]`"),
)


@dataclass(frozen=True)
class Migration:
    """One migration file and its companions. `name` is what the ledger stores: the
    path relative to the migrations directory, with `/` (wrangler's convention)."""

    name: str
    path: Path
    sha256: str
    rollback_path: Path | None = None
    precheck_path: Path | None = None
    verify_path: Path | None = None
    text: str = field(default="", repr=False, compare=False)

    @property
    def number(self) -> int | None:
        """The number wrangler orders it by (before the first `_`), if it has one."""
        return leading_number(self.name)

    def statements(self) -> list[Statement]:
        return sqlsplit.split(self.text, file=str(self.path))

    def rollback_text(self) -> str | None:
        """The rollback file's SQL; None without one, or when it holds only comments (the
        template `d1deploy new` writes must not make a rollback that undoes nothing)."""
        if self.rollback_path is None:
            return None
        display = str(self.rollback_path)
        text = sqlsplit.read_sql_file(self.rollback_path, display_name=display)
        return text if sqlsplit.split(text, file=display) else None


@dataclass(frozen=True)
class Move:
    """A companion file of the first layout and where the folder layout puts it."""

    source: Path
    dest: Path


# --- wrangler's listing and order ----------------------------------------------------


def leading_number(name: str) -> int | None:
    """`parseInt(name.split("/")[0].split("_")[0], 10)` as wrangler computes it, None for
    NaN (and for numbers too large for a double, which JavaScript cannot order)."""
    head = name.split("/", 1)[0].split("_", 1)[0].lstrip(_JS_SPACE)
    m = _LEADING_INT.match(head)
    if m is None:
        return None
    number = int(m[2]) * (-1 if m[1] == "-" else 1)
    try:
        float(number)
    except OverflowError:
        return None
    return number


def _segment_key(segment: str) -> tuple[int, float, bytes]:
    number = leading_number(segment)
    # JavaScript compares strings by UTF-16 code unit, which big-endian UTF-16 bytes keep.
    text = segment.encode("utf-16-be", "surrogatepass")
    return (0, float(number), text) if number is not None else (1, 0.0, text)


def sort_key(name: str) -> tuple[tuple[int, float, bytes], ...]:
    """wrangler's `compareMigrationPaths`: segment by segment, numbered names first and
    by number, then by name; a path that is a prefix of another sorts first."""
    return tuple(_segment_key(s) for s in name.split("/"))


def check_pattern(pattern: str) -> str | None:
    """Why d1deploy cannot use this `migrations_pattern` (relative to the migrations
    directory), or None when it reads it exactly as wrangler's minimatch does."""
    if not pattern or pattern.startswith("/"):
        return "it must be a relative glob such as `*/migration.sql`"
    for rx, what in _UNSUPPORTED:
        if rx.search(pattern):
            return f"it uses {what}, which d1deploy does not read"
    return None


def _matcher(pattern: str) -> Callable[[str], bool]:
    from wcmatch import glob  # imported late: only commands that read migrations need it

    # minimatch's defaults as wrangler uses them: braces, globstar, case-sensitive, and
    # `dot: false` (a `*` or `**` never matches a name starting with `.`).
    return glob.compile(pattern, flags=glob.BRACE | glob.GLOBSTAR | glob.CASE).match


def migration_names(migrations_dir: Path, pattern: str = DEFAULT_PATTERN) -> list[str]:
    """The names wrangler's `getD1MigrationFiles` gives, in wrangler's order."""
    matcher = _matcher(pattern)
    names = [rel for rel in _walk(migrations_dir, "") if matcher(rel)]
    return sorted(names, key=sort_key)


def _walk(root: Path, rel: str) -> Iterator[str]:
    """Regular files under `root` as `a/b.sql`; like Node's `readdirSync(withFileTypes)`,
    a symbolic link is neither a file nor a folder."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        child = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), child)
        elif entry.is_file(follow_symlinks=False):
            yield child


def companion_dir(migrations_dir: Path, name: str) -> Path:
    """Where a migration's companions live: its own folder when it is nested
    (`a/migration.sql` -> `a/`), else a folder named after its stem (`0001_x.sql` -> `0001_x/`)."""
    parent, _, base = name.rpartition("/")
    if parent:
        return migrations_dir / parent
    return migrations_dir / base.removesuffix(".sql")


# --- discovery -----------------------------------------------------------------------


def discover(migrations_dir: Path, pattern: str | None = None) -> list[Migration]:
    """The migrations in `migrations_dir`, exactly as wrangler lists and orders them.

    :raises InputError: the directory is missing; a companion is in the old layout
        (`OldLayout`), is itself a file wrangler would apply, or belongs to no migration;
        a migration is empty or unreadable.
    """
    pattern = pattern or DEFAULT_PATTERN
    if not migrations_dir.is_dir():
        raise InputError(
            f"migrations directory {migrations_dir} does not exist",
            hint="create the first migration with `d1deploy new NAME`, or set migrations_dir",
        )
    names = migration_names(migrations_dir, pattern)
    _refuse_old_layout(migrations_dir, names)
    named = set(names)
    homes = {companion_dir(migrations_dir, n): n for n in names}
    for home, name in homes.items():
        for kind in COMPANION_KINDS:
            rel = (home / f"{kind}.sql").relative_to(migrations_dir).as_posix()
            if rel in named and rel != name:
                raise InputError(
                    f"{rel} is the {kind} file of {name}, but wrangler would apply it as a "
                    f"migration (it matches the migrations pattern `{pattern}`)",
                    hint="narrow migrations_pattern so that it matches only the migrations, "
                    "for example `*/migration.sql` for a folder per migration",
                    file=str(migrations_dir / rel),
                )
    _refuse_orphans(migrations_dir, homes)
    return [_load(n, migrations_dir) for n in names]


def _refuse_old_layout(migrations_dir: Path, names: Sequence[str]) -> None:
    moves, unmovable = old_layout(migrations_dir, names)
    if moves or unmovable:
        listed = [
            f"{m.source.relative_to(migrations_dir)} (-> {m.dest.relative_to(migrations_dir)})"
            for m in moves
        ] + unmovable
        raise OldLayout(
            f"{len(listed)} companion file(s) in {migrations_dir} are in the old layout, "
            f"where wrangler would apply them as migrations: {'; '.join(listed)}",
            hint="move them all into their migration's folder with"
            f" `{suggest.command('move-companions')}`",
        )


def _refuse_orphans(migrations_dir: Path, homes: dict[Path, str]) -> None:
    """A companion folder whose migration is gone (renamed, deleted) would silently lose
    its rollback and checks: refuse it."""
    for entry in sorted(migrations_dir.iterdir()):
        if not entry.is_dir() or entry in homes:
            continue
        for kind in COMPANION_KINDS:
            orphan = entry / f"{kind}.sql"
            if orphan.is_file():
                raise InputError(
                    f"{orphan} is a {kind} file, but there is no migration {entry.name}.sql "
                    f"(nor {entry.name}/migration.sql) for it",
                    hint="name the folder after its migration's file (without .sql), "
                    "or remove the folder",
                    file=str(orphan),
                )


def _load(name: str, root: Path) -> Migration:
    path = root.joinpath(*name.split("/"))
    display = str(path)
    text = sqlsplit.read_sql_file(path, display_name=display)
    if not sqlsplit.split(text, file=display):
        raise InputError(
            "the migration holds no SQL statement",
            hint="add its statements, or delete the file (wrangler would apply it too)",
            file=display,
        )
    home = companion_dir(root, name)
    found = {k: home / f"{k}.sql" for k in COMPANION_KINDS if (home / f"{k}.sql").is_file()}
    return Migration(
        name=name,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        rollback_path=found.get("rollback"),
        precheck_path=found.get("precheck"),
        verify_path=found.get("verify"),
        text=text,
    )


def old_layout(migrations_dir: Path, names: Sequence[str]) -> tuple[list[Move], list[str]]:
    """Companion files of the first layout among the files wrangler applies: each with
    where it belongs, and (second) those that cannot be placed automatically.

    `STEM.rollback.sql` (`.precheck.sql`, `.verify.sql`) is one when `STEM.sql` is a
    migration; `NNN_rollback.sql` (the seed's form) when exactly one other migration has
    the number NNN. A lone `0007_rollback.sql` is an ordinary migration."""
    top = [n for n in names if "/" not in n]
    moves: list[Move] = []
    unmovable: list[str] = []
    for name in top:
        if (m := _OLD_COMPANION.fullmatch(name)) and f"{m['stem']}.sql" in top:
            home = companion_dir(migrations_dir, f"{m['stem']}.sql")
            moves.append(Move(migrations_dir / name, home / f"{m['kind']}.sql"))
        elif _OLD_ROLLBACK.fullmatch(name):
            number = leading_number(name)
            owners = [
                n
                for n in top
                if n != name and leading_number(n) == number and not _OLD_COMPANION.fullmatch(n)
            ]
            if len(owners) == 1:
                home = companion_dir(migrations_dir, owners[0])
                moves.append(Move(migrations_dir / name, home / "rollback.sql"))
            elif owners:
                unmovable.append(
                    f"{name} (several migrations are numbered {number}: "
                    f"{', '.join(owners)}; move it into the right one's folder as rollback.sql)"
                )
    return moves, unmovable


def order_findings(migrations: Sequence[Migration]) -> list[Finding]:
    """A warning for each migration that wrangler's order (by number) puts after one
    that plain name order puts after it: older wrangler (which sorted names), `ls` and
    people read such a project in another order."""

    def by_name(m: Migration) -> bytes:
        return m.name.encode("utf-16-be", "surrogatepass")  # JavaScript's default sort

    from d1deploy.lint import Finding

    return [
        Finding(
            "warning",
            "migration-order",
            f"{b.name} runs after {a.name} (wrangler orders by number) but sorts before it "
            "by name (as older wrangler versions and `ls` order them)",
            str(b.path),
            None,
            "give the numbers the same width (0009, 0010) so that both orders agree",
        )
        for a, b in itertools.pairwise(migrations)
        if by_name(a) > by_name(b)
    ]


# --- new -----------------------------------------------------------------------------

_ROLLBACK_TEMPLATE = """\
-- Rollback of {name}: undo what it does, newest change first.
-- `d1deploy rollback` runs this file (or the copy stored when {name} was applied),
-- and `d1deploy migrate` runs it when verification fails after {name}.
-- wrangler never reads this folder: only {name} is a migration.
-- Rows the rollback means to delete must be declared, for example:
-- d1deploy: allow-row-loss some_table
"""

_VERIFY_TEMPLATE = """\
-- Checks run right after {name} is applied; a failure rolls the deploy back.
-- Each statement may be preceded by `-- check: LABEL` and `-- expect: FORM`, FORM one of
-- no rows | rows = N | rows >= N | rows <= N | value = LITERAL | error | error ~ TEXT.
-- A statement that writes is a probe: it never takes effect.
--
-- -- check: the new table exists
-- -- expect: value = 1
-- SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'my_table';
"""


def new_migration(
    migrations_dir: Path, name: str, *, pattern: str | None = None, now: datetime | None = None
) -> list[Path]:
    """Create the next-numbered migration with its `rollback.sql` and `verify.sql`.

    The number is one above the highest existing one, as wide as the existing files
    (4 digits in an empty directory, like wrangler). The migration is `STEM.sql` when the
    pattern matches that, else `STEM/migration.sql` (a nested pattern such as
    `*/migration.sql`); its companions go in its folder, `STEM/`.

    :raises UsageError: a bad name, a file that already exists, or a pattern under which
        neither place is a migration.
    :raises OldLayout: the folder still has companions in the old layout.
    """
    pattern = pattern or DEFAULT_PATTERN
    slug = name.strip().removesuffix(".sql").replace(" ", "_")
    if not slug or "/" in slug or "\\" in slug or slug.startswith("."):
        raise UsageError(
            f"cannot name a migration {name!r}",
            hint="give a short name without slashes, for example `add audit log`",
        )
    existing = migration_names(migrations_dir, pattern) if migrations_dir.is_dir() else []
    _refuse_old_layout(migrations_dir, existing)
    numbers = [(n, leading_number(n)) for n in existing]
    width = max((len(n.split("_", 1)[0]) for n, number in numbers if number is not None), default=4)
    number = max((x for _, x in numbers if x is not None), default=0) + 1
    stem = f"{number:0{width}d}_{slug}"
    matcher = _matcher(pattern)
    rel = next(
        (c for c in (f"{stem}.sql", f"{stem}/migration.sql") if matcher(c)),
        None,
    )
    if rel is None:
        raise UsageError(
            f"the migrations pattern `{pattern}` matches neither {stem}.sql nor "
            f"{stem}/migration.sql, so d1deploy cannot tell where a new migration goes",
            hint="create it where your pattern expects (for example with your ORM), with "
            "rollback.sql and verify.sql in its folder",
        )
    home = companion_dir(migrations_dir, rel)
    paths = [migrations_dir / rel, home / "rollback.sql", home / "verify.sql"]
    for path in paths:
        if path.exists():
            raise UsageError(f"{path} already exists", hint="choose another name")
    for path in paths[1:]:
        if matcher(path.relative_to(migrations_dir).as_posix()):
            raise UsageError(
                f"the migrations pattern `{pattern}` matches {path.relative_to(migrations_dir)}"
                ", so wrangler would apply the companion files as migrations",
                hint="narrow migrations_pattern, for example to `*/migration.sql`",
            )
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    contents = [
        f"-- Migration number: {number:0{width}d} \t {stamp}\n",
        _ROLLBACK_TEMPLATE.format(name=rel),
        _VERIFY_TEMPLATE.format(name=rel),
    ]
    home.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, contents, strict=True):
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
    return paths


def resolve(migrations: Sequence[Migration], name: str) -> Migration:
    """The migration called `name` (with or without `.sql`, as a path or its last part,
    or by its number when only one has it)."""
    wanted = posixpath.normpath(name.replace("\\", "/"))
    for m in migrations:
        if wanted in (m.name, m.name.removesuffix(".sql")):
            return m
    last = wanted.rsplit("/", 1)[-1]
    by_last = [m for m in migrations if last in (m.name, m.name.removesuffix(".sql"))]
    by_last = by_last or [
        m for m in migrations if "/" in m.name and m.name.split("/", 1)[0] == last
    ]
    if len(by_last) == 1:
        return by_last[0]
    if last.isdigit():
        by_number = [m for m in migrations if m.number == int(last)]
        if len(by_number) == 1:
            return by_number[0]
    raise UsageError(
        f"no migration named {name!r}",
        hint="name one of: " + ", ".join(m.name for m in migrations[-5:]) if migrations else None,
    )
