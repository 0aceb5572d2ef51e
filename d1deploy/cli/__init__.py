"""The command line: a thin Click layer over the library.

Each command resolves the settings into a `Project`, opens the database, calls one core
function and renders its report. The layout:

    command.py   the Click group `app` and `command`, the one place that turns a
                 `D1DeployError` into an exit code
    options.py   the options several commands share
    context.py   `Run`: one invocation's flags, settings, project, database, prompt
    fleetrun.py  a command's operation on every database of a fleet
    backups.py   the backup before a change, the download progress bar
    deploy.py    status, plan, migrate, rollback, verify, baseline, rehearse
    data.py      databases, exec, bookmark, backup, restore
    admin.py     new, lint, move-companions, unlock
    render.py    how each report looks; output.py: the one writer

No core module imports this package (tests/test_quality.py holds them to it). Heavy
modules (httpx, rich, the engine) are imported inside the commands, so that `--version`,
`--help` and a command's path up to its first request stay fast (tests/test_startup.py).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from d1deploy.cli.command import LazyGroup
    from d1deploy.cli.output import Output

    app: LazyGroup

__all__ = ["app", "main", "optional_local_value"]


def __getattr__(name: str) -> Any:
    """`app`: the Click group with every command loaded (`main` loads only the one run)."""
    if name == "app":
        from d1deploy.cli.command import app

        return app.load_all()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def optional_local_value(args: list[str]) -> list[str]:
    """Let `--local` stand alone: Click has no options with an optional value, so a bare
    `--local` (last, or followed by another option) becomes `--local=` (the default path)."""
    result = list(args)
    for i, arg in enumerate(result):
        if arg == "--":
            break
        if arg == "--local" and (i + 1 == len(result) or result[i + 1].startswith("-")):
            result[i] = "--local="
    return result


def main() -> None:
    """Console-script entry point. Click's standalone mode is off so that its own usage
    errors (a misspelt command or option) and interrupts are reported like every other
    failure: with `--json`, one JSON object on stdout."""
    args = optional_local_value(sys.argv[1:])
    if args == ["--version"]:  # the one answer that needs neither Click nor a command
        from d1deploy import __version__

        sys.stdout.write(f"d1deploy {__version__}\n")
        sys.exit(0)
    import click

    from d1deploy import interrupts
    from d1deploy.cli.command import State, app, say_now
    from d1deploy.errors import D1DeployError, Interrupted, UsageError

    before = args[: args.index("--")] if "--" in args else args

    def output() -> Output:
        # Made when something goes wrong: a run that works prints through its command's.
        from d1deploy.cli.output import Output

        return Output(json_mode="--json" in before, environ=os.environ)

    try:
        with interrupts.handling(lambda line: say_now(output())(line)):
            code = app.main(args=args, prog_name="d1deploy", standalone_mode=False)
    except click.ClickException as exc:  # Click's own: a misspelt command or option, a bad value
        from d1deploy.cli.output import error_payload

        exc.show()
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "d1deploy"
        err = UsageError(exc.format_message(), hint=f"see `{where} --help`")
        err.exit_code = exc.exit_code
        out = output()
        out.annotate("error", err.message, title="d1deploy: usage")
        if out.json_mode:
            out.json(error_payload(err, None))
        code = exc.exit_code
    except click.exceptions.Abort:
        output().error(D1DeployError("aborted; nothing was changed"))
        code = 1
    if code == Interrupted.exit_code and not State.reported:
        output().error(Interrupted("interrupted before the command started; nothing was changed"))
    sys.exit(code if isinstance(code, int) else 0)
