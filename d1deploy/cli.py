"""The Typer app: each command resolves settings, calls one core function, renders.

This is the one place that turns a `D1DeployError` into an exit code (`_command`).
Heavy modules (httpx, the engine) are imported inside the commands so that
`d1deploy --version` and `--help` stay fast.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from d1deploy import __version__
from d1deploy.errors import EXIT_CODES, ConfirmationRequired, D1DeployError, UsageError
from d1deploy.output import Output

if TYPE_CHECKING:
    from d1deploy.backend import Backend
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
Database = Annotated[
    list[str] | None,
    typer.Option(
        "--database",
        "-d",
        metavar="NAME_OR_UUID",
        help="D1 database (name or UUID). Env D1DEPLOY_DATABASE.",
    ),
]
Local = Annotated[
    str | None,
    typer.Option(
        "--local",
        metavar="[PATH]",
        help="Use a local SQLite file that behaves like D1 (default .d1deploy/local.sqlite). "
        "Write --local=PATH when a positional argument follows.",
    ),
]
AccountId = Annotated[
    str | None,
    typer.Option("--account-id", help="Cloudflare account id. Env CLOUDFLARE_ACCOUNT_ID."),
]
EnvName = Annotated[
    str | None, typer.Option("--env", "-e", help="Use the [env.NAME] section of the config files.")
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="d1deploy.toml to use (default: ./d1deploy.toml)."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]
Verbose = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show where each setting came from, and more detail."),
]
Debug = Annotated[
    bool, typer.Option("--debug", help="Show a traceback on errors. Env D1DEPLOY_DEBUG=1.")
]
Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Answer yes to confirmations (needed without a terminal)."),
]

_OUTPUT: contextvars.ContextVar[Output] = contextvars.ContextVar("d1deploy_output")

F = TypeVar("F", bound=Callable[..., Any])


def out() -> Output:
    return _OUTPUT.get()


def _command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose D1DeployErrors become their documented exit codes."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            output = Output(
                json_mode=bool(kw.get("json_output", False)),
                verbose=bool(kw.get("verbose", False)),
                environ=os.environ,
            )
            output.add_secret(os.environ.get("CLOUDFLARE_API_TOKEN"))
            debug = bool(kw.get("debug", False)) or os.environ.get("D1DEPLOY_DEBUG") == "1"
            token = _OUTPUT.set(output)
            try:
                return fn(*args, **kw)
            except D1DeployError as err:
                if debug:
                    output.info(output.scrub(traceback.format_exc()))
                output.error(err)
                raise typer.Exit(err.exit_code) from None
            except KeyboardInterrupt:
                output.info("Interrupted.")
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:  # a bug: say so plainly, never with the token
                if debug:
                    output.info(output.scrub(traceback.format_exc()))
                output.error(
                    D1DeployError(
                        f"unexpected internal error: {type(exc).__name__}: {exc}",
                        hint="run again with --debug for a traceback and report it",
                    )
                )
                raise typer.Exit(1) from None
            finally:
                _OUTPUT.reset(token)

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


# -- settings and backends ------------------------------------------------------------------
def settings(
    *,
    database: list[str] | None = None,
    local: str | None = None,
    account_id: str | None = None,
    env: str | None = None,
    config: Path | None = None,
    **extra: Any,
) -> Settings:
    """Resolve settings (flag > env > config files > defaults) and show them with -v."""
    from d1deploy import config as config_mod

    flags: dict[str, object] = {
        "database": database,
        "local": local,
        "account_id": account_id,
        "env": env,
        "config": str(config) if config else None,
        **extra,
    }
    resolved = config_mod.resolve(flags=flags, environ=os.environ, cwd=Path.cwd())
    for key, value, source in resolved.describe():
        out().detail(f"  {key:<18} {value}  ({source})")
    return resolved


@contextmanager
def open_backend(cfg: Settings) -> Iterator[Backend]:
    """The database the command works on: a local file or a D1 database over the API."""
    if cfg.local_path is not None:
        from d1deploy.local import LocalBackend

        local_backend = LocalBackend(cfg.local_path)
        out().detail(f"Using local database {cfg.local_path}")
        try:
            yield local_backend
        finally:
            local_backend.close()
        return

    client = make_client(cfg)
    try:
        from d1deploy.remote import RemoteBackend

        name = cfg.database
        if name is None:
            raise _missing_database()
        info = client.resolve_database(cfg.database_id or name)
        out().detail(f"Using D1 database {info.name} ({info.uuid})")
        yield RemoteBackend(client, info)
    finally:
        client.close()


def make_client(cfg: Settings) -> Any:
    from d1deploy.client import D1Client

    token, account = cfg.require_remote()
    out().add_secret(token)
    return D1Client(token=token, account_id=account, base_url=cfg.api_base_url, on_retry=out().info)


def _missing_database() -> D1DeployError:
    from d1deploy.errors import ConfigMissing

    return ConfigMissing(
        "no database given",
        hint='pass --database NAME, set D1DEPLOY_DATABASE, add `database = "NAME"` to '
        "d1deploy.toml, or use --local",
    )


def confirm(question: str, *, yes: bool) -> None:
    """Ask before a destructive step; without a terminal, only --yes proceeds."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRequired(
            f"refusing to continue without confirmation: {question}",
            hint="run it in a terminal to be asked, or pass --yes",
        )
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)


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


# -- foundation commands --------------------------------------------------------------------
@_command("databases")
def databases(
    database: Database = None,
    local: Local = None,
    account_id: AccountId = None,
    env: EnvName = None,
    config: ConfigFile = None,
    json_output: JsonOut = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """List the account's D1 databases (or the local file's identity with --local)."""
    cfg = settings(database=database, local=local, account_id=account_id, env=env, config=config)
    if cfg.local_path is not None:
        from d1deploy.local import LocalBackend

        backend = LocalBackend(cfg.local_path)
        try:
            found = [backend.info]
        finally:
            backend.close()
    else:
        client = make_client(cfg)
        try:
            found = client.list_databases()
        finally:
            client.close()
    if out().json_mode:
        out().json({"ok": True, "databases": found})
        return
    out().table(
        ["name", "uuid", "created_at", "version"],
        [[d.name, d.uuid, d.created_at or "", d.version or ""] for d in found],
    )
    out().info(f"{len(found)} database(s)")


@_command("exec")
def exec_(
    command: Annotated[str | None, typer.Option("--command", help="SQL to run.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="SQL file to run.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Bind a value to a ? placeholder (repeat, in order)."),
    ] = None,
    database: Database = None,
    local: Local = None,
    account_id: AccountId = None,
    env: EnvName = None,
    config: ConfigFile = None,
    json_output: JsonOut = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Run SQL and print the results (a table per statement that returns rows)."""
    from d1deploy import sqlexec

    if (command is None) == (file is None):
        raise UsageError("give exactly one of --command or --file")
    cfg = settings(database=database, local=local, account_id=account_id, env=env, config=config)
    with open_backend(cfg) as backend:
        report = sqlexec.execute(
            backend, command=command, file=file, params=tuple(param or ()), notify=out().info
        )
    from d1deploy import render

    render.exec_report(out(), report)


@_command("bookmark")
def bookmark(
    timestamp: Annotated[
        str | None, typer.Option("--timestamp", help="Bookmark at this time (ISO 8601 or Unix s).")
    ] = None,
    database: Database = None,
    local: Local = None,
    account_id: AccountId = None,
    env: EnvName = None,
    config: ConfigFile = None,
    json_output: JsonOut = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Print a Time Travel bookmark: the current one, or the one at --timestamp."""
    at = parse_timestamp(timestamp) if timestamp else None
    cfg = settings(database=database, local=local, account_id=account_id, env=env, config=config)
    with open_backend(cfg) as backend:
        mark = backend.bookmark(at)
        name = backend.info.name
    if out().json_mode:
        out().json({"ok": True, "database": name, "bookmark": mark, "timestamp": at})
        return
    out().print(mark)
    out().info(f"To return {name} to this point: d1deploy restore --bookmark {mark}")


@_command("lint")
def lint(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="SQL files to check (default: every migration, in order)."),
    ] = None,
    env: EnvName = None,
    config: ConfigFile = None,
    json_output: JsonOut = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """D1-specific static checks of SQL files; needs no database."""
    from d1deploy import lint as lint_mod
    from d1deploy import render

    if files:
        paths = list(files)
    else:
        from d1deploy import migrations

        cfg = settings(env=env, config=config)
        paths = [m.path for m in migrations.discover(cfg.migrations_dir)]
    findings = lint_mod.lint_files(paths)
    render.lint_findings(out(), findings, checked=len(paths))
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise UsageError(
            f"{len(errors)} lint error(s) in {len(paths)} file(s)",
            hint="fix the statements named above",
            file=errors[0].file,
            line=errors[0].line,
        )


def optional_local_value(args: list[str]) -> list[str]:
    """Let `--local` stand alone: Typer has no options with an optional value, so a
    bare `--local` (last, or followed by another option) becomes `--local=` (the default
    path)."""
    result = list(args)
    for i, arg in enumerate(result):
        if arg == "--":
            break
        if arg == "--local" and (i + 1 == len(result) or result[i + 1].startswith("-")):
            result[i] = "--local="
    return result


def main() -> None:
    """Console-script entry point."""
    app(args=optional_local_value(sys.argv[1:]))
