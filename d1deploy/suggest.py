"""The commands d1deploy suggests, built in one place so that each one can be pasted.

A suggested command (a restore after a failed deploy, `unlock --force`, `status`,
`move-companions`...) must reach what this run worked on. The CLI sets the options the
run used to choose it (`Target`: `--local=PATH` or `-d NAME`, `--account-id`, `--env`,
`--config`, `--migrations-dir`, `--migrations-table`) for the length of a command, per
database in fleet mode, and every hint, report field and GitHub output that names a
command gets it from `command()`, shell-quoted with `shlex.join`. A library caller that
sets nothing gets the bare command.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

PROJECT_COMMANDS = frozenset({"new", "lint", "move-companions"})
"""Commands that read the migrations folder only: they take the project options and
`-d` (to pick a wrangler entry), never a database to work on."""


@dataclass(frozen=True)
class Target:
    """The options of a run that say what it worked on, as command-line words.

    `database` picks the database (`-d NAME` or `--local=PATH`), `account` the account
    (`--account-id ID`, when given as a flag); `project` the configuration and
    migrations (`--env`, `--config`, ...); `entry` is the `-d` a project command needs to
    pick the same wrangler entry, if one was given."""

    database: tuple[str, ...] = ()
    account: tuple[str, ...] = ()
    project: tuple[str, ...] = ()
    entry: tuple[str, ...] = ()

    def on(self, database: str) -> Target:
        """The same run's options, pointed at one database of a fleet."""
        return replace(self, database=("-d", database), entry=("-d", database))


_BARE = Target()
_TARGET: ContextVar[Target] = ContextVar("d1deploy_target", default=_BARE)


@contextmanager
def target(chosen: Target) -> Iterator[None]:
    """Suggest commands for `chosen` while the block runs (in this thread or task)."""
    token = _TARGET.set(chosen)
    try:
        yield
    finally:
        _TARGET.reset(token)


def use(chosen: Target) -> None:
    """Suggest commands for `chosen` from now on in this context (the CLI runs each
    command in a context of its own)."""
    _TARGET.set(chosen)


def current() -> Target:
    return _TARGET.get()


def command(name: str, *args: str) -> str:
    """`d1deploy NAME ARGS` then this run's options, quoted for a POSIX shell."""
    chosen = _TARGET.get()
    options = chosen.entry if name in PROJECT_COMMANDS else chosen.database + chosen.account
    return shlex.join(["d1deploy", name, *args, *options, *chosen.project])


def restore(bookmark: str) -> str:
    """The command that puts the database back to `bookmark`."""
    return command("restore", "--bookmark", bookmark, "--yes")


def unlock() -> str:
    """The command that releases a deploy lock whoever holds it."""
    return command("unlock", "--force")
