"""RateLimitTransport: the pause after a 429 and the account's request budget, shared by
every client and thread sending through one transport (fake clocks only), and the
environment's proxy kept when the transport builds the real one itself."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import respx

from d1deploy import errors
from d1deploy.backend import ExportOptions
from d1deploy.client import D1Client
from d1deploy.ratelimit import RateLimitTransport
from tests.helpers import FakeTime, requests_of

TOKEN = "tok-SECRET-123"
ACCOUNT = "acc123"
BASE = "https://api.test/client/v4"
DB = "0b6b1c5e-1111-2222-3333-444455556666"
ROOT = f"{BASE}/accounts/{ACCOUNT}/d1/database"
SIGNED = "https://r2.test/bucket/dump.sql"


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def api() -> Iterator[respx.Router]:
    router = respx.Router(assert_all_called=True, assert_all_mocked=True)
    yield router
    router.assert_all_called()


def ok(result: object, status: int = 200) -> httpx.Response:
    body = {"success": True, "errors": [], "messages": [], "result": result}
    return httpx.Response(status, json=body)


def limited(retry_after: str) -> httpx.Response:
    body = {"success": False, "errors": [{"code": 971, "message": "limited"}], "result": None}
    return httpx.Response(429, json=body, headers={"retry-after": retry_after})


def client(transport: httpx.BaseTransport, **options: object) -> D1Client:
    return D1Client(
        token=TOKEN,
        account_id=ACCOUNT,
        base_url=BASE,
        transport=transport,
        sleep=lambda _: None,
        jitter=lambda: 0.0,
        **options,  # type: ignore[arg-type]
    )


def send(transport: httpx.BaseTransport, n: int = 1) -> None:
    for _ in range(n):
        transport.handle_request(httpx.Request("GET", f"{ROOT}/{DB}"))


def answering(reply: httpx.Response) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: reply)


# -- the pause after a 429 --------------------------------------------------------------------
def test_a_429_pauses_other_clients_sharing_the_transport(api: respx.Router, ft: FakeTime) -> None:
    api.get(f"{ROOT}/{DB}").mock(side_effect=[limited("5")])
    api.get(f"{ROOT}/other").mock(side_effect=[ok({"uuid": DB, "name": "other"})])
    shared = RateLimitTransport(
        httpx.MockTransport(api.handler), limit=None, clock=ft.clock, sleep=ft.sleep
    )
    with pytest.raises(errors.RateLimited):
        client(shared, max_attempts=1).get_database(DB)
    assert ft.sleeps == []
    client(shared).get_database("other")
    assert ft.sleeps == [5.0]


def test_the_longest_pause_wins_across_threads(ft: FakeTime) -> None:
    shared = RateLimitTransport(answering(ok(None)), limit=None, clock=ft.clock, sleep=ft.sleep)
    threads = [threading.Thread(target=shared.pause, args=(s,)) for s in (3.0, 9.0, 1.0, 4.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    send(shared, 2)
    assert ft.sleeps == [9.0]


@pytest.mark.parametrize(
    ("retry_after", "pause"), [("0", 1.0), ("7", 7.0), ("600", 60.0), ("soon", 1.0)]
)
def test_the_pause_follows_retry_after_within_bounds(
    ft: FakeTime, retry_after: str, pause: float
) -> None:
    shared = RateLimitTransport(
        answering(limited(retry_after)), limit=None, clock=ft.clock, sleep=ft.sleep
    )
    send(shared, 2)
    assert ft.sleeps == [pause]


# -- the request budget ----------------------------------------------------------------------
def test_budget_allows_at_most_limit_requests_in_any_window(ft: FakeTime) -> None:
    budget = RateLimitTransport(
        answering(ok(None)), limit=3, window=10.0, clock=ft.clock, sleep=ft.sleep
    )
    send(budget)  # t=0
    ft.now = 4.0
    send(budget)
    ft.now = 5.0
    send(budget)
    assert ft.sleeps == []
    send(budget)  # the t=0 request leaves the window at t=10
    send(budget)  # the t=4 one at t=14
    assert ft.sleeps == [5.0, 4.0] and ft.now == 14.0


def test_budget_is_shared_safely_by_threads(ft: FakeTime) -> None:
    budget = RateLimitTransport(
        answering(ok(None)), limit=10, window=60.0, clock=ft.clock, sleep=ft.sleep
    )
    workers = [threading.Thread(target=send, args=(budget, 25)) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(5)
    assert not any(t.is_alive() for t in workers)
    # 100 requests at 10 per 60 s take at least 9 full windows.
    assert ft.now >= 9 * 60.0


def test_budget_refuses_a_meaningless_limit() -> None:
    with pytest.raises(errors.UsageError):
        RateLimitTransport(answering(ok(None)), limit=0, window=300.0)
    with pytest.raises(errors.UsageError):
        RateLimitTransport(answering(ok(None)), limit=10, window=0.0)


def test_signed_urls_are_not_the_api_and_wait_on_none_of_its_limits(
    api: respx.Router, ft: FakeTime
) -> None:
    done = {"filename": "d.sql", "signed_url": SIGNED}
    api.post(f"{ROOT}/{DB}/export").mock(
        side_effect=[ok({"status": "complete", "at_bookmark": "b", "result": done})]
    )
    api.get(SIGNED).mock(return_value=httpx.Response(200, content=b"PRAGMA x;\n"))
    budget = RateLimitTransport(
        httpx.MockTransport(api.handler), limit=1, window=60.0, clock=ft.clock, sleep=ft.sleep
    )
    handle = client(budget).export(DB, ExportOptions())
    assert b"".join(handle.download()) == b"PRAGMA x;\n"
    assert b"".join(handle.download()) == b"PRAGMA x;\n"
    # One API request in a budget of one, and two downloads that waited for nothing.
    assert len(requests_of(api)) == 3 and ft.sleeps == []


# -- the real transport, from the environment -------------------------------------------------
class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy on 127.0.0.1 that answers every request itself."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        payload = json.dumps(
            {"success": True, "errors": [], "messages": [], "result": {"uuid": DB, "name": "p"}}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    handler: Callable[..., _Proxy] = type("Proxy", (_Proxy,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    yield seen
    server.shutdown()
    server.server_close()


def test_the_real_transport_keeps_the_environments_proxy(proxy: list[str]) -> None:
    """httpx ignores proxies once it is handed a transport; the one this transport builds
    when given none keeps them, as a client with no transport would."""
    base = "http://localhost:9/client/v4"  # never reached: the proxy answers
    for transport in (None, RateLimitTransport()):
        with D1Client(
            token=TOKEN, account_id=ACCOUNT, base_url=base, transport=transport
        ) as api_client:
            assert api_client.get_database(DB).name == "p"
    path = f"{base}/accounts/{ACCOUNT}/d1/database/{DB}"
    assert proxy == [path, path]
