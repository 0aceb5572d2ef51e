"""The backup `migrate` and `rollback` take before their first change, and the byte
progress bar of a download."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from d1deploy.backend import Backend
    from d1deploy.cli.context import Run


def download_progress(
    run: Run, backend: Backend
) -> contextlib.AbstractContextManager[Callable[[int, int | None], None]]:
    """A byte progress bar for one database's backup; none for a fleet, whose
    databases download at once (their lines say when each is done)."""
    if run.is_fleet:
        return contextlib.nullcontext(lambda _done, _total: None)
    return run.out.byte_progress(f"backup of {backend.info.name}")


def before_change(run: Run, backend: Backend) -> Callable[[], object] | None:
    """The backup to take before the first change, unless --no-backup."""
    if run.common.get("no_backup"):
        return None
    from d1deploy import backups
    from d1deploy.cli import render

    def take() -> object:
        with download_progress(run, backend) as on_bytes:
            result = backups.backup(
                backend,
                dest=None,
                backup_dir=run.project.backup_dir,
                notify=run.out.info,
                on_bytes=on_bytes,
            )
        run.out.info(f"Backup written: {result.path} ({result.bytes} bytes)")
        run.out.info(f"Proven: {render.proven(result)}")
        return result

    return take
