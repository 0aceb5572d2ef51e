"""The Click group and the decorator that makes a command of a function.

`command` is the one place that turns a `D1DeployError` into an exit code: it builds
the command's `Output` and `Run` from the shared options, runs the function in a context
of its own, renders a failure's report and prints its error.

The group loads a command's module only when that command runs (or shows its help):
`d1deploy --help` lists the commands from `SUMMARIES` without importing any of them.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from d1deploy import __version__, interrupts
from d1deploy.errors import EXIT_CODES, D1DeployError, Interrupt, Interrupted

if TYPE_CHECKING:
    from d1deploy.cli.options import Decorator
    from d1deploy.cli.output import Output

EPILOG = "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())

SUMMARIES: dict[str, tuple[str, str]] = {
    "backup": ("data", "Export a database to a checksummed local file."),
    "baseline": ("deploy", "Record migrations as applied without running them."),
    "bookmark": ("data", "Print a Time Travel bookmark."),
    "databases": ("data", "List the account's D1 databases."),
    "exec": ("data", "Run SQL and print the results."),
    "lint": ("admin", "D1-specific static checks of SQL files."),
    "migrate": ("deploy", "Deploy: prechecks, backup, apply, verify; undo on failure."),
    "move-companions": ("admin", "Move the old layout's companion files."),
    "new": ("admin", "Create the next-numbered migration."),
    "plan": ("deploy", "What `migrate` would do, writing nothing."),
    "rehearse": ("deploy", "Prove a deploy on a local copy."),
    "restore": ("data", "Restore a bookmark, a time, or a backup file."),
    "rollback": ("deploy", "Undo applied migrations, newest first."),
    "status": ("deploy", "Applied, pending and drifted migrations; schema drift."),
    "unlock": ("admin", "Release a deploy lock left by a crashed run."),
    "verify": ("deploy", "Run the verify checks of applied migrations."),
}
"""Each command: the module of `d1deploy/cli/` that defines it, and its line in `--help`."""


class LazyGroup(click.Group):
    """A group whose commands are imported when one is asked for by name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUMMARIES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in SUMMARIES:
            importlib.import_module(f"d1deploy.cli.{SUMMARIES[cmd_name][0]}")
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, summary) for name, (_, summary) in sorted(SUMMARIES.items())]
            )

    def load_all(self) -> LazyGroup:
        """Every command imported (for code that walks `commands`)."""
        for module in sorted({module for module, _ in SUMMARIES.values()}):
            importlib.import_module(f"d1deploy.cli.{module}")
        return self


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        sys.stdout.write(f"d1deploy {__version__}\n")
        ctx.exit()


@click.group(name="d1deploy", cls=LazyGroup, epilog=EPILOG, no_args_is_help=True)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Print the version.",
)
def app() -> None:
    """Deploy schema changes to Cloudflare D1 without losing data: backup, migrate,
    verify, roll back."""


def _traceback() -> str:
    import traceback

    return traceback.format_exc()


class State:
    reported = False
    """Whether a command's wrapper ran (and so printed its own report)."""


def say_now(output: Output) -> Callable[[str], None]:
    """A line from a signal handler: straight to file descriptor 2, never through a
    buffered stream the interrupted code may be in the middle of writing."""

    def say(line: str) -> None:
        try:
            os.write(output.stderr.fileno(), (output.scrub(line) + "\n").encode())
        except (OSError, ValueError, AttributeError):  # no descriptor (tests)
            output.info(line)

    return say


def command(
    name: str, *groups: Sequence[Decorator]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(run, **own_options)` (its own options declared with Click's
    decorators below this one) as command `name` with the shared option `groups`."""
    from d1deploy.cli import options

    shared = [option for group in groups for option in group]
    shared_names = options.names(shared)

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(**kw: Any) -> None:
            from d1deploy.cli.context import Run
            from d1deploy.cli.output import Output

            State.reported = True
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
            with interrupts.handling(say_now(output)):
                try:
                    context.run(fn, run, **kw)
                except D1DeployError as err:
                    interrupts.finishing(f"writing the report of `d1deploy {name}`")
                    if debug:
                        output.info(_traceback())
                    from d1deploy.cli import render

                    context.run(render.failure, output, err)
                    output.error(err)
                    raise click.exceptions.Exit(err.exit_code) from None
                except KeyboardInterrupt as exc:
                    # Interrupted where nothing needed settling (or before it began).
                    interrupts.finishing(f"writing the report of `d1deploy {name}`")
                    signal_name = exc.signal_name if isinstance(exc, Interrupt) else "SIGINT"
                    output.error(Interrupted(f"{signal_name} received: `d1deploy {name}` stopped"))
                    raise click.exceptions.Exit(Interrupted.exit_code) from None
                except click.exceptions.Exit:
                    output.flush()
                    raise
                except click.exceptions.Abort:
                    output.error(D1DeployError("aborted at the confirmation; nothing was changed"))
                    raise click.exceptions.Exit(1) from None
                except Exception as exc:  # a bug: say so plainly (output scrubs the token)
                    if debug:
                        output.info(_traceback())
                    output.error(
                        D1DeployError(
                            f"unexpected internal error: {type(exc).__name__}: {exc}",
                            hint="run again with --debug for a traceback, and report it",
                        )
                    )
                    raise click.exceptions.Exit(1) from None
                output.flush()

        del wrapper.__wrapped__
        # Click lists parameters in the reverse order of `__click_params__`: the command's
        # own first, then the shared ones.
        own = list(getattr(fn, "__click_params__", ()))
        wrapper.__click_params__ = []  # type: ignore[attr-defined]
        for option in reversed(shared):
            option(wrapper)
        wrapper.__click_params__ += own  # type: ignore[attr-defined]
        app.command(name, help=fn.__doc__, short_help=SUMMARIES[name][1])(wrapper)
        return fn

    return decorate
