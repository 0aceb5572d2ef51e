"""`python -m bench.soak [--runs 200] [--seed 1] [--verbose]`: deploy and roll back the
seed's migration 001 over and over while the emulator misbehaves, and count the runs that
left the database in neither the state before 001 nor the state after it (target: zero).

Each run draws one or two faults from a seeded random generator (so a run number and a
seed reproduce it exactly): 429s, 5xx on any request, connections dropped before or after
a request ran, exports that fail or never finish, truncated downloads, Time Travel calls
that fail. Runs alternate between two databases, one whose batches are atomic and one whose
batches are not (the REST case Cloudflare does not document); a database keeps its kind
for the whole soak, as a real one does. Each run does what its database calls for,
`migrate` (with a backup first) when 001 is not applied and `rollback` when it is, through
the library the CLI wires and the emulator's in-process transport, on a clock that only
moves when d1deploy sleeps. Afterwards it reads the emulator's SQLite file directly:

- neither: the schema and rows are neither the before nor the after state, or the
  ledger and history disagree with them (a migration counted twice, a torn event);
- lock left: a failed run could not release its lease (the user would run
  `d1deploy unlock --force`; the soak does so and counts it);
- bad backup: a `.part` file, or a dump whose sidecar does not match it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# `tests` and `bench` are imported as packages of the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from d1deploy import backups as backup
from d1deploy import errors, lock, migrations
from d1deploy.project import Project
from tests.e2e.states import (
    DB,
    M000,
    M001,
    SEED,
    FakeTime,
    in_process_backend,
    read_state,
    seed_before,
)
from tests.emulator import D1Emulator

Fault = dict[str, Any]


def _after(rng: random.Random) -> int:
    # Which matching request the fault hits: the session's first one, a check, the
    # change itself, a verify probe, the release...
    return rng.randrange(0, 8)


FAULTS: dict[str, Callable[[random.Random], Sequence[Fault]]] = {
    "none": lambda rng: (),
    "429": lambda rng: (
        {"method": "POST", "path": r"/query$", "status": 429, "headers": {"Retry-After": "1"},
         "times": rng.randint(1, 3), "after": _after(rng)},
    ),
    "5xx": lambda rng: (
        {"method": rng.choice(["GET", "POST"]), "path": r"/client/v4/",
         "status": rng.choice([500, 502, 503]), "times": rng.randint(1, 6), "after": _after(rng)},
    ),
    "drop-before": lambda rng: (
        {"method": "POST", "path": r"/query$", "drop_before": True, "times": 1,
         "after": _after(rng)},
    ),
    "drop-after": lambda rng: (
        {"method": "POST", "path": r"/query$", "drop_after": True, "times": 1,
         "after": _after(rng)},
    ),
    "export-fails": lambda rng: (
        {"method": "POST", "path": r"/export$", "export_fails": "internal error"},
    ),
    "export-never-completes": lambda rng: (
        {"method": "POST", "path": r"/export$", "export_never_completes": True},
    ),
    "truncated-download": lambda rng: (
        {"method": "GET", "path": r"^/__signed/", "truncate": rng.randrange(0, 2000),
         "times": rng.randint(1, 4)},
    ),
    "time-travel-5xx": lambda rng: (
        {"method": "GET", "path": r"/time_travel/bookmark$", "status": 503,
         "times": rng.randint(1, 6)},
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    run: int
    operation: str
    faults: tuple[str, ...]
    atomic: bool
    result: str
    """"ok", or the error class with its exit code."""
    stage: str
    """"before", "after" or "neither"."""
    lock_left: bool
    bad_backups: int


def classify(emulator: D1Emulator) -> str:
    state = read_state(emulator.db_path(DB))
    stage = state.stage()
    want = {"before": (M000,), "after": (M000, M001)}
    consistent = (
        stage is not None
        and state.ledger == want[stage]
        and state.times_applied(M001) == (1 if stage == "after" else 0)
        and state.torn_events == []
    )
    return stage if consistent and stage is not None else "neither"


def bad_backups(folder: Path) -> int:
    bad = 0
    for path in folder.glob("*") if folder.is_dir() else ():
        if path.name.endswith(".part"):
            bad += 1
        elif path.suffix == ".sql":
            try:
                backup.verify_backup(path)
            except errors.D1DeployError:
                bad += 1
    return bad


def operate(operation: str, lane: Lane, *, actor: str) -> str:
    """Run `migrate` (backup first) or `rollback` as the CLI does; "ok" or the error."""
    clock = FakeTime()
    db = None
    try:
        # Resolving the database is part of every command, so its faults count too.
        db = in_process_backend(lane.emulator, sleep=clock.sleep, clock=clock.clock)
        backend = db

        def take_backup() -> object:
            return backup.backup(backend, dest=None, backup_dir=lane.work / "backups")

        if operation == "migrate":
            migrations.migrate(db, Project(lane.migrations, actor=actor), before_change=take_backup)
        else:
            migrations.rollback(
                db, Project(lane.migrations, actor=actor), before_change=take_backup
            )
        return "ok"
    except errors.D1DeployError as exc:
        return f"{type(exc).__name__} (exit {exc.exit_code})"
    finally:
        if db is not None:
            db.close()


def one_run(n: int, seed: int, lane: Lane) -> Outcome:
    rng = random.Random(f"{seed}:{n}")
    kinds = tuple(rng.sample(sorted(FAULTS), rng.choice([1, 1, 2])))
    operation = "migrate" if classify(lane.emulator) == "before" else "rollback"
    for kind in kinds:
        for fault in FAULTS[kind](rng):
            lane.emulator.faults.add(**fault)
    result = operate(operation, lane, actor=f"soak run {n}")
    lane.emulator.faults.clear()
    after = classify(lane.emulator)
    left = read_state(lane.emulator.db_path(DB)).lock is not None
    if left:  # what the user would do: `d1deploy unlock --force`
        quiet = in_process_backend(lane.emulator)
        try:
            lock.force_release(quiet)
        finally:
            quiet.close()
    backups = bad_backups(lane.work / "backups")
    return Outcome(n, operation, kinds, lane.atomic, result, after, left, backups)


@dataclass
class Lane:
    """One database of the soak, atomic or not for its whole life."""

    atomic: bool
    work: Path
    emulator: D1Emulator

    @property
    def migrations(self) -> Path:
        return self.work / "migrations"

    @classmethod
    def create(cls, root: Path, atomic: bool) -> Lane:
        work = root / ("atomic" if atomic else "non-atomic")
        shutil.copytree(SEED, work / "migrations", ignore=shutil.ignore_patterns("*.md"))
        emulator = D1Emulator(work / "emulator", export_polls=0, sleep=lambda _: None)
        emulator.atomic_batches = atomic
        emulator.create_database(DB)
        seed_before(emulator, work / "migrations")
        return cls(atomic, work, emulator)


def soak(runs: int, seed: int, verbose: bool = False) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="d1deploy-soak-") as tmp:
        lanes = [Lane.create(Path(tmp), atomic=True), Lane.create(Path(tmp), atomic=False)]
        try:
            outcomes = []
            for n in range(1, runs + 1):
                outcome = one_run(n, seed, lanes[n % 2])
                outcomes.append(outcome)
                if verbose or outcome.stage == "neither":
                    print(describe(outcome), flush=True)
            return outcomes
        finally:
            for lane in lanes:
                lane.emulator.close()


def describe(o: Outcome) -> str:
    kind = "atomic" if o.atomic else "non-atomic"
    left = " (lock left)" if o.lock_left else ""
    return (
        f"run {o.run:>4} {kind:<10} {o.operation:<8} {'+'.join(o.faults):<40}"
        f" {o.result:<28} -> {o.stage}{left}"
    )


def report(outcomes: Sequence[Outcome], seed: int, seconds: float) -> str:
    neither = [o.run for o in outcomes if o.stage == "neither"]
    by_op = Counter((o.operation, o.result) for o in outcomes)
    lines = [
        f"soak: {len(outcomes)} runs, seed {seed}, {seconds:.1f} s",
        f"  ended in neither the before nor the after state: {len(neither)}"
        + (f" (runs {', '.join(map(str, neither))})" if neither else ""),
        f"  ended before: {sum(o.stage == 'before' for o in outcomes)},"
        f" after: {sum(o.stage == 'after' for o in outcomes)}"
        f" (atomic database: {sum(o.atomic for o in outcomes)} runs,"
        f" non-atomic: {sum(not o.atomic for o in outcomes)})",
        f"  lock left behind by a failed run: {sum(o.lock_left for o in outcomes)}",
        f"  bad backup files: {max((o.bad_backups for o in outcomes), default=0)}",
        "  outcomes:",
        *(f"    {op:<8} {result:<30} {count}" for (op, result), count in sorted(by_op.items())),
        "  faults drawn: "
        + ", ".join(
            f"{k} {v}" for k, v in sorted(Counter(f for o in outcomes for f in o.faults).items())
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    outcomes = soak(args.runs, args.seed, args.verbose)
    print(report(outcomes, args.seed, time.perf_counter() - started))
    bad = any(o.stage == "neither" or o.bad_backups for o in outcomes)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
