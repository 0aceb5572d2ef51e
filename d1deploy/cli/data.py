"""The data commands: databases, exec, bookmark, backup, restore."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from d1deploy.cli import backups, fleetrun
from d1deploy.cli.command import command
from d1deploy.cli.context import Run
from d1deploy.cli.options import FLEET, OUTPUT, PATH, TARGET, YES
from d1deploy.errors import UsageError

if TYPE_CHECKING:
    from d1deploy import backups as backup_mod
    from d1deploy.backend import Backend


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 (naive means UTC) or Unix seconds; never in the future."""
    try:
        if text.isdigit():
            when = datetime.fromtimestamp(int(text), tz=UTC)
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"cannot read timestamp {text!r}",
            hint="use ISO 8601 like 2026-11-24T10:00:00Z, or Unix seconds",
        ) from None
    if when > datetime.now(UTC):
        raise UsageError(f"timestamp {text} is in the future", hint="give a past time")
    return when.astimezone(UTC)


@command("databases", TARGET, OUTPUT)
def databases(run: Run) -> None:
    """List the account's D1 databases (or the local file with --local)."""
    from d1deploy.cli import render

    if run.settings.local_path is not None:
        with run.backend() as backend:
            found = [backend.info]
    else:
        with run.client() as client:
            found = client.list_databases()
    render.databases(run.out, found)


@command("exec", TARGET, OUTPUT)
@click.option("--command", help="SQL to run.")
@click.option("--file", type=PATH, help="SQL file to run.")
@click.option("--param", multiple=True, help="Value for a ? placeholder (repeat, in order).")
def exec_(run: Run, command: str | None, file: Path | None, param: tuple[str, ...]) -> None:
    """Run SQL and print the results (a table per statement that returns rows)."""
    from d1deploy import sqlexec
    from d1deploy.cli import render

    if (command is None) == (file is None):
        raise UsageError("give exactly one of --command or --file")
    with run.backend(create=True) as backend:
        report = sqlexec.execute(
            backend, command=command, file=file, params=tuple(param), notify=run.out.info
        )
    render.exec_report(run.out, report)


@command("bookmark", TARGET, OUTPUT)
@click.option("--timestamp", help="The bookmark at this time (ISO 8601).")
def bookmark(run: Run, timestamp: str | None) -> None:
    """Print a Time Travel bookmark: the current one, or the one at --timestamp."""
    from d1deploy.cli import render

    at = parse_timestamp(timestamp) if timestamp else None
    with run.backend() as backend:
        mark = backend.bookmark(at)
        name = backend.info.name
    render.bookmark(run.out, name, mark, at)


@command("backup", TARGET, FLEET, OUTPUT)
@click.option("--output", "-o", type=PATH, help="File to write (default backups/).")
@click.option("--no-data", is_flag=True, help="Schema only.")
@click.option("--no-schema", is_flag=True, help="Data only.")
@click.option("--table", multiple=True, help="Only this table (repeat).")
@click.option("--gzip", is_flag=True, help="Compress (.sql.gz).")
@click.option("--backup-dir", type=PATH, help="Folder for the default name.")
def backup(
    run: Run,
    output: Path | None,
    no_data: bool,
    no_schema: bool,
    table: tuple[str, ...],
    gzip: bool,
    backup_dir: Path | None,
) -> None:
    """Export the database to a local file, checksummed, with a JSON sidecar."""
    from d1deploy import backups as backup_mod
    from d1deploy.backend import ExportOptions
    from d1deploy.cli import render

    if no_data and no_schema:
        raise UsageError("--no-data and --no-schema together would export nothing")
    options = ExportOptions(no_data=no_data, no_schema=no_schema, tables=tuple(table))

    def operation(backend: Backend) -> backup_mod.BackupResult:
        with backups.download_progress(run, backend) as on_bytes:
            return backup_mod.backup(
                backend,
                dest=output,
                backup_dir=backup_dir or run.settings.backup_dir,
                options=options,
                gzip=gzip,
                notify=run.out.info,
                on_bytes=on_bytes,
            )

    if run.is_fleet:
        if output is not None:
            raise UsageError("-o names one file; for several databases use --backup-dir")
        fleetrun.each_database(run, operation, render.describe_backup)
        return
    with run.backend() as backend:
        result = operation(backend)
    render.backup(run.out, result)


@command("restore", TARGET, YES, OUTPUT)
@click.option("--bookmark", help="Time Travel bookmark to return to.")
@click.option("--timestamp", help="Return to this time (ISO 8601).")
@click.option("--from-backup", type=PATH, help="Re-import a backup or a D1 dump (.sql, .sql.gz).")
@click.option("--force", is_flag=True, help="Import a backup into a database that has tables.")
def restore(
    run: Run,
    bookmark: str | None,
    timestamp: str | None,
    from_backup: Path | None,
    force: bool,
) -> None:
    """Restore to a Time Travel bookmark or time, or re-import a backup file."""
    from d1deploy import backups as backup_mod
    from d1deploy import restoring
    from d1deploy.cli import render

    if sum(x is not None for x in (bookmark, timestamp, from_backup)) != 1:
        raise UsageError("give exactly one of --bookmark, --timestamp or --from-backup")
    if from_backup is not None:
        # Checked before the target is opened, so a bad file creates and changes nothing.
        dump = backup_mod.inspect_dump(from_backup)
        with run.backend(create=True) as backend:
            source = dump.sidecar
            origin = (
                f"{source.database_name}, {source.created_at:%Y-%m-%d %H:%M} UTC"
                if source
                else "no sidecar: unverified"
            )
            run.confirm(f"Import {from_backup} ({origin}) into {backend.info.name}?")
            render.restored_backup(
                run.out,
                restoring.restore_from_backup(
                    backend,
                    dump,
                    force=force,
                    table=run.settings.migrations_table,
                    notify=run.out.info,
                ),
            )
        return
    with run.backend() as backend:
        point = restoring.describe_restore_point(
            backend, bookmark=bookmark, timestamp=parse_timestamp(timestamp) if timestamp else None
        )
        render.restore_point(run.out, point)
        if point.is_current:
            return
        run.confirm(f"Restore {point.database_name} to {point.bookmark}, discarding later changes?")
        render.restored(run.out, point, restoring.restore_point(backend, point))
