"""`Project`: what the engine needs to know of a project, built once.

The migrations (folder and wrangler's pattern), the ledger table, the deploy lease's
length, the tables the row-loss guard watches, who is deploying, where backups go and
where progress lines go. The CLI builds it from the resolved `config.Settings`
(`from_settings`); a library caller builds it directly. The engine's entry points take
`(backend, project, options)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from d1deploy import defaults

if TYPE_CHECKING:
    from collections.abc import Mapping

    from d1deploy.config import Settings

Notify = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default `notify`: progress lines go nowhere."""


def _actor() -> str:
    from d1deploy import config

    return config.actor(os.environ)


@dataclass(frozen=True)
class Project:
    """`pattern` None means every `*.sql` file of the folder (wrangler's default);
    `guard_tables` None means the row-loss guard watches every table; `actor` names the
    deploy lease's holder and the history's events (default: `user@host pid N`, or the
    GitHub Actions run)."""

    migrations_dir: Path = defaults.MIGRATIONS_DIR
    pattern: str | None = None
    table: str = defaults.MIGRATIONS_TABLE
    lock_ttl: int = defaults.LOCK_TTL_SECONDS
    guard_tables: tuple[str, ...] | None = None
    actor: str = field(default_factory=_actor)
    backup_dir: Path = defaults.BACKUP_DIR
    notify: Notify = field(default=_quiet, compare=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, environ: Mapping[str, str], notify: Notify | None = None
    ) -> Project:
        """The project the resolved settings describe; the actor from `environ`."""
        from d1deploy import config

        return cls(
            migrations_dir=settings.migrations_dir,
            pattern=settings.migrations_pattern,
            table=settings.migrations_table,
            lock_ttl=settings.lock_ttl_seconds,
            guard_tables=settings.guard_tables,
            actor=config.actor(environ),
            backup_dir=settings.backup_dir,
            notify=notify or _quiet,
        )
