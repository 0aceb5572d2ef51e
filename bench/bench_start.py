"""Benchmark: CLI start-up, `d1deploy --version` and `--help` against `wrangler --version`.

Each command runs as a fresh subprocess, alternating, `opts.runs` times after the
warm-up; the median wall time is reported. It also records which heavy modules
(`httpx`, `rich`) the two d1deploy commands import, since lazy imports are what keep
them fast (issue #8).
"""

from __future__ import annotations

import json

from bench.harness import (
    WORK_DIR,
    Options,
    Row,
    checked,
    clean_env,
    d1deploy_argv,
    display,
    median,
    run_measured,
    seconds_text,
    venv_python,
    verdict,
)
from bench.wrangler import QUIET_ENV

TARGET_SECONDS = 0.150
TARGET_TIMES_BARE = 5
HEAVY_MODULES = ("httpx", "rich")

# Runs the real entry point in-process, then reports which heavy modules got loaded.
_PROBE = """
import json, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["d1deploy", *args]
from d1deploy.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("HEAVY=" + json.dumps([m for m in heavy if m in sys.modules]) + "\\n")
"""


def heavy_imports(args: list[str]) -> list[str]:
    """The heavy modules `d1deploy ARGS` imports before it exits."""
    argv = [venv_python(), "-c", _PROBE, json.dumps(args), json.dumps(HEAVY_MODULES)]
    # Not from the repository root, whose d1deploy/ would shadow the installed one.
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    proc = checked(
        run_measured(argv, env=clean_env(), cwd=WORK_DIR),
        f"import probe for d1deploy {' '.join(args)}",
    )
    for line in proc.stderr.splitlines():
        if line.startswith("HEAVY="):
            found: list[str] = json.loads(line[len("HEAVY=") :])
            return found
    raise RuntimeError(f"the import probe printed no result: {proc.stderr[-500:]}")


def run(opts: Options) -> list[Row]:
    env = clean_env()
    commands = {
        "python": [venv_python(), "-c", "pass"],
        "version": [*d1deploy_argv(), "--version"],
        "help": [*d1deploy_argv(), "--help"],
    }
    tool = opts.wrangler
    if tool is not None:
        commands["wrangler"] = tool.argv("--version")
    times: dict[str, list[float]] = {name: [] for name in commands}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for attempt in range(opts.warmup + opts.runs):
        for name, argv in commands.items():
            run_env = tool.env(env, WORK_DIR) if name == "wrangler" and tool else env
            measured = checked(run_measured(argv, env=run_env, cwd=WORK_DIR), display(argv))
            if attempt >= opts.warmup:
                times[name].append(measured.seconds)
    medians = {name: median(values) for name, values in times.items()}
    theirs = medians.get("wrangler")
    runs = f"median of {opts.runs}"
    baseline = f"`wrangler --version` {seconds_text(theirs)} ({runs})" if theirs else None
    rows = []
    bare = medians["python"]
    for name in ("version", "help"):
        ours = medians[name]
        met = ours <= TARGET_SECONDS and ours <= TARGET_TIMES_BARE * bare
        heavy = heavy_imports([f"--{name}"])
        loads = ", ".join(heavy) if heavy else "neither httpx nor rich"
        rows.append(
            Row(
                bench="start",
                measure=f"`d1deploy --{name}` wall time (imports: {loads})",
                d1deploy=f"{seconds_text(ours)} ({runs})",
                baseline=baseline or opts.wrangler_note,
                ratio=ours / theirs if theirs else None,
                target=f"≤ 150 ms and ≤ {TARGET_TIMES_BARE}x bare python (#19)",
                verdict=f"{verdict(met)} ({ours / bare:.1f}x bare python)",
                produced_by=opts.invocation,
                commands=tuple(
                    display(commands[key], env=QUIET_ENV if key == "wrangler" else None)
                    for key in (name, "wrangler")
                    if key in commands
                ),
                note=(
                    f"A bare `python -c pass` takes {seconds_text(medians['python'])} here; the"
                    f" remaining {seconds_text(max(ours - medians['python'], 0.0))} is"
                    " d1deploy's imports and argument parsing (the fresh venv's versions are in"
                    " the machine section)."
                ),
            )
        )
    return rows
