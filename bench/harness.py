"""The benchmark harness's shared parts: options, result rows, timed subprocesses, the
emulator on loopback, the machine description, and writing `bench/RESULTS.md`.

Benchmarks (`bench_*.py`) build on these and return `Row`s; `__main__.py` runs them.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.emulator import D1Emulator

if TYPE_CHECKING:
    from bench.wrangler import WranglerTool

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"  # git-ignored: wrangler's npm install lives here
RESULTS_PATH = BENCH_DIR / "RESULTS.md"
ORDER = ("migrate", "fleet", "start", "backup", "split", "schema")
LOAD_KEY = "load average (1 min) before / after"
VENV_KEY = "fresh venv resolved"
# Machine facts that do not make rows incomparable: the commit, the load, and the tools'
# versions (a row of a benchmark that is not rerun keeps the note of when it ran).
_VOLATILE = ("commit", LOAD_KEY, VENV_KEY, "wrangler", "node (for wrangler)")

# Shown in place of the per-run port and temporary paths, so commands read the same
# from one run to the next.
EMULATOR_ENV = {
    "CLOUDFLARE_API_BASE_URL": "http://127.0.0.1:<port>/client/v4",
    "CLOUDFLARE_API_TOKEN": "<token>",
    "CLOUDFLARE_ACCOUNT_ID": "<account>",
}
# Variables of the caller's shell that would point a run somewhere else.
_SCRUBBED_PREFIXES = ("CLOUDFLARE_", "CF_", "D1DEPLOY_", "WRANGLER_")


@dataclass(frozen=True)
class Options:
    """What one `python -m bench` invocation asked for.

    `wrangler` is None when wrangler is unavailable or not wanted; `wrangler_note`
    then says why (it goes into the baseline column).
    """

    runs: int = 5
    warmup: int = 1  # untimed runs first: page cache, node's bundle, pyc files
    latency: float = 0.05
    quick: bool = False
    wrangler: WranglerTool | None = None
    wrangler_note: str = "wrangler not requested"
    invocation: str = "python -m bench"


@dataclass(frozen=True)
class Row:
    """One line of the results table: d1deploy's figure, the baseline's, their ratio."""

    bench: str
    measure: str
    d1deploy: str
    baseline: str = "—"
    ratio: float | None = None
    target: str = "—"
    verdict: str = "—"
    produced_by: str = ""
    commands: tuple[str, ...] = ()
    note: str = ""  # what limits the figure, worked out from the measurements

    def line(self) -> str:
        """The row as one console line."""
        parts = [f"[{self.bench}] {self.measure}: d1deploy {self.d1deploy}"]
        if self.baseline != "—":
            parts.append(f"baseline {self.baseline}")
        if self.ratio is not None:
            parts.append(f"ratio {self.ratio:.2f}x")
        if self.target != "—":
            parts.append(f"target {self.target}: {self.verdict}")
        line = " | ".join(parts)
        return f"{line}\n    note: {self.note}" if self.note else line


@dataclass(frozen=True)
class Measured:
    """One finished subprocess: wall time, its own peak RSS, exit status and output."""

    seconds: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Served:
    """An emulator serving on loopback, with the environment a client needs."""

    emulator: D1Emulator
    base_url: str
    root: Path
    env: Mapping[str, str] = field(default_factory=dict)


def run_measured(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 600
) -> Measured:
    """Run `argv` to completion; time it and track its peak RSS.

    The peak is the child's own `VmHWM` from /proc, read until it exits: `ru_maxrss`
    from wait4 would include the memory of this (bigger) parent, because Linux carries
    the pre-exec high-water mark of a forked child over into its rusage. Output goes to
    files, so a chatty child never blocks on a full pipe while we wait.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=out, stderr=err)
        status = Path(f"/proc/{proc.pid}/status")
        peak_kib = 0
        while proc.poll() is None:
            # The last reading wins: the high-water mark only grows after exec, while an
            # early reading may still see the parent's memory (before exec).
            peak_kib = _high_water_kib(status) or peak_kib
            if time.perf_counter() - started > timeout:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{shlex.join(argv)} ran longer than {timeout:.0f} s")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Measured(
            seconds=seconds,
            max_rss_mb=peak_kib / 1024,
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def _high_water_kib(status: Path) -> int:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass  # gone already, or a zombie without memory
    return 0


def checked(measured: Measured, what: str) -> Measured:
    """`measured`, or a RuntimeError quoting the output tail when it failed."""
    if measured.returncode != 0:
        tail = (measured.stderr or measured.stdout)[-1500:]
        raise RuntimeError(f"{what} exited {measured.returncode}:\n{tail}")
    return measured


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def seconds_text(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


_VENV: Path | None = None
"""The fresh virtual environment d1deploy was installed into for this run, if any."""

DEPENDENCIES = ("click", "httpx", "rich")
"""Whose versions the machine section records: what a fresh install resolves today
decides start-up (typer 0.29, the CLI layer before Click, alone imported in ~84 ms), not
what happened to be here."""


def fresh_venv(path: Path) -> dict[str, str]:
    """Install d1deploy into a new virtual environment at `path` (removed first), as a
    user's `pip install` does (not editable, no dev extra), and measure d1deploy from it
    from now on. Returns the resolved versions of Python and `DEPENDENCIES`.

    :raises RuntimeError: the venv or the install failed.
    """
    global _VENV
    shutil.rmtree(path, ignore_errors=True)
    python = path / "bin" / "python"
    for argv in (
        [sys.executable, "-m", "venv", str(path)],
        [str(python), "-m", "pip", "install", "-q", "--no-cache-dir", str(REPO_ROOT)],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed: {(proc.stderr or proc.stdout)[-800:]}")
    _VENV = path
    probe = """
import importlib.metadata as m, json, platform, sys
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "not installed"
print(json.dumps({"Python": platform.python_version(), **{n: version(n) for n in sys.argv[1:]}}))
"""
    out = subprocess.run(
        [str(python), "-c", probe, *DEPENDENCIES],
        capture_output=True,
        text=True,
        check=True,
        cwd=path,
    ).stdout
    versions: dict[str, str] = json.loads(out)
    return versions


def venv_python() -> str:
    """The Python d1deploy runs on: the fresh venv's, else this one."""
    return str(_VENV / "bin" / "python") if _VENV else sys.executable


def d1deploy_argv() -> list[str]:
    """How to start the installed d1deploy: its console script beside the Python it was
    installed for (the fresh venv's, when there is one).

    Calling the script directly skips shims (pyenv's cost ~100 ms per call), so the
    start-up measured is d1deploy's own.
    """
    script = Path(venv_python()).parent / "d1deploy"
    return [str(script)] if script.is_file() else [venv_python(), "-m", "d1deploy"]


def d1deploy_has(*commands: str) -> bool:
    """True when `d1deploy --help` lists every one of `commands`."""
    proc = subprocess.run(
        [*d1deploy_argv(), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")}
    return all(name in listed for name in commands)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without Cloudflare/d1deploy settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    # Loopback only: never let a proxy setting route the benchmark's traffic elsewhere.
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def display(
    argv: Sequence[str], env_names: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> str:
    """`argv` as a shell line: the emulator variables named, then `env`, in front; the
    program by its name, paths inside the repository relative to its root."""
    shown = [Path(argv[0]).name, *(_relative(arg) for arg in argv[1:])]
    pairs = [f"{name}={EMULATOR_ENV[name]}" for name in env_names]
    pairs += [f"{name}={shlex.quote(value)}" for name, value in (env or {}).items()]
    return " ".join([*pairs, shlex.join(shown)])


def _relative(arg: str) -> str:
    path = Path(arg)
    if path.is_absolute() and path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    return arg


@contextmanager
def serving(
    *,
    latency: float,
    poll_hold: float = 0.1,
    export_polls: int = 1,
    snapshots: bool = True,
    emulator_class: type[D1Emulator] = D1Emulator,
) -> Iterator[Served]:
    """An emulator on 127.0.0.1 in a temporary directory, removed afterwards.

    `poll_hold` delays every export/import poll reply: wrangler's poll loops do not
    sleep, so an emulator answering at once would reward busy polling (real D1 takes
    its time too).
    """
    with tempfile.TemporaryDirectory(prefix="d1deploy-bench-") as tmp:
        root = Path(tmp)
        emulator = emulator_class(
            root / "emulator", latency=latency, export_polls=export_polls, snapshots=snapshots
        )
        if poll_hold > 0:
            emulator.faults.add("POST", r"/(export|import)$", body=_is_poll, delay=poll_hold)
        try:
            with emulator.serve() as base_url:
                env = {
                    "CLOUDFLARE_API_BASE_URL": base_url,
                    "CLOUDFLARE_API_TOKEN": emulator.token,
                    "CLOUDFLARE_ACCOUNT_ID": emulator.account_id,
                }
                yield Served(emulator, base_url, root, env)
        finally:
            emulator.close()


def _is_poll(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    return body.get("current_bookmark") is not None or body.get("action") == "poll"


def count_rows(db_file: Path, table: str) -> int:
    """Rows in `table` of an emulated database's SQLite file (read-only)."""
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


# -- the machine -------------------------------------------------------------------------------


def machine_info(wrangler: WranglerTool | None) -> dict[str, str]:
    """What the numbers were measured on, for the head of RESULTS.md."""
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "d1deploy": _first_line([*d1deploy_argv(), "--version"]),
        "wrangler": wrangler.version if wrangler else "not available",
        "node (for wrangler)": wrangler.node_version if wrangler else "not available",
        "curl": _first_line(["curl", "--version"]).split(" (")[0],
        "commit": _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except OSError:
        return "not available"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if proc.returncode == 0 and lines else "not available"


# -- RESULTS.md --------------------------------------------------------------------------------

_DATA_MARK = "<!-- bench-data "


def write_results(path: Path, rows: Sequence[Row], machine: Mapping[str, str]) -> list[Row]:
    """Write the table to `path`; return every row it now shows.

    Rows of benchmarks not run this time are kept from the previous file when it was
    measured on the same machine, so `python -m bench split` does not erase the rest.
    The previous rows are read back from a JSON comment at the end of the file.
    """
    ran = {row.bench for row in rows}
    kept = [row for row in _previous_rows(path, machine) if row.bench not in ran]
    every = sorted([*kept, *rows], key=lambda row: ORDER.index(row.bench))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# d1deploy benchmarks",
        "",
        "Generated by `python -m bench` (see `bench/README.md`); do not edit by hand.",
        f"Last written {when}. Times are medians over the runs stated; every subprocess",
        "talks to the D1 emulator (`tests/emulator`) on 127.0.0.1.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        "## Results",
        "",
        "| Benchmark | Measure | d1deploy | Baseline | Ratio | Target | Met | Produced by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in every:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}x"
        cells = [row.bench, row.measure, row.d1deploy, row.baseline, ratio, row.target]
        cells.append(row.verdict)
        cells.append(f"`{row.produced_by}`")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    notes = [row for row in every if row.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{row.bench}: {row.measure}**: {row.note}" for row in notes]
    lines += ["", "## Commands measured", ""]
    for row in every:
        lines.append(f"**{row.bench}: {row.measure}**")
        lines.append("")
        lines += [f"    {command}" for command in row.commands]
        lines.append("")
    data = {"machine": dict(machine), "rows": [asdict(row) for row in every]}
    lines.append(_DATA_MARK + json.dumps(data, ensure_ascii=False) + " -->")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return every


def _previous_rows(path: Path, machine: Mapping[str, str]) -> list[Row]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    start = text.rfind(_DATA_MARK)
    if start == -1:
        return []
    try:
        data = json.loads(text[start + len(_DATA_MARK) :].rsplit(" -->", 1)[0])
        same = {k: v for k, v in data["machine"].items() if k not in _VOLATILE} == {
            k: v for k, v in machine.items() if k not in _VOLATILE
        }
        if not same:
            return []
        return [
            Row(**{**raw, "commands": tuple(raw["commands"])})
            for raw in data["rows"]
            if raw.get("bench") in ORDER
        ]
    except (ValueError, KeyError, TypeError):
        return []
