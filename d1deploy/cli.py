"""The Typer app: each command resolves settings, calls one core function, renders.

This is the one place that turns a `D1DeployError` into an exit code (`_command`).
Options every command shares (which database, how to print) are declared once below and
merged into each command's signature by `_command`, which hands the command a `Run`.
Heavy modules (httpx, the engine) are imported inside the commands so that
`d1deploy --version` and `--help` stay fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.exceptions import TyperException

from d1deploy import __version__, interrupts, suggest
from d1deploy.errors import (
    EXIT_CODES,
    ConfirmationRequired,
    D1DeployError,
    Interrupt,
    Interrupted,
    NotFound,
    UsageError,
)
from d1deploy.output import Output, error_payload

if TYPE_CHECKING:
    from d1deploy.backend import Backend
    from d1deploy.client import D1Client
    from d1deploy.config import Settings

EPILOG = "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())

app = typer.Typer(
    name="d1deploy",
    help="Deploy schema changes to Cloudflare D1 without losing data: "
    "backup, migrate, verify, roll back.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# -- options shared by the commands ---------------------------------------------------------
def _option(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


PROJECT = [
    _option(
        "env",
        Annotated[str | None, typer.Option("--env", "-e", help="Use [env.NAME] of the configs.")],
    ),
    _option(
        "config",
        Annotated[Path | None, typer.Option("--config", "-c", help="d1deploy.toml to use.")],
    ),
    _option(
        "migrations_dir",
        Annotated[
            Path | None,
            typer.Option("--migrations-dir", help="Migrations folder (default ./migrations)."),
        ],
    ),
    _option(
        "migrations_table",
        Annotated[
            str | None,
            typer.Option("--migrations-table", help="Ledger table (default d1_migrations)."),
        ],
    ),
]
DATABASE = _option(
    "database",
    Annotated[
        list[str] | None,
        typer.Option(
            "--database",
            "-d",
            metavar="NAME_OR_UUID",
            help="D1 database, name or UUID (or a wrangler binding). Env D1DEPLOY_DATABASE.",
        ),
    ],
)
# Commands that only read the migrations folder take -d to pick a wrangler entry, whose
# migrations_dir and migrations_pattern they use.
ENTRY = [DATABASE, *PROJECT]
TARGET = [
    DATABASE,
    _option(
        "local",
        Annotated[
            str | None,
            typer.Option(
                "--local",
                metavar="[PATH]",
                help="Use a local SQLite file that behaves like D1 "
                "(default .d1deploy/local.sqlite). Write --local=PATH before an argument.",
            ),
        ],
    ),
    _option(
        "account_id",
        Annotated[
            str | None,
            typer.Option("--account-id", help="Cloudflare account id. Env CLOUDFLARE_ACCOUNT_ID."),
        ],
    ),
    *PROJECT,
]
OUTPUT = [
    _option(
        "json_output",
        Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")],
        False,
    ),
    _option(
        "verbose",
        Annotated[bool, typer.Option("--verbose", "-v", help="Show settings' sources; more.")],
        False,
    ),
    _option(
        "debug",
        Annotated[bool, typer.Option("--debug", help="Traceback on errors. D1DEPLOY_DEBUG=1.")],
        False,
    ),
]
YES = [
    _option(
        "yes",
        Annotated[bool, typer.Option("--yes", "-y", help="Confirm (needed without a terminal).")],
        False,
    )
]
BACKUP_OPTIONS = [
    _option(
        "no_backup",
        Annotated[bool, typer.Option("--no-backup", help="Skip the backup before changing.")],
        False,
    ),
    _option(
        "backup_dir",
        Annotated[
            Path | None,
            typer.Option("--backup-dir", help="Where backups go (default ./backups)."),
        ],
    ),
]


FLEET = [
    _option(
        "databases_matching",
        Annotated[
            str | None,
            typer.Option(
                "--databases-matching",
                metavar="GLOB",
                help="Fleet mode: every database whose name matches (e.g. 'tenant-*').",
            ),
        ],
    ),
    _option(
        "concurrency",
        Annotated[
            int, typer.Option("--concurrency", min=1, max=64, help="Fleet: databases at once.")
        ],
        8,
    ),
    _option(
        "canary",
        Annotated[
            int,
            typer.Option(
                "--canary", min=0, help="Fleet: run N databases first; stop if one fails."
            ),
        ],
        0,
    ),
]


class Run:
    """One command invocation: its shared options, its printer, its settings."""

    def __init__(self, command: str, common: dict[str, Any], output: Output) -> None:
        self.command = command
        self.common = common
        self.out = output
        self.yes = bool(common.get("yes", False))
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Flag > env > config files > defaults, shown with -v."""
        if self._settings is None:
            from d1deploy import config

            c = self.common
            flags: dict[str, object] = {
                "database": c.get("database"),
                "databases_matching": c.get("databases_matching"),
                "local": c.get("local"),
                "account_id": c.get("account_id"),
                "env": c.get("env"),
                "config": str(c["config"]) if c.get("config") else None,
                "migrations_dir": str(c["migrations_dir"]) if c.get("migrations_dir") else None,
                "migrations_table": c.get("migrations_table"),
                "backup_dir": str(c["backup_dir"]) if c.get("backup_dir") else None,
            }
            self._settings = config.resolve(flags=flags, environ=os.environ, cwd=Path.cwd())
            for key, value, source in self._settings.describe():
                self.out.detail(f"  {key:<18} {value}  ({source})")
            suggest.use(self.target(self._settings))
        return self._settings

    def target(self, cfg: Settings) -> suggest.Target:
        """The options that point a suggested command at what this run works on: the
        database (the `-d` given, else the one configured; or `--local=PATH`), the
        account and project options given as flags."""
        c = self.common
        project: list[str] = []
        for key in ("env", "config", "migrations_dir", "migrations_table"):
            if c.get(key):
                project += [f"--{key.replace('_', '-')}", str(c[key])]
        given = c.get("database") or []
        entry = ("-d", given[0]) if len(given) == 1 else ()
        if cfg.local_path is not None:
            path = cfg.local_path
            with contextlib.suppress(ValueError):
                path = path.relative_to(Path.cwd())
            return suggest.Target((f"--local={path}", *entry), (), tuple(project), entry)
        name = given[0] if len(given) == 1 else cfg.database
        account = ("--account-id", str(c["account_id"])) if c.get("account_id") else ()
        return suggest.Target(("-d", name) if name else (), account, tuple(project), entry)

    @property
    def actor(self) -> str:
        from d1deploy import config

        return config.actor(os.environ)

    def client(self, **shared: Any) -> D1Client:
        """`shared`: the fleet's `transport`, shared by every database."""
        from d1deploy.client import D1Client

        token, account = self.settings.require_remote()
        self.out.add_secret(token)
        return D1Client(
            token=token,
            account_id=account,
            base_url=self.settings.api_base_url,
            on_retry=self.out.info,
            **shared,
        )

    @property
    def is_fleet(self) -> bool:
        cfg = self.settings
        fleet = cfg.databases_matching is not None or len(cfg.databases) > 1
        if fleet and cfg.local_path is not None:
            raise UsageError("--local works on one file; several databases need the D1 API")
        return fleet

    def each_database(
        self, operation: Callable[[Backend], object], describe: Callable[[Any], str]
    ) -> None:
        """Fleet mode: `operation` on every selected database, bounded concurrency, canaries
        first, one shared rate-limit pause and request budget; a report per database."""
        from d1deploy import fleet, render
        from d1deploy.ratelimit import RateLimitTransport

        cfg = self.settings
        every = suggest.current()

        def on_one(backend: Backend) -> object:
            # Worker threads: each suggests commands for its own database.
            with suggest.target(every.on(backend.info.name)):
                return operation(backend)

        with self.client(transport=RateLimitTransport()) as client:
            chosen = fleet.select_databases(
                client, names=cfg.databases, matching=cfg.databases_matching
            )
            self.out.info(f"Fleet: {len(chosen)} database(s), {self.common['concurrency']} at once")
            report = fleet.run_fleet(
                chosen,
                fleet.remote_task(client, on_one),
                concurrency=self.common["concurrency"],
                canary=self.common["canary"],
                notify=self.out.info,
            )
        interrupts.finishing("writing the fleet's report")
        render.fleet(self.out, report, describe)
        if not report.ok:
            raise fleet.FleetFailed(report)

    @contextmanager
    def backend(self, *, create: bool = False) -> Iterator[Backend]:
        """The database the command works on: a local file, or a D1 database. A missing
        local file is created only when `create` (a command that writes)."""
        cfg = self.settings
        if cfg.local_path is not None:
            from d1deploy.local import LocalBackend

            self.refuse_migration_as_file(cfg.local_path)
            try:
                local = LocalBackend(cfg.local_path, create=create)
            except NotFound as err:
                err.message = (
                    f"the local database {cfg.local_path} does not exist, and this command"
                    " only reads it: nothing was created"
                )
                raise
            self.out.detail(f"Using local database {cfg.local_path}")
            try:
                yield local
            except BaseException:
                local.discard_if_created_empty()
                raise
            local.close()
            return
        database = cfg.require_database()
        from d1deploy.remote import RemoteBackend

        client = self.client()
        try:
            info = client.resolve_database(cfg.database_id or database)
            self.refuse_mismatch(info.name)
            self.out.detail(f"Using D1 database {info.name} ({info.uuid})")
            yield RemoteBackend(client, info)
        finally:
            client.close()

    def refuse_migration_as_file(self, path: Path) -> None:
        """`verify --local 001_x` takes `001_x` as the file: when a missing file is named
        like a migration, say how to give both."""
        if path.exists():
            return
        from d1deploy import discovery

        try:
            found = discovery.discover(
                self.settings.migrations_dir, self.settings.migrations_pattern
            )
        except D1DeployError:
            return
        names = {m.name for m in found} | {m.name.removesuffix(".sql") for m in found}
        if path.name not in names:
            return
        raise UsageError(
            f"--local took {path.name!r} as the database file, but that is a migration's"
            " name and no such file exists",
            hint=f"--local's value is the file: write `--local=PATH {path.name}`, or"
            f" `--local= {path.name}` for the default file",
        )

    def refuse_mismatch(self, api_name: str) -> None:
        """A wrangler entry whose database_name and database_id are two databases (a
        copied block with prod's id under `staging`) must not reach the wrong one."""
        cfg = self.settings
        if cfg.database_id is None or cfg.database in (None, cfg.database_id, api_name):
            return
        from d1deploy.errors import ConfigMismatch

        raise ConfigMismatch(
            f"{cfg.sources['databases']} names database {cfg.database!r} with database_id "
            f"{cfg.database_id}, but the API says {cfg.database_id} is {api_name!r}; "
            "nothing was changed",
            hint=f"correct database_id or database_name ({cfg.sources['database_id']}); "
            "`d1deploy databases` lists each database's name and id",
        )

    def confirm(self, question: str) -> None:
        """Ask before a destructive step; without a terminal only --yes proceeds."""
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise ConfirmationRequired(
                f"refusing without confirmation: {question}",
                hint="run it in a terminal to be asked, or pass --yes",
            )
        if not typer.confirm(question, default=False, err=True):
            raise typer.Exit(1)

    def download_progress(
        self, backend: Backend
    ) -> contextlib.AbstractContextManager[Callable[[int, int | None], None]]:
        """A byte progress bar for one database's backup; none for a fleet, whose
        databases download at once (their lines say when each is done)."""
        if self.is_fleet:
            return contextlib.nullcontext(lambda _done, _total: None)
        return self.out.byte_progress(f"backup of {backend.info.name}")

    def backup_hook(self, backend: Backend) -> Callable[[], object] | None:
        """The backup `migrate`/`rollback` take before their first change."""
        if self.common.get("no_backup"):
            return None
        from d1deploy import backups as backup
        from d1deploy import render

        def take() -> object:
            with self.download_progress(backend) as on_bytes:
                result = backup.backup(
                    backend,
                    dest=None,
                    backup_dir=self.settings.backup_dir,
                    notify=self.out.info,
                    on_bytes=on_bytes,
                )
            self.out.info(f"Backup written: {result.path} ({result.bytes} bytes)")
            self.out.info(f"Proven: {render.proven(result)}")
            return result

        return take


def _command(
    name: str, *groups: list[inspect.Parameter], **kwargs: Any
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(run, **own_options)` as a command with the shared option `groups`.

    The wrapper is the one place that turns a D1DeployError into its exit code."""
    shared = [p for group in groups for p in group]

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        shared_names = {p.name for p in shared}

        @functools.wraps(fn)
        def wrapper(**kw: Any) -> None:
            global _reported
            _reported = True
            common = {k: kw.pop(k) for k in list(kw) if k in shared_names}
            output = Output(
                json_mode=bool(common.get("json_output")),
                verbose=bool(common.get("verbose")),
                environ=os.environ,
                hold_json=True,
            )
            output.add_secret(os.environ.get("CLOUDFLARE_API_TOKEN"))
            debug = bool(common.get("debug")) or os.environ.get("D1DEPLOY_DEBUG") == "1"
            run = Run(name, common, output)
            # A context of its own: the suggested commands' target lasts this command.
            context = contextvars.copy_context()
            with interrupts.handling(_say_now(output)):
                try:
                    context.run(fn, run, **kw)
                except D1DeployError as err:
                    interrupts.finishing(f"writing the report of `d1deploy {name}`")
                    if debug:
                        output.info(traceback.format_exc())
                    from d1deploy import render

                    context.run(render.failure, output, err)
                    output.error(err)
                    raise typer.Exit(err.exit_code) from None
                except KeyboardInterrupt as exc:
                    # Interrupted where nothing needed settling (or before it began).
                    interrupts.finishing(f"writing the report of `d1deploy {name}`")
                    signal_name = exc.signal_name if isinstance(exc, Interrupt) else "SIGINT"
                    output.error(Interrupted(f"{signal_name} received: `d1deploy {name}` stopped"))
                    raise typer.Exit(Interrupted.exit_code) from None
                except typer.Exit:
                    output.flush()
                    raise
                except typer.Abort:
                    output.error(D1DeployError("aborted at the confirmation; nothing was changed"))
                    raise typer.Exit(1) from None
                except Exception as exc:  # a bug: say so plainly (output scrubs the token)
                    if debug:
                        output.info(traceback.format_exc())
                    output.error(
                        D1DeployError(
                            f"unexpected internal error: {type(exc).__name__}: {exc}",
                            hint="run again with --debug for a traceback, and report it",
                        )
                    )
                    raise typer.Exit(1) from None
                output.flush()

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # Typer must see the merged signature, not fn's
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"d1deploy {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Deploy schema changes to Cloudflare D1 without losing data."""


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


# -- commands -------------------------------------------------------------------------------
@_command("databases", TARGET, OUTPUT)
def databases(run: Run) -> None:
    """List the account's D1 databases (or the local file with --local)."""
    from d1deploy import render

    if run.settings.local_path is not None:
        with run.backend() as backend:
            found = [backend.info]
    else:
        with run.client() as client:
            found = client.list_databases()
    render.databases(run.out, found)


@_command("exec", TARGET, OUTPUT)
def exec_(
    run: Run,
    command: Annotated[str | None, typer.Option("--command", help="SQL to run.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="SQL file to run.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Value for a ? placeholder (repeat, in order)."),
    ] = None,
) -> None:
    """Run SQL and print the results (a table per statement that returns rows)."""
    from d1deploy import render, sqlexec

    if (command is None) == (file is None):
        raise UsageError("give exactly one of --command or --file")
    with run.backend(create=True) as backend:
        report = sqlexec.execute(
            backend, command=command, file=file, params=tuple(param or ()), notify=run.out.info
        )
    render.exec_report(run.out, report)


@_command("bookmark", TARGET, OUTPUT)
def bookmark(
    run: Run,
    timestamp: Annotated[
        str | None, typer.Option("--timestamp", help="The bookmark at this time (ISO 8601).")
    ] = None,
) -> None:
    """Print a Time Travel bookmark: the current one, or the one at --timestamp."""
    at = parse_timestamp(timestamp) if timestamp else None
    with run.backend() as backend:
        mark = backend.bookmark(at)
        name = backend.info.name
    if run.out.json_mode:
        run.out.json({"ok": True, "database": name, "bookmark": mark, "timestamp": at})
        return
    run.out.print(mark)
    run.out.info(f"To return {name} to this point: {suggest.restore(mark)}")


@_command("lint", ENTRY, OUTPUT)
def lint(
    run: Run,
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="SQL files to check (default: every migration and its check files, in order)."
        ),
    ] = None,
) -> None:
    """D1-specific static checks of SQL files; needs no database. Check files are judged
    too: refused statements are errors, statements that write (probes) notes."""
    from d1deploy import planning, render

    cfg = run.settings
    findings, checked = planning.lint_project(
        cfg.migrations_dir, files or None, pattern=cfg.migrations_pattern
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


@_command("move-companions", ENTRY, OUTPUT)
def move_companions(
    run: Run,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the moves; change nothing.")
    ] = False,
) -> None:
    """Move rollback/precheck/verify files of the old layout into each migration's folder
    (git mv where git tracks them), where wrangler never applies them."""
    from d1deploy import layout, render

    cfg = run.settings
    report = layout.move_companions(
        cfg.migrations_dir, cfg.migrations_pattern, dry_run=dry_run, notify=run.out.info
    )
    render.moved_companions(run.out, report, dry_run=dry_run)


@_command("status", TARGET, FLEET, OUTPUT)
def status(
    run: Run,
    allow_drift: Annotated[
        bool,
        typer.Option(
            "--allow-drift",
            help="Exit 0 even when applied files changed or the live schema differs.",
        ),
    ] = False,
) -> None:
    """Applied, pending, drifted (changed since applied), missing and out-of-order
    migrations, and how the live schema differs from what they leave."""
    from d1deploy import migrations, render

    cfg = run.settings

    def operation(backend: Backend) -> migrations.StatusReport:
        return migrations.status(
            backend, cfg.migrations_dir, pattern=cfg.migrations_pattern, table=cfg.migrations_table
        )

    if run.is_fleet:

        def checked(backend: Backend) -> migrations.StatusReport:
            report = operation(backend)
            if not allow_drift:
                migrations.refuse_drift(report)
            return report

        run.each_database(checked, render.describe_status)
        return
    with run.backend() as backend:
        report = operation(backend)
    render.status(run.out, report)
    if not allow_drift:
        migrations.refuse_drift(report, shown=True)


@_command("plan", TARGET, OUTPUT)
def plan(
    run: Run,
    to: Annotated[str | None, typer.Option("--to", help="Stop after this migration.")] = None,
    allow_drift: Annotated[
        bool,
        typer.Option(
            "--allow-drift", help="Exit 0 even when applied files changed or the schema differs."
        ),
    ] = False,
) -> None:
    """What `migrate` would do, writing nothing: pending list, lint findings, prechecks."""
    from d1deploy import migrations, render

    cfg = run.settings
    with run.backend() as backend:
        report = migrations.plan(
            backend,
            cfg.migrations_dir,
            pattern=cfg.migrations_pattern,
            table=cfg.migrations_table,
            to=to,
            guard_tables=cfg.guard_tables,
        )
    render.plan(run.out, report)
    render.plan_verdict(report, allow_drift=allow_drift)


class OnFailure(StrEnum):
    rollback = "rollback"
    restore = "restore"


@_command("migrate", TARGET, BACKUP_OPTIONS, FLEET, OUTPUT)
def migrate(
    run: Run,
    to: Annotated[str | None, typer.Option("--to", help="Stop after this migration.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; change nothing.")
    ] = False,
    allow_drift: Annotated[
        bool,
        typer.Option(
            "--allow-drift",
            help="Deploy even if applied files changed or the live schema differs from theirs.",
        ),
    ] = False,
    on_failure: Annotated[
        OnFailure,
        typer.Option(
            "--on-failure",
            help="rollback: undo with rollback SQL, or stop naming the restore command; "
            "restore: restore the Time Travel bookmark where rollback SQL cannot undo.",
        ),
    ] = OnFailure.rollback,
    atomic: Annotated[
        bool,
        typer.Option(
            "--atomic",
            help="Apply all pending migrations in one request (all or none), when they fit "
            "D1's limits; else in as few requests as fit. Verify checks run once, after.",
        ),
    ] = False,
) -> None:
    """Deploy: lock, prechecks, backup and bookmark, apply, verify; undo on failure."""
    from d1deploy import migrations, render

    cfg = run.settings
    options = migrations.MigrateOptions(
        to=to,
        dry_run=dry_run,
        allow_drift=allow_drift,
        on_failure=on_failure.value,
        atomic=atomic,
    )

    def operation(backend: Backend) -> migrations.MigrateReport:
        return migrations.migrate(
            backend,
            cfg.migrations_dir,
            actor=run.actor,
            pattern=cfg.migrations_pattern,
            table=cfg.migrations_table,
            lock_ttl=cfg.lock_ttl_seconds,
            guard_tables=cfg.guard_tables,
            options=options,
            before_change=None if dry_run else run.backup_hook(backend),
            notify=run.out.info,
        )

    if run.is_fleet:
        run.each_database(operation, render.describe_migrate)
        return
    with run.backend(create=not dry_run) as backend:
        report = operation(backend)
        interrupts.finishing(f"writing the report of the deploy to {backend.info.name}")
    render.migrate(run.out, report)


@_command("rollback", TARGET, BACKUP_OPTIONS, YES, FLEET, OUTPUT)
def rollback(
    run: Run,
    to: Annotated[
        str | None, typer.Option("--to", help="Undo every migration after this one.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Undo this many (default 1).")
    ] = None,
) -> None:
    """Undo applied migrations, newest first, with their rollback SQL."""
    from d1deploy import migrations, render

    if to is not None and steps is not None:
        raise UsageError("give --to or --steps, not both")
    cfg = run.settings
    target = f"--to {to}" if to else f"the last {steps or 1} migration(s)"

    def operation(backend: Backend) -> migrations.RollbackReport:
        return migrations.rollback(
            backend,
            cfg.migrations_dir,
            actor=run.actor,
            pattern=cfg.migrations_pattern,
            table=cfg.migrations_table,
            lock_ttl=cfg.lock_ttl_seconds,
            guard_tables=cfg.guard_tables,
            to=to,
            steps=steps,
            before_change=run.backup_hook(backend),
            notify=run.out.info,
        )

    if run.is_fleet:
        run.confirm(f"Roll back {target} on every selected database?")
        run.each_database(operation, render.describe_rollback)
        return
    with run.backend() as backend:
        run.confirm(f"Roll back {target} on {backend.info.name}?")
        report = operation(backend)
        interrupts.finishing(f"writing the report of the rollback of {backend.info.name}")
    render.rollback(run.out, report)


@_command("verify", TARGET, FLEET, OUTPUT)
def verify(
    run: Run,
    name: Annotated[
        str | None, typer.Argument(help="Only this migration's checks (default: all applied).")
    ] = None,
) -> None:
    """Run the verify checks of applied migrations."""
    from d1deploy import migrations, render

    cfg = run.settings

    def operation(backend: Backend) -> migrations.VerifyReport:
        return migrations.verify(
            backend,
            cfg.migrations_dir,
            pattern=cfg.migrations_pattern,
            table=cfg.migrations_table,
            name=name,
            notify=run.out.info,
        )

    if run.is_fleet:

        def checked(backend: Backend) -> migrations.VerifyReport:
            report = operation(backend)
            render.verify_verdict(report)
            return report

        run.each_database(checked, render.describe_verify)
        return
    with run.backend() as backend:
        report = operation(backend)
    render.verify(run.out, report)


@_command("baseline", TARGET, OUTPUT)
def baseline(
    run: Run,
    name: Annotated[str, typer.Argument(help="Record migrations up to this one as applied.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Record them even if the live schema is not what they leave."),
    ] = False,
) -> None:
    """Record migrations up to NAME as applied without running them, once the live schema
    is shown to be what they leave."""
    from d1deploy import migrations, render

    cfg = run.settings
    with run.backend(create=True) as backend:
        report = migrations.baseline(
            backend,
            cfg.migrations_dir,
            name,
            actor=run.actor,
            pattern=cfg.migrations_pattern,
            table=cfg.migrations_table,
            lock_ttl=cfg.lock_ttl_seconds,
            force=force,
            notify=run.out.info,
        )
        interrupts.finishing(f"writing the report of the baseline of {backend.info.name}")
    render.baseline(run.out, report)


@_command("new", ENTRY, OUTPUT)
def new(
    run: Run,
    name: Annotated[str, typer.Argument(help="What the migration does, e.g. 'add audit log'.")],
) -> None:
    """Create the next-numbered migration with its rollback and verify files."""
    from d1deploy import migrations

    cfg = run.settings
    created = migrations.new_migration(cfg.migrations_dir, name, pattern=cfg.migrations_pattern)
    if run.out.json_mode:
        run.out.json({"ok": True, "created": created})
        return
    for path in created:
        run.out.print(str(path))


@_command("backup", TARGET, FLEET, OUTPUT)
def backup(
    run: Run,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default backups/).")
    ] = None,
    no_data: Annotated[bool, typer.Option("--no-data", help="Schema only.")] = False,
    no_schema: Annotated[bool, typer.Option("--no-schema", help="Data only.")] = False,
    table: Annotated[
        list[str] | None, typer.Option("--table", help="Only this table (repeat).")
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Compress (.sql.gz).")] = False,
    backup_dir: Annotated[
        Path | None, typer.Option("--backup-dir", help="Folder for the default name.")
    ] = None,
) -> None:
    """Export the database to a local file, checksummed, with a JSON sidecar."""
    from d1deploy import backups as backup_mod
    from d1deploy import render
    from d1deploy.backend import ExportOptions

    if no_data and no_schema:
        raise UsageError("--no-data and --no-schema together would export nothing")
    options = ExportOptions(no_data=no_data, no_schema=no_schema, tables=tuple(table or ()))

    def operation(backend: Backend) -> backup_mod.BackupResult:
        with run.download_progress(backend) as on_bytes:
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
        run.each_database(operation, render.describe_backup)
        return
    with run.backend() as backend:
        result = operation(backend)
    render.backup(run.out, result)


@_command("restore", TARGET, YES, OUTPUT)
def restore(
    run: Run,
    bookmark: Annotated[
        str | None, typer.Option("--bookmark", help="Time Travel bookmark to return to.")
    ] = None,
    timestamp: Annotated[
        str | None, typer.Option("--timestamp", help="Return to this time (ISO 8601).")
    ] = None,
    from_backup: Annotated[
        Path | None,
        typer.Option("--from-backup", help="Re-import a backup or a D1 dump (.sql, .sql.gz)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Import a backup into a database that has tables.")
    ] = False,
) -> None:
    """Restore to a Time Travel bookmark or time, or re-import a backup file."""
    from d1deploy import backups as backup_mod
    from d1deploy import render
    from d1deploy import restoring as restore_mod

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
                restore_mod.restore_from_backup(
                    backend,
                    dump,
                    force=force,
                    table=run.settings.migrations_table,
                    notify=run.out.info,
                ),
            )
        return
    with run.backend() as backend:
        point = restore_mod.describe_restore_point(
            backend, bookmark=bookmark, timestamp=parse_timestamp(timestamp) if timestamp else None
        )
        render.restore_point(run.out, point)
        if point.is_current:
            run.out.info("The database is already at that bookmark: nothing to restore.")
            return
        run.confirm(f"Restore {point.database_name} to {point.bookmark}, discarding later changes?")
        render.restored(run.out, point, restore_mod.restore_point(backend, point))


@_command("unlock", TARGET, OUTPUT)
def unlock(
    run: Run,
    force: Annotated[
        bool, typer.Option("--force", help="Release the lock even if it has not expired.")
    ] = False,
) -> None:
    """Release a deploy lock left by a crashed run."""
    from d1deploy import lock
    from d1deploy.errors import LockHeld

    with run.backend() as backend:
        held = lock.current(backend)
        if held is None:
            run.out.info("No deploy lock is held.")
        elif not held.expired and not force:
            raise LockHeld(
                f"the deploy lock is held by {held.holder} until {held.expires_at}",
                hint=f"if that run is dead, release it with `{suggest.unlock()}`",
            )
        else:
            lock.force_release(backend)
            run.out.info(
                f"Released the deploy lock held by {held.holder} (since {held.acquired_at})."
            )
    if run.out.json_mode:
        run.out.json({"ok": True, "released": held})


@_command("rehearse", TARGET, OUTPUT)
def rehearse(
    run: Run,
    from_backup: Annotated[
        Path | None, typer.Option("--from-backup", help="Rehearse on this backup's copy.")
    ] = None,
) -> None:
    """Prove a deploy on a local copy: migrate, rollback, migrate again. Changes nothing."""
    from d1deploy import rehearse as rehearse_mod
    from d1deploy import render

    cfg = run.settings
    with run.backend() as backend:
        report = rehearse_mod.rehearse(
            backend,
            cfg.migrations_dir,
            actor=run.actor,
            pattern=cfg.migrations_pattern,
            table=cfg.migrations_table,
            guard_tables=cfg.guard_tables,
            from_backup=from_backup,
            notify=run.out.info,
        )
    render.rehearsal(run.out, report)


def optional_local_value(args: list[str]) -> list[str]:
    """Let `--local` stand alone: Typer has no options with an optional value, so a bare
    `--local` (last, or followed by another option) becomes `--local=` (the default path)."""
    result = list(args)
    for i, arg in enumerate(result):
        if arg == "--":
            break
        if arg == "--local" and (i + 1 == len(result) or result[i + 1].startswith("-")):
            result[i] = "--local="
    return result


_reported = False
"""Whether a command's wrapper ran (and so printed its own report)."""


def _say_now(output: Output) -> Callable[[str], None]:
    """A line from a signal handler: straight to file descriptor 2, never through a
    buffered stream the interrupted code may be in the middle of writing."""

    def say(line: str) -> None:
        try:
            os.write(output.stderr.fileno(), (output.scrub(line) + "\n").encode())
        except (OSError, ValueError, AttributeError):  # no descriptor (tests)
            output.info(line)

    return say


def main() -> None:
    """Console-script entry point. Click's standalone mode is off so that its own usage
    errors (a misspelt command or option) and interrupts are reported like every other
    failure: with `--json`, one JSON object on stdout."""
    args = optional_local_value(sys.argv[1:])
    before = args[: args.index("--")] if "--" in args else args
    out = Output(json_mode="--json" in before, environ=os.environ)
    try:
        with interrupts.handling(_say_now(out)):
            code = app(args=args, standalone_mode=False)
    except TyperException as exc:  # Click's own: a misspelt command or option, a bad value
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "d1deploy"
        err = UsageError(exc.format_message(), hint=f"see `{where} --help`")
        err.exit_code = exc.exit_code
        out.annotate("error", err.message, title="d1deploy: usage")
        if out.json_mode:
            out.json(error_payload(err, None))
        code = exc.exit_code
    except typer.Abort:
        out.error(D1DeployError("aborted; nothing was changed"))
        code = 1
    if code == Interrupted.exit_code and not _reported:
        out.error(Interrupted("interrupted before the command started; nothing was changed"))
    sys.exit(code if isinstance(code, int) else 0)
