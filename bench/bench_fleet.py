"""Benchmark: one schema change over a fleet of D1 databases (one per tenant), d1deploy's
fleet mode against sequential loops of d1deploy and of wrangler, and the same fleet
under injected faults.

Every measure gets its own emulator holding N fresh databases `fleet-001..fleet-N` and a
generated project (`migrations/` of small CREATE TABLE / INSERT / CREATE INDEX files):

- the fleet: `d1deploy migrate --databases-matching 'fleet-*' --concurrency C`;
- a shell loop running `d1deploy migrate -d NAME` for every database in turn;
- a shell loop running `wrangler d1 migrations apply NAME --remote` (from a generated
  `wrangler.toml` with one entry per database), over the first `wrangler_subset`
  databases only when that is fewer than N, extrapolated linearly (the row says so);
- a fault run: the fleet with seeded random faults on some databases (429s, 500s,
  connections dropped before or after a migration's request), then a clean re-run.

After every run each database's SQLite file is read directly (never through d1deploy)
and judged against what plain SQLite builds from the first k migration files: a
database is half-migrated when its ledger, schema, row counts or history disagree with
every such k, or it holds a torn history event.
"""

from __future__ import annotations

import json
import random
import shlex
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import wrangler
from bench.bench_migrate import ENV_NAMES, LEDGER, write_migrations
from bench.harness import (
    Options,
    Row,
    Served,
    checked,
    clean_env,
    count_rows,
    d1deploy_argv,
    display,
    median,
    run_measured,
    seconds_text,
    serving,
    verdict,
)
from bench.wrangler import WranglerTool
from tests.e2e.states import DbState, fingerprint, read_state
from tests.emulator import D1Emulator, DatabaseRef

PREFIX = "fleet-"
GLOB = f"{PREFIX}*"
NAME = "@NAME@"  # stands for the loop variable; shlex leaves it unquoted
TARGET_SPEEDUP = 6.0
LOOP_TIMEOUT = 1800.0
# A faulted database draws one of these; "none" weighs half, so about half the fleet
# misbehaves and the other half shows that a neighbour's trouble does not spread.
FAULT_KINDS = ("none",) * 4 + ("429", "500-read", "drop-before", "drop-after")


@dataclass(frozen=True)
class FleetSettings:
    """The fleet's shape: `databases` x `migrations`, `concurrency` at once."""

    databases: int = 200
    migrations: int = 3
    concurrency: int = 8
    wrangler_subset: int = 20
    seed: int = 1


@dataclass(frozen=True)
class Timed:
    """One timed run: wall time and the API requests the emulator answered."""

    seconds: float
    requests: int
    again: int = 0
    """API requests of the same command run again at once, nothing left pending."""


@dataclass(frozen=True)
class Census:
    """Every database's state read from its SQLite file, by name."""

    complete: tuple[str, ...]
    partial: tuple[str, ...]
    """Consistent, with fewer migrations applied: a re-run continues from there."""
    half_migrated: tuple[str, ...]
    locked: tuple[str, ...]
    """A lease row left behind (the next deploy would wait for it or need `unlock`)."""


@dataclass(frozen=True)
class FaultOutcome:
    """The faulted fleet run and the clean re-run after it."""

    drawn: tuple[tuple[str, int], ...]
    """(fault kind, databases that drew it)."""
    rules: int
    fired: int
    """Rules that fired at least once; `hits` counts every request they answered."""
    hits: int
    first: Census
    first_exit: int
    first_counts: dict[str, int]
    first_seconds: float
    rerun: Census
    rerun_exit: int
    rerun_seconds: float
    failures: tuple[tuple[str, int], ...] = field(default=())
    """(error type, databases) of the faulted run."""


def names(count: int) -> list[str]:
    """The fleet's database names, as `seq -f 'fleet-%03g' 1 COUNT` prints them."""
    return [f"{PREFIX}{n:03d}" for n in range(1, count + 1)]


def fleet_argv(concurrency: int, *extra: str) -> list[str]:
    return [
        *d1deploy_argv(),
        "migrate",
        "--databases-matching",
        GLOB,
        "--concurrency",
        str(concurrency),
        "--no-backup",
        "--migrations-dir",
        "migrations",
        "--json",
        *extra,
    ]


def single_argv() -> list[str]:
    """`d1deploy migrate` of the database named by the loop variable."""
    return [
        *d1deploy_argv(),
        "migrate",
        "-d",
        NAME,
        "--no-backup",
        "--migrations-dir",
        "migrations",
    ]


def wrangler_argv(tool: WranglerTool) -> list[str]:
    return tool.argv("d1", "migrations", "apply", NAME, "--remote")


def loop_script(command: str, count: int) -> str:
    """A shell loop running `command` (a shell line holding NAME) for every database."""
    body = command.replace(NAME, '"$name"')
    return f"set -e; for name in $(seq -f '{PREFIX}%03g' 1 {count}); do {body}; done"


def write_wrangler_config(project: Path, refs: Sequence[DatabaseRef], migrations_dir: str) -> Path:
    """A wrangler.toml binding every database, so `wrangler d1 migrations apply NAME`
    finds each by name, as in a project that deploys per tenant."""
    lines = ['name = "d1deploy-bench-fleet"', 'compatibility_date = "2025-01-01"']
    for n, ref in enumerate(refs, 1):
        lines += [
            "",
            "[[d1_databases]]",
            f'binding = "DB_{n:03d}"',
            f'database_name = "{ref.name}"',
            f'database_id = "{ref.uuid}"',
            f'migrations_dir = "{migrations_dir}"',
        ]
    path = project / "wrangler.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- judging the databases -----------------------------------------------------------------

Shape = tuple[Any, tuple[tuple[str, int], ...]]


def _shape(state: tuple[Any, Any]) -> Shape:
    schema, data = state
    return schema, tuple((table, len(rows)) for table, rows in data)


def expected_shapes(paths: Sequence[Path]) -> list[Shape]:
    """Schema and row counts after 0, 1, ... len(paths) migrations, built by plain
    SQLite from the files. Row counts, not rows: the files fill a CURRENT_TIMESTAMP."""
    con = sqlite3.connect(":memory:")
    try:
        shapes = [_shape(fingerprint(con))]
        for path in paths:
            con.executescript(path.read_text(encoding="utf-8"))
            shapes.append(_shape(fingerprint(con)))
        return shapes
    finally:
        con.close()


def judge(state: DbState, migrations: Sequence[str], shapes: Sequence[Shape]) -> str:
    """ "complete", "partial" (a consistent prefix) or "half-migrated"."""
    k = len(state.ledger)
    consistent = (
        state.ledger == tuple(migrations[:k])
        and _shape(state.fingerprint) == shapes[k]
        and all(state.times_applied(m) == (1 if i < k else 0) for i, m in enumerate(migrations))
        and not state.torn_events
    )
    if not consistent:
        return "half-migrated"
    return "complete" if k == len(migrations) else "partial"


def census(emulator: D1Emulator, databases: Sequence[str], paths: Sequence[Path]) -> Census:
    """Read every database's file and judge it against the migration files."""
    migrations = [path.name for path in paths]
    shapes = expected_shapes(paths)
    found: dict[str, list[str]] = {"complete": [], "partial": [], "half-migrated": []}
    locked = []
    for name in databases:
        state = read_state(emulator.db_path(name))
        found[judge(state, migrations, shapes)].append(name)
        if state.lock is not None:
            locked.append(name)
    return Census(
        tuple(found["complete"]),
        tuple(found["partial"]),
        tuple(found["half-migrated"]),
        tuple(locked),
    )


def _require_complete(result: Census, count: int, what: str) -> None:
    """A run that did not migrate every database measured nothing worth comparing."""
    if len(result.complete) != count:
        wrong = [*result.half_migrated, *result.partial][:5]
        raise RuntimeError(
            f"{what} left {count - len(result.complete)} of {count} databases not fully"
            f" migrated (e.g. {', '.join(wrong)})"
        )


# -- the runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fleet:
    served: Served
    project: Path
    refs: tuple[DatabaseRef, ...]
    migrations: tuple[Path, ...]

    @property
    def names(self) -> list[str]:
        return [ref.name for ref in self.refs]

    def api_requests(self) -> int:
        return sum(1 for r in self.served.emulator.requests if r.path.startswith("/client/v4/"))


@contextmanager
def _fleet(opts: Options, count: int, migrations: int) -> Iterator[_Fleet]:
    """A fresh emulator with `count` fresh databases and the project's migrations.

    Snapshots are lazy: nothing here uses Time Travel beyond the bookmark, and copying
    every database after every write would spend the 2 cores on the emulator.
    """
    with serving(latency=opts.latency, snapshots=False) as served:
        project = served.root / "project"
        paths = write_migrations(project / "migrations", migrations)
        refs = tuple(served.emulator.create_database(name) for name in names(count))
        yield _Fleet(served, project, refs, tuple(paths))


def fleet_once(opts: Options, settings: FleetSettings, count: int, *extra: str) -> Timed:
    """The fleet migrate over `count` fresh databases (with `extra` options), checked
    database by database, then again with nothing pending."""
    with _fleet(opts, count, settings.migrations) as fleet:
        measured = checked(
            run_measured(
                fleet_argv(settings.concurrency, *extra),
                env=clean_env(fleet.served.env),
                cwd=fleet.project,
                timeout=LOOP_TIMEOUT,
            ),
            f"the fleet migrate of {count} databases",
        )
        counts = json.loads(measured.stdout).get("counts")
        if counts != {"ok": count, "failed": 0, "skipped": 0}:
            raise RuntimeError(f"the fleet migrate of {count} databases reported {counts}")
        result = census(fleet.served.emulator, fleet.names, fleet.migrations)
        _require_complete(result, count, "the fleet migrate")
        requests = fleet.api_requests()
        checked(
            run_measured(
                fleet_argv(settings.concurrency),
                env=clean_env(fleet.served.env),
                cwd=fleet.project,
                timeout=LOOP_TIMEOUT,
            ),
            f"the fleet migrate of {count} databases again, nothing pending",
        )
        return Timed(measured.seconds, requests, fleet.api_requests() - requests)


def loop_once(
    opts: Options, settings: FleetSettings, count: int, tool: WranglerTool | None = None
) -> Timed:
    """A sequential shell loop over `count` fresh databases: d1deploy, or wrangler when
    `tool` is given."""
    with _fleet(opts, count, settings.migrations) as fleet:
        env = clean_env(fleet.served.env)
        if tool is None:
            command = shlex.join(single_argv())
        else:
            write_wrangler_config(fleet.project, fleet.refs, "migrations")
            command = shlex.join(wrangler_argv(tool))
            env = tool.env(env, fleet.served.root)
        what = f"the sequential {'wrangler' if tool else 'd1deploy'} loop over {count} databases"
        measured = checked(
            run_measured(
                ["bash", "-c", loop_script(command, count)],
                env=env,
                cwd=fleet.project,
                timeout=LOOP_TIMEOUT,
            ),
            what,
        )
        if tool is None:
            result = census(fleet.served.emulator, fleet.names, fleet.migrations)
            _require_complete(result, count, what)
        else:
            # wrangler keeps no history to judge: its ledger must list every migration.
            short = [
                ref.name
                for ref in fleet.refs
                if count_rows(ref.path, LEDGER) != settings.migrations
            ]
            if short:
                raise RuntimeError(f"{what} left {len(short)} databases short, e.g. {short[0]}")
        return Timed(measured.seconds, fleet.api_requests())


def inject_faults(
    emulator: D1Emulator, refs: Sequence[DatabaseRef], migrations: int, seed: int
) -> Counter[str]:
    """One seeded fault per database (or none); returns how many drew each kind.

    Rules are tied to one database by its UUID in the path; `after` lets a few of that
    database's matching requests through first, so faults land at different steps.
    """
    rng = random.Random(seed)
    drawn: Counter[str] = Counter()
    for ref in refs:
        kind = rng.choice(FAULT_KINDS)
        drawn[kind] += 1
        query = rf"/database/{ref.uuid}/query$"
        # The request that applies migration k is the only one holding its CREATE TABLE.
        migration = f"CREATE TABLE t{rng.randint(1, migrations):03d} ("
        if kind == "429":
            emulator.faults.add(
                "POST",
                query,
                status=429,
                headers={"Retry-After": "1"},
                times=rng.randint(1, 2),
                after=rng.randrange(0, 4),
            )
        elif kind == "500-read":
            emulator.faults.add(
                "GET", rf"/database/{ref.uuid}/", status=500, times=rng.randint(1, 3)
            )
        elif kind in ("drop-before", "drop-after"):
            emulator.faults.add(
                "POST",
                query,
                body=migration,
                times=1,
                drop_before=kind == "drop-before",
                drop_after=kind == "drop-after",
            )
    return drawn


def fault_run(opts: Options, settings: FleetSettings) -> FaultOutcome:
    """The fleet under seeded faults, judged; then a clean re-run, judged again."""
    count = settings.databases
    with _fleet(opts, count, settings.migrations) as fleet:
        emulator = fleet.served.emulator
        env = clean_env(fleet.served.env)
        argv = fleet_argv(settings.concurrency)
        before = len(emulator.faults.rules)  # serving()'s own poll-hold rule is no fault
        drawn = inject_faults(emulator, fleet.refs, settings.migrations, settings.seed)
        first = run_measured(argv, env=env, cwd=fleet.project, timeout=LOOP_TIMEOUT)
        rules = emulator.faults.rules[before:]
        emulator.faults.clear()
        report = _fleet_report(first.stdout)
        failures = Counter(
            str((r.get("error") or {}).get("type"))
            for r in report.get("results", [])
            if r.get("status") == "failed"
        )
        after_faults = census(emulator, fleet.names, fleet.migrations)
        rerun = run_measured(argv, env=env, cwd=fleet.project, timeout=LOOP_TIMEOUT)
        return FaultOutcome(
            drawn=tuple(sorted(drawn.items())),
            rules=len(rules),
            fired=sum(1 for rule in rules if rule.fired),
            hits=sum(rule.fired for rule in rules),
            first=after_faults,
            first_exit=first.returncode,
            first_counts=_counts(report),
            first_seconds=first.seconds,
            rerun=census(emulator, fleet.names, fleet.migrations),
            rerun_exit=rerun.returncode,
            rerun_seconds=rerun.seconds,
            failures=tuple(sorted(failures.items())),
        )


def _fleet_report(stdout: str) -> dict[str, Any]:
    """The fleet's report from --json output; a failed run nests it under "report"."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    nested = data.get("report")
    return nested if isinstance(nested, dict) and "results" in nested else data


def _counts(report: dict[str, Any]) -> dict[str, int]:
    statuses = Counter(str(r.get("status")) for r in report.get("results", []))
    return {key: statuses[key] for key in ("ok", "failed", "skipped")}


# -- the benchmark ---------------------------------------------------------------------------


def run(opts: Options, settings: FleetSettings | None = None) -> list[Row]:
    """Measure the fleet, both loops and the fault run; return the rows."""
    settings = settings or FleetSettings()
    count = settings.databases
    subset = min(settings.wrangler_subset, count)
    tool = opts.wrangler
    for _ in range(opts.warmup):  # page cache, pyc files, node's bundle; small and untimed
        fleet_once(opts, settings, min(settings.concurrency, count))
        loop_once(opts, settings, 1)
        if tool is not None:
            loop_once(opts, settings, 1, tool)
    fleets = [fleet_once(opts, settings, count) for _ in range(opts.runs)]
    atomic = fleet_once(opts, settings, count, "--atomic")
    ours_loop = loop_once(opts, settings, count)
    theirs_loop = loop_once(opts, settings, subset, tool) if tool is not None else None
    faults = fault_run(opts, settings)
    return _rows(opts, settings, fleets, atomic, ours_loop, theirs_loop, faults)


def _rows(
    opts: Options,
    settings: FleetSettings,
    fleets: Sequence[Timed],
    atomic: Timed,
    ours_loop: Timed,
    theirs_loop: Timed | None,
    faults: FaultOutcome,
) -> list[Row]:
    count, c = settings.databases, settings.concurrency
    subset = min(settings.wrangler_subset, count)
    at = (
        f"{count} databases x {settings.migrations} migrations,"
        f" {opts.latency * 1000:.0f} ms/request"
    )
    fleet_time = median([t.seconds for t in fleets])
    fleet_requests = round(median([t.requests for t in fleets]))
    ours = f"{seconds_text(fleet_time)} (median of {len(fleets)}); {fleet_requests} API requests"
    setup = (
        f"# {count} fresh databases {PREFIX}001..{PREFIX}{count:03d} on one emulator per"
        f" run; migrations/0001..{settings.migrations:04d}_create_tNNN.sql"
    )
    fleet_cmd = display(fleet_argv(c), ENV_NAMES)
    ours_loop_cmd = loop_script(display(single_argv(), ENV_NAMES), count)
    speedup = ours_loop.seconds / fleet_time
    rows = [
        Row(
            bench="fleet",
            measure=f"wall time, {at}, `--concurrency {c}` vs a sequential d1deploy loop",
            d1deploy=ours,
            baseline=(
                f"{seconds_text(ours_loop.seconds)} (1 run over all {count});"
                f" {ours_loop.requests} API requests"
            ),
            ratio=fleet_time / ours_loop.seconds,
            target=f"≥ {TARGET_SPEEDUP:.0f}x faster (#8)",
            verdict=f"{verdict(speedup >= TARGET_SPEEDUP)} ({speedup:.1f}x faster)",
            produced_by=opts.invocation,
            commands=(setup, fleet_cmd, ours_loop_cmd),
            note=_fleet_note(opts, settings, fleet_time, fleet_requests, ours_loop),
        )
    ]
    if theirs_loop is not None and opts.wrangler is not None:
        scale = count / subset
        estimate = theirs_loop.seconds * scale
        measured = f"{seconds_text(theirs_loop.seconds)} over {subset}, 1 run"
        baseline = (
            f"≈ {seconds_text(estimate)} (extrapolated x{scale:.0f} from {measured})"
            if subset < count
            else f"{seconds_text(estimate)} (1 run over all {count})"
        )
        how = (
            f" The wrangler loop ran over the first {subset} of the {count} databases and was"
            f" scaled linearly by {count}/{subset}: each iteration is an independent process"
            " on its own database, so the per-database time does not depend on the count."
            if subset < count
            else ""
        )
        rows.append(
            Row(
                bench="fleet",
                measure=f"wall time, {at}, `--concurrency {c}` vs a sequential wrangler loop",
                d1deploy=ours,
                baseline=f"{baseline}; {theirs_loop.requests / subset:.1f} API requests/database",
                ratio=fleet_time / estimate,
                verdict=f"{estimate / fleet_time:.1f}x faster",
                produced_by=opts.invocation,
                commands=(
                    setup + "; wrangler.toml with one [[d1_databases]] entry per database",
                    fleet_cmd,
                    loop_script(
                        display(wrangler_argv(opts.wrangler), ENV_NAMES, wrangler.QUIET_ENV),
                        subset,
                    ),
                ),
                note=(
                    f"wrangler took {seconds_text(theirs_loop.seconds / subset)} per database,"
                    f" d1deploy alone {seconds_text(ours_loop.seconds / count)}." + how
                ),
            )
        )
    else:
        rows.append(
            Row(
                bench="fleet",
                measure=f"wall time, {at}, `--concurrency {c}` vs a sequential wrangler loop",
                d1deploy=ours,
                baseline=opts.wrangler_note,
                produced_by=opts.invocation,
                commands=(setup, fleet_cmd),
            )
        )
    rows += _rate_rows(opts, settings, fleets, atomic, setup)
    rows.append(_fault_row(opts, settings, faults, setup))
    return rows


PROJECTED = 10_000
"""The fleet size of the projection row (#19)."""
API_LIMIT = 1200
API_WINDOW = 300.0
"""Cloudflare's documented API limit: 1200 requests per 5 minutes per user."""


def _rate_rows(
    opts: Options, settings: FleetSettings, fleets: Sequence[Timed], atomic: Timed, setup: str
) -> list[Row]:
    """Requests per database with migrations pending and with none (default and
    `--atomic`), and what they mean for a large fleet under the account's rate limit
    (the list's pages aside)."""
    count, n = settings.databases, settings.migrations
    pending = (median([t.requests for t in fleets]) - 1) / count  # less the one list
    idle = (median([t.again for t in fleets]) - 1) / count
    at_once = (atomic.requests - 1) / count
    rate = API_LIMIT / API_WINDOW
    rows = []
    for mode, with_pending, without, extra, how in (
        (
            "default",
            pending,
            idle,
            (),
            "one request takes the lock and reads the ledger and schema, one fetches the"
            f" Time Travel bookmark, one applies the {n} migrations (as many as fit D1's"
            " limits, each verified right after it) and releases the lock",
        ),
        (
            "`--atomic`",
            at_once,
            (atomic.again - 1) / count,
            ("--atomic",),
            "one request takes the lock and reads the ledger and schema while the Time"
            " Travel bookmark is fetched beside it, one applies every migration and releases"
            " the lock",
        ),
    ):
        command = display(fleet_argv(settings.concurrency, *extra), ENV_NAMES)
        rows.append(
            Row(
                bench="fleet",
                measure=f"API requests per database, {mode}, {n} migrations pending / none pending",
                d1deploy=f"{with_pending:.1f} / {without:.1f}",
                target="≤ 3 / 1 (#19)",
                verdict=f"{verdict(with_pending <= 3)} / {verdict(without <= 1)}",
                produced_by=opts.invocation,
                commands=(setup, command, f"{command}  # again: nothing pending"),
                note=(
                    f"With migrations pending: {how}. With none pending: the one request that"
                    " reads everything, which takes the lock only when a migration is missing"
                    " from the ledger (with `--atomic` the bookmark fetched beside it is one"
                    " more). The databases come from the list (one request per 1000), not"
                    " a GET each."
                ),
            )
        )
    fleet_cmd = display(fleet_argv(settings.concurrency), ENV_NAMES)
    for label, per_db in (("pending", pending), ("none pending", idle)):
        hours = PROJECTED * per_db / rate / 3600
        rows.append(
            Row(
                bench="fleet",
                measure=f"projected wall time of a {PROJECTED:,}-database fleet under the"
                f" account's {API_LIMIT} requests / {API_WINDOW / 60:.0f} minutes, {label}",
                d1deploy=f"{hours * 60:.0f} min ({PROJECTED * per_db:,.0f} requests)",
                produced_by=opts.invocation,
                commands=(setup, fleet_cmd),
                note=(
                    f"From the measured {per_db:.1f} requests per database at the limit's"
                    f" {rate:g} requests/s ({PROJECTED:,} x {per_db:.1f} / {rate:g} s): the"
                    " rate limit, not latency or concurrency, bounds a fleet this size."
                ),
            )
        )
    return rows


def _fleet_note(
    opts: Options, settings: FleetSettings, seconds: float, requests: int, loop: Timed
) -> str:
    """What bounds the fleet's time: its requests over C connections, and the CPU."""
    count, c = settings.databases, settings.concurrency
    floor = requests * opts.latency / c
    return (
        f"The fleet lists the databases once and sends {(requests - 1) / count:.1f} requests"
        f" per database; at {opts.latency * 1000:.0f} ms each over {c} connections that"
        f" alone takes {seconds_text(floor)} of its {seconds_text(seconds)}; the rest is"
        " start-up and the client's and the emulator's CPU on the same 2 cores. The loop"
        f" pays a process start and a database lookup per database"
        f" ({seconds_text(loop.seconds / count)} each, {loop.requests / count:.1f} requests)."
        f" {requests} requests stay under the API's 1200 per 5 minutes, so the fleet's"
        " shared request budget never paused it."
        if requests <= 1200
        else f" {requests} requests exceed the API's 1200 per 5 minutes: the fleet's shared"
        " budget paced them, as it must on the real API."
    )


def _fault_row(opts: Options, settings: FleetSettings, faults: FaultOutcome, setup: str) -> Row:
    count = settings.databases
    half = len(faults.first.half_migrated) + len(faults.rerun.half_migrated)
    ok = half == 0 and len(faults.rerun.complete) == count and faults.rerun_exit == 0
    drawn = ", ".join(f"{kind} {n}" for kind, n in faults.drawn if kind != "none")
    failures = ", ".join(f"{kind} {n}" for kind, n in faults.failures) or "none"
    first = faults.first
    return Row(
        bench="fleet",
        measure=(
            f"databases left half-migrated under injected faults, {count} databases x"
            f" {settings.migrations} migrations, seed {settings.seed}"
        ),
        d1deploy=(
            f"{len(first.half_migrated)} after the faulted run, "
            f"{len(faults.rerun.half_migrated)} after the re-run; "
            f"{len(faults.rerun.complete)}/{count} fully migrated after the re-run"
        ),
        target="0 half-migrated (#8)",
        verdict=verdict(ok),
        produced_by=opts.invocation,
        commands=(
            f"{setup}; one seeded fault or none per database:"
            f" bench_fleet.inject_faults(emulator, databases, {settings.migrations},"
            f" seed={settings.seed})",
            display(fleet_argv(settings.concurrency), ENV_NAMES) + "  # faulted, then again",
        ),
        note=(
            f"Faults drawn per database: {drawn} ({faults.fired} of these {faults.rules}"
            f" rules fired, on {faults.hits} requests); the rest had none. The faulted run"
            f" (exit {faults.first_exit},"
            f" {seconds_text(faults.first_seconds)}) ended {faults.first_counts['ok']} ok,"
            f" {faults.first_counts['failed']} failed ({failures}),"
            f" {faults.first_counts['skipped']} skipped; its databases were"
            f" {len(first.complete)} complete, {len(first.partial)} on a consistent prefix"
            f" of the migrations, {len(first.half_migrated)} half-migrated, and"
            f" {len(first.locked)} held a lock. The clean re-run (exit {faults.rerun_exit},"
            f" {seconds_text(faults.rerun_seconds)}) continued where each stopped;"
            f" {len(faults.rerun.locked)} locks left after it. Half-migrated means the ledger,"
            " the schema and row counts of each table, and the history events disagree with"
            " every prefix of the migration files as plain SQLite applies them, or a history"
            " event is torn."
        ),
    )
