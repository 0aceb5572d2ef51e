"""Benchmark: what comparing the live schema with the migrations' costs a deploy (#16).

A generated project of 20 migrations x 10 tables (200 tables, each with defaults,
NOT NULL, two CHECKs, a foreign key to the table before it, a UNIQUE column, a plain
and a partial index; a view, a trigger and an `ALTER TABLE ... ADD COLUMN` per
migration) is applied to a database of the emulator, in process, at `--latency` per
request; one more migration waits. Measured with the comparison on, and switched off
(`planning.check_schema` replaced by a stub that compares nothing), alternating run by
run: the API requests and request bytes of `status` and of `migrate` applying the
pending migration (from the emulator's log), their wall times, and the comparison's own
time (`schema.check_schema`). Then the same 200 tables made by hand with no ledger:
`status`, whose comparison replays every migration in search of the prefix that
matches, and must find the last one.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

from bench.harness import Options, Row, median, verdict
from d1deploy import defaults, ledger, migrations, planning, schema
from d1deploy.backend import DatabaseInfo
from d1deploy.client import D1Client
from d1deploy.discovery import discover
from d1deploy.project import Project
from d1deploy.remote import RemoteBackend
from tests.emulator import D1Emulator

PRODUCED_BY = "python -m bench schema"
_T = TypeVar("_T")


def write_migrations(folder: Path, migrations_count: int, tables_per: int) -> None:
    """`migrations_count` migrations of `tables_per` tables each, then one pending
    migration of one more table (written last, as `999_pending.sql`)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for m in range(1, migrations_count + 1):
        parts = []
        first = n
        for _ in range(tables_per):
            parent = f"    parent_id INTEGER REFERENCES t{n - 1:03d} (id) ON DELETE CASCADE,\n"
            parts.append(
                f"CREATE TABLE t{n:03d} (\n"
                "    id INTEGER PRIMARY KEY,\n"
                + (parent if n else "")
                + "    name TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 64),\n"
                "    code TEXT UNIQUE,\n"
                "    score INTEGER NOT NULL DEFAULT 0 CHECK (score >= 0),\n"
                "    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP\n"
                ");\n"
                f"CREATE INDEX t{n:03d}_name ON t{n:03d} (name, created_at);\n"
                f"CREATE INDEX t{n:03d}_scored ON t{n:03d} (score) WHERE score > 0;\n"
            )
            n += 1
        parts.append(
            f"ALTER TABLE t{first:03d} ADD COLUMN note TEXT;\n"
            f"CREATE VIEW v{m:03d} AS SELECT id, name FROM t{first:03d} WHERE score > 0;\n"
            f"CREATE TRIGGER tr{m:03d} AFTER UPDATE OF score ON t{first:03d}\n"
            f"BEGIN UPDATE t{first:03d} SET note = 'scored' WHERE id = NEW.id; END;\n"
        )
        (folder / f"{m:03d}_tables_{first:03d}.sql").write_text("".join(parts), encoding="utf-8")
    (folder / "999_pending.sql").write_text(
        "CREATE TABLE pending (id INTEGER PRIMARY KEY);\n", encoding="utf-8"
    )


def _off(migrations_list: Any, state: ledger.DbState, **_: Any) -> schema.SchemaCheck:
    return schema.SchemaCheck(False, reason="switched off for the benchmark")


@contextmanager
def comparison(on: bool) -> Iterator[None]:
    if on:
        yield
        return
    with mock.patch.object(planning, "check_schema", _off):
        yield


@dataclass(frozen=True)
class _Sample:
    seconds: float
    requests: int
    request_bytes: int


class _Bench:
    """The emulator, in process, and a client for one database at a time."""

    def __init__(self, root: Path, latency: float) -> None:
        self.emulator = D1Emulator(root / "emulator", latency=latency)
        self.root = root

    def backend(self, name: str) -> RemoteBackend:
        ref = self.emulator.create_database(name)
        client = D1Client(
            token=self.emulator.token,
            account_id=self.emulator.account_id,
            base_url=self.emulator.base_url,
            transport=self.emulator.transport(),
        )
        return RemoteBackend(client, DatabaseInfo(uuid=ref.uuid, name=ref.name))

    def measure(self, call: Callable[[], _T]) -> tuple[_Sample, _T]:
        """`call()`, timed, with the requests it sent; and what it returned."""
        self.emulator.reset_log()
        started = time.perf_counter()
        value = call()
        seconds = time.perf_counter() - started
        sent = list(self.emulator.requests)
        return _Sample(seconds, len(sent), sum(len(json.dumps(r.json)) for r in sent)), value


def run(opts: Options, *, migrations_count: int = 20, tables_per: int = 10) -> list[Row]:
    tables = migrations_count * tables_per
    with tempfile.TemporaryDirectory(prefix="d1deploy-bench-schema-") as tmp:
        root = Path(tmp)
        folder = root / "migrations"
        write_migrations(folder, migrations_count, tables_per)
        applied = root / "applied"  # the same files without the pending one
        applied.mkdir()
        for path in folder.iterdir():
            if path.name != "999_pending.sql":
                (applied / path.name).write_bytes(path.read_bytes())
        bench = _Bench(root, opts.latency)
        try:
            samples = _deploys(bench, folder, applied, opts.runs + opts.warmup, opts.warmup)
            local = _local_work(bench, folder, applied, opts.runs + opts.warmup, opts.warmup)
            adopted = _adoption(bench, folder, opts.runs + opts.warmup, opts.warmup)
        finally:
            bench.emulator.close()
    return _rows(opts, samples, local, adopted, tables, migrations_count)


def _prepared(bench: _Bench, name: str, applied: Path) -> RemoteBackend:
    """A database with every migration but the pending one applied (in one request)."""
    db = bench.backend(name)
    options = migrations.MigrateOptions(atomic=True)
    migrations.migrate(db, Project(applied, actor="bench"), options)
    return db


def _deploys(
    bench: _Bench, folder: Path, applied: Path, runs: int, warmup: int
) -> dict[str, list[_Sample]]:
    """status and migrate, comparison on and off, alternating."""
    found: dict[str, list[_Sample]] = {}
    status_db = _prepared(bench, "status", applied)
    for i in range(runs):
        for on in (True, False):
            db = _prepared(bench, f"migrate-{i}-{on}", applied)
            with comparison(on):
                status, _ = bench.measure(partial(migrations.status, status_db, Project(folder)))
                deploy, _ = bench.measure(
                    partial(migrations.migrate, db, Project(folder, actor="bench"))
                )
            if i >= warmup:
                found.setdefault(f"status-{on}", []).append(status)
                found.setdefault(f"migrate-{on}", []).append(deploy)
    return found


def _local_work(
    bench: _Bench, folder: Path, applied: Path, runs: int, warmup: int
) -> list[tuple[float, float]]:
    """The comparison alone, on the state `migrate` reads as it takes the lock: (wall,
    CPU) seconds per run. CPU time shows the work itself when other processes share
    the cores."""
    db = _prepared(bench, "local", applied)
    state = ledger.read_state(db, defaults.MIGRATIONS_TABLE)
    files = discover(folder)
    times = []
    for i in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        found = schema.check_schema(files, state)
        if i >= warmup:
            times.append((time.perf_counter() - started, time.process_time() - cpu))
        if not found.compared or found.drifted:
            raise RuntimeError(f"the benchmark database should compare clean: {found}")
    return times


def _adoption(bench: _Bench, folder: Path, runs: int, warmup: int) -> list[_Sample]:
    """status of the 200 tables made by hand (no ledger): it must name the last
    migration but the pending one as the baseline that adopts them."""
    db = bench.backend("by-hand")
    files = [m for m in discover(folder) if m.name != "999_pending.sql"]
    for m in files:
        db.run(m.statements())
    samples = []
    for i in range(runs):
        sample, report = bench.measure(partial(migrations.status, db, Project(folder)))
        found = report.schema
        if found is None or found.matches_up_to != files[-1].name:
            raise RuntimeError(f"status did not find the matching prefix: {found}")
        if i >= warmup:
            samples.append(sample)
    return samples


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _rows(
    opts: Options,
    s: dict[str, list[_Sample]],
    local: list[tuple[float, float]],
    adopted: list[_Sample],
    tables: int,
    count: int,
) -> list[Row]:
    def med(key: str, field: str) -> float:
        return median([getattr(x, field) for x in s[key]])

    shape = (
        f"{tables} tables ({count} migrations applied, 1 pending),"
        f" {opts.latency * 1000:.0f} ms/request"
    )
    runs = f"median of {opts.runs}"
    commands = (
        "in process (bench/bench_schema.py): migrations.status(db, folder) and"
        " migrations.migrate(db, folder) on the emulator's transport, with"
        " planning.check_schema as it is and replaced by a stub",
    )
    rows = []
    for what, label in (
        ("migrate", "`migrate` applying the pending migration"),
        ("status", "`status`"),
    ):
        on_req, off_req = med(f"{what}-True", "requests"), med(f"{what}-False", "requests")
        on_bytes, off_bytes = (
            med(f"{what}-True", "request_bytes"),
            med(f"{what}-False", "request_bytes"),
        )
        added = on_req - off_req
        rows.append(
            Row(
                bench="schema",
                measure=f"API requests of {label} with the schema comparison, {shape}",
                d1deploy=f"{on_req:.0f} ({on_bytes:,.0f} request bytes)",
                baseline=f"{off_req:.0f} ({off_bytes:,.0f} request bytes) with the comparison off",
                ratio=on_req / off_req if off_req else None,
                target="< 1 request added (#16)",
                verdict=verdict(added < 1) + f" ({added:+.0f})",
                produced_by=PRODUCED_BY,
                commands=commands,
            )
        )
        on_s, off_s = med(f"{what}-True", "seconds"), med(f"{what}-False", "seconds")
        rows.append(
            Row(
                bench="schema",
                measure=f"wall time of {label} with the schema comparison, {shape}",
                d1deploy=f"{_ms(on_s)} ({runs})",
                baseline=f"{_ms(off_s)} ({runs}) with the comparison off",
                ratio=on_s / off_s if off_s else None,
                produced_by=PRODUCED_BY,
                commands=commands,
                note=f"The comparison adds {_ms(on_s - off_s)}: local work only (the replay of"
                f" {count} migrations on a local file and the comparison of {tables} tables,"
                f" {_ms(median([w for w, _ in local]))} alone ({_ms(median([c for _, c in local]))}"
                f" of CPU), {runs}); the live schema is the"
                " sqlite_master read the command already makes.",
            )
        )
    rows.append(
        Row(
            bench="schema",
            measure=f"`status` of the same {tables} tables made by hand, no ledger"
            f" (the adoption search replays {count} migrations, comparing after each)",
            d1deploy=f"{_ms(median([a.seconds for a in adopted]))} ({runs});"
            f" {median([a.requests for a in adopted]):.0f} API requests",
            produced_by=PRODUCED_BY,
            commands=commands,
        )
    )
    return rows
