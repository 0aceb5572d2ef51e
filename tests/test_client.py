"""D1Client against respx routes as its transport: request shapes, error mapping,
retries with recorded (never real) sleeps, polling flows and signed-URL transfers."""

from __future__ import annotations

import hashlib
import json
import random
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from d1deploy import errors
from d1deploy.backend import ExportOptions, Statement
from d1deploy.client import D1Client
from d1deploy.config import validate_base_url
from d1deploy.defaults import API_BASE_URL
from tests import wire
from tests.helpers import FakeTime, requests_of

TOKEN = "tok-SECRET-123"
ACCOUNT = "acc123"
BASE = "https://api.test/client/v4"
DB = "0b6b1c5e-1111-2222-3333-444455556666"
ROOT = f"{BASE}/accounts/{ACCOUNT}/d1/database"
SIGNED = "https://r2.test/bucket/dump.sql"
SIGNED_QUERY = "?X-Amz-Signature=sig-SECRET&X-Amz-Expires=3600"

Reply = httpx.Response | Exception


@pytest.fixture
def api() -> Iterator[respx.Router]:
    """A respx router as the client's transport: a request no route matches fails the
    test, and so does a route never called; a route given a list of replies fails on
    one request more than the list has, so an extra retry cannot hide."""
    router = respx.Router(assert_all_called=True, assert_all_mocked=True)
    yield router
    router.assert_all_called()


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make(api: respx.Router, ft: FakeTime) -> Iterator[Callable[..., D1Client]]:
    made: list[D1Client] = []

    def build(**kw: Any) -> D1Client:
        options: dict[str, Any] = {
            "token": TOKEN,
            "account_id": ACCOUNT,
            "base_url": BASE,
            "transport": httpx.MockTransport(api.handler),
            "sleep": ft.sleep,
            "clock": ft.clock,
            "jitter": lambda: 0.0,
        }
        options.update(kw)
        client = D1Client(**options)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def ok(result: Any, status: int = 200, **extra: Any) -> httpx.Response:
    body = {"success": True, "errors": [], "messages": [], "result": result, **extra}
    return httpx.Response(status, json=body)


def fail(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": []}
    return httpx.Response(status, json={**body, "result": None}, headers=headers)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def row(n: int = 1) -> dict[str, Any]:
    return {"success": True, "results": [{"n": n}], "meta": {"duration": 0.5, "changes": 0}}


def fits_the_sdk(request: httpx.Request) -> bool:
    """Whether a request's body, or query, is one Cloudflare's SDK types let a client send."""
    kind = wire.endpoint(request.method, request.url.path)
    if wire.params_travel_in(kind) == "query":
        return not request.content and wire.request_problem(kind, dict(request.url.params)) is None
    return not request.url.params and wire.request_problem(kind, body(request)) is None


def select(n: int = 1) -> list[Statement]:
    return [Statement(f"SELECT {n} AS n")]


# -- base URL and token ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (API_BASE_URL, API_BASE_URL),
        ("https://proxy.example/cf/client/v4/", "https://proxy.example/cf/client/v4"),
        ("http://127.0.0.1:8787/client/v4", "http://127.0.0.1:8787/client/v4"),
        ("http://127.9.9.9/client/v4", "http://127.9.9.9/client/v4"),
        ("http://localhost:1/client/v4/", "http://localhost:1/client/v4"),
        ("http://[::1]:8787/client/v4", "http://[::1]:8787/client/v4"),
    ],
)
def test_base_url_accepted(url: str, expected: str) -> None:
    assert validate_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://api.cloudflare.com/client/v4", "unencrypted"),
        ("http://10.0.0.1/client/v4", "unencrypted"),
        ("ftp://127.0.0.1/client/v4", "not an http(s) URL"),
        ("api.cloudflare.com/client/v4", "not an http(s) URL"),
        ("https://api.cloudflare.com/", "/client/v4"),
        ("https://api.cloudflare.com/client/v3", "/client/v4"),
    ],
)
def test_base_url_refused(url: str, why: str) -> None:
    with pytest.raises(errors.UsageError) as info:
        validate_base_url(url)
    assert why in str(info.value)
    assert info.value.hint and "loopback" in info.value.hint


def test_constructor_validates_base_url() -> None:
    with pytest.raises(errors.UsageError):
        D1Client(token=TOKEN, account_id=ACCOUNT, base_url="http://example.com/client/v4")


@pytest.mark.parametrize(
    "token", ["tok-SECRET-123…", "tok-SECRET-123\u2019x", "tok-SÉCRET-123", " tok"]
)
def test_unusable_token_refused_without_echo(token: str) -> None:
    with pytest.raises(errors.UsageError) as info:
        D1Client(token=token, account_id=ACCOUNT)
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value)
    assert "SECRET" not in (info.value.hint or "")


def test_copy_paste_character_named_as_such() -> None:
    with pytest.raises(errors.UsageError, match="copy-paste"):
        D1Client(token="abc…", account_id=ACCOUNT)


def test_api_headers_and_context_manager(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[ok({"uuid": DB, "name": "prod"})])
    with make() as client:
        client.get_database(DB)
    sent = requests_of(api)[0]
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["user-agent"].startswith("d1deploy/")
    with pytest.raises(RuntimeError):
        client.get_database(DB)


# -- databases ------------------------------------------------------------------------------
def db(name: str, n: int = 0) -> dict[str, Any]:
    return {"uuid": f"00000000-0000-0000-0000-{n:012d}", "name": name, "version": "production"}


def test_list_pages_until_total_count(api: respx.Router, make: Callable[..., D1Client]) -> None:
    dbs = [db(f"db{i}", i) for i in range(25)]
    api.get(ROOT).mock(
        side_effect=[
            *(
                ok(dbs[i : i + 10], result_info={"page": p, "per_page": 10, "total_count": 25})
                for p, i in enumerate(range(0, 30, 10), 1)
            )
        ]
    )
    found = make().list_databases(per_page=10)
    assert [d.name for d in found] == [d["name"] for d in dbs]
    assert found[3].uuid == dbs[3]["uuid"] and found[3].version == "production"
    pages = [dict(r.url.params) for r in requests_of(api)]
    assert pages == [{"page": str(p), "per_page": "10"} for p in (1, 2, 3)]
    assert all(fits_the_sdk(r) for r in requests_of(api))


def test_list_stops_on_exact_total_and_on_short_page(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    full = [db(f"a{i}", i) for i in range(10)]
    api.get(ROOT).mock(side_effect=[ok(full, result_info={"total_count": 10}), ok([])])
    assert len(make().list_databases(per_page=10)) == 10
    assert len(requests_of(api)) == 1
    api.clear()
    api.get(ROOT).mock(side_effect=[ok(full), ok(full[:3]), ok([])])
    assert len(make().list_databases("a", per_page=10)) == 13
    assert [r.url.params["name"] for r in requests_of(api)[1:]] == ["a", "a"]
    assert all(fits_the_sdk(r) for r in requests_of(api))


def test_get_database_details(api: respx.Router, make: Callable[..., D1Client]) -> None:
    details = {**db("prod"), "num_tables": 4, "file_size": 12288, "created_at": "2024-01-01"}
    api.get(f"{ROOT}/{DB}").mock(side_effect=[ok(details)])
    info = make().get_database(DB)
    assert (info.name, info.num_tables, info.file_size, info.created_at) == (
        "prod",
        4,
        12288,
        "2024-01-01",
    )


def test_resolve_name_matches_exactly(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(ROOT).mock(side_effect=[ok([db("prod-db-2", 2), db("prod-db", 1)])])
    one = db("prod-db", 1)
    api.get(f"{ROOT}/{one['uuid']}").mock(
        side_effect=[ok({**one, "file_size": 12288, "num_tables": 3})]
    )
    info = make().resolve_database("prod-db")
    assert info.name == "prod-db" and info.uuid.endswith("1")
    assert requests_of(api)[0].url.params["name"] == "prod-db"
    # The list carries no file_size (Cloudflare's DatabaseListResponse): the GET does.
    assert (info.file_size, info.num_tables) == (12288, 3)


def test_resolve_uuid_gets(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[ok({"uuid": DB, "name": "prod"})])
    assert make().resolve_database(DB).name == "prod"


def test_resolve_not_found_lists_existing_names(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    existing = [db(f"other{i}", i) for i in range(25)]
    api.get(ROOT).mock(
        side_effect=[ok([db("prod-db-2")]), ok(existing, result_info={"total_count": 25})]
    )
    with pytest.raises(errors.NotFound) as info:
        make().resolve_database("prod-db")
    message = str(info.value)
    assert "'prod-db' not found" in message
    assert "other0" in message and "other19" in message and "other20" not in message
    assert "(and 5 more)" in message
    assert "name" not in requests_of(api)[1].url.params


def test_resolve_unknown_uuid_lists_names(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[fail(404, 7404, "Not Found")])
    api.get(ROOT).mock(side_effect=[ok([])])
    with pytest.raises(errors.NotFound, match="has no D1 databases"):
        make().resolve_database(DB)


# -- query ----------------------------------------------------------------------------------
def test_query_request_and_results(api: respx.Router, make: Callable[..., D1Client]) -> None:
    results = [
        {
            "success": True,
            "results": [],
            "meta": {
                "changes": 1,
                "rows_read": 0,
                "rows_written": 2,
                "duration": 0.25,
                "last_row_id": 7,
                "served_by": "v3-prod",
            },
        },
        {
            "success": True,
            "results": [
                {"id": 1, "name": "a", "data": [0, 255, 16], "score": 1.5},
                {"id": 2, "name": None, "data": [], "score": None},
            ],
            "meta": {"rows_read": 2},
        },
    ]
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[ok(results)])
    got = make().query(
        DB,
        [
            Statement("INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?)", (1, "x", None, 2.5)),
            Statement("SELECT id, name, data, score FROM t"),
        ],
    )
    assert body(requests_of(api)[0]) == {
        "batch": [
            {
                "sql": "INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?)",
                "params": [1, "x", None, 2.5],
            },
            {"sql": "SELECT id, name, data, score FROM t"},
        ]
    }
    first, second = got
    assert (first.changes, first.rows_written, first.duration_ms, first.last_row_id) == (
        1,
        2,
        0.25,
        7,
    )
    assert second.columns == ("id", "name", "data", "score")
    assert second.rows == ((1, "a", b"\x00\xff\x10", 1.5), (2, None, b"", None))
    assert second.rows_read == 2 and second.last_row_id is None


def test_query_bodies_fit_the_sdk_widened_only_for_non_text_params(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[ok([row(), row()])] * 2)
    client = make()
    client.query(DB, [Statement("SELECT ?", ("a",)), Statement("SELECT 2")], read_only=True)
    client.query(DB, [Statement("SELECT ?, ?, ?", (1, None, True)), Statement("SELECT 2")])
    texts, natives = (body(r) for r in requests_of(api))
    assert wire.request_problem("query", texts, widened=False) is None
    # The SDK types params as strings; d1deploy binds numbers and NULL natively instead.
    assert natives["batch"][0]["params"] == [1, None, 1]
    assert "params" in (wire.request_problem("query", natives, widened=False) or "")
    assert all(fits_the_sdk(r) for r in requests_of(api))


def test_query_blob_param_refused_before_sending(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    with pytest.raises(errors.InputError) as info:
        make().query(DB, [Statement("INSERT INTO t VALUES (?)", (b"\x00",), "m.sql", 3)])
    assert info.value.location == "m.sql:3" and "X'" in (info.value.hint or "")
    assert requests_of(api) == []


def test_query_nothing_sends_nothing(api: respx.Router, make: Callable[..., D1Client]) -> None:
    assert make().query(DB, []) == []
    assert requests_of(api) == []


def test_query_item_failure_inside_success_envelope(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    bad = {"success": False, "error": "no such table: x: SQLITE_ERROR"}
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[ok([row(), bad])])
    with pytest.raises(errors.SqlError) as info:
        make().query(DB, [Statement("SELECT 1"), Statement("SELECT * FROM x")])
    assert info.value.index == 1 and info.value.sqlite_code == "SQLITE_ERROR"


def test_query_result_count_mismatch_is_malformed(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[ok([row()])])
    with pytest.raises(errors.ServerError, match="1 results for 2 statements"):
        make().query(DB, [Statement("SELECT 1"), Statement("SELECT 2")])


# -- error mapping --------------------------------------------------------------------------
HTML = {"content-type": "text/html"}


@pytest.mark.parametrize(
    ("response", "kind", "text"),
    [
        (fail(400, 7500, "no such table: events: SQLITE_ERROR"), errors.SqlError, "no such"),
        (fail(400, 7500, "incomplete input: SQLITE_ERROR [code: 7500]"), errors.SqlError, "inc"),
        (fail(500, 7500, "UNIQUE constraint failed: t.a: SQLITE_CONSTRAINT"), errors.SqlError, "U"),
        (fail(400, 9106, "Missing X-Auth-Key"), errors.AuthError, "token was refused"),
        (fail(403, 10000, "Authentication error"), errors.AuthError, "Authentication error"),
        (fail(403, 7403, "account is not valid"), errors.AuthError, "not valid"),
        (fail(401, 1000, "Unauthorized"), errors.AuthError, "Unauthorized"),
        (fail(404, 7404, "Not Found"), errors.NotFound, "not found"),
        (fail(200, 7404, "Not Found"), errors.NotFound, "not found"),
        (fail(429, 971, "D1 DB is overloaded"), errors.RateLimited, "overloaded"),
        (fail(500, 7500, "internal error; reference = e_1"), errors.ServerError, "HTTP 500"),
        (fail(503, 1, "unavailable"), errors.ServerError, "HTTP 503"),
        (fail(200, 1234, "odd"), errors.ServerError, "odd"),
        (fail(400, 7406, "System limit reached"), errors.UsageError, "System limit"),
        (
            httpx.Response(502, text="<html>bad gateway</html>", headers=HTML),
            errors.ServerError,
            "malformed",
        ),
        (httpx.Response(200, text="not json"), errors.ServerError, "malformed"),
        (httpx.Response(200, json={"result": []}), errors.ServerError, "malformed"),
        (
            httpx.Response(403, text="<html>", headers={**HTML, "cf-mitigated": "challenge"}),
            errors.AuthError,
            "challenge",
        ),
        (httpx.ConnectError("connection refused"), errors.NetworkError, "could not reach"),
        (httpx.ReadTimeout("timed out"), errors.NetworkError, "ReadTimeout"),
    ],
)
def test_error_mapping(
    api: respx.Router,
    make: Callable[..., D1Client],
    response: Reply,
    kind: type[errors.D1DeployError],
    text: str,
) -> None:
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[response])
    with pytest.raises(errors.D1DeployError) as info:
        make(max_attempts=1).query(DB, select())
    err = info.value
    assert type(err) is kind
    assert text in str(err)
    if kind is errors.SqlError:
        assert isinstance(err, errors.SqlError) and err.sqlite_code is not None
        assert str(err) == err.message == response.json()["errors"][0]["message"]  # type: ignore[union-attr]
    else:
        assert str(err).startswith(f"query on database {DB}")
    if kind is errors.AuthError and "challenge" not in text:
        assert err.hint and "Account > D1 > Edit" in err.hint
    for shown in (str(err), repr(err), err.hint or ""):
        assert TOKEN not in shown


def test_sqlite_code_of_extended_form(api: respx.Router, make: Callable[..., D1Client]) -> None:
    text = (
        "FOREIGN KEY constraint failed: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_FOREIGNKEY)"
    )
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[fail(400, 7500, text)])
    with pytest.raises(errors.SqlError) as info:
        make().query(DB, select())
    assert info.value.sqlite_code == "SQLITE_CONSTRAINT" and info.value.message == text
    assert len(requests_of(api)) == 1


def test_echoed_token_is_redacted(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[fail(400, 1001, f"bad header: Bearer {TOKEN}")])
    api.post(f"{ROOT}/{DB}/query").mock(
        side_effect=[ok([{"success": False, "error": f"near {TOKEN}: syntax error: SQLITE_ERROR"}])]
    )
    client = make()
    for call in (lambda: client.get_database(DB), lambda: client.query(DB, select())):
        with pytest.raises(errors.D1DeployError) as info:
            call()
        assert "[redacted]" in str(info.value)
        assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


# -- retries --------------------------------------------------------------------------------
def limited(retry_after: str, **headers: str) -> httpx.Response:
    return fail(429, 971, "rate limited", {"retry-after": retry_after, **headers})


def test_429_honours_retry_after_seconds_even_for_writes(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    said: list[str] = []
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[limited("3"), ok([row()])])
    make(on_retry=said.append).query(DB, [Statement("INSERT INTO t VALUES (1)")])
    assert len(requests_of(api)) == 2 and ft.sleeps == [3.0]
    assert said == ["429 from D1, retrying in 3.0 s (attempt 2/5)"]


def test_429_honours_retry_after_http_date(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    api.get(f"{ROOT}/{DB}/time_travel/bookmark").mock(
        side_effect=[limited(later, date=format_datetime(now, usegmt=True)), ok({"bookmark": "b1"})]
    )
    assert make().bookmark(DB) == "b1"
    assert ft.sleeps == [7.0]


def test_429_waits_at_least_a_second(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[limited("0"), ok(db("x"))])
    make().get_database(DB)
    assert ft.sleeps == [1.0]


def test_429_asking_over_60_s_fails_fast(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[limited("120"), ok(db("x"))])
    with pytest.raises(errors.RateLimited) as info:
        make().get_database(DB)
    assert info.value.retry_after == 120.0 and "120 s" in str(info.value)
    assert len(requests_of(api)) == 1 and ft.sleeps == []
    assert info.value.exit_code == 4


def test_jitter_is_bounded(api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[limited("2"), ok(db("x"))])
    make(jitter=lambda: 5.0).get_database(DB)
    api.clear()
    api.get(f"{ROOT}/{DB}").mock(side_effect=[*[limited("2")] * 20, ok(db("x"))])
    make(jitter=random.random, max_attempts=30, max_retry_time=1e9).get_database(DB)
    assert ft.sleeps[0] == 3.0
    assert all(2.0 <= s < 3.0 for s in ft.sleeps[1:]) and len(ft.sleeps) == 21


def test_5xx_retried_for_reads_with_exponential_backoff(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    said: list[str] = []
    api.post(f"{ROOT}/{DB}/query").mock(
        side_effect=[fail(503, 1, "down"), fail(502, 1, "down"), ok([row()])]
    )
    got = make(on_retry=said.append).query(DB, select(), read_only=True)
    assert got[0].rows == ((1,),)
    assert ft.sleeps == [1.0, 2.0] and len(requests_of(api)) == 3
    assert said[1] == "502 from D1, retrying in 2.0 s (attempt 3/5)"


def test_5xx_not_retried_for_a_write(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[fail(503, 1, "down"), ok([row()])])
    with pytest.raises(errors.ServerError) as info:
        make().query(DB, [Statement("INSERT INTO t VALUES (1)")])
    assert len(requests_of(api)) == 1 and ft.sleeps == []
    assert info.value.hint and "may or may not have run" in info.value.hint


def test_read_error_not_retried_for_a_write(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/time_travel/restore").mock(
        side_effect=[httpx.ReadError("reset"), ok({})]
    )
    with pytest.raises(errors.NetworkError):
        make().restore(DB, bookmark="b0")
    assert len(requests_of(api)) == 1


def test_connect_error_retried_for_a_write(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    said: list[str] = []
    api.post(f"{ROOT}/{DB}/query").mock(side_effect=[httpx.ConnectError("refused"), ok([row()])])
    make(on_retry=said.append).query(DB, [Statement("INSERT INTO t VALUES (1)")])
    assert len(requests_of(api)) == 2 and ft.sleeps == [1.0]
    assert said == ["network error (ConnectError), retrying in 1.0 s (attempt 2/5)"]


@pytest.mark.parametrize(
    ("cause", "said"),
    [
        (socket.gaierror(-2, "Name or service not known"), "its host name does not resolve (DNS"),
        (ConnectionRefusedError(111, "Connection refused"), "(connection refused)"),
    ],
    ids=["dns", "refused"],
)
def test_an_unreachable_api_fails_at_once_naming_the_url(
    ft: FakeTime, make: Callable[..., D1Client], cause: OSError, said: str
) -> None:
    """Nothing answers there, and retrying will not change that soon: no retry (a read
    or a write alike), and the message says which URL was tried."""
    tried: list[httpx.Request] = []

    # A transport of its own: respx re-raises a side effect's error from its own, which
    # would hide the OS error under it that this test is about.
    def unreachable(request: httpx.Request) -> httpx.Response:
        tried.append(request)
        raise httpx.ConnectError(str(cause), request=request) from cause

    refusing = httpx.MockTransport(unreachable)
    for call in (
        make(transport=refusing).list_databases,
        lambda: make(transport=refusing).query(DB, select()),
    ):
        with pytest.raises(errors.Unreachable) as info:
            call()
        assert info.value.exit_code == 4
        assert f"could not reach {ROOT}" in info.value.message and said in info.value.message
    assert [r.method for r in tried] == ["GET", "POST"] and ft.sleeps == []


def test_attempts_are_bounded(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[fail(500, 1, "down")] * 5)
    with pytest.raises(errors.ServerError) as info:
        make().get_database(DB)
    assert len(requests_of(api)) == 5 and ft.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert "gave up after 5 attempts over 15.0 s" in str(info.value)


def test_total_retry_time_is_bounded(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[httpx.ReadTimeout("slow")] * 3)
    with pytest.raises(errors.NetworkError, match=r"gave up after 3 attempts over 3\.0 s"):
        make(max_retry_time=5.0).get_database(DB)
    assert ft.sleeps == [1.0, 2.0]


def test_backoff_capped_at_ten_seconds(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[fail(500, 1, "down")] * 7)
    with pytest.raises(errors.ServerError):
        make(max_attempts=7, max_retry_time=1000).get_database(DB)
    assert ft.sleeps == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_429_gives_up_with_rate_limited(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/time_travel/restore").mock(side_effect=[limited("2")] * 3)
    with pytest.raises(errors.RateLimited, match=r"gave up after 3 attempts over 4\.0 s"):
        make(max_attempts=3).restore(DB, bookmark="b0")


# -- Time Travel ----------------------------------------------------------------------------
def test_bookmark_requests(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}/time_travel/bookmark").mock(
        side_effect=[ok({"bookmark": "00000085-0000024c"})] * 3
    )
    client = make()
    assert client.bookmark(DB) == "00000085-0000024c"
    client.bookmark(DB, datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    client.bookmark(DB, datetime(2026, 1, 2, 3, 4, 5))
    assert [dict(r.url.params) for r in requests_of(api)] == [
        {},
        {"timestamp": "2026-01-02T03:04:05Z"},
        {"timestamp": "2026-01-02T03:04:05Z"},
    ]
    assert all(fits_the_sdk(r) for r in requests_of(api))


def test_bookmark_missing_is_malformed(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.get(f"{ROOT}/{DB}/time_travel/bookmark").mock(side_effect=[ok({})])
    with pytest.raises(errors.ServerError, match="missing `bookmark`"):
        make(max_attempts=1).bookmark(DB)


def test_restore_sends_query_params_not_a_body(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    reply = {"bookmark": "b2", "previous_bookmark": "b1", "message": "Database restored"}
    api.post(f"{ROOT}/{DB}/time_travel/restore").mock(side_effect=[ok(reply)])
    result = make().restore(DB, bookmark="b0")
    sent = requests_of(api)[0]
    assert dict(sent.url.params) == {"bookmark": "b0"} and sent.content == b""
    assert fits_the_sdk(sent)
    assert (result.bookmark, result.previous_bookmark, result.message) == (
        "b2",
        "b1",
        "Database restored",
    )


# -- export ---------------------------------------------------------------------------------
def export_reply(status: str, *messages: str, **extra: Any) -> httpx.Response:
    result = {"success": True, "type": "export", "at_bookmark": "bm-1", "status": status}
    code = 202 if status == "active" else 200
    return ok({**result, "messages": list(messages), **extra}, status=code)


def complete(**extra: Any) -> httpx.Response:
    done = {"filename": "db.sql", "signed_url": SIGNED + SIGNED_QUERY}
    return export_reply("complete", "Finished", result=done, **extra)


def test_export_polls_until_complete(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/export").mock(
        side_effect=[
            export_reply("active", "Generating db.sql"),
            export_reply("active", "Uploaded part 2", "Uploaded part 1"),
            export_reply("active"),
            complete(),
        ]
    )
    seen: list[str] = []
    handle = make().export(DB, ExportOptions(no_data=True, tables=("a", "b")), seen.append)
    assert seen == ["Generating db.sql", "Uploaded part 2", "Uploaded part 1", "Finished"]
    assert ft.sleeps == [1.0, 1.0, 1.0]
    assert (handle.bookmark, handle.filename) == ("bm-1", "db.sql")
    bodies = [body(r) for r in requests_of(api)]
    dump = {"no_data": True, "no_schema": False, "tables": ["a", "b"]}
    assert bodies[0] == {"output_format": "polling", "dump_options": dump}
    assert all(b == {**bodies[0], "current_bookmark": "bm-1"} for b in bodies[1:])
    assert all(fits_the_sdk(r) for r in requests_of(api))


def test_export_poll_timeout(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client]
) -> None:
    api.post(f"{ROOT}/{DB}/export").mock(side_effect=[export_reply("active")] * 6)
    with pytest.raises(errors.PollTimeout) as info:
        make(poll_timeout=5.0, poll_interval=1.0).export(DB, ExportOptions())
    assert len(requests_of(api)) == 6 and ft.sleeps == [1.0] * 5
    assert "5 s" in str(info.value) and "blocks" in (info.value.hint or "")


def test_export_virtual_tables_hint(api: respx.Router, make: Callable[..., D1Client]) -> None:
    error = "D1 Export error: cannot export databases with Virtual Tables (fts5)"
    api.post(f"{ROOT}/{DB}/export").mock(side_effect=[export_reply("error", error=error)])
    with pytest.raises(errors.UsageError) as info:
        make().export(DB, ExportOptions())
    assert "Virtual Tables" in str(info.value)
    assert info.value.hint and "FTS5" in info.value.hint and "--table" in info.value.hint


def test_export_error_explained(api: respx.Router, make: Callable[..., D1Client]) -> None:
    api.post(f"{ROOT}/{DB}/export").mock(
        side_effect=[export_reply("error", "step 1", error="disk full")]
    )
    with pytest.raises(errors.ServerError) as info:
        make().export(DB, ExportOptions())
    assert "disk full" in str(info.value) and "step 1" in (info.value.hint or "")


def test_export_download_streams_without_token(
    api: respx.Router, make: Callable[..., D1Client]
) -> None:
    dump = b"PRAGMA defer_foreign_keys=TRUE;\n" + b"x" * (3 << 20)
    api.post(f"{ROOT}/{DB}/export").mock(side_effect=[complete()])
    signed = api.get(SIGNED).mock(return_value=httpx.Response(200, content=dump))
    handle = make().export(DB, ExportOptions())
    chunks = list(handle.download())
    assert b"".join(chunks) == dump and len(chunks) >= 3
    assert list(handle.download())  # each call starts over
    downloads = [call.request for call in signed.calls]
    assert len(downloads) == 2
    assert all("authorization" not in r.headers for r in downloads)
    assert downloads[0].url.params["X-Amz-Signature"] == "sig-SECRET"


class Dropping(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"PRAGMA"
        raise httpx.ReadError("connection reset")


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (httpx.Response(200, content=b"short", headers={"content-length": "100"}), "5 of 100"),
        (
            httpx.Response(200, headers={"content-length": "9"}, stream=httpx.ByteStream(b"abc")),
            "3 of 9",
        ),
        (httpx.Response(200, stream=Dropping()), "connection lost"),
        (httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>"), "HTTP 403"),
        (httpx.ConnectError("refused"), "connection lost"),
    ],
)
def test_export_download_failures(
    api: respx.Router, make: Callable[..., D1Client], reply: Reply, text: str
) -> None:
    api.post(f"{ROOT}/{DB}/export").mock(side_effect=[complete()])
    api.get(SIGNED).mock(side_effect=[reply])
    handle = make().export(DB, ExportOptions())
    with pytest.raises(errors.DownloadError) as info:
        b"".join(handle.download())
    assert text in str(info.value) and SIGNED in str(info.value)
    assert "sig-SECRET" not in str(info.value) and "sig-SECRET" not in repr(info.value)
    assert info.value.__cause__ is None


# -- import ---------------------------------------------------------------------------------
UPLOAD = "https://r2.test/upload/import.sql"


def poll_reply(status: str, *messages: str, **extra: Any) -> httpx.Response:
    result = {"success": True, "type": "import", "at_bookmark": "bm-9", "status": status}
    return ok({**result, "messages": list(messages), **extra}, 202 if status == "active" else 200)


def imported() -> httpx.Response:
    meta = {"rows_read": 3, "rows_written": 4, "duration": 12.5}
    done = {"final_bookmark": "bm-10", "num_queries": 2, "meta": meta}
    return poll_reply("complete", "Done", result=done)


@pytest.fixture
def sql_file(tmp_path: Path) -> Path:
    path = tmp_path / "seed.sql"
    path.write_bytes(b"INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\n" * 5000)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def uploaded(etag: str) -> httpx.Response:
    return httpx.Response(200, headers={"etag": f'"{etag}"'})


def test_import_full_flow(
    api: respx.Router, ft: FakeTime, make: Callable[..., D1Client], sql_file: Path
) -> None:
    etag = md5(sql_file)
    imports = api.post(f"{ROOT}/{DB}/import").mock(
        side_effect=[
            ok({"filename": "f.sql", "upload_url": UPLOAD + "?sig=up-SECRET"}),
            poll_reply("active", "Ingesting"),
            poll_reply("active"),
            imported(),
        ]
    )
    upload = api.put(UPLOAD).mock(side_effect=[uploaded(etag)])
    seen: list[str] = []
    result = make().import_file(DB, sql_file, seen.append)
    assert (result.num_queries, result.rows_read, result.rows_written) == (2, 3, 4)
    assert (result.final_bookmark, result.duration_ms) == ("bm-10", 12.5)
    assert seen == ["Ingesting", "Done"] and ft.sleeps == [1.0, 1.0]
    assert [body(call.request) for call in imports.calls] == [
        {"action": "init", "etag": etag},
        {"action": "ingest", "etag": etag, "filename": "f.sql"},
        {"action": "poll", "current_bookmark": "bm-9"},
        {"action": "poll", "current_bookmark": "bm-9"},
    ]
    assert all(fits_the_sdk(call.request) for call in imports.calls)
    ((put, _),) = upload.calls
    assert put.content == sql_file.read_bytes()
    assert put.headers["content-length"] == str(sql_file.stat().st_size)
    assert "transfer-encoding" not in put.headers and "authorization" not in put.headers


def test_import_already_uploaded(
    api: respx.Router, make: Callable[..., D1Client], sql_file: Path
) -> None:
    api.post(f"{ROOT}/{DB}/import").mock(
        side_effect=[poll_reply("active", "Processing"), imported()]
    )
    seen: list[str] = []
    assert make().import_file(DB, sql_file, seen.append).num_queries == 2
    assert "already uploaded" in seen[0] and seen[1:] == ["Processing", "Done"]
    assert [body(r)["action"] for r in requests_of(api)] == ["init", "poll"]


def test_import_etag_mismatch(
    api: respx.Router, make: Callable[..., D1Client], sql_file: Path
) -> None:
    imports = api.post(f"{ROOT}/{DB}/import").mock(
        side_effect=[ok({"filename": "f.sql", "upload_url": UPLOAD})]
    )
    api.put(UPLOAD).mock(side_effect=[uploaded("0" * 32)])
    with pytest.raises(errors.NetworkError, match="upload corrupted"):
        make().import_file(DB, sql_file)
    assert [body(call.request)["action"] for call in imports.calls] == ["init"]


def test_import_upload_refused(
    api: respx.Router, make: Callable[..., D1Client], sql_file: Path
) -> None:
    api.post(f"{ROOT}/{DB}/import").mock(
        side_effect=[ok({"filename": "f.sql", "upload_url": UPLOAD + "?s=x"})]
    )
    api.put(UPLOAD).mock(side_effect=[httpx.Response(403, text="<Error>AccessDenied</Error>")])
    with pytest.raises(errors.NetworkError) as info:
        make().import_file(DB, sql_file)
    assert "HTTP 403" in str(info.value) and "s=x" not in str(info.value)


def test_import_error_joins_errors_and_messages(
    api: respx.Router, make: Callable[..., D1Client], sql_file: Path
) -> None:
    api.post(f"{ROOT}/{DB}/import").mock(
        side_effect=[
            poll_reply(
                "error",
                "Executing line 7",
                error="statement failed",
                errors=["UNIQUE constraint failed: t.id: SQLITE_CONSTRAINT"],
            )
        ]
    )
    with pytest.raises(errors.SqlError) as info:
        make().import_file(DB, sql_file)
    text = str(info.value)
    assert "statement failed; UNIQUE constraint failed" in text and "Executing line 7" in text
    assert info.value.sqlite_code == "SQLITE_CONSTRAINT" and info.value.file == str(sql_file)


def test_import_polling_failure(
    api: respx.Router, make: Callable[..., D1Client], sql_file: Path
) -> None:
    failure = ok({"success": False, "error": "Not currently importing anything."})
    api.post(f"{ROOT}/{DB}/import").mock(side_effect=[poll_reply("active"), failure])
    with pytest.raises(errors.SqlError, match="Not currently importing anything"):
        make().import_file(DB, sql_file)


def test_import_unreadable_file(make: Callable[..., D1Client], tmp_path: Path) -> None:
    with pytest.raises(errors.InputError, match="cannot read"):
        make().import_file(DB, tmp_path / "missing.sql")


def test_import_reply_without_status_is_malformed(
    api: respx.Router, make: Callable[..., D1Client], sql_file: Path
) -> None:
    api.post(f"{ROOT}/{DB}/import").mock(side_effect=[ok({"filename": "f.sql"})])
    with pytest.raises(errors.ServerError, match="unknown import status"):
        make().import_file(DB, sql_file)
