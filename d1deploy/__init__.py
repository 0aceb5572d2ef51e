"""d1deploy: deploy schema changes to Cloudflare D1 without losing data.

The package is a library first; `d1deploy.cli` is a thin Click layer over it. The names
below are the library's front door: the engine's operations, the backends, the options
and reports they take and return, and the errors they raise.

Each name is imported from its module on first use (PEP 562), so that `import d1deploy`
costs nothing: `d1deploy --version` must not import httpx or the engine. Adding a name
is one line in `_EXPORTS`, and its import under `TYPE_CHECKING` for type checkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, str]] = {
    # The operations: (backend, project, ...) -> a report, or an error.
    "migrate": ("d1deploy.migrations", "migrate"),
    "rollback": ("d1deploy.migrations", "rollback"),
    "verify": ("d1deploy.migrations", "verify"),
    "baseline": ("d1deploy.migrations", "baseline"),
    "plan": ("d1deploy.planning", "plan"),
    "status": ("d1deploy.planning", "status"),
    "backup": ("d1deploy.backups", "backup"),
    "restore": ("d1deploy.restoring", "restore_from_backup"),
    # What they run on.
    "LocalBackend": ("d1deploy.local", "LocalBackend"),
    "RemoteBackend": ("d1deploy.remote", "RemoteBackend"),
    "D1Client": ("d1deploy.client", "D1Client"),
    "RateLimitTransport": ("d1deploy.ratelimit", "RateLimitTransport"),
    "Backend": ("d1deploy.backend", "Backend"),
    "DatabaseInfo": ("d1deploy.backend", "DatabaseInfo"),
    "Statement": ("d1deploy.backend", "Statement"),
    # Options.
    "Project": ("d1deploy.project", "Project"),
    "MigrateOptions": ("d1deploy.migrations", "MigrateOptions"),
    "RollbackOptions": ("d1deploy.migrations", "RollbackOptions"),
    "ExportOptions": ("d1deploy.backend", "ExportOptions"),
    # The errors: every one is a D1DeployError with an exit code, a message and a hint.
    "errors": ("d1deploy.errors", ""),
    "D1DeployError": ("d1deploy.errors", "D1DeployError"),
    "UsageError": ("d1deploy.errors", "UsageError"),
    "InputError": ("d1deploy.errors", "InputError"),
    "SqlError": ("d1deploy.errors", "SqlError"),
    "SetupError": ("d1deploy.errors", "SetupError"),
    "AuthError": ("d1deploy.errors", "AuthError"),
    "NotFound": ("d1deploy.errors", "NotFound"),
    "Unavailable": ("d1deploy.errors", "Unavailable"),
    "RateLimited": ("d1deploy.errors", "RateLimited"),
    "Refused": ("d1deploy.errors", "Refused"),
    "LockHeld": ("d1deploy.errors", "LockHeld"),
    "DriftDetected": ("d1deploy.errors", "DriftDetected"),
    "ChangeFailed": ("d1deploy.errors", "ChangeFailed"),
    "Interrupted": ("d1deploy.errors", "Interrupted"),
    "DeployFailed": ("d1deploy.migrations", "DeployFailed"),
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # the same names for type checkers, which do not run __getattr__
    from d1deploy import errors as errors
    from d1deploy.backend import Backend as Backend
    from d1deploy.backend import DatabaseInfo as DatabaseInfo
    from d1deploy.backend import ExportOptions as ExportOptions
    from d1deploy.backend import Statement as Statement
    from d1deploy.backups import backup as backup
    from d1deploy.client import D1Client as D1Client
    from d1deploy.errors import AuthError as AuthError
    from d1deploy.errors import ChangeFailed as ChangeFailed
    from d1deploy.errors import D1DeployError as D1DeployError
    from d1deploy.errors import DriftDetected as DriftDetected
    from d1deploy.errors import InputError as InputError
    from d1deploy.errors import Interrupted as Interrupted
    from d1deploy.errors import LockHeld as LockHeld
    from d1deploy.errors import NotFound as NotFound
    from d1deploy.errors import RateLimited as RateLimited
    from d1deploy.errors import Refused as Refused
    from d1deploy.errors import SetupError as SetupError
    from d1deploy.errors import SqlError as SqlError
    from d1deploy.errors import Unavailable as Unavailable
    from d1deploy.errors import UsageError as UsageError
    from d1deploy.local import LocalBackend as LocalBackend
    from d1deploy.migrations import DeployFailed as DeployFailed
    from d1deploy.migrations import MigrateOptions as MigrateOptions
    from d1deploy.migrations import RollbackOptions as RollbackOptions
    from d1deploy.migrations import baseline as baseline
    from d1deploy.migrations import migrate as migrate
    from d1deploy.migrations import rollback as rollback
    from d1deploy.migrations import verify as verify
    from d1deploy.planning import plan as plan
    from d1deploy.planning import status as status
    from d1deploy.project import Project as Project
    from d1deploy.ratelimit import RateLimitTransport as RateLimitTransport
    from d1deploy.remote import RemoteBackend as RemoteBackend
    from d1deploy.restoring import restore_from_backup as restore  # noqa: F401  (re-exported)


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'd1deploy' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
