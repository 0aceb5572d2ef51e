"""Moving companion files from the first layout into the folder layout.

`d1deploy move-companions` moves every `STEM.rollback.sql` / `.precheck.sql` /
`.verify.sql` and the seed's `NNN_rollback.sql` into its migration's folder
(`STEM/rollback.sql`, ...), where wrangler never looks. A file git tracks is moved with
`git mv` (its history follows it, and the move is staged); any other file is renamed.
Nothing is moved unless every move can be made: a destination that exists, or a file
whose migration is ambiguous, stops it first.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from d1deploy import discovery
from d1deploy.discovery import Move
from d1deploy.errors import InputError, UsageError


@dataclass(frozen=True)
class Moved:
    source: Path
    dest: Path
    git: bool


@dataclass(frozen=True)
class MoveReport:
    migrations_dir: Path
    moved: tuple[Moved, ...]


def move_companions(
    migrations_dir: Path,
    pattern: str | None = None,
    *,
    dry_run: bool = False,
    notify: Callable[[str], None] | None = None,
) -> MoveReport:
    """Move every old-layout companion into its migration's folder.

    :raises InputError: a file cannot be placed (several migrations share its number).
    :raises UsageError: a destination already exists.
    """
    if not migrations_dir.is_dir():
        raise InputError(
            f"migrations directory {migrations_dir} does not exist",
            hint="set migrations_dir (or --migrations-dir) to the folder to move",
        )
    names = discovery.migration_names(migrations_dir, pattern or discovery.DEFAULT_PATTERN)
    moves, unmovable = discovery.old_layout(migrations_dir, names)
    if unmovable:
        raise InputError(
            "cannot tell which migration these belong to: " + "; ".join(unmovable),
            hint="move them by hand, then run this command again for the rest",
        )
    for move in moves:
        if move.dest.exists():
            raise UsageError(
                f"cannot move {move.source}: {move.dest} already exists",
                hint="keep one of the two files (compare them first), then run this again",
            )
    tracked = _git_tracked(migrations_dir, moves)
    done = []
    for move in moves:
        git = move.source in tracked
        if not dry_run:
            move.dest.parent.mkdir(parents=True, exist_ok=True)
            if git:
                _git(move.source.parent, "mv", "--", str(move.source), str(move.dest))
            else:
                shutil.move(move.source, move.dest)
        if notify:
            how = "git mv" if git else "mv"
            notify(f"{'would ' if dry_run else ''}{how} {move.source} {move.dest}")
        done.append(Moved(move.source, move.dest, git))
    return MoveReport(migrations_dir, tuple(done))


def _git_tracked(folder: Path, moves: list[Move]) -> set[Path]:
    """The files git tracks among those to move; none outside a git work tree (or
    without git)."""
    if not moves or shutil.which("git") is None:
        return set()
    done = subprocess.run(
        ["git", "-C", str(folder), "ls-files", "-z", "--full-name", "--", "."],
        capture_output=True,
        text=True,
    )
    top = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or top.returncode != 0:
        return set()
    root = Path(top.stdout.strip())
    listed = {(root / p).resolve() for p in done.stdout.split("\0") if p}
    return {m.source for m in moves if m.source.resolve() in listed}


def _git(cwd: Path, *args: str) -> None:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(
            f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}",
            hint="fix what git reports, then run this command again (moves already made stay)",
        )
