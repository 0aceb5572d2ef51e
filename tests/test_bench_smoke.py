"""Smoke test of the benchmark harness on tiny sizes: it runs end to end and produces
well-formed rows. Never asserts on timings (those are for `python -m bench`)."""

from __future__ import annotations

import sqlite3
import sys
import tomllib
from pathlib import Path

import pytest

from bench import bench_backup, bench_migrate, bench_start, wrangler
from bench.__main__ import benchmarks, parse, split_rows
from bench.harness import ORDER, Options, Row, checked, run_measured, write_results

OPTS = Options(runs=1, warmup=0, latency=0.0, wrangler_note="wrangler skipped in tests")


def test_migrate_deploys_and_counts_requests() -> None:
    rows = bench_migrate.run(OPTS, migrations=3)
    assert [row.bench for row in rows] == ["migrate"] * 3
    requests = rows[1]
    assert int(requests.d1deploy) > 3  # at least one request per migration
    assert requests.baseline == "wrangler skipped in tests" and requests.ratio is None
    assert "download" in rows[2].d1deploy
    assert all("d1deploy migrate" in row.commands[1] for row in rows)


def test_backup_measures_throughput_and_rss() -> None:
    rows = bench_backup.run(OPTS, size_mb=1)
    assert [row.bench for row in rows] == ["backup", "backup"]
    assert "MB/s" in rows[0].d1deploy
    assert rows[1].verdict in ("yes", "**no**")
    assert "d1deploy backup -d bench-backup" in rows[0].commands[0]


def test_fill_writes_quotes_unicode_and_blobs(tmp_path: Path) -> None:
    size = bench_backup.fill(tmp_path / "db.sqlite", 1)
    assert size > 500_000
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        author, blob = conn.execute("SELECT author, attachment FROM messages").fetchone()
    conn.close()
    assert "it's 홍길동" in author and isinstance(blob, bytes) and len(blob) == 512


def test_start_and_split_rows() -> None:
    start = bench_start.run(OPTS)
    assert [row.measure.split("`")[1] for row in start] == ["d1deploy --version", "d1deploy --help"]
    assert bench_start.heavy_imports(["--version"]) == []
    (split,) = split_rows(OPTS, 1)
    assert split.bench == "split" and "MB/s" in split.d1deploy


def test_run_measured_reports_the_childs_own_peak_memory(tmp_path: Path) -> None:
    code = "import time; block = bytearray(60_000_000); time.sleep(0.1); print('done')"
    measured = checked(run_measured([sys.executable, "-c", code], env={}, cwd=tmp_path), "probe")
    assert measured.stdout.strip() == "done"
    assert 60 <= measured.max_rss_mb < 200
    failed = run_measured([sys.executable, "-c", "raise SystemExit(3)"], env={}, cwd=tmp_path)
    with pytest.raises(RuntimeError, match="exited 3"):
        checked(failed, "failing probe")


def test_results_keep_other_benchmarks_from_the_same_machine(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    machine = {"CPU": "test", "commit": "a"}
    first = [
        Row("migrate", "wall", "1 s", "2 s", 0.5, produced_by="python -m bench", commands=("x",)),
        Row("split", "speed", "9 MB/s", produced_by="python -m bench"),
    ]
    write_results(out, first, machine)
    rows = write_results(out, [Row("split", "speed", "10 MB/s")], {**machine, "commit": "b"})
    assert [(row.bench, row.d1deploy) for row in rows] == [("migrate", "1 s"), ("split", "10 MB/s")]
    text = out.read_text()
    assert "| migrate | wall | 1 s | 2 s | 0.50x |" in text and "`python -m bench`" in text
    assert "- CPU: test" in text
    assert write_results(out, [first[1]], {"CPU": "other"}) == [first[1]]


def test_migrations_and_wrangler_config(tmp_path: Path) -> None:
    paths = bench_migrate.write_migrations(tmp_path / "migrations", 12)
    assert [p.name for p in paths][:2] == ["0001_create_t001.sql", "0002_create_t002.sql"]
    config = wrangler.write_config(tmp_path, name="db", uuid="u-1", migrations_dir="migrations")
    (entry,) = tomllib.loads(config.read_text())["d1_databases"]
    assert entry == {
        "binding": "DB",
        "database_name": "db",
        "database_id": "u-1",
        "migrations_dir": "migrations",
    }
    assert wrangler.find(tmp_path) is None
    tool, note = wrangler.ensure(tmp_path, install=False)
    assert tool is None and "not installed" in note


def test_command_line() -> None:
    assert list(benchmarks(quick=True)) == list(ORDER)
    args = parse(["migrate", "split", "--runs", "2", "--latency", "0"])
    assert (args.which, args.runs, args.latency, args.quick) == (["migrate", "split"], 2, 0, False)
    assert parse([]).which == ["all"]
    with pytest.raises(SystemExit):
        parse(["fleet"])
    with pytest.raises(SystemExit):
        parse(["--runs", "0"])
