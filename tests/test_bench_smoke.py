"""Smoke test of the benchmark harness on tiny sizes: it runs end to end and produces
well-formed rows. Never asserts on timings (those are for `python -m bench`)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench import bench_backup, bench_fleet, bench_migrate, bench_schema, bench_start, wrangler
from bench.__main__ import benchmarks, fleet_settings, parse, split_rows
from bench.harness import ORDER, Options, Row, checked, run_measured, write_results
from tests.e2e.states import read_state
from tests.emulator import D1Emulator

OPTS = Options(runs=1, warmup=0, latency=0.0, wrangler_note="wrangler skipped in tests")


def test_migrate_deploys_and_counts_requests() -> None:
    rows = bench_migrate.run(OPTS, migrations=3)
    assert [row.bench for row in rows] == ["migrate"] * 5
    wall, requests, atomic, atomic_requests, backup = rows
    assert requests.baseline == "wrangler skipped in tests" and requests.ratio is None
    # The three migrations share one request, with --atomic or without: the lookup, the
    # lock and ledger read, the bookmark, the migrations.
    assert int(requests.d1deploy) == int(atomic_requests.d1deploy) == 4
    assert f"{atomic_requests.d1deploy} API requests" in atomic.d1deploy
    assert atomic.target == "≤ 0.3x (#19)" and atomic.verdict == "no baseline"
    assert "With no latency at all" in atomic.note
    assert "--atomic" in atomic.commands[1] and "--atomic" not in wall.commands[1]
    assert "download" in backup.d1deploy
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


def test_schema_counts_requests_with_the_comparison_on_and_off() -> None:
    rows = bench_schema.run(OPTS, migrations_count=2, tables_per=3)
    assert [row.bench for row in rows] == ["schema"] * 5
    migrate_requests, migrate_time, status_requests, status_time, adopted = rows
    for requests in (migrate_requests, status_requests):
        assert requests.target == "< 1 request added (#16)"
        assert requests.verdict.startswith("yes")  # the comparison reads nothing more
        assert "with the comparison off" in requests.baseline
    for timed in (migrate_time, status_time):
        assert "6 tables (2 migrations applied, 1 pending)" in timed.measure
        assert timed.note.startswith("The comparison adds")
    assert "1 API requests" in adopted.d1deploy


def test_command_line() -> None:
    assert list(benchmarks(quick=True)) == list(ORDER)
    args = parse(["migrate", "split", "--runs", "2", "--latency", "0"])
    assert (args.which, args.runs, args.latency, args.quick) == (["migrate", "split"], 2, 0, False)
    assert parse([]).which == ["all"]
    assert fleet_settings(parse(["fleet"])) == bench_fleet.FleetSettings(databases=200)
    assert fleet_settings(parse(["fleet", "--quick"])).databases == 24
    fleet = fleet_settings(
        parse(["fleet", "--databases", "9", "--concurrency", "3", "--seed", "7"])
    )
    assert (fleet.databases, fleet.concurrency, fleet.seed) == (9, 3, 7)
    for wrong in (["nope"], ["--runs", "0"], ["fleet", "--databases", "0"]):
        with pytest.raises(SystemExit):
            parse(wrong)


def test_fleet_measures_both_loops_and_a_fault_run() -> None:
    settings = bench_fleet.FleetSettings(databases=3, concurrency=2, seed=4)  # one drop-before
    fleet, loop_of_wrangler, requests, atomic, *projected, faults = bench_fleet.run(OPTS, settings)
    assert [fleet.bench, loop_of_wrangler.bench, faults.bench] == ["fleet"] * 3
    # With nothing pending, a database costs the one request that reads everything.
    assert requests.d1deploy.endswith(" / 1.0") and "≤ 3 / 1" in requests.target
    assert "`--atomic`" in atomic.measure and "--atomic" in atomic.commands[1]
    assert [p.measure.split(",")[-1] for p in projected] == [" pending", " none pending"]
    assert all("10,000-database fleet" in p.measure for p in projected)
    assert fleet.ratio is not None and "x faster" in fleet.verdict
    assert "--databases-matching 'fleet-*' --concurrency 2" in fleet.commands[1]
    assert "seq -f 'fleet-%03g' 1 3" in fleet.commands[2]
    assert 'migrate -d "$name" --no-backup' in fleet.commands[2]
    assert loop_of_wrangler.baseline == "wrangler skipped in tests"
    assert faults.d1deploy.startswith("0 after the faulted run, 0 after the re-run; 3/3")
    assert faults.verdict == "yes" and "rules fired" in faults.note


def _migrated_file(tmp_path: Path, applied: int, torn: bool = False) -> Path:
    """A database as d1deploy leaves it after `applied` of 3 migrations, by plain SQLite."""
    paths = bench_migrate.write_migrations(tmp_path / "migrations", 3)
    path = tmp_path / f"db-{len(list(tmp_path.glob('*.sqlite')))}.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE d1_migrations (id INTEGER PRIMARY KEY, name TEXT)")
        history = (
            "CREATE TABLE _d1deploy_history (id INTEGER PRIMARY KEY, name, event, duration_ms)"
        )
        con.execute(history)
        for p in paths[:applied]:
            con.executescript(p.read_text())
            con.execute("INSERT INTO d1_migrations (name) VALUES (?)", (p.name,))
            done = "INSERT INTO _d1deploy_history (name, event, duration_ms) VALUES (?, 'apply', 1)"
            con.execute(done, (p.name,))
        if torn:
            started = "INSERT INTO _d1deploy_history (name, event) VALUES (?, 'apply')"
            con.execute(started, (paths[applied].name,))
    con.close()
    return path


def test_judge_tells_a_consistent_prefix_from_a_half_migrated_database(tmp_path: Path) -> None:
    paths = bench_migrate.write_migrations(tmp_path / "migrations", 3)
    shapes = bench_fleet.expected_shapes(paths)
    names = [p.name for p in paths]

    def judged(path: Path) -> str:
        return bench_fleet.judge(read_state(path), names, shapes)

    assert judged(_migrated_file(tmp_path, 3)) == "complete"
    assert judged(_migrated_file(tmp_path, 1)) == "partial"
    assert judged(_migrated_file(tmp_path, 0)) == "partial"
    assert judged(_migrated_file(tmp_path, 2, torn=True)) == "half-migrated"
    missing_index = _migrated_file(tmp_path, 2)
    with sqlite3.connect(missing_index) as con:
        con.execute("DROP INDEX idx_t002_name")
    con.close()
    assert judged(missing_index) == "half-migrated"
    unrecorded = _migrated_file(tmp_path, 1)
    with sqlite3.connect(unrecorded) as con:
        con.executescript(paths[1].read_text())  # applied, but not in the ledger
    con.close()
    assert judged(unrecorded) == "half-migrated"


def test_faults_are_seeded_and_tied_to_one_database(tmp_path: Path) -> None:
    emulator = D1Emulator(tmp_path / "emulator")
    try:
        refs = [emulator.create_database(name) for name in bench_fleet.names(40)]
        drawn = bench_fleet.inject_faults(emulator, refs, 3, seed=5)
        again = D1Emulator(tmp_path / "again")
        try:
            other = [again.create_database(name) for name in bench_fleet.names(40)]
            assert bench_fleet.inject_faults(again, other, 3, seed=5) == drawn
        finally:
            again.close()
    finally:
        emulator.close()
    assert sum(drawn.values()) == 40 and drawn["none"] < 40
    assert len(emulator.faults.rules) == 40 - drawn["none"]
    uuids = {ref.uuid for ref in refs}
    assert all(any(u in rule.path for u in uuids) for rule in emulator.faults.rules)


def test_fleet_loops_and_wrangler_config(tmp_path: Path) -> None:
    script = bench_fleet.loop_script("tool apply @NAME@ --remote", 3)
    assert script.endswith('do tool apply "$name" --remote; done')
    echoed = ["bash", "-c", script.replace("tool", "echo")]
    listed = subprocess.run(echoed, capture_output=True, text=True, check=True).stdout.split()
    assert listed == [w for n in bench_fleet.names(3) for w in ("apply", n, "--remote")]
    emulator = D1Emulator(tmp_path / "emulator")
    try:
        refs = [emulator.create_database(name) for name in bench_fleet.names(2)]
    finally:
        emulator.close()
    config = bench_fleet.write_wrangler_config(tmp_path, refs, "migrations")
    entries = tomllib.loads(config.read_text())["d1_databases"]
    assert [(e["binding"], e["database_name"], e["database_id"]) for e in entries] == [
        ("DB_001", "fleet-001", refs[0].uuid),
        ("DB_002", "fleet-002", refs[1].uuid),
    ]
