"""Tests for the D1 emulator (tests/emulator), driven with plain httpx.

They pin the emulator to the shapes, codes and behaviours of Cloudflare's D1 REST API
(its documentation; tests/wire.py holds the shapes to Cloudflare's SDK types), over both
transports (in process and loopback HTTP) where the transport matters.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1deploy import d1sqlite
from d1deploy.dumpsql import js_number
from tests import wire
from tests.emulator import D1Emulator, ServedEmulator, schemas
from tests.emulator.engine import split_statements

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Api:
    """An emulator plus httpx clients: `client` is authenticated and rooted at the
    account's database collection; `plain` sends no credentials (signed URLs)."""

    emu: D1Emulator
    client: httpx.Client
    plain: httpx.Client
    db: str

    def url(self, path: str) -> str:
        return str(self.client.base_url).rstrip("/") + path

    def query(self, sql: str, params: list[Any] | None = None, raw: bool = False) -> httpx.Response:
        body: dict[str, Any] = {"sql": sql} if params is None else {"sql": sql, "params": params}
        return self.client.post(f"/{self.db}/{'raw' if raw else 'query'}", json=body)

    def ok(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        response = self.query(sql, params)
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["result"]
        return results

    def rows(self, sql: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.ok(sql)[-1]["results"]
        return rows

    def export(self, **options: Any) -> httpx.Response:
        first = self.client.post(
            f"/{self.db}/export", json={"output_format": "polling", "dump_options": options}
        )
        assert first.status_code == 202, first.text
        body = {
            "output_format": "polling",
            "current_bookmark": first.json()["result"]["at_bookmark"],
        }
        return self.client.post(f"/{self.db}/export", json=body)

    def dump(self, **options: Any) -> str:
        done = self.export(**options).json()["result"]
        assert done["status"] == "complete", done
        return self.plain.get(done["result"]["signed_url"]).text

    def upload(self, sql: bytes) -> str:
        etag = hashlib.md5(sql).hexdigest()
        init = self.client.post(f"/{self.db}/import", json={"action": "init", "etag": etag})
        put = self.plain.put(init.json()["result"]["upload_url"], content=sql)
        assert put.status_code == 200 and put.headers["ETag"] == f'"{etag}"'
        filename: str = init.json()["result"]["filename"]
        return filename

    def run_import(self, sql: bytes) -> dict[str, Any]:
        etag = hashlib.md5(sql).hexdigest()
        body = {"action": "ingest", "etag": etag, "filename": self.upload(sql)}
        started = self.client.post(f"/{self.db}/import", json=body)
        assert started.status_code == 202, started.text
        bookmark = started.json()["result"]["at_bookmark"]
        polled = self.client.post(
            f"/{self.db}/import", json={"action": "poll", "current_bookmark": bookmark}
        )
        assert polled.status_code == 200
        result: dict[str, Any] = polled.json()["result"]
        return result


def _clients(emu: D1Emulator, base: str, transport: httpx.BaseTransport | None) -> Api:
    auth = {"Authorization": f"Bearer {emu.token}"}
    root = f"{base}/accounts/{emu.account_id}/d1/database"
    # trust_env=False: a proxy from the environment must never see loopback traffic.
    client = httpx.Client(base_url=root, headers=auth, transport=transport, trust_env=False)
    plain = httpx.Client(transport=transport, trust_env=False)
    return Api(emu, client, plain, emu.default_db)


@pytest.fixture
def api(emulator: D1Emulator) -> Iterator[Api]:
    """In process: fast, for behaviour that does not depend on the transport."""
    api = _clients(emulator, emulator.base_url, emulator.transport())
    yield api
    api.client.close()


@pytest.fixture(params=["in-process", "loopback"])
def both(request: pytest.FixtureRequest, emulator: D1Emulator) -> Iterator[Api]:
    """Each transport in turn, for what must behave the same over both."""
    if request.param == "in-process":
        yield _clients(emulator, emulator.base_url, emulator.transport())
        return
    with emulator.serve() as base_url:
        api = _clients(emulator, base_url, None)
        yield api
        api.client.close()
        api.plain.close()


@dataclass
class FakeTime:
    now: float = 1_700_000_000.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def timed(tmp_path: Path) -> Iterator[tuple[Api, FakeTime]]:
    fake = FakeTime()
    emu = D1Emulator(tmp_path / "timed", clock=fake.clock, sleep=fake.sleep)
    emu.create_database("telegram-conversations")
    yield _clients(emu, emu.base_url, emu.transport()), fake
    emu.close()


def _error(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    return response.status_code, body["errors"][0]["code"], body["errors"][0]["message"]


# -- query -----------------------------------------------------------------------------------


def test_query_returns_one_result_per_statement_with_d1_shapes(both: Api) -> None:
    results = both.ok(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, b BLOB, r REAL);"
        "INSERT INTO t (s, b, r) VALUES ('a;b', x'00ff', 3.0), ('c', NULL, 2.5);"
        "SELECT * FROM t ORDER BY id"
    )
    assert [r["success"] for r in results] == [True, True, True]
    assert results[1]["meta"]["changes"] == 2 and results[1]["meta"]["last_row_id"] == 2
    assert results[0]["meta"]["changed_db"] and not results[2]["meta"]["changed_db"]
    assert set(results[2]["meta"]) >= {
        "duration",
        "changes",
        "last_row_id",
        "changed_db",
        "size_after",
        "rows_read",
        "rows_written",
    }
    # BLOBs travel as byte arrays; an integral REAL comes back as a JS number would.
    assert results[2]["results"] == [
        {"id": 1, "s": "a;b", "b": [0, 255], "r": 3},
        {"id": 2, "s": "c", "b": None, "r": 2.5},
    ]
    raw = both.query("SELECT id, s AS id FROM t WHERE id = ?", [1], raw=True).json()["result"]
    assert raw[0]["results"] == {"columns": ["id", "id"], "rows": [[1, "a;b"]]}
    batch = both.client.post(
        f"/{both.db}/query",
        json={"batch": [{"sql": "SELECT ? AS v", "params": ["x"]}, {"sql": "SELECT 2 AS v"}]},
    )
    assert [r["results"] for r in batch.json()["result"]] == [[{"v": "x"}], [{"v": 2}]]


def test_params_bind_json_scalars_and_integers_are_js_doubles(api: Api) -> None:
    sql = "SELECT ? AS s, ? AS i, ? AS f, ? AS n, typeof(?) AS t, 9007199254740993 AS big"
    assert api.ok(sql, ["x", 5, 1.5, None, True])[0]["results"] == [
        {"s": "x", "i": 5, "f": 1.5, "n": None, "t": "integer", "big": 9007199254740992}
    ]
    assert _error(api.query("SELECT ?", [[1, 2]]))[:2] == (400, 7400)


def test_sql_errors_are_400_7500_with_the_sqlite_class_suffix(both: Api) -> None:
    assert _error(both.query("SELECT * FROM missing")) == (
        400,
        7500,
        "no such table: missing: SQLITE_ERROR",
    )
    both.ok("CREATE TABLE u (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL)")
    both.ok("INSERT INTO u (email) VALUES ('a')")
    assert _error(both.query("INSERT INTO u (email) VALUES ('a')"))[2] == (
        "UNIQUE constraint failed: u.email: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_UNIQUE)"
    )
    assert _error(both.query("INSERT INTO u (email) VALUES (NULL)"))[2] == (
        "NOT NULL constraint failed: u.email: SQLITE_CONSTRAINT"
        " (extended: SQLITE_CONSTRAINT_NOTNULL)"
    )
    assert _error(both.query("SELECT (")) == (400, 7500, "incomplete input: SQLITE_ERROR")
    assert _error(both.query("  -- nothing\n;")) == (400, 7500, "No SQL statements detected.")


def test_auth_account_route_and_database_errors(both: Api) -> None:
    path = f"/{both.db}/query"
    anonymous = both.plain.post(both.url(path), json={"sql": "SELECT 1"})
    assert _error(anonymous)[:2] == (400, 9106)
    bad = {"Authorization": "Bearer x"}
    wrong = both.plain.post(both.url(path), json={"sql": "SELECT 1"}, headers=bad)
    assert _error(wrong) == (403, 10000, "Authentication error")
    other = str(both.client.base_url).replace(both.emu.account_id, "f" * 32)
    assert _error(both.client.get(other))[:2] == (403, 7403)
    assert _error(both.client.get(f"/{both.db}/nope")) == (404, 7003, "No route for the URI")
    assert _error(both.client.get("/no-such-db")) == (404, 7404, "Not Found")
    assert _error(both.client.post("/no-such-db/query", json={"sql": "SELECT 1"}))[:2] == (
        404,
        7404,
    )
    assert _error(both.client.post(path, content=b"{not json"))[:2] == (400, 7400)
    assert _error(both.client.post(path, json={"sql": "SELECT 1", "batch": []}))[:2] == (400, 7400)
    assert both.emu.count("POST", "/query") == 5


# -- D1 behaviours ---------------------------------------------------------------------------


def test_foreign_keys_are_always_on_and_deferrable_only_within_the_batch(api: Api) -> None:
    api.ok(
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) ON DELETE CASCADE);"
        "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1)"
    )
    orphan = api.query("PRAGMA foreign_keys = OFF; INSERT INTO c VALUES (2, 99)")
    assert _error(orphan)[2] == (
        "FOREIGN KEY constraint failed: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_FOREIGNKEY)"
    )
    # Deferred checks run at the end of the request's transaction, not per statement.
    api.ok("PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (3, 2); INSERT INTO p VALUES (2)")
    unresolved = api.query("PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (4, 77)")
    assert _error(unresolved)[2] == (
        "FOREIGN KEY constraint failed: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_FOREIGNKEY)"
    )
    api.ok("DROP TABLE p")  # D1's pain point P4: dropping a parent cascades into children
    assert api.rows("SELECT count(*) AS n FROM c") == [{"n": 0}]


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "BEGIN TRANSACTION",
        "begin immediate",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT s",
        "RELEASE s",
    ],
)
def test_transaction_statements_are_refused_with_workerds_message(api: Api, sql: str) -> None:
    status, code, message = _error(api.query(f"SELECT 1; {sql};"))
    assert (status, code) == (400, 7500)
    assert message == d1sqlite.TRANSACTION_REFUSED
    assert "use the state.storage.transaction() or state.storage.transactionSync() APIs" in message


def test_trigger_bodies_survive_the_server_side_split(api: Api) -> None:
    api.ok(
        "CREATE TABLE t (v TEXT); CREATE TABLE log (v TEXT);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
        "  INSERT INTO log VALUES (new.v || ';');\n"
        "  INSERT INTO log VALUES (CASE WHEN new.v = 'a' THEN 'x' ELSE 'y' END);\n"
        "END;\n"
        "INSERT INTO t VALUES ('a') -- no trailing semicolon"
    )
    assert api.rows("SELECT v FROM log") == [{"v": "a;"}, {"v": "x"}]


def test_split_statements_keeps_quoted_semicolons_and_drops_comment_only_pieces() -> None:
    sql = "SELECT 'a;b'; /* c; */ SELECT \"x;\" FROM t;\n-- tail;\n;"
    assert list(split_statements([sql])) == ["SELECT 'a;b';", '/* c; */ SELECT "x;" FROM t;']
    lines = ["CREATE TRIGGER t AFTER INSERT ON a BEGIN\n", "SELECT 1;\n", "END;\n", "SELECT 2"]
    assert list(split_statements(lines)) == [
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\nSELECT 1;\nEND;",
        "SELECT 2",
    ]


def test_statement_and_parameter_limits(api: Api) -> None:
    long_sql = "SELECT '" + "x" * 100_000 + "'"
    assert _error(api.query(long_sql))[2] == "statement too long: SQLITE_TOOBIG"
    assert api.query("SELECT '" + "x" * 99_000 + "'").status_code == 200
    many = "SELECT " + ",".join("?" * 101)
    assert _error(api.query(many, list(range(101))))[2] == "too many SQL variables: SQLITE_ERROR"
    assert api.query("SELECT " + ",".join("?" * 100), list(range(100))).status_code == 200


def test_pragma_allowlist_and_internal_tables(api: Api) -> None:
    assert _error(api.query("PRAGMA table_info(_cf_KV)"))[2] == "not authorized: SQLITE_AUTH"
    assert _error(api.query("PRAGMA user_version = 3"))[2] == "not authorized: SQLITE_AUTH"
    assert _error(api.query("SELECT * FROM _cf_KV"))[2].endswith("prohibited: SQLITE_AUTH")
    assert _error(api.query("ATTACH 'x.db' AS x"))[2] == "not authorized: SQLITE_AUTH"


@pytest.mark.parametrize("atomic", [True, False])
def test_a_failing_request_rolls_back_unless_batches_are_not_atomic(api: Api, atomic: bool) -> None:
    api.emu.atomic_batches = atomic
    api.ok("CREATE TABLE t (v INTEGER)")
    batch = {"batch": [{"sql": "INSERT INTO t VALUES (1)"}, {"sql": "INSERT INTO nope VALUES (2)"}]}
    assert api.client.post(f"/{api.db}/query", json=batch).status_code == 400
    with sqlite3.connect(api.emu.db_path(api.db)) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == (0 if atomic else 1)


# -- databases -------------------------------------------------------------------------------


def test_list_pages_filters_and_validates(api: Api) -> None:
    for n in range(12):
        assert api.client.post("", json={"name": f"extra-{n:02d}"}).status_code == 200
    first = api.client.get("", params={"per_page": 10}).json()
    assert first["result_info"] == {"page": 1, "per_page": 10, "count": 10, "total_count": 13}
    second = api.client.get("", params={"per_page": 10, "page": 2}).json()
    assert [d["name"] for d in second["result"]] == ["extra-09", "extra-10", "extra-11"]
    named = api.client.get("", params={"name": "extra-1"}).json()["result"]
    assert sorted(d["name"] for d in named) == ["extra-10", "extra-11"]
    assert set(named[0]) >= {"uuid", "name", "created_at", "version"}
    for bad in ({"per_page": 5}, {"per_page": 10001}, {"page": 0}, {"page": "x"}):
        assert _error(api.client.get("", params=bad))[:2] == (400, 7400)


def test_create_get_by_uuid_or_name_and_delete(api: Api) -> None:
    created = api.client.post("", json={"name": "staging", "primary_location_hint": "weur"})
    uuid = created.json()["result"]["uuid"]
    assert _error(api.client.post("", json={"name": "staging"}))[:2] == (400, 7502)
    assert _error(api.client.post("", json={"name": "Bad Name"}))[:2] == (400, 7400)
    api.ok("CREATE TABLE t (v)")
    by_name = api.client.get("/telegram-conversations").json()["result"]
    assert by_name["uuid"] == api.db and by_name["version"] == "production"
    assert by_name["num_tables"] == 1 and by_name["file_size"] > 0  # _cf_KV is not counted
    fields = api.client.get(f"/{uuid}", params={"fields": "uuid,name"}).json()["result"]
    assert fields == {"uuid": uuid, "name": "staging"}
    assert api.client.delete(f"/{uuid}").json()["result"] is None
    assert api.client.get(f"/{uuid}").status_code == 404


def test_default_database_and_request_log(tmp_path: Path) -> None:
    emu = D1Emulator(tmp_path)
    with pytest.raises(LookupError):
        _ = emu.default_db
    first = emu.create_database("first")
    emu.create_database("second")
    assert emu.default_db == first == first.uuid and emu.default_db.name == "first"
    assert emu.db_path("first") == emu.db_path(first) == first.path
    api = _clients(emu, emu.base_url, emu.transport())
    api.ok("SELECT 1")
    api.client.get("")
    assert emu.requests.count(method="POST", path_contains="/query") == emu.count("POST") == 1
    assert emu.requests[-1].json is None and emu.requests[0].json == {"sql": "SELECT 1"}
    emu.close()


# -- export ----------------------------------------------------------------------------------


def test_export_polls_then_serves_a_signed_url_that_refuses_credentials(both: Api) -> None:
    both.ok("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('x')")
    first = both.client.post(f"/{both.db}/export", json={"output_format": "polling"})
    assert first.status_code == 202
    active = first.json()["result"]
    assert active["status"] == "active" and active["type"] == "export" and active["success"]
    assert active["messages"][0].startswith("Generating ")
    body = {"output_format": "polling", "current_bookmark": active["at_bookmark"]}
    done = both.client.post(f"/{both.db}/export", json=body)
    assert done.status_code == 200
    result = done.json()["result"]
    assert result["status"] == "complete" and result["at_bookmark"] == active["at_bookmark"]
    url = result["result"]["signed_url"]
    assert result["result"]["filename"] in url and "X-Amz-Signature=" in url
    download = both.plain.get(url)
    assert download.status_code == 200
    assert download.headers["Content-Length"] == str(len(download.content))
    assert download.text.splitlines()[-1] == 'INSERT INTO "t" ("v") VALUES(\'x\');'
    assert both.emu.auth_leaks == 0
    leaked = both.client.get(url)  # the API client would send its token
    assert leaked.status_code == 403 and "<Code>AccessDenied</Code>" in leaked.text
    assert both.emu.auth_leaks == 1
    forged = both.plain.get(url.split("X-Amz-Signature=")[0] + "X-Amz-Signature=0")
    assert "<Code>SignatureDoesNotMatch</Code>" in forged.text
    both.emu.reset_log()
    assert both.emu.auth_leaks == 1 and both.emu.requests == []  # a leak is never forgotten


def test_dump_matches_d1s_format(api: Api) -> None:
    api.ok(
        'CREATE TABLE "Quoted" (id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT, b BLOB, r REAL);'
        "INSERT INTO \"Quoted\" (s, b, r) VALUES ('it''s\nok\r', x'0aff', 1e21), (NULL, NULL, 0.5);"
        "CREATE TABLE plain (v INTEGER); INSERT INTO plain VALUES (9007199254740993);"
        "CREATE INDEX i ON plain (v); CREATE VIEW w AS SELECT v FROM plain"
    )
    assert api.dump().splitlines() == [
        "PRAGMA defer_foreign_keys=TRUE;",
        'CREATE TABLE IF NOT EXISTS "Quoted" (id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT, '
        "b BLOB, r REAL);",
        'INSERT INTO "Quoted" ("id","s","b","r") VALUES(1,replace(replace(\'it\'\'s\\nok\\r\','
        "'\\r',char(13)),'\\n',char(10)),X'0aff',1e+21);",
        'INSERT INTO "Quoted" ("id","s","b","r") VALUES(2,NULL,NULL,0.5);',
        "CREATE TABLE plain (v INTEGER);",
        'INSERT INTO "plain" ("v") VALUES(9007199254740992);',
        "DELETE FROM sqlite_sequence;",
        'INSERT INTO "sqlite_sequence" ("name","seq") VALUES(\'Quoted\',2);',
        "CREATE INDEX i ON plain (v);",
        "CREATE VIEW w AS SELECT v FROM plain;",
    ]
    assert api.dump(no_data=True).count("INSERT") == 0
    assert "CREATE" not in api.dump(no_schema=True)
    assert api.dump(tables=["plain"]).splitlines()[1:] == [
        "CREATE TABLE plain (v INTEGER);",
        'INSERT INTO "plain" ("v") VALUES(9007199254740992);',
    ]


def test_js_number_formatting() -> None:
    cases = {
        3.0: "3",
        0.5: "0.5",
        1e21: "1e+21",
        1e20: "100000000000000000000",
        1e-7: "1e-7",
        1.5e-6: "0.0000015",
        -2.25: "-2.25",
        123.456: "123.456",
        2.0**63: "9223372036854776000",
    }
    assert {x: js_number(x) for x in cases} == cases


def test_export_of_a_database_with_a_virtual_table_fails_like_d1(api: Api) -> None:
    api.ok("CREATE VIRTUAL TABLE docs USING fts5(body)")
    result = api.export().json()["result"]
    assert result["status"] == "error"
    assert result["error"] == "D1 Export error: cannot export databases with Virtual Tables (fts5)"


# -- import ----------------------------------------------------------------------------------


def test_import_uploads_ingests_and_polls_to_completion(both: Api) -> None:
    sql = b"CREATE TABLE t (v TEXT);\nINSERT INTO t VALUES ('a');\nINSERT INTO t VALUES ('b;c');\n"
    result = both.run_import(sql)
    assert result["status"] == "complete" and result["type"] == "import"
    assert result["result"]["num_queries"] == 3
    assert result["result"]["meta"]["rows_written"] == 2
    assert result["result"]["final_bookmark"] > result["at_bookmark"]
    assert both.rows("SELECT v FROM t") == [{"v": "a"}, {"v": "b;c"}]
    again = {"action": "poll", "current_bookmark": result["at_bookmark"]}
    assert both.client.post(f"/{both.db}/import", json=again).json()["result"] == {
        "success": False,
        "error": "Not currently importing anything.",
    }
    # Same file again: D1 already holds it, so init starts the import straight away.
    etag = hashlib.md5(sql).hexdigest()
    shortcut = both.client.post(f"/{both.db}/import", json={"action": "init", "etag": etag})
    assert shortcut.status_code == 202 and "upload_url" not in shortcut.json()["result"]
    assert both.emu.auth_leaks == 0


def test_import_is_all_or_nothing(api: Api) -> None:
    failed = api.run_import(
        b"CREATE TABLE t (v);\nINSERT INTO t VALUES (1);\nINSERT INTO nope VALUES (1);"
    )
    assert failed["status"] == "error"
    assert failed["error"] == failed["errors"][0] == "no such table: nope: SQLITE_ERROR"
    assert api.rows("SELECT count(*) AS n FROM sqlite_schema WHERE name = 't'") == [{"n": 0}]
    dumped = api.run_import(b"BEGIN TRANSACTION;\nCREATE TABLE t (v);\nCOMMIT;\n")
    assert dumped["error"] == "cannot start a transaction within a transaction: SQLITE_ERROR"


def test_a_dump_reimports_into_an_empty_database(api: Api) -> None:
    api.ok(
        "CREATE TABLE p (id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT);"
        "CREATE TABLE c (p INTEGER REFERENCES p(id)); CREATE INDEX ci ON c (p);"
        "CREATE TRIGGER tr AFTER INSERT ON c BEGIN SELECT 1; END;"
        "INSERT INTO p (s) VALUES ('two\nlines'), (x'00'); INSERT INTO c VALUES (2)"
    )
    dump = api.dump()
    copy = api.client.post("", json={"name": "copy"}).json()["result"]["uuid"]
    clone = Api(api.emu, api.client, api.plain, copy)
    assert clone.run_import(dump.encode())["status"] == "complete"
    assert clone.dump() == dump


def test_import_upload_rules(api: Api) -> None:
    sql = b"SELECT 1;"
    etag = hashlib.md5(sql).hexdigest()
    init = api.client.post(f"/{api.db}/import", json={"action": "init", "etag": etag}).json()
    url = init["result"]["upload_url"]
    assert api.client.put(url, content=sql).status_code == 403  # carries the API token
    assert api.emu.auth_leaks == 1
    chunked = api.plain.put(url, content=iter([sql]))
    assert chunked.status_code == 501 and "NotImplemented" in chunked.text
    assert api.plain.put(url, content=b"SELECT 2;").status_code == 200  # wrong content
    ingest = {"action": "ingest", "etag": etag, "filename": init["result"]["filename"]}
    mismatch = api.client.post(f"/{api.db}/import", json=ingest).json()["result"]
    assert mismatch["success"] is False and "etag" in mismatch["error"]


# -- time travel -----------------------------------------------------------------------------


def test_bookmarks_restore_and_undo(api: Api) -> None:
    path = f"/{api.db}/time_travel"
    api.ok("CREATE TABLE t (v); INSERT INTO t VALUES (1)")
    before = api.client.get(f"{path}/bookmark").json()["result"]["bookmark"]
    assert len(before.split("-")) == 4 and len(before.split("-")[3]) == 32
    api.ok("INSERT INTO t VALUES (2)")
    restored = api.client.post(f"{path}/restore", params={"bookmark": before}).json()["result"]
    assert restored["message"] == "Database restored successfully"
    assert before < restored["previous_bookmark"] < restored["bookmark"]
    assert api.rows("SELECT v FROM t") == [{"v": 1}]
    undo = api.client.post(f"{path}/restore", params={"bookmark": restored["previous_bookmark"]})
    assert undo.status_code == 200 and api.rows("SELECT v FROM t") == [{"v": 1}, {"v": 2}]
    unknown = api.client.post(f"{path}/restore", params={"bookmark": "00000000-x"})
    assert _error(unknown)[:2] == (400, 7400)
    assert _error(api.client.post(f"{path}/restore"))[:2] == (400, 7400)


def test_timestamps_map_to_the_newest_bookmark_at_or_before(timed: tuple[Api, FakeTime]) -> None:
    api, fake = timed

    def iso(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")

    created = fake.now
    fake.now += 60
    api.ok("CREATE TABLE t (v)")
    fake.now += 60
    path = f"/{api.db}/time_travel/bookmark"
    at_creation = api.client.get(path, params={"timestamp": iso(created + 30)}).json()["result"]
    assert at_creation["bookmark"] < api.client.get(path).json()["result"]["bookmark"]
    api.client.post(f"/{api.db}/time_travel/restore", params={"timestamp": iso(created + 30)})
    assert api.rows("SELECT count(*) AS n FROM sqlite_schema WHERE name = 't'") == [{"n": 0}]
    assert _error(api.client.get(path, params={"timestamp": iso(created - 1)}))[:2] == (400, 7400)
    assert _error(api.client.get(path, params={"timestamp": iso(fake.now + 5)}))[:2] == (400, 7400)


def test_lazy_snapshots_notice_changes_made_behind_the_api(tmp_path: Path) -> None:
    emu = D1Emulator(tmp_path, snapshots=False)
    emu.create_database("db")
    api = _clients(emu, emu.base_url, emu.transport())
    first = api.client.get(f"/{api.db}/time_travel/bookmark").json()["result"]["bookmark"]
    with sqlite3.connect(emu.db_path("db")) as conn:
        conn.execute("CREATE TABLE behind (v)")
    second = api.client.get(f"/{api.db}/time_travel/bookmark").json()["result"]["bookmark"]
    assert first < second
    emu.close()


# -- faults ----------------------------------------------------------------------------------


def test_status_faults_answer_instead_of_d1_and_expire(both: Api) -> None:
    both.emu.faults.add("POST", r"/query$", status=429, headers={"Retry-After": "1"}, times=1)
    both.emu.faults.add("POST", r"/query$", body="boom", status=503, after=1, times=1)
    limited = both.query("SELECT 1")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert _error(limited)[1] == 971
    assert both.query("SELECT 'boom'").status_code == 200  # let through by after=1
    assert both.query("SELECT 'boom'").status_code == 503
    assert both.query("SELECT 'boom'").status_code == 200  # expired
    assert [r.status for r in both.emu.requests] == [429, 200, 503, 200]


def test_drop_before_runs_nothing_and_drop_after_commits_but_loses_the_answer(both: Api) -> None:
    both.ok("CREATE TABLE t (v)")
    both.emu.faults.add("POST", r"/query$", drop_before=True, times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        both.query("INSERT INTO t VALUES (1)")
    both.emu.faults.add("POST", r"/query$", drop_after=True, times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        both.query("INSERT INTO t VALUES (2)")
    assert both.rows("SELECT v FROM t") == [{"v": 2}]
    assert [r.status for r in both.emu.requests[-3:]] == [None, None, 200]


def test_truncated_download_fails_mid_body(both: Api) -> None:
    both.ok("CREATE TABLE t (v); INSERT INTO t SELECT value FROM json_each('[1,2,3,4,5]')")
    url = both.export().json()["result"]["result"]["signed_url"]
    both.emu.faults.add("GET", r"^/__signed/", truncate=20, times=1)
    with both.plain.stream("GET", url) as response:
        assert int(response.headers["Content-Length"]) > 20
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert both.plain.get(url).status_code == 200


def test_delay_and_latency_use_the_injected_sleep(timed: tuple[Api, FakeTime]) -> None:
    api, fake = timed
    api.emu.latency = 0.05
    api.emu.faults.add("POST", r"/query$", delay=2.0, times=1)
    api.ok("SELECT 1")
    api.ok("SELECT 1")
    assert fake.slept == [2.0, 0.05, 0.05]


def test_export_and_import_job_faults(api: Api) -> None:
    api.emu.faults.add(path=r"/export$", export_never_completes=True, times=1)
    stuck = api.export()
    assert stuck.status_code == 202 and stuck.json()["result"]["status"] == "active"
    api.emu.faults.add(path=r"/export$", export_fails="D1 Export error: boom", times=1)
    assert api.export().json()["result"]["error"] == "D1 Export error: boom"
    assert api.export().json()["result"]["status"] == "complete"
    api.emu.faults.add(path=r"/import$", import_fails="Network connection lost.", times=1)
    failed = api.run_import(b"CREATE TABLE t (v);")
    assert failed["status"] == "error" and failed["error"] == "Network connection lost."
    assert api.rows("SELECT count(*) AS n FROM sqlite_schema WHERE name = 't'") == [{"n": 0}]
    with pytest.raises(ValueError, match="action"):
        api.emu.faults.add("GET", "/")


# -- request shapes agree with Cloudflare's Python SDK ----------------------------------------


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 20_000)
    | st.floats(allow_nan=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)


def _mutated(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Valid bodies, and each with a key dropped, a value replaced, or an unknown key added."""

    def mutations(body: dict[str, Any]) -> st.SearchStrategy[Any]:
        keys = sorted(body)
        options = [st.just(body), _ANY.map(lambda v: {**body, "zz": v})]
        if keys:
            options.append(
                st.sampled_from(keys).map(lambda k: {x: v for x, v in body.items() if x != k})
            )
            options.append(
                st.tuples(st.sampled_from(keys), _ANY).map(lambda kv: {**body, kv[0]: kv[1]})
            )
        return st.one_of(options)

    return valid.flatmap(mutations)


_WORD = st.text(max_size=4)
_STATEMENT = _mutated(
    st.fixed_dictionaries(
        {"sql": _WORD},
        optional={
            "params": st.lists(
                _WORD | st.integers() | st.floats() | st.booleans() | st.none(), max_size=2
            )
        },
    )
)
_BATCH = st.fixed_dictionaries({"batch": st.lists(_STATEMENT, max_size=2)})
_BODIES = {
    "export": st.fixed_dictionaries(
        {"output_format": st.just("polling")},
        optional={
            "current_bookmark": _WORD,
            "dump_options": _mutated(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "no_data": st.booleans(),
                        "no_schema": st.booleans(),
                        "tables": st.lists(_WORD, max_size=2),
                    },
                )
            ),
        },
    ),
    "import": st.fixed_dictionaries({"action": st.just("init"), "etag": _WORD})
    | st.fixed_dictionaries({"action": st.just("ingest"), "etag": _WORD, "filename": _WORD})
    | st.fixed_dictionaries({"action": st.just("poll"), "current_bookmark": _WORD}),
    "create": st.fixed_dictionaries(
        {"name": st.text(alphabet="az09-_A. ", max_size=5)},
        optional={
            "primary_location_hint": st.sampled_from(["weur", "oc", "WEUR", "mars"]),
            "jurisdiction": st.sampled_from(["eu", "fedramp", "us", "mars"]),
            "read_replication": _mutated(
                st.fixed_dictionaries({"mode": st.sampled_from(["auto", "disabled", "off"])})
            ),
        },
    ),
    "query": _STATEMENT | _BATCH | st.tuples(_STATEMENT, _BATCH).map(lambda two: two[0] | two[1]),
}
# The list endpoint's parameters travel as query text, read the same way on both sides.
_LIST_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=3),
        "page": st.integers(-1, 3).map(str) | st.text(max_size=2),
        "per_page": st.integers(0, 10_010).map(str) | st.sampled_from(["9", "10", "10000"]),
        "zz": st.text(max_size=2),
    },
)


@pytest.mark.parametrize("kind", sorted(_BODIES))
def test_accepted_request_shapes_agree_with_the_cloudflare_sdk(kind: wire.Kind) -> None:
    @settings(max_examples=300, deadline=None, database=None)
    @given(_mutated(_BODIES[kind]) | _ANY)
    def agree(body: Any) -> None:
        sdk = wire.request_problem(kind, body)
        assert (schemas.shape_problem(kind, body) is None) == (sdk is None), (body, sdk)

    agree()


@settings(max_examples=300, deadline=None, database=None)
@given(_LIST_QUERY)
def test_accepted_list_parameters_agree_with_the_cloudflare_sdk(query: dict[str, str]) -> None:
    sdk = wire.request_problem("list", query)
    assert (schemas.shape_problem("list", schemas.list_params(query)) is None) == (sdk is None), sdk


@pytest.mark.parametrize(
    ("kind", "body", "rule"),
    [
        ("list", {"per_page": 9}, "minimum of 10"),
        ("list", {"per_page": 10001}, "maximum of 10000"),
        ("list", {"page": 0}, "minimum of 1"),
        ("create", {"name": "Bad Name"}, "does not match"),
    ],
)
def test_d1s_rules_narrow_what_the_sdk_accepts(kind: wire.Kind, body: Any, rule: str) -> None:
    assert wire.request_problem(kind, body) is None
    assert rule in (schemas.problem(kind, body) or "")


# -- serving ---------------------------------------------------------------------------------


def test_loopback_server_handles_concurrent_requests(served_emulator: ServedEmulator) -> None:
    emu = served_emulator.emulator
    api = _clients(emu, served_emulator.base_url, None)
    api.ok("CREATE TABLE t (v INTEGER)")

    def insert(n: int) -> int:
        return api.query("INSERT INTO t VALUES (?)", [n]).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(insert, range(64))) == {200}
    assert api.rows("SELECT count(*) AS n, sum(v) AS s FROM t") == [{"n": 64, "s": 2016}]
    api.client.close()


def test_large_download_streams_with_its_content_length(served_emulator: ServedEmulator) -> None:
    emu = served_emulator.emulator
    api = _clients(emu, served_emulator.base_url, None)
    api.ok(
        "CREATE TABLE t (v TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
        "SELECT i + 1 FROM n WHERE i < 3000) INSERT INTO t SELECT printf('%.1000c', 'x') FROM n"
    )
    url = api.export().json()["result"]["result"]["signed_url"]
    received = 0
    with api.plain.stream("GET", url) as response:
        for chunk in response.iter_bytes():
            received += len(chunk)
        assert received == int(response.headers["Content-Length"]) > 3_000_000
    api.client.close()


def test_d1_env_points_at_the_served_emulator(
    d1_env: dict[str, str], served_emulator: ServedEmulator
) -> None:
    assert d1_env["CLOUDFLARE_API_BASE_URL"] == served_emulator.base_url
    assert d1_env["CLOUDFLARE_API_BASE_URL"].startswith("http://127.0.0.1:")
    headers = {"Authorization": f"Bearer {d1_env['CLOUDFLARE_API_TOKEN']}"}
    account = d1_env["CLOUDFLARE_ACCOUNT_ID"]
    url = f"{d1_env['CLOUDFLARE_API_BASE_URL']}/accounts/{account}/d1/database"
    listed = httpx.get(url, headers=headers, trust_env=False).json()["result"]
    assert listed[0]["name"] == "telegram-conversations"


def test_serving_refuses_non_loopback_hosts(emulator: D1Emulator) -> None:
    with pytest.raises(ValueError, match="loopback"), emulator.serve("0.0.0.0"):
        pass


def test_command_line_entry_point_serves_until_stopped(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--root", str(tmp_path), "--db", "a", "--db", "b"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        url = f"{base_url}/accounts/{'0123456789abcdef' * 2}/d1/database"
        auth = {"Authorization": "Bearer test-token"}
        listed = httpx.get(url, headers=auth, trust_env=False).json()
        assert [d["name"] for d in listed["result"]] == ["a", "b"]
    finally:
        process.terminate()
        process.wait(timeout=10)
