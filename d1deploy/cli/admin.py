"""The project and housekeeping commands: new, lint, move-companions, unlock."""

from __future__ import annotations

from pathlib import Path

import click

from d1deploy import suggest
from d1deploy.cli.command import command
from d1deploy.cli.context import Run
from d1deploy.cli.options import ENTRY, OUTPUT, PATH, TARGET
from d1deploy.errors import UsageError


@command("new", ENTRY, OUTPUT)
@click.argument("name")
def new(run: Run, name: str) -> None:
    """Create the next-numbered migration with its rollback and verify files (NAME: what
    the migration does, e.g. 'add audit log')."""
    from d1deploy import discovery
    from d1deploy.cli import render

    cfg = run.settings
    created = discovery.new_migration(cfg.migrations_dir, name, pattern=cfg.migrations_pattern)
    render.created(run.out, created)


@command("lint", ENTRY, OUTPUT)
@click.argument("files", nargs=-1, type=PATH)
def lint(run: Run, files: tuple[Path, ...]) -> None:
    """D1-specific static checks of SQL FILES (default: every migration and its check
    files, in order); needs no database. Check files are judged too: refused statements
    are errors, statements that write (probes) notes."""
    from d1deploy import planning
    from d1deploy.cli import render

    cfg = run.settings
    findings, checked = planning.lint_project(
        cfg.migrations_dir, list(files) or None, pattern=cfg.migrations_pattern
    )
    render.lint_findings(run.out, findings, checked=checked)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise UsageError(
            f"{len(errors)} lint error(s) in {checked} file(s)",
            hint="fix the statements named above",
            file=errors[0].file,
            line=errors[0].line,
        )


@command("move-companions", ENTRY, OUTPUT)
@click.option("--dry-run", is_flag=True, help="Show the moves; change nothing.")
def move_companions(run: Run, dry_run: bool) -> None:
    """Move rollback/precheck/verify files of the old layout into each migration's folder
    (git mv where git tracks them), where wrangler never applies them."""
    from d1deploy import layout
    from d1deploy.cli import render

    cfg = run.settings
    report = layout.move_companions(
        cfg.migrations_dir, cfg.migrations_pattern, dry_run=dry_run, notify=run.out.info
    )
    render.moved_companions(run.out, report, dry_run=dry_run)


@command("unlock", TARGET, OUTPUT)
@click.option("--force", is_flag=True, help="Release the lock even if it has not expired.")
def unlock(run: Run, force: bool) -> None:
    """Release a deploy lock left by a crashed run."""
    from d1deploy import lock
    from d1deploy.cli import render
    from d1deploy.errors import LockHeld

    with run.backend() as backend:
        held = lock.current(backend)
        if held is not None and not held.expired and not force:
            raise LockHeld(
                f"the deploy lock is held by {held.holder} until {held.expires_at}",
                hint=f"if that run is dead, release it with `{suggest.unlock()}`",
            )
        if held is not None:
            lock.force_release(backend)
    render.unlocked(run.out, held)
