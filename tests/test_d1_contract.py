"""`--local`, the emulator and workerd answer every case of the D1 contract alike.

The table is tests/d1_contract.py. Each case runs on a fresh database of each target:

- `local`: `LocalBackend.run`, one batch;
- `emulator`: d1deploy's own `RemoteBackend` and `D1Client` against the emulator in
  process, one `/query` batch;
- `workerd`: the pinned wrangler's `d1 execute --local --json --file` (D1's engine).

A wrangler process costs seconds, so workerd runs the cases in as few processes as is
honest: every case that must succeed goes into ONE file (each case's own table names, so
they cannot meet; the file is one batch, hence one transaction, and a case that only
succeeded because of another would still fail on the other two targets), and each case
that must fail runs alone (a batch stops at its first failure), two processes at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from d1deploy import d1sqlite, limits, sqlexec
from d1deploy.backend import Backend, Statement
from d1deploy.errors import InputError, SqlError
from d1deploy.local import LocalBackend
from tests import realtools
from tests.d1_contract import CASES, TARGETS, Answer, Case, Row
from tests.emulator import D1Emulator
from tests.helpers import remote_backend

_WRANGLER_TOML = """\
name = "d1-contract"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "contract"
database_id = "00000000-0000-4000-8000-00000000d1c0"
"""


def statements(case: Case, tmp: Path) -> list[str]:
    return [sql.replace("{tmp}", str(tmp)) for sql in case.sql]


def local_answer(case: Case, tmp: Path) -> Answer:
    backend = LocalBackend(tmp / "local.sqlite")
    try:
        results = backend.run([Statement(sql) for sql in statements(case, tmp)])
    except SqlError as exc:
        return Answer(error=exc.message)
    finally:
        backend.close()
    return Answer(rows=tuple(results[-1].as_dicts()))


def emulator_answer(case: Case, tmp: Path) -> Answer:
    emulator = D1Emulator(tmp / "emulator")
    try:
        backend = remote_backend(emulator, "contract")
        try:
            results = backend.run([Statement(sql) for sql in statements(case, tmp)])
        except SqlError as exc:
            return Answer(error=exc.message)
        return Answer(rows=tuple(results[-1].as_dicts()))
    finally:
        emulator.close()


def as_wrangler_prints(answer: Answer) -> Answer:
    """`answer` as `wrangler d1 execute --json` prints it: a BLOB (an array of byte values
    in D1's JSON) becomes the text `[1, 2]` (wrangler's execute.ts)."""
    if answer.rows is None:
        return answer
    rows = tuple(
        {k: "[" + ", ".join(map(str, v)) + "]" if isinstance(v, bytes) else v for k, v in r.items()}
        for r in answer.rows
    )
    return Answer(rows=rows)


def wrangler_batch(
    wrangler: realtools.Wrangler, project: Path, sql: Sequence[str]
) -> tuple[list[list[Row]] | None, str | None]:
    """Run `sql` as one `--file` on a fresh local database: (each statement's rows, None),
    or (None, the error text)."""
    project.mkdir(parents=True)
    (project / "wrangler.toml").write_text(_WRANGLER_TOML, encoding="utf-8")
    (project / "batch.sql").write_text("\n".join(sql) + "\n", encoding="utf-8")
    done = wrangler.run(
        ["d1", "execute", "DB", "--local", "--json", "--file", "batch.sql"],
        cwd=project,
        check=False,
    )
    payload = json.loads(done.stdout)
    if isinstance(payload, dict):
        return None, str(payload["error"]["text"])
    return [list(result["results"]) for result in payload], None


@pytest.fixture(scope="session")
def workerd_answers(
    wrangler: realtools.Wrangler, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Answer, Path]]:
    """Every case's answer from workerd, with the folder its statements named as {tmp}."""
    root = tmp_path_factory.mktemp("d1-contract-workerd")
    answers: dict[str, tuple[Answer, Path]] = {}
    succeeding = [c for c in CASES if c.expected("workerd").error is None]
    failing = [c for c in CASES if c.expected("workerd").error is not None]

    def alone(case: Case) -> tuple[str, Answer, Path]:
        project = root / case.id
        rows, error = wrangler_batch(wrangler, project, statements(case, project))
        return (
            case.id,
            Answer(error=error) if rows is None else Answer(rows=tuple(rows[-1])),
            project,
        )

    together = root / "succeeding"
    sql = [s for case in succeeding for s in statements(case, together)]
    rows, _ = wrangler_batch(wrangler, together, sql)
    if rows is not None and len(rows) == len(sql):
        end = 0
        for case in succeeding:
            end += len(case.sql)
            answers[case.id] = Answer(rows=tuple(rows[end - 1])), together
    else:
        failing = [*succeeding, *failing]  # tell which one broke the batch
    with ThreadPoolExecutor(max_workers=2) as pool:
        for case_id, answer, project in pool.map(alone, failing):
            answers[case_id] = answer, project
    return answers


def _check(case: Case, target: str, got: Answer) -> None:
    expected = case.expected(target)
    if target == "workerd":
        expected = as_wrangler_prints(expected)
    assert expected.matches(got), (
        f"{case.id} on {target}: expected {expected.describe()}, got {got.describe()}"
        + (f" (kept: {case.kept[target].why})" if target in case.kept else "")
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_local_answers_like_d1(case: Case, tmp_path: Path) -> None:
    _check(case, "local", local_answer(case, tmp_path))
    assert not (tmp_path / "attached.sqlite").exists()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_emulator_answers_like_d1(case: Case, tmp_path: Path) -> None:
    _check(case, "emulator", emulator_answer(case, tmp_path))
    assert not (tmp_path / "attached.sqlite").exists()


@pytest.mark.workerd
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_workerd_answers_as_the_table_says(
    case: Case, workerd_answers: dict[str, tuple[Answer, Path]]
) -> None:
    got, folder = workerd_answers[case.id]
    _check(case, "workerd", got)
    assert not (folder / "attached.sqlite").exists()


def test_the_table_is_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        # workerd is the reference: only --local and the emulator may keep a difference.
        assert set(case.kept) <= set(TARGETS) - {"workerd"}, case.id
        assert all(kept.why for kept in case.kept.values()), case.id
        # Sent as written: each statement with its `;`, which D1's length limit counts.
        assert all(sql.endswith(";") for sql in case.sql), case.id


# -- a BEGIN in an imported file --------------------------------------------------------
# wrangler runs a --local file as a batch (the rows above), so workerd has no import to
# compare with: D1's import answers the SQLite text its docs give (`IMPORT_BEGIN_REFUSED`).


def _big_file_with_a_begin(tmp_path: Path) -> Path:
    """More statements than one batch carries, so `exec --file` takes the import path."""
    lines = ["CREATE TABLE t (v INTEGER);", "BEGIN;"]
    lines += [f"INSERT INTO t VALUES ({i});" for i in range(limits.BATCH_MAX_STATEMENTS)]
    path = tmp_path / "big.sql"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("target", ["local", "emulator"])
def test_a_begin_in_an_imported_file_is_reported_once_at_the_users_file(
    target: str, tmp_path: Path
) -> None:
    path = _big_file_with_a_begin(tmp_path)
    emulator = D1Emulator(tmp_path / "emulator")
    backend: Backend
    if target == "local":
        backend = LocalBackend(tmp_path / "local.sqlite")
    else:
        backend = remote_backend(emulator, "contract")
    try:
        # What the import itself answers (exec's lint would stop it first, see below).
        with pytest.raises(SqlError) as info:
            sqlexec._import(backend, path.read_text(), path, None)
        err = info.value
        assert err.message.count(d1sqlite.IMPORT_BEGIN_REFUSED) == 1
        assert err.file == str(path)
        assert "d1deploy-exec-" not in str(err)
        # --local knows the statement; D1's import does not say which one failed.
        assert err.line == (2 if target == "local" else None)
        assert backend.run([Statement("SELECT count(*) FROM sqlite_schema WHERE name = 't'")])[
            0
        ].rows == ((0,),)
        # What a user gets: refused before anything is sent, once, at big.sql:2.
        with pytest.raises(InputError) as refused:
            sqlexec.execute(backend, file=path)
        assert refused.value.location == f"{path}:2"
        assert str(refused.value).count("BEGIN") == 1
    finally:
        backend.close()
        emulator.close()
