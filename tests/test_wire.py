"""d1deploy's D1Client against the emulator, with everything on the wire held to Cloudflare's
Python SDK types (tests/wire.py): every body and query d1deploy sends, and every reply the
emulator gives to it, failures included. The SDK's own client then drives the same
endpoints, so the emulator also serves Cloudflare's client as D1 would."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest

from d1deploy import errors
from d1deploy.backend import ExportOptions, Statement
from d1deploy.client import D1Client
from tests import wire
from tests.emulator import D1Emulator

Seen = list[tuple[wire.Kind, int]]


class Seam(httpx.BaseTransport):
    """The emulator's in-process transport, keeping every API request with its reply."""

    def __init__(self, emulator: D1Emulator) -> None:
        self.inner = emulator.transport()
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []
        self.used: set[tuple[wire.Kind, str]] = set()  # the `wire.BEYOND_SDK` fields met

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "/client/v4/" in request.url.path:  # not the signed download and upload URLs
            response.read()
            self.exchanges.append((request, response))
        return response

    def check(self) -> Seen:
        """Hold every exchange since the last check to the SDK's types; which were they."""
        seen: Seen = []
        for request, response in self.exchanges:
            kind = wire.endpoint(request.method, request.url.path)
            if wire.params_travel_in(kind) == "body":
                assert not request.url.params, request.url
                sent: Any = json.loads(request.content)
            else:
                assert request.content == b"", request.content
                sent = dict(request.url.params)
            assert wire.request_problem(kind, sent) is None, (kind, sent)
            problem = wire.response_problem(kind, response.status_code, response.json(), self.used)
            assert problem is None, (kind, response.status_code, response.text, problem)
            seen.append((kind, response.status_code))
        self.exchanges.clear()
        return seen


@pytest.fixture
def seam(emulator: D1Emulator) -> Seam:
    return Seam(emulator)


@pytest.fixture
def client(emulator: D1Emulator, seam: Seam) -> Iterator[D1Client]:
    with _client(emulator, seam) as made:
        yield made


@pytest.fixture
def api(emulator: D1Emulator, seam: Seam) -> Iterator[httpx.Client]:
    """Plain httpx through the seam, for what d1deploy never sends."""
    root = f"{emulator.base_url}/accounts/{emulator.account_id}/d1/database"
    auth = {"Authorization": f"Bearer {emulator.token}"}
    # trust_env=False: a proxy from the environment must never see the emulator's traffic.
    with httpx.Client(base_url=root, headers=auth, transport=seam, trust_env=False) as plain:
        yield plain


def _client(emulator: D1Emulator, seam: Seam, **changes: Any) -> D1Client:
    options: dict[str, Any] = {
        "token": emulator.token,
        "account_id": emulator.account_id,
        "base_url": emulator.base_url,
        "transport": seam,
        "sleep": lambda seconds: None,
        "poll_interval": 0.0,
    }
    return D1Client(**{**options, **changes})


# Which of `wire.BEYOND_SDK` each flow meets: all of them, each somewhere.
MEETS: dict[str, set[tuple[wire.Kind, str]]] = {
    "databases": {("list", "result_info.count"), ("list", "result_info.total_count")},
    "get": {("get", "result.running_in_region")},
    "query": {("query", "result[].meta.served_by"), ("query", "result[].meta.total_attempts")},
    "raw": {("raw", "result[].meta.served_by"), ("raw", "result[].meta.total_attempts")},
    "export": set(),
    "import": {("import", "result.errors"), ("import", "result.result.meta.served_by")},
    "time travel": set(),
}


def test_every_field_beyond_the_sdk_is_met_by_a_flow_below() -> None:
    assert set().union(*MEETS.values()) == set(wire.BEYOND_SDK)


def _ok(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


@pytest.mark.parametrize(
    ("kind", "status", "body", "named"),
    [
        ("get", 200, _ok({"uuid": 5}), "result.uuid"),
        ("get", 200, _ok({"file_size": "5"}), "result.file_size"),
        ("list", 200, _ok([{"uuid": "u", "file_size": 1}]), "result[].file_size"),
        ("query", 200, _ok([{"meta": {"changes": 0, "bogus": 1}}]), "result[].meta.bogus"),
        ("export", 200, _ok({"status": "active"}), "result.status"),
        ("export", 202, _ok({"status": "complete"}), "running task"),
        ("import", 200, {**_ok({}), "result_info": {}}, "result_info"),
        ("query", 400, {**_ok(None), "success": False}, "errors"),
        ("query", 200, {**_ok([]), "success": "yes"}, "success"),
    ],
)
def test_the_oracle_refuses_replies_the_sdk_does_not_type(
    kind: wire.Kind, status: int, body: Any, named: str
) -> None:
    assert named in (wire.response_problem(kind, status, body) or "")


@pytest.mark.parametrize(
    ("kind", "sent", "named"),
    [
        ("export", {"output_format": "polling", "dump_options": {"no_data": 1}}, "no_data"),
        ("export", {"output_format": "polling", "dump_options": {"compat": "x"}}, "compat"),
        ("import", {"action": "poll"}, "current_bookmark"),
        ("query", {"sql": "SELECT 1", "batch": []}, "batch"),
        ("restore", {"bookmark": "b", "at": "x"}, "at"),
        ("bookmark", {"timestamp": "yesterday"}, "timestamp"),
        ("list", {"per_page": "ten"}, "per_page"),
    ],
)
def test_the_oracle_refuses_requests_the_sdk_does_not_type(
    kind: wire.Kind, sent: dict[str, Any], named: str
) -> None:
    assert named in (wire.request_problem(kind, sent) or "")


def test_listing_pages_and_resolving(emulator: D1Emulator, seam: Seam, client: D1Client) -> None:
    for n in range(11):
        emulator.create_database(f"extra-{n:02d}")
    assert len(client.list_databases(per_page=10)) == 12
    by_name = client.resolve_database("telegram-conversations")
    assert by_name.uuid == emulator.default_db
    # A name is resolved by the list, then GET for the facts only it carries (file_size).
    assert seam.check() == [("list", 200)] * 3 + [("get", 200)]
    assert seam.used == MEETS["databases"] | MEETS["get"]


def test_getting_and_not_finding(emulator: D1Emulator, seam: Seam, client: D1Client) -> None:
    client.query(emulator.default_db, [Statement("CREATE TABLE t (v)")])
    seam.exchanges.clear()
    info = client.resolve_database(emulator.default_db)
    assert (info.num_tables, info.name) == (1, "telegram-conversations")
    assert info.file_size is not None and info.file_size > 0
    with pytest.raises(errors.NotFound):
        client.resolve_database("00000000-0000-0000-0000-000000000000")
    assert seam.check() == [("get", 200), ("get", 404), ("list", 200)]
    assert seam.used == MEETS["get"] | MEETS["databases"]


def test_queries_their_values_and_failures(
    emulator: D1Emulator, seam: Seam, client: D1Client
) -> None:
    db = emulator.default_db
    results = client.query(
        db,
        [
            Statement("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT, r REAL, b BLOB, n)"),
            Statement("INSERT INTO t (s, r, b, n) VALUES (?, ?, x'00ff', ?)", ("a", 1.5, None)),
            Statement("INSERT INTO t (s, r) VALUES (?, ?)", ("b", 2)),
            Statement("SELECT * FROM t ORDER BY i"),
        ],
    )
    assert results[-1].rows == ((1, "a", 1.5, b"\x00\xff", None), (2, "b", 2, None, None))
    with pytest.raises(errors.SqlError, match="UNIQUE constraint failed"):
        client.query(db, [Statement("INSERT INTO t (i) VALUES (1)")])
    emulator.faults.add("POST", r"/query$", status=429, headers={"Retry-After": "1"}, times=1)
    emulator.faults.add("POST", r"/query$", status=503, times=1)
    assert client.query(db, [Statement("SELECT 1")], read_only=True)[0].rows == ((1,),)
    for token, account in (("wrong-token", emulator.account_id), (emulator.token, "f" * 32)):
        stranger = _client(emulator, seam, token=token, account_id=account)
        with stranger, pytest.raises(errors.AuthError):
            stranger.query(db, [Statement("SELECT 1")])
    assert seam.check() == [
        ("query", 200),
        ("query", 400),
        ("query", 429),
        ("query", 503),
        ("query", 200),
        ("query", 403),
        ("query", 403),
    ]
    assert seam.used == MEETS["query"]


def test_raw_and_the_single_statement_form(
    emulator: D1Emulator, seam: Seam, api: httpx.Client
) -> None:
    """d1deploy sends neither; the emulator must still answer them in the SDK's shapes."""
    db = emulator.default_db
    single = {"sql": "SELECT ? AS a, 2 AS a", "params": ["x"]}
    batch = {"batch": [single, {"sql": "SELECT x'01' AS b"}]}
    raw = [api.post(f"/{db}/raw", json=body).json()["result"] for body in (single, batch)]
    assert raw[0][0]["results"] == {"columns": ["a", "a"], "rows": [["x", 2]]}
    assert raw[1][1]["results"]["rows"] == [[[1]]]
    assert api.post(f"/{db}/query", json=single).json()["result"][0]["results"] == [{"a": 2}]
    assert api.post(f"/{db}/raw", json={"sql": "SELECT * FROM nope"}).status_code == 400
    assert seam.check() == [("raw", 200), ("raw", 200), ("query", 200), ("raw", 400)]
    assert seam.used == MEETS["raw"] | MEETS["query"]


def test_export_running_complete_failed_and_unknown(
    emulator: D1Emulator, seam: Seam, client: D1Client, api: httpx.Client
) -> None:
    db = emulator.default_db
    client.query(db, [Statement("CREATE TABLE t (v)"), Statement("INSERT INTO t VALUES (1)")])
    seam.exchanges.clear()
    emulator.export_polls = 2
    handle = client.export(db, ExportOptions(no_data=True, tables=("t",)))
    assert b"CREATE TABLE t" in b"".join(handle.download())
    emulator.faults.add(path=r"/export$", export_fails="D1 Export error: boom", times=1)
    with pytest.raises(errors.ServerError, match="boom"):
        client.export(db, ExportOptions())
    body = {"output_format": "polling", "current_bookmark": "00000000-nothing"}
    assert api.post(f"/{db}/export", json=body).json()["result"]["success"] is False
    assert seam.check() == [
        ("export", 202),  # started: running
        ("export", 202),  # polled: running
        ("export", 200),  # polled: complete
        ("export", 202),
        ("export", 202),
        ("export", 200),  # polled: error
        ("export", 200),  # polled, unknown: not exporting anything
    ]
    assert seam.used == MEETS["export"]


def test_import_uploaded_already_there_failed_and_over(
    emulator: D1Emulator, seam: Seam, client: D1Client, api: httpx.Client, tmp_path: Path
) -> None:
    db = emulator.default_db
    sql = tmp_path / "seed.sql"
    sql.write_text("CREATE TABLE t (v);\nINSERT INTO t VALUES (1);\n")
    done = client.import_file(db, sql)
    assert (done.num_queries, done.rows_written) == (2, 1)
    client.query(db, [Statement("DROP TABLE t")])
    assert client.import_file(db, sql).num_queries == 2  # init finds the file: no upload
    bad = tmp_path / "bad.sql"
    bad.write_text("INSERT INTO nope VALUES (1);\n")
    with pytest.raises(errors.SqlError, match="no such table"):
        client.import_file(db, bad)
    over = {"action": "poll", "current_bookmark": done.final_bookmark}
    assert api.post(f"/{db}/import", json=over).json()["result"]["success"] is False
    assert seam.check() == [
        ("import", 200),  # init: where to upload
        ("import", 202),  # ingest: running
        ("import", 200),  # poll: complete
        ("query", 200),
        ("import", 202),  # init: already uploaded, running
        ("import", 200),
        ("import", 200),
        ("import", 202),
        ("import", 200),  # poll: error
        ("import", 200),  # poll after the end: not importing anything
    ]
    assert seam.used == MEETS["import"] | MEETS["query"]


def test_time_travel(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    emulator = D1Emulator(tmp_path, clock=lambda: now[0])
    db = emulator.create_database("db")
    seam = Seam(emulator)
    now[0] += 60
    with closing(emulator), _client(emulator, seam) as client:
        before = client.bookmark(db)
        assert client.bookmark(db, datetime.fromtimestamp(now[0], UTC)) == before
        assert client.restore(db, bookmark=before).previous_bookmark is not None
        with pytest.raises(errors.UsageError):
            client.restore(db, bookmark="00000000-nothing")
    assert seam.check() == [("bookmark", 200)] * 2 + [("restore", 200), ("restore", 400)]
    assert seam.used == MEETS["time travel"]


def test_cloudflares_own_client_is_served(emulator: D1Emulator, seam: Seam) -> None:
    """The SDK's client sends its own requests, which the emulator must accept, and reads
    the replies, which are held to its types at the seam as d1deploy's are."""
    db, account = emulator.default_db, emulator.account_id
    http = httpx.Client(transport=seam, trust_env=False)
    with cloudflare.Cloudflare(
        api_token=emulator.token, base_url=emulator.base_url, http_client=http, max_retries=0
    ) as sdk:
        d1 = sdk.d1.database
        assert [item.name for item in d1.list(account_id=account)] == ["telegram-conversations"]
        assert d1.get(db, account_id=account).uuid == db
        page = d1.query(db, account_id=account, sql="SELECT ? AS v", params=["x"])
        assert page.result[0].results == [{"v": "x"}]
        assert d1.raw(db, account_id=account, sql="SELECT 1 AS n").result[0].results is not None
        started = d1.export(db, account_id=account, output_format="polling")
        assert started.at_bookmark is not None
        done = d1.export(
            db, account_id=account, output_format="polling", current_bookmark=started.at_bookmark
        )
        assert done.status == "complete" and done.result and done.result.signed_url
        sql = b"CREATE TABLE t (v);\n"
        etag = hashlib.md5(sql).hexdigest()
        init = d1.import_(db, account_id=account, action="init", etag=etag)
        assert init.upload_url and init.filename
        assert http.put(init.upload_url, content=sql).status_code == 200
        ingest = d1.import_(
            db, account_id=account, action="ingest", etag=etag, filename=init.filename
        )
        assert ingest.at_bookmark is not None
        polled = d1.import_(
            db, account_id=account, action="poll", current_bookmark=ingest.at_bookmark
        )
        assert polled.status == "complete"
        travel = d1.time_travel
        bookmark = travel.get_bookmark(db, account_id=account).bookmark
        assert bookmark is not None
        assert travel.get_bookmark(db, account_id=account, timestamp=datetime.now(UTC)).bookmark
        assert travel.restore(db, account_id=account, bookmark=bookmark).bookmark
        with pytest.raises(cloudflare.NotFoundError):
            d1.get("00000000-0000-0000-0000-000000000000", account_id=account)
    kinds = {kind for kind, _ in seam.check()}
    assert kinds == {"list", "get", "query", "raw", "export", "import", "bookmark", "restore"}
