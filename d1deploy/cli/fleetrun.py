"""Fleet mode for a command: its operation on every selected database, at bounded
concurrency, canaries first, with one client (one rate-limit pause and request budget
shared by every database) and a report per database."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from d1deploy.backend import Backend
    from d1deploy.cli.context import Run


def each_database(
    run: Run,
    operation: Callable[[Backend], Any],
    describe: Callable[[Any], str],
    *,
    verdict: Callable[[Any], None] | None = None,
) -> None:
    """`operation` on every database the run selects; its report rendered. `verdict`
    (a report's `raise_for_verdict`) makes a database whose report says no count as failed.

    :raises fleet.FleetFailed: when one database failed (each one's error is in the report).
    """
    from d1deploy import fleet, interrupts, suggest
    from d1deploy.cli import render
    from d1deploy.ratelimit import RateLimitTransport

    cfg = run.settings
    every = suggest.current()

    def on_one(backend: Backend) -> object:
        # Worker threads: each suggests commands for its own database.
        with suggest.target(every.on(backend.info.name)):
            report = operation(backend)
            if verdict is not None:
                verdict(report)
            return report

    concurrency, canary = run.common["concurrency"], run.common["canary"]
    with run.client(transport=RateLimitTransport()) as client:
        chosen = fleet.select_databases(
            client, names=cfg.databases, matching=cfg.databases_matching
        )
        run.out.info(f"Fleet: {len(chosen)} database(s), {concurrency} at once")
        report = fleet.run_fleet(
            chosen,
            fleet.remote_task(client, on_one),
            concurrency=concurrency,
            canary=canary,
            notify=run.out.info,
        )
    interrupts.finishing("writing the fleet's report")
    render.fleet(run.out, report, describe)
    report.raise_for_verdict()
