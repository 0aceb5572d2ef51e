"""The exception tree: every failure d1deploy reports is a `D1DeployError`.

Each class carries its exit code (the contract in the README) and a hint saying what
to do next. Core modules raise these; only `cli/command.py` turns them into an exit code, and
only `cli/output.py` prints them.

    D1DeployError                     exit 1  failed while changing
    ├── ChangeFailed                  exit 1  a change failed (the report says what was undone)
    │   └── ReadWrote                         a statement sent as a read wrote (or tried to)
    ├── Interrupted                   exit 130 SIGINT or SIGTERM stopped the run (the report
    │                                         says what was finished)
    ├── SqlError                      exit 1  D1 or SQLite rejected a statement
    ├── UsageError                    exit 2  bad usage or bad input files
    │   ├── InputError                        a SQL/check/migration file is unusable (file:line)
    │   │   └── OldLayout                     companion files wrangler would apply as migrations
    │   ├── ConfigFileError                   malformed config, unknown key
    │   └── ConfirmationRequired              destructive command without a TTY and without --yes
    ├── SetupError                    exit 3  auth, permission, not found, missing config
    │   ├── ConfigMissing
    │   ├── AuthError
    │   ├── NotFound
    │   └── ConfigMismatch                    the configured name and id are two databases
    ├── Unavailable                   exit 4  the API stayed unavailable after retries
    │   ├── RateLimited
    │   ├── ServerError
    │   ├── NetworkError
    │   ├── PollTimeout
    │   ├── DownloadError                     a truncated or failed signed-URL download
    │   │   └── InvalidDump                   a download that is not the whole database
    │   └── DiskFull                          a local file could not be written: no room
    └── Refused                       exit 5  refused before changing anything
        ├── LockHeld
        ├── DriftDetected
        └── PrecheckFailed

`Interrupt` is not in the tree: it is the signal itself (a KeyboardInterrupt), raised
where the run stands; the engine settles it and the CLI reports it as `Interrupted`.
"""

from __future__ import annotations

from typing import Any


class D1DeployError(Exception):
    """Base of every error d1deploy reports. `str(err)` is one sentence naming what failed."""

    exit_code: int = 1
    """Per class; an instance may override it when it reports another error's outcome
    (a failed rehearsal step, the worst database of a fleet)."""

    report: Any = None
    """What the run had done when it stopped (a frozen report: applied, undone, bookmark,
    restore command), when the error ends a run that had one."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file
        self.line = line

    @property
    def location(self) -> str | None:
        """`file:line` (or just `file`) when the error points into a file."""
        if self.file is None:
            return None
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        where = self.location
        return f"{where}: {self.message}" if where else self.message


class ChangeFailed(D1DeployError):
    """Something failed after changes began; the message says what was undone."""

    exit_code = 1


class ReadWrote(ChangeFailed):
    """A statement sent as a read wrote: D1's answer shows a change (`changed`), or the
    local SQLite refused its write (nothing changed). Never retried nor re-sent: the run
    stops. `index` is its position in its request; `bookmark`, when known, a Time Travel
    bookmark from before it ran."""

    def __init__(
        self,
        message: str,
        *,
        changed: bool,
        index: int | None = None,
        bookmark: str | None = None,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, file=file, line=line)
        self.changed = changed
        self.index = index
        self.bookmark = bookmark


class Interrupted(D1DeployError):
    """SIGINT (Ctrl-C) or SIGTERM (what a CI cancel sends) stopped the run; it finished
    what it had started (see `report`) before exiting."""

    exit_code = 130


class Interrupt(KeyboardInterrupt):
    """The signal itself, raised where the run stands (by the CLI's handler in the main
    thread, at a `interrupts.checkpoint()` in a fleet's worker). A KeyboardInterrupt, so
    that `except Exception` never swallows it; the engine settles it into `Interrupted`."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class SqlError(D1DeployError):
    """D1 (or the local SQLite) rejected a statement.

    `sqlite_code` is the `SQLITE_*` class D1 appends to its messages (for example
    `SQLITE_CONSTRAINT`), `index` the position of the failing statement in its batch
    when known (the local backend knows it; the REST API does not say).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        sqlite_code: str | None = None,
        index: int | None = None,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, file=file, line=line)
        self.sqlite_code = sqlite_code
        self.index = index


class UsageError(D1DeployError):
    exit_code = 2


class InputError(UsageError):
    """An input file is unusable: not UTF-8, a SQLite binary, a syntax error at a line..."""


class OldLayout(InputError):
    """Companion files (rollback, precheck, verify) in the first layout, where wrangler
    would apply them as migrations. The hint names the command that moves them."""


class ConfigFileError(UsageError):
    """A configuration file is malformed or has an unknown key."""


class ConfirmationRequired(UsageError):
    """A destructive command needs `--yes` when there is no terminal to ask on."""


class SetupError(D1DeployError):
    exit_code = 3


class ConfigMissing(SetupError):
    """A required setting (token, account, database) is not configured anywhere."""


class AuthError(SetupError):
    """The API rejected the token (invalid, expired, or without D1 permission)."""


class NotFound(SetupError):
    """The database, bookmark or other named thing does not exist."""


class ConfigMismatch(SetupError):
    """The configured database name and id disagree with what the API says of that id."""


class Unavailable(D1DeployError):
    exit_code = 4


class RateLimited(Unavailable):
    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ServerError(Unavailable):
    pass


class NetworkError(Unavailable):
    pass


class Unreachable(NetworkError):
    """The API's host name does not resolve, or nothing listens there: not retried."""


class OutOfTime(Unavailable):
    """The time a settle allows itself ran out before a request was sent (nothing of it
    reached D1)."""


class PollTimeout(Unavailable):
    pass


class DownloadError(Unavailable):
    pass


class InvalidDump(DownloadError):
    """A download that is not a complete dump of the database: not a dump at all (an
    HTML page, a JSON error), cut short, or without objects or rows the database holds."""


class DiskFull(Unavailable):
    """A backup or the import copy of a restore could not be written: the disk is full
    or the file size limit (`ulimit -f`) was reached. Nothing is left behind."""


class Refused(D1DeployError):
    exit_code = 5


class LockHeld(Refused):
    pass


class DriftDetected(Refused):
    pass


class PrecheckFailed(Refused):
    pass


EXIT_CODES: dict[int, str] = {
    0: "done",
    1: "failed while changing (the report says what was rolled back)",
    2: "bad usage or bad input files",
    3: "authentication, permission, not found, or missing configuration",
    4: "the API stayed unavailable after retries, or a backup could not be completed",
    5: "refused before changing anything (lock held, drift, failed precheck)",
    130: "interrupted by Ctrl-C or SIGTERM (the report says what was finished and undone)",
}
