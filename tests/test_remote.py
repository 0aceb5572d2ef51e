"""RemoteBackend: delegation to D1Client for its one database, and SqlError locations."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from d1deploy import errors
from d1deploy.backend import Backend, DatabaseInfo, ExportOptions, Statement
from d1deploy.client import D1Client
from d1deploy.remote import RemoteBackend
from tests.helpers import requests_of

DB = "0b6b1c5e-1111-2222-3333-444455556666"
ROOT = f"https://api.test/client/v4/accounts/acc/d1/database/{DB}"
Handler = Callable[[httpx.Request], httpx.Response]


def envelope(result: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, json={"success": True, "errors": [], "messages": [], "result": result}
    )


def sql_failure(message: str) -> httpx.Response:
    body = {"success": False, "errors": [{"code": 7500, "message": message}], "result": None}
    return httpx.Response(400, json=body)


@pytest.fixture
def open_backend() -> Iterator[Callable[[Handler], tuple[RemoteBackend, respx.Router]]]:
    """A backend whose client's every request is answered by `reply` through one respx
    route that matches them all."""
    opened: list[RemoteBackend] = []

    def build(reply: Handler) -> tuple[RemoteBackend, respx.Router]:
        router = respx.Router(assert_all_mocked=True)
        router.route().mock(side_effect=reply)
        client = D1Client(
            token="tok-SECRET-123",
            account_id="acc",
            base_url="https://api.test/client/v4",
            transport=httpx.MockTransport(router.handler),
            sleep=lambda _: None,
        )
        backend = RemoteBackend(client, DatabaseInfo(uuid=DB, name="prod"))
        opened.append(backend)
        return backend, router

    yield build
    for backend in opened:
        backend.close()


def test_satisfies_the_backend_protocol(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    backend: Backend = open_backend(lambda r: envelope(None))[0]
    assert backend.is_remote and backend.info.name == "prod"


def test_run_sends_one_batch_to_its_database(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    item = {"success": True, "results": [{"n": 1}], "meta": {}}
    backend, rec = open_backend(lambda r: envelope([item, item]))
    results = backend.run([Statement("SELECT 1 AS n"), Statement("SELECT ? AS n", (1,))])
    assert [r.first_value() for r in results] == [1, 1]
    (sent,) = requests_of(rec)
    assert sent.url == f"{ROOT}/query"
    assert json.loads(sent.content) == {
        "batch": [{"sql": "SELECT 1 AS n"}, {"sql": "SELECT ? AS n", "params": [1]}]
    }


def test_run_read_only_is_retried_but_a_write_is_not(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    replies = iter([httpx.Response(503, json={"success": False, "errors": []})] * 2)
    item = {"success": True, "results": [], "meta": {}}
    backend, rec = open_backend(lambda r: next(replies, envelope([item])))
    backend.run([Statement("SELECT 1")], read_only=True)
    assert len(requests_of(rec)) == 3
    replies = iter([httpx.Response(503, json={"success": False, "errors": []})])
    with pytest.raises(errors.ServerError):
        backend.run([Statement("INSERT INTO t VALUES (1)")])
    assert len(requests_of(rec)) == 4


def test_single_statement_failure_points_at_its_file_and_line(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    message = "CHECK constraint failed: balance >= 0: SQLITE_CONSTRAINT"
    backend, _ = open_backend(lambda r: sql_failure(message))
    with pytest.raises(errors.SqlError) as info:
        backend.run([Statement("INSERT INTO t VALUES (-1)", file="m/001.sql", line=12)])
    err = info.value
    assert (err.index, err.location, err.sqlite_code) == (0, "m/001.sql:12", "SQLITE_CONSTRAINT")
    assert str(err) == f"m/001.sql:12: {message}"


def test_batch_failure_has_no_index(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    backend, _ = open_backend(lambda r: sql_failure("no such table: x: SQLITE_ERROR"))
    stmts = [
        Statement("SELECT 1", file="a.sql", line=1),
        Statement("SELECT x", file="a.sql", line=2),
    ]
    with pytest.raises(errors.SqlError) as info:
        backend.run(stmts)
    assert info.value.index is None and info.value.location is None


def test_item_failure_known_by_index_gets_located(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    ok = {"success": True, "results": [], "meta": {}}
    bad = {"success": False, "error": "no such table: x: SQLITE_ERROR"}
    backend, _ = open_backend(lambda r: envelope([ok, bad]))
    stmts = [
        Statement("SELECT 1", file="a.sql", line=1),
        Statement("SELECT x", file="a.sql", line=4),
    ]
    with pytest.raises(errors.SqlError) as info:
        backend.run(stmts)
    assert info.value.index == 1 and info.value.location == "a.sql:4"


def test_bookmark_and_restore_use_its_database(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]],
) -> None:
    backend, rec = open_backend(
        lambda r: envelope({"bookmark": "bm-2", "previous_bookmark": "bm-1"})
    )
    assert backend.bookmark(datetime(2026, 3, 1, tzinfo=UTC)) == "bm-2"
    assert backend.restore("bm-0").previous_bookmark == "bm-1"
    assert [str(r.url) for r in requests_of(rec)] == [
        f"{ROOT}/time_travel/bookmark?timestamp=2026-03-01T00%3A00%3A00Z",
        f"{ROOT}/time_travel/restore?bookmark=bm-0",
    ]


def test_export_and_import_use_its_database(
    open_backend: Callable[[Handler], tuple[RemoteBackend, respx.Router]], tmp_path: Path
) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.host == "r2.test":
            return httpx.Response(200, content=b"PRAGMA defer_foreign_keys=TRUE;\n")
        if request.url.path.endswith("/export"):
            url = "https://r2.test/d.sql?sig=1"
            exported = {"filename": "d.sql", "signed_url": url}
            return envelope({"success": True, "status": "complete", "result": exported})
        meta = {"rows_written": 1}
        imported = {"num_queries": 1, "final_bookmark": "bm-5", "meta": meta}
        return envelope({"success": True, "status": "complete", "result": imported})

    backend, rec = open_backend(reply)
    handle = backend.export(ExportOptions(no_data=True))
    assert b"".join(handle.download()).startswith(b"PRAGMA")
    path = tmp_path / "x.sql"
    path.write_text("INSERT INTO t VALUES (1);\n")
    result = backend.import_file(path)
    assert (result.num_queries, result.final_bookmark, result.rows_written) == (1, "bm-5", 1)
    api = [r.url.path for r in requests_of(rec) if r.url.host == "api.test"]
    assert api == [f"{ROOT.removeprefix('https://api.test')}/{p}" for p in ("export", "import")]
