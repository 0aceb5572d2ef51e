"""The deploy commands: status, plan, migrate, rollback, verify, baseline, rehearse.

Each resolves the run's `Project`, opens the database (or each of a fleet's), calls one
engine function and renders its report; the report's verdict decides the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from d1deploy import interrupts
from d1deploy.cli import backups, fleetrun
from d1deploy.cli.command import command
from d1deploy.cli.context import Run
from d1deploy.cli.options import BACKUP, FLEET, OUTPUT, PATH, TARGET, YES
from d1deploy.errors import UsageError

if TYPE_CHECKING:
    from d1deploy import migrations
    from d1deploy.backend import Backend


@command("status", TARGET, FLEET, OUTPUT)
@click.option(
    "--allow-drift",
    is_flag=True,
    help="Exit 0 even when applied files changed or the live schema differs.",
)
def status(run: Run, allow_drift: bool) -> None:
    """Applied, pending, drifted (changed since applied), missing and out-of-order
    migrations, and how the live schema differs from what they leave."""
    from d1deploy import migrations
    from d1deploy.cli import render

    def operation(backend: Backend) -> migrations.StatusReport:
        return migrations.status(backend, run.project)

    if run.is_fleet:
        fleetrun.each_database(
            run,
            operation,
            render.describe_status,
            verdict=lambda report: report.raise_for_verdict(allow_drift=allow_drift),
        )
        return
    with run.backend() as backend:
        report = operation(backend)
    render.status(run.out, report)
    report.raise_for_verdict(allow_drift=allow_drift, shown=True)


@command("plan", TARGET, OUTPUT)
@click.option("--to", help="Stop after this migration.")
@click.option(
    "--allow-drift",
    is_flag=True,
    help="Exit 0 even when applied files changed or the schema differs.",
)
def plan(run: Run, to: str | None, allow_drift: bool) -> None:
    """What `migrate` would do, writing nothing: pending list, lint findings, prechecks."""
    from d1deploy import migrations
    from d1deploy.cli import render

    with run.backend() as backend:
        report = migrations.plan(backend, run.project, to=to)
    render.plan(run.out, report)
    report.raise_for_verdict(allow_drift=allow_drift)


@command("migrate", TARGET, BACKUP, FLEET, OUTPUT)
@click.option("--to", help="Stop after this migration.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option(
    "--allow-drift",
    is_flag=True,
    help="Deploy even if applied files changed or the live schema differs from theirs.",
)
@click.option(
    "--on-failure",
    type=click.Choice(["rollback", "restore"]),
    default="rollback",
    show_default=True,
    help="rollback: undo with rollback SQL, or stop naming the restore command; "
    "restore: restore the Time Travel bookmark where rollback SQL cannot undo.",
)
@click.option(
    "--atomic",
    is_flag=True,
    help="Verify checks run once, on the final state, so the pending migrations go in "
    "one request (all or none) when they fit D1's limits, else in as few as fit; a failed "
    "request is not retried one migration at a time.",
)
def migrate(
    run: Run,
    to: str | None,
    dry_run: bool,
    allow_drift: bool,
    on_failure: migrations.OnFailure,
    atomic: bool,
) -> None:
    """Deploy: lock, prechecks, backup and bookmark, apply, verify; undo on failure."""
    from d1deploy import migrations
    from d1deploy.cli import render

    options = migrations.MigrateOptions(
        to=to, dry_run=dry_run, allow_drift=allow_drift, on_failure=on_failure, atomic=atomic
    )

    def operation(backend: Backend) -> migrations.MigrateReport:
        hook = None if dry_run else backups.before_change(run, backend)
        return migrations.migrate(backend, run.project, options, before_change=hook)

    if run.is_fleet:
        fleetrun.each_database(run, operation, render.describe_migrate)
        return
    with run.backend(create=not dry_run) as backend:
        report = operation(backend)
        interrupts.finishing(f"writing the report of the deploy to {backend.info.name}")
    render.migrate(run.out, report)


@command("rollback", TARGET, BACKUP, YES, FLEET, OUTPUT)
@click.option("--to", help="Undo every migration after this one.")
@click.option("--steps", type=click.IntRange(min=1), help="Undo this many (default 1).")
def rollback(run: Run, to: str | None, steps: int | None) -> None:
    """Undo applied migrations, newest first, with their rollback SQL."""
    from d1deploy import migrations
    from d1deploy.cli import render

    if to is not None and steps is not None:
        raise UsageError("give --to or --steps, not both")
    target = f"--to {to}" if to else f"the last {steps or 1} migration(s)"
    options = migrations.RollbackOptions(to=to, steps=steps)

    def operation(backend: Backend) -> migrations.RollbackReport:
        hook = backups.before_change(run, backend)
        return migrations.rollback(backend, run.project, options, before_change=hook)

    if run.is_fleet:
        run.confirm(f"Roll back {target} on every selected database?")
        fleetrun.each_database(run, operation, render.describe_rollback)
        return
    with run.backend() as backend:
        run.confirm(f"Roll back {target} on {backend.info.name}?")
        report = operation(backend)
        interrupts.finishing(f"writing the report of the rollback of {backend.info.name}")
    render.rollback(run.out, report)


@command("verify", TARGET, FLEET, OUTPUT)
@click.argument("name", required=False)
def verify(run: Run, name: str | None) -> None:
    """Run the verify checks of applied migrations (NAME: only this migration's checks;
    default: all applied)."""
    from d1deploy import migrations
    from d1deploy.cli import render

    def operation(backend: Backend) -> migrations.VerifyReport:
        return migrations.verify(backend, run.project, name=name)

    if run.is_fleet:
        fleetrun.each_database(
            run,
            operation,
            render.describe_verify,
            verdict=lambda report: report.raise_for_verdict(),
        )
        return
    with run.backend() as backend:
        report = operation(backend)
    render.verify(run.out, report)
    report.raise_for_verdict()


@command("baseline", TARGET, OUTPUT)
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Record them even if the live schema is not what they leave."
)
def baseline(run: Run, name: str, force: bool) -> None:
    """Record migrations up to NAME as applied without running them, once the live schema
    is shown to be what they leave."""
    from d1deploy import migrations
    from d1deploy.cli import render

    with run.backend(create=True) as backend:
        report = migrations.baseline(backend, run.project, name, force=force)
        interrupts.finishing(f"writing the report of the baseline of {backend.info.name}")
    render.baseline(run.out, report)


@command("rehearse", TARGET, OUTPUT)
@click.option("--from-backup", type=PATH, help="Rehearse on this backup's copy.")
def rehearse(run: Run, from_backup: Path | None) -> None:
    """Prove a deploy on a local copy: migrate, rollback, migrate again. Changes nothing."""
    from d1deploy import rehearse as rehearse_mod
    from d1deploy.cli import render

    with run.backend() as backend:
        report = rehearse_mod.rehearse(backend, run.project, from_backup=from_backup)
    render.rehearsal(run.out, report)
