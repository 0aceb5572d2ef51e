"""Migration files: finding them, naming them, and creating the next one.

A migration is `NNN_slug.sql` (digits of any width) in the migrations directory, ordered
by number then name. Companions share its stem: `NNN_slug.rollback.sql`,
`NNN_slug.precheck.sql`, `NNN_slug.verify.sql`; the seed's `NNN_rollback.sql` is the
rollback of the one migration numbered NNN. Anything else in the directory is ignored.
Every problem is reported before anything runs. No database here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from d1deploy import sqlsplit
from d1deploy.backend import Statement
from d1deploy.errors import InputError, UsageError

_MIGRATION = re.compile(r"(?P<number>\d+)_(?P<slug>.+)\.sql")
_COMPANION = re.compile(r"(?P<stem>\d+_.+)\.(?P<kind>rollback|precheck|verify)\.sql")
_COMPANION_KINDS = ("rollback", "precheck", "verify")


@dataclass(frozen=True)
class Migration:
    """One migration file and its companions. `name` is what the ledger stores: the
    path relative to the migrations directory, with `/` (wrangler's convention)."""

    number: int
    name: str
    path: Path
    sha256: str
    rollback_path: Path | None = None
    precheck_path: Path | None = None
    verify_path: Path | None = None
    text: str = field(default="", repr=False, compare=False)

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


def discover(migrations_dir: Path) -> list[Migration]:
    """The migrations in `migrations_dir`, ordered by number then name.

    :raises InputError: the directory is missing; two migrations share a number; a
        companion has no migration; a migration is empty or unreadable.
    """
    if not migrations_dir.is_dir():
        raise InputError(
            f"migrations directory {migrations_dir} does not exist",
            hint="create the first migration with `d1deploy new NAME`, or set migrations_dir",
        )
    found: dict[int, Path] = {}
    seed_rollbacks: dict[int, Path] = {}
    companions: dict[tuple[str, str], Path] = {}
    for path in sorted(p for p in migrations_dir.iterdir() if p.is_file()):
        if m := _COMPANION.fullmatch(path.name):
            companions[(m["stem"], m["kind"])] = path
        elif m := _MIGRATION.fullmatch(path.name):
            number = int(m["number"])
            if m["slug"] == "rollback":
                seed_rollbacks[number] = path
            elif number in found:
                raise InputError(
                    f"migrations {found[number].name} and {path.name} share the number {number}",
                    hint="give each migration its own number (rename the newer one)",
                    file=str(path),
                )
            else:
                found[number] = path
    stems = {p.name.removesuffix(".sql"): n for n, p in found.items()}
    extra: dict[int, dict[str, Path]] = {n: {} for n in found}
    for (stem, kind), path in companions.items():
        if stem not in stems:
            raise InputError(
                f"{path.name} has no migration {stem}.sql beside it",
                hint=f"rename it after its migration, or remove it from {migrations_dir}",
                file=str(path),
            )
        extra[stems[stem]][kind] = path
    for number, path in seed_rollbacks.items():
        if number not in found:
            raise InputError(
                f"{path.name} looks like a rollback, but no migration is numbered {number}",
                hint="name a rollback after its migration: NNN_slug.rollback.sql",
                file=str(path),
            )
        if "rollback" in extra[number]:
            raise InputError(
                f"{found[number].name} has two rollbacks: {path.name} and "
                f"{extra[number]['rollback'].name}",
                hint="keep one of them",
                file=str(path),
            )
        extra[number]["rollback"] = path
    migrations = [_load(n, path, migrations_dir, extra[n]) for n, path in found.items()]
    return sorted(migrations, key=lambda m: (m.number, m.name))


def _load(number: int, path: Path, root: Path, extra: dict[str, Path]) -> Migration:
    display = str(path)
    text = sqlsplit.read_sql_file(path, display_name=display)
    if not sqlsplit.split(text, file=display):
        raise InputError(
            "the migration holds no SQL statement",
            hint="add its statements, or delete the file",
            file=display,
        )
    return Migration(
        number=number,
        name=path.relative_to(root).as_posix(),
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        rollback_path=extra.get("rollback"),
        precheck_path=extra.get("precheck"),
        verify_path=extra.get("verify"),
        text=text,
    )


# --- new -----------------------------------------------------------------------------

_ROLLBACK_TEMPLATE = """\
-- Rollback of {name}: undo what it does, newest change first.
-- `d1deploy rollback` runs this file (or the copy stored when {name} was applied),
-- and `d1deploy migrate` runs it when verification fails after {name}.
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


def new_migration(migrations_dir: Path, name: str, *, now: datetime | None = None) -> list[Path]:
    """Create the next-numbered migration with its `.rollback.sql` and `.verify.sql`.

    The number is one above the highest existing one, as wide as the existing files
    (4 digits in an empty directory, like wrangler).

    :raises UsageError: a bad name, or a file that already exists.
    """
    slug = name.strip().removesuffix(".sql").replace(" ", "_")
    if not slug or "/" in slug or "\\" in slug:
        raise UsageError(
            f"cannot name a migration {name!r}",
            hint="give a short name without slashes, for example `add audit log`",
        )
    if slug == "rollback" or slug.endswith(tuple(f".{k}" for k in _COMPANION_KINDS)):
        raise UsageError(
            f"a migration named {slug!r} would read as a companion file",
            hint="choose another name",
        )
    existing = (
        [m for p in migrations_dir.iterdir() if (m := _MIGRATION.fullmatch(p.name))]
        if migrations_dir.is_dir()
        else []
    )
    width = max((len(m["number"]) for m in existing), default=4)
    number = max((int(m["number"]) for m in existing), default=0) + 1
    stem = f"{number:0{width}d}_{slug}"
    paths = [migrations_dir / f"{stem}.sql"] + [
        migrations_dir / f"{stem}.{kind}.sql" for kind in ("rollback", "verify")
    ]
    for path in paths:
        if path.exists():
            raise UsageError(f"{path} already exists", hint="choose another name")
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    header = f"-- Migration number: {number:0{width}d} \t {stamp}\n"
    contents = [
        header,
        _ROLLBACK_TEMPLATE.format(name=paths[0].name),
        _VERIFY_TEMPLATE.format(name=paths[0].name),
    ]
    migrations_dir.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, contents, strict=True):
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
    return paths


def resolve(migrations: Sequence[Migration], name: str) -> Migration:
    """The migration called `name` (with or without `.sql`, or by its number)."""
    wanted = name.replace("\\", "/").rsplit("/", 1)[-1]
    for m in migrations:
        if wanted in (m.name, m.name.removesuffix(".sql")):
            return m
    if wanted.isdigit():
        by_number = [m for m in migrations if m.number == int(wanted)]
        if len(by_number) == 1:
            return by_number[0]
    raise UsageError(
        f"no migration named {name!r}",
        hint="name one of: " + ", ".join(m.name for m in migrations[-5:]) if migrations else None,
    )
