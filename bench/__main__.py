"""`python -m bench [all|migrate|fleet|start|backup|split|schema] [--runs N] [--latency S]
[--quick]`.

Runs the chosen benchmarks against the D1 emulator on loopback, prints each row as its
benchmark finishes, and writes the table to `bench/RESULTS.md` (or `--output`).
Run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

# `tests.emulator` and `bench` are imported as packages of the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    bench_backup,
    bench_fleet,
    bench_migrate,
    bench_schema,
    bench_split,
    bench_start,
    wrangler,
)
from bench.harness import (
    LOAD_KEY,
    ORDER,
    RESULTS_PATH,
    VENV_KEY,
    WORK_DIR,
    Options,
    Row,
    d1deploy_has,
    fresh_venv,
    machine_info,
    write_results,
)

QUICK = {"backup_mb": 50, "split_mb": 10, "runs": 3, "databases": 24}
FULL = {"backup_mb": 500, "split_mb": 100, "runs": 5, "databases": 200}
MIGRATIONS = 30
NEEDS_COMMAND = {"migrate": "migrate", "fleet": "migrate", "backup": "backup"}
NEEDS_WRANGLER = ("migrate", "fleet", "start")
FRESH_VENV = WORK_DIR / "venv"


def split_rows(opts: Options, size_mb: int) -> list[Row]:
    """Time `sqlsplit.split` on a generated dump (bench/bench_split.py)."""
    result = bench_split.run(size_mb)
    return [
        Row(
            bench="split",
            measure=f"`sqlsplit.split` of a {result['mb']:.0f} MB D1 dump",
            d1deploy=f"{result['mb_per_s']:.1f} MB/s ({result['seconds']:.2f} s, median of 3)",
            produced_by=opts.invocation,
            commands=(
                f"python -c 'from bench import bench_split; print(bench_split.run({size_mb}))'",
            ),
        )
    ]


def benchmarks(
    quick: bool, fleet: bench_fleet.FleetSettings | None = None
) -> dict[str, Callable[[Options], list[Row]]]:
    sizes = QUICK if quick else FULL
    fleet = fleet or bench_fleet.FleetSettings(databases=sizes["databases"])
    return {
        "migrate": lambda o: bench_migrate.run(o, migrations=MIGRATIONS),
        "fleet": lambda o: bench_fleet.run(o, fleet),
        "start": bench_start.run,
        "backup": lambda o: bench_backup.run(o, size_mb=sizes["backup_mb"]),
        "split": lambda o: split_rows(o, sizes["split_mb"]),
        "schema": bench_schema.run,
    }


def fleet_settings(args: argparse.Namespace) -> bench_fleet.FleetSettings:
    """The fleet's shape from the command line."""
    return bench_fleet.FleetSettings(
        databases=args.databases or (QUICK if args.quick else FULL)["databases"],
        concurrency=args.concurrency,
        wrangler_subset=args.wrangler_subset,
        seed=args.seed,
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    # Checked by hand: Python 3.11's argparse rejects an empty `nargs="*"` with choices.
    parser.add_argument("which", nargs="*", help=f"all (default) or any of {', '.join(ORDER)}")
    parser.add_argument("--runs", type=int, help="timed runs per measure (default 5; quick 3)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API request")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    parser.add_argument("--no-wrangler", action="store_true", help="skip the wrangler baseline")
    parser.add_argument(
        "--no-fresh-venv",
        action="store_true",
        help="measure the d1deploy beside this Python instead of a fresh install",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="the Markdown file")
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--databases", type=int, help="fleet size (default 200; quick 24)")
    fleet.add_argument("--concurrency", type=int, default=8, help="fleet: databases at once")
    fleet.add_argument(
        "--wrangler-subset",
        type=int,
        default=20,
        help="fleet: databases the sequential wrangler loop runs over (then extrapolated)",
    )
    fleet.add_argument("--seed", type=int, default=1, help="fleet: seed of the injected faults")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    for name in ("databases", "concurrency", "wrangler_subset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.which = args.which or ["all"]
    unknown = [name for name in args.which if name not in ("all", *ORDER)]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from all, {', '.join(ORDER)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = parse(given)
    chosen = [name for name in ORDER if "all" in args.which or name in args.which]
    runs = args.runs or (QUICK if args.quick else FULL)["runs"]
    opts = Options(
        runs=runs,
        latency=args.latency,
        quick=args.quick,
        invocation=shlex.join(["python", "-m", "bench", *given]),
    )
    if any(name in NEEDS_WRANGLER for name in chosen):
        if args.no_wrangler:
            opts = replace(opts, wrangler_note="wrangler skipped (--no-wrangler)")
        else:
            print("Looking for wrangler (tests/realtools.py installs it if missing)...")
            tool, note = wrangler.real_tools()
            print(note)
            opts = replace(opts, wrangler=tool, wrangler_note=note)
    versions: dict[str, str] = {}
    if not args.no_fresh_venv:
        # What a user gets today: a fresh install resolves the newest dependencies.
        print(f"Installing d1deploy into a fresh venv ({FRESH_VENV})...", flush=True)
        versions = fresh_venv(FRESH_VENV)
        print(", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    failed = []
    for name in chosen:
        command = NEEDS_COMMAND.get(name)
        if command and not d1deploy_has(command):
            print(f"[{name}] skipped: `d1deploy {command}` is not available yet")
            continue
        started = time.perf_counter()
        print(f"[{name}] running...", flush=True)
        try:
            produced = benchmarks(args.quick, fleet_settings(args))[name](opts)
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"[{name}] FAILED: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        for row in produced:
            print(row.line(), flush=True)
        print(f"[{name}] done in {time.perf_counter() - started:.0f} s", flush=True)
        rows += produced
    if rows:
        machine = machine_info(opts.wrangler)
        machine[VENV_KEY] = (
            ", ".join(f"{k} {v}" for k, v in versions.items())
            if versions
            else "none (--no-fresh-venv: the running interpreter's packages)"
        )
        # Other work on the machine slows every figure; ratios suffer less (side by side).
        machine[LOAD_KEY] = f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"
        write_results(args.output, rows, machine)
        print(f"Wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
