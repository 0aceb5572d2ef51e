"""The options several commands share, declared once: which project, which database,
how to print, whether to confirm, the backup before a change, fleet mode.

Each group is a list of Click option decorators; `command.command` puts the groups a
command names on it and hands their values to `Run` (`context.py`), so a command's own
function takes only its own options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

Decorator = Callable[[Any], Any]
PATH = click.Path(path_type=Path)

PROJECT: list[Decorator] = [
    click.option("--env", "-e", help="Use [env.NAME] of the configs."),
    click.option("--config", "-c", type=PATH, help="d1deploy.toml to use."),
    click.option("--migrations-dir", type=PATH, help="Migrations folder (default ./migrations)."),
    click.option("--migrations-table", help="Ledger table (default d1_migrations)."),
]
DATABASE: Decorator = click.option(
    "--database",
    "-d",
    multiple=True,
    metavar="NAME_OR_UUID",
    help="D1 database, name or UUID (or a wrangler binding). Env D1DEPLOY_DATABASE.",
)
ENTRY: list[Decorator] = [DATABASE, *PROJECT]
"""Commands that only read the migrations folder take -d to pick a wrangler entry, whose
migrations_dir and migrations_pattern they use."""
TARGET: list[Decorator] = [
    DATABASE,
    click.option(
        "--local",
        metavar="[PATH]",
        help="Use a local SQLite file that behaves like D1 "
        "(default .d1deploy/local.sqlite). Write --local=PATH before an argument.",
    ),
    click.option("--account-id", help="Cloudflare account id. Env CLOUDFLARE_ACCOUNT_ID."),
    *PROJECT,
]
OUTPUT: list[Decorator] = [
    click.option(
        "--json", "json_output", is_flag=True, help="Print exactly one JSON object on stdout."
    ),
    click.option("--verbose", "-v", is_flag=True, help="Show settings' sources; more."),
    click.option("--debug", is_flag=True, help="Traceback on errors. D1DEPLOY_DEBUG=1."),
]
YES: list[Decorator] = [
    click.option("--yes", "-y", is_flag=True, help="Confirm (needed without a terminal).")
]
BACKUP: list[Decorator] = [
    click.option("--no-backup", is_flag=True, help="Skip the backup before changing."),
    click.option("--backup-dir", type=PATH, help="Where backups go (default ./backups)."),
]
FLEET: list[Decorator] = [
    click.option(
        "--databases-matching",
        metavar="GLOB",
        help="Fleet mode: every database whose name matches (e.g. 'tenant-*').",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 64),
        default=8,
        show_default=True,
        help="Fleet: databases at once.",
    ),
    click.option(
        "--canary",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Fleet: run N databases first; stop if one fails.",
    ),
]


def names(group: Sequence[Decorator]) -> set[str]:
    """The parameter names a group of options gives a command."""

    def probe() -> None: ...

    for option in group:
        option(probe)
    return {p.name for p in getattr(probe, "__click_params__", ()) if p.name}
