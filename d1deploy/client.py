"""`D1Client`: the one HTTP boundary of d1deploy, and the only module that imports httpx.

It owns the Cloudflare envelope parsing, the mapping of every HTTP, envelope and
transport failure to `errors.*` (in `_map_error`), the retry policy (one tenacity
`Retrying`, built in `D1Client.__init__`), the export/import polling flows, and the
signed-URL transfers, which go through a second httpx client that never carries the
API token.

Retry policy (DESIGN "Ledger, atomicity, safety"): a 429 is retried for every request,
because D1 did not run it; 5xx and network errors only for idempotent calls (GET, polls,
bookmark, list, read-only queries); a write is re-sent only after a connect error, when
the request never left this machine. A host name that does not resolve and a refused
connection are not retried at all (`errors.Unreachable`, naming the URL). Attempts and
total time are both bounded, and while a run settles after a failure or an interrupt
each request is held to what is left of the settle's time (`interrupts.remaining`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import tenacity

from d1deploy import __version__, errors, interrupts, suggest
from d1deploy.backend import (
    DatabaseInfo,
    ExportHandle,
    ExportOptions,
    ImportResult,
    MessageCallback,
    QueryResult,
    RestoreResult,
    SqlValue,
    Statement,
)
from d1deploy.config import validate_base_url

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"

MAX_RETRY_AFTER = 60.0
"""A 429 asking for a longer pause fails at once instead of blocking the run."""

MAX_BACKOFF = 10.0
DOWNLOAD_CHUNK = 1 << 20

_AUTH_CODES = frozenset({9106, 9109, 10000, 7403})
_AUTH_HINT = (
    "check that CLOUDFLARE_API_TOKEN is valid and has the Account > D1 > Edit permission "
    "on this account (CLOUDFLARE_ACCOUNT_ID)"
)
# D1 ends SQLite messages with the result-code class, e.g. `...: SQLITE_CONSTRAINT`,
# sometimes followed by `(extended: ...)` or wrangler's `[code: 7500]`.
_SQLITE_SUFFIX = re.compile(
    r":\s*(SQLITE_[A-Z_]+)\s*(?:\(extended:\s*SQLITE_[A-Z_]+\))?\s*(?:\[code:\s*\d+\])?\s*$"
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_VIRTUAL_TABLES = re.compile(r"virtual table|fts5", re.I)
_P = ParamSpec("_P")
_R = TypeVar("_R")

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before any byte of the request left: safe to re-send a write."""


def _check_token(token: str) -> None:
    """Refuse a token that cannot travel in an HTTP header, without echoing it."""
    if any(ord(ch) > 0xFF for ch in token):
        raise errors.UsageError(
            "the API token contains a character that is not allowed in an HTTP header; "
            "this is probably a copy-paste error (for example `…` instead of `...`)",
            hint="copy the token again from the Cloudflare dashboard into CLOUDFLARE_API_TOKEN",
        )
    # httpx encodes header values as ASCII and its UnicodeEncodeError would quote the
    # token, so anything else outside visible ASCII is refused here too.
    if not token or any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        raise errors.UsageError(
            "the API token is empty or contains whitespace or non-ASCII characters",
            hint="copy the token again from the Cloudflare dashboard into CLOUDFLARE_API_TOKEN",
        )


def _redact_url(url: str) -> str:
    """scheme://host/path of a signed URL: its query string is a credential."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RateGate:
    """A rate-limit pause shared by every client of one process (fleet mode).

    When any client gets a 429 it calls `pause(retry_after)`; every client calls
    `wait()` before each request, so one account-wide limit stops them all at once.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._until = 0.0

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def wait(self) -> None:
        with self._lock:
            remaining = self._until - self._clock()
        # Sleep outside the lock so other clients can extend the pause meanwhile.
        if remaining > 0:
            self._sleep(remaining)


@dataclass
class _Call:
    """One logical API request and what its attempts found (for retry decisions)."""

    what: str
    method: str
    path: str
    idempotent: bool
    params: dict[str, str] | None = None
    body: Any = None
    attempts: int = 0
    started: float = 0.0
    last_status: int | None = None
    last_transport_error: str | None = None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by `Retry-After` (delta-seconds or HTTP date), if present."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        until = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # Measure against the server's own Date header when present: no clock-skew guess.
    now = datetime.now(UTC)
    if server_date := response.headers.get("date"):
        try:
            now = parsedate_to_datetime(server_date)
        except (TypeError, ValueError):
            pass
    return max(0.0, (until - now).total_seconds())


def _error_text(body: dict[str, Any]) -> tuple[str, set[int], str]:
    """(first message, all codes, every error joined) from a failure envelope."""
    items = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    codes = {e["code"] for e in items if isinstance(e.get("code"), int)}
    messages = [str(e.get("message", "")) for e in items]
    if not messages and body.get("error"):
        # Some non-standard bodies are {code, error} (wrangler's fallback).
        messages = [str(body["error"])]
        if isinstance(body.get("code"), int):
            codes.add(body["code"])
    first = messages[0] if messages else "no error message"
    joined = "; ".join(
        f"{e.get('message', '')} [code {e['code']}]" if "code" in e else str(e.get("message"))
        for e in items
    )
    return first, codes, joined or first


def _unreachable(exc: httpx.TransportError) -> str | None:
    """Why nothing could be reached at all, from the OS error under httpx's: a host name
    that does not resolve, or a refused connection (retrying changes neither soon)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"its host name does not resolve (DNS: {cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "nothing accepts connections there (connection refused)"
        cause = cause.__cause__ or cause.__context__
    return None


def _map_error(
    what: str, response: httpx.Response | httpx.TransportError, body: Any = None
) -> errors.D1DeployError:
    """The one place that turns a failed request into the right `errors.*` class."""
    if isinstance(response, httpx.TransportError):
        if (why := _unreachable(response)) is not None:
            try:
                url = _redact_url(str(response.request.url))
            except RuntimeError:  # raised without its request
                url = "the D1 API"
            return errors.Unreachable(
                f"{what} failed: could not reach {url}: {why}",
                hint="check CLOUDFLARE_API_BASE_URL (unset means api.cloudflare.com), the"
                " network and any proxy, then run again",
            )
        return errors.NetworkError(
            f"{what} failed: could not reach the D1 API ({type(response).__name__}: {response})",
            hint="check the network connection and CLOUDFLARE_API_BASE_URL, then run again",
        )
    status = response.status_code
    if response.headers.get("cf-mitigated", "").lower() == "challenge":
        return errors.AuthError(
            f"{what} failed: Cloudflare's firewall answered with a challenge page "
            "instead of the API",
            hint="a WAF or bot-protection rule blocked the request; try from another "
            "network, or check CLOUDFLARE_API_BASE_URL",
        )
    if status == 429:
        retry_after = _retry_after(response)
        detail = _error_text(body)[2] if isinstance(body, dict) else "too many requests"
        if retry_after is not None and retry_after > MAX_RETRY_AFTER:
            return errors.RateLimited(
                f"{what} failed: rate limited by the D1 API, which asks to wait "
                f"{retry_after:.0f} s, longer than the {MAX_RETRY_AFTER:.0f} s d1deploy "
                f"waits ({detail})",
                retry_after=retry_after,
                hint="the account's API limit (1200 requests per 5 minutes) is used up; "
                "run again in a few minutes",
            )
        return errors.RateLimited(
            f"{what} failed: rate limited by the D1 API ({detail})",
            retry_after=retry_after,
            hint="D1 or the account's API limit is overloaded; run again in a few minutes",
        )
    # Neither the envelope nor the non-standard {code, error} shape: not the API talking.
    if not isinstance(body, dict) or ("success" not in body and "error" not in body):
        kind = response.headers.get("content-type", "no content type")
        return errors.ServerError(
            f"{what} failed: malformed response from the D1 API (HTTP {status}, {kind})",
            hint="the API or a proxy in between returned something that is not the API's "
            "JSON; check CLOUDFLARE_API_BASE_URL and run again",
        )
    first, codes, joined = _error_text(body)
    suffix = _SQLITE_SUFFIX.search(first)
    if suffix or (7500 in codes and status < 500):
        return errors.SqlError(first, sqlite_code=suffix.group(1) if suffix else None)
    if status in (401, 403) or codes & _AUTH_CODES:
        return errors.AuthError(
            f"{what} failed: the API token was refused: {joined}", hint=_AUTH_HINT
        )
    if status == 404 or 7404 in codes:
        return errors.NotFound(
            f"{what} failed: not found: {joined}",
            hint="check the database name or id, and the account id (CLOUDFLARE_ACCOUNT_ID)",
        )
    if 400 <= status < 500:
        return errors.UsageError(f"{what} was refused by the D1 API: {joined}")
    # 5xx, or a 2xx whose envelope says success: false for no reason we recognise.
    return errors.ServerError(
        f"{what} failed: HTTP {status} from the D1 API: {joined}",
        hint="D1 had a server-side problem; run again later (https://www.cloudflarestatus.com)",
    )


def _envelope(what: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON envelope of a successful reply; raise the mapped error otherwise."""
    if response.status_code in (204, 205) and not response.content:
        return {"success": True, "result": None}
    try:
        body = response.json()
    except ValueError:
        body = None
    # Decide on the JSON `success` flag, not only on the status.
    if isinstance(body, dict) and body.get("success") is True and response.status_code < 400:
        return body
    raise _map_error(what, response, body)


def _malformed(what: str, detail: str) -> errors.ServerError:
    return errors.ServerError(
        f"{what} failed: malformed response from the D1 API ({detail})",
        hint="the API's reply did not have the documented shape; run again, and report it "
        "if it persists",
    )


def _dict(what: str, value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(what, f"`{name}` is not an object")
    return value


def _str(what: str, obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _malformed(what, f"missing `{key}`")
    return value


def _obj(value: Any) -> dict[str, Any]:
    """An optional object of the reply, lenient: anything else reads as empty."""
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _param(value: SqlValue, stmt: Statement, position: int) -> int | float | str | None:
    """A bound parameter as native JSON; BLOBs and non-finite floats cannot travel."""
    if isinstance(value, bytes):
        raise errors.InputError(
            f"parameter {position} is a BLOB, which the D1 REST API cannot bind",
            hint="write the value as a hex literal X'...' in the SQL instead",
            file=stmt.file,
            line=stmt.line,
        )
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise errors.InputError(
            f"parameter {position} is {value}, which JSON cannot carry",
            hint="bind NULL or a finite number instead",
            file=stmt.file,
            line=stmt.line,
        )
    return value


def _cell(value: Any) -> SqlValue:
    """A result cell as a SqlValue.

    SQLite has no array type (JSON functions return TEXT, which arrives as a string), so
    a JSON array of byte values can only be a BLOB: it becomes `bytes`. Anything else
    unexpected is kept as its JSON text rather than dropped.
    """
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value
    ):
        return bytes(value)
    return json.dumps(value)


def _query_result(what: str, item: Any, index: int) -> QueryResult:
    item = _dict(what, item, f"result[{index}]")
    if item.get("success") is False:
        first, _, _ = _error_text(item)
        suffix = _SQLITE_SUFFIX.search(first)
        raise errors.SqlError(first, sqlite_code=suffix.group(1) if suffix else None, index=index)
    rows = item.get("results") or []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _malformed(what, f"result[{index}].results is not a list of rows")
    # Rows are objects keyed by column name; duplicate names (joins) collapse to one.
    columns = tuple(rows[0]) if rows else ()
    meta = _obj(item.get("meta"))
    last_row_id = meta.get("last_row_id")
    changed_db = meta.get("changed_db")
    size_after = meta.get("size_after")
    return QueryResult(
        columns=columns,
        rows=tuple(tuple(_cell(row.get(c)) for c in columns) for row in rows),
        changes=int(_num(meta.get("changes"))),
        rows_read=int(_num(meta.get("rows_read"))),
        rows_written=int(_num(meta.get("rows_written"))),
        duration_ms=_num(meta.get("duration")),
        last_row_id=last_row_id if isinstance(last_row_id, int) else None,
        changed_db=changed_db if isinstance(changed_db, bool) else None,
        size_after=int(size_after) if isinstance(size_after, int | float) else None,
    )


def _database_info(what: str, item: Any) -> DatabaseInfo:
    item = _dict(what, item, "database")
    num_tables = item.get("num_tables")
    file_size = item.get("file_size")
    return DatabaseInfo(
        uuid=_str(what, item, "uuid"),
        name=_str(what, item, "name"),
        created_at=item.get("created_at"),
        version=item.get("version"),
        num_tables=int(num_tables) if isinstance(num_tables, int | float) else None,
        file_size=int(file_size) if isinstance(file_size, int | float) else None,
    )


def _messages(result: dict[str, Any]) -> list[str]:
    found = result.get("messages") or []
    return [str(m.get("message", m)) if isinstance(m, dict) else str(m) for m in found]


def _failure_text(result: dict[str, Any]) -> str:
    """`error` (the spec) and `errors[]` (wrangler's type), joined; D1 may put the same
    text in both, which is said once."""
    parts = [str(result["error"])] if result.get("error") else []
    parts += [str(e) for e in result.get("errors") or []]
    return "; ".join(dict.fromkeys(parts)) or "no error message"


def _scrubbed(
    method: Callable[Concatenate[D1Client, _P], _R],
) -> Callable[Concatenate[D1Client, _P], _R]:
    """Public methods never let the API token out inside an error."""

    @functools.wraps(method)
    def wrapper(self: D1Client, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except errors.D1DeployError as exc:
            self._scrub(exc)
            raise

    return wrapper


class D1Client:
    """The D1 REST API for one account. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        *,
        token: str,
        account_id: str,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 60.0,
        max_attempts: int = 5,
        max_retry_time: float = 120.0,
        poll_interval: float = 1.0,
        poll_timeout: float = 900.0,
        user_agent: str = f"d1deploy/{__version__}",
        on_retry: Callable[[str], None] | None = None,
        rate_gate: RateGate | None = None,
        budget: Callable[[], None] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        _check_token(token)
        self._token = token
        self._account_id = account_id
        self._sleep = sleep
        self._clock = clock
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._max_retry_time = max_retry_time
        self._poll_interval = poll_interval
        self._poll_timeout = poll_timeout
        self._on_retry = on_retry
        self._gate = rate_gate
        # Called before every request attempt, retries included, and may block: fleet mode
        # passes `fleet.RequestBudget.acquire` to stay under the account's API limit.
        self._budget = budget
        self._jitter = jitter
        common: dict[str, Any] = {
            "transport": transport,
            "timeout": httpx.Timeout(timeout),
            # An injected transport is used as is, never replaced by an env proxy.
            "trust_env": transport is None,
        }
        if transport is None:
            # Built as each client would build its own (CA bundle, SSL_CERT_FILE), but
            # once: loading the CA bundle is a good part of a short command's start-up.
            common["verify"] = httpx.create_ssl_context(trust_env=True)
        self._api = httpx.Client(
            base_url=validate_base_url(base_url),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": user_agent,
            },
            **common,
        )
        # Signed export/upload URLs are credentials of their own: this client has no
        # Authorization header, so the API token can never reach them.
        self._signed = httpx.Client(headers={"User-Agent": user_agent}, **common)
        self._retrying = tenacity.Retrying(
            sleep=sleep,
            retry=self._should_retry,
            wait=self._backoff,
            stop=self._should_stop,
            before_sleep=self._announce,
            reraise=True,
        )

    def close(self) -> None:
        self._api.close()
        self._signed.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- databases ----------------------------------------------------------------------
    @_scrubbed
    def list_databases(
        self, name: str | None = None, *, per_page: int = 1000
    ) -> list[DatabaseInfo]:
        """Every database of the account (or those whose name matches the `name` search)."""
        found: list[DatabaseInfo] = []
        page = 1
        while True:
            items, total = self._list_page(name, page, per_page)
            found += items
            if len(items) < per_page or (total is not None and page * per_page >= total):
                return found
            page += 1

    def _list_page(
        self, name: str | None, page: int, per_page: int
    ) -> tuple[list[DatabaseInfo], int | None]:
        what = f"listing the D1 databases of account {self._account_id}"
        params = {"page": str(page), "per_page": str(per_page)}
        if name is not None:
            params["name"] = name
        body = self._request(_Call(what, "GET", self._path(), idempotent=True, params=params))
        items = body.get("result") or []
        if not isinstance(items, list):
            raise _malformed(what, "`result` is not a list")
        info = _obj(body.get("result_info"))
        total = info.get("total_count")
        return [_database_info(what, i) for i in items], total if isinstance(total, int) else None

    @_scrubbed
    def get_database(self, id_or_name: str) -> DatabaseInfo:
        what = f"looking up database {id_or_name}"
        body = self._request(_Call(what, "GET", self._path(id_or_name), idempotent=True))
        return _database_info(what, body.get("result"))

    @_scrubbed
    def resolve_database(self, name_or_uuid: str) -> DatabaseInfo:
        """The database with this UUID, or with exactly this name, with the facts only
        `GET /database/{id}` has (the list carries no file_size or num_tables)."""
        uuid = name_or_uuid if _UUID.match(name_or_uuid) else None
        # The API's `name` filter is a search, not an exact match.
        for info in [] if uuid else self.list_databases(name=name_or_uuid):
            if info.name == name_or_uuid:
                uuid = info.uuid
                break
        if uuid is None:
            raise self._not_found(name_or_uuid)
        try:
            return self.get_database(uuid)
        except errors.NotFound:
            raise self._not_found(name_or_uuid) from None

    def _not_found(self, wanted: str) -> errors.NotFound:
        shown, total = self._list_page(None, 1, 1000)
        names = [d.name for d in shown]
        if not names:
            listing = "the account has no D1 databases"
        else:
            more = (total or len(names)) - 20
            listing = "databases in this account: " + ", ".join(names[:20])
            listing += f" (and {more} more)" if more > 0 else ""
        return errors.NotFound(
            f"database {wanted!r} not found in account {self._account_id}; {listing}",
            hint="check --database / D1DEPLOY_DATABASE and the account id (CLOUDFLARE_ACCOUNT_ID)",
        )

    # -- SQL ----------------------------------------------------------------------------
    @_scrubbed
    def query(
        self, database_id: str, statements: Sequence[Statement], *, read_only: bool = False
    ) -> list[QueryResult]:
        """Run the statements as ONE request, one `batch` item each; one result each."""
        if not statements:
            return []
        what = f"query on database {database_id}"
        batch: list[dict[str, Any]] = []
        for stmt in statements:
            item: dict[str, Any] = {"sql": stmt.sql}
            if stmt.params:
                item["params"] = [_param(v, stmt, n) for n, v in enumerate(stmt.params, 1)]
            batch.append(item)
        call = _Call(
            what,
            "POST",
            self._path(database_id, "query"),
            idempotent=read_only,
            body={"batch": batch},
        )
        results = self._request(call).get("result")
        if not isinstance(results, list) or len(results) != len(statements):
            got = len(results) if isinstance(results, list) else "no"
            raise _malformed(what, f"{got} results for {len(statements)} statements")
        return [_query_result(what, item, i) for i, item in enumerate(results)]

    # -- Time Travel --------------------------------------------------------------------
    @_scrubbed
    def bookmark(self, database_id: str, at: datetime | None = None) -> str:
        """The current bookmark, or the one at/before `at` (a naive `at` is taken as UTC)."""
        what = f"getting a Time Travel bookmark of database {database_id}"
        params = None
        if at is not None:
            utc = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
            params = {"timestamp": utc.isoformat(timespec="seconds").replace("+00:00", "Z")}
        call = _Call(
            what, "GET", self._path(database_id, "time_travel/bookmark"), True, params=params
        )
        return _str(what, _dict(what, self._request(call).get("result"), "result"), "bookmark")

    @_scrubbed
    def restore(self, database_id: str, *, bookmark: str) -> RestoreResult:
        what = f"restoring database {database_id} to bookmark {bookmark}"
        call = _Call(
            what,
            "POST",
            self._path(database_id, "time_travel/restore"),
            idempotent=False,
            params={"bookmark": bookmark},
        )
        result = _dict(what, self._request(call).get("result"), "result")
        previous = result.get("previous_bookmark")
        return RestoreResult(
            bookmark=_str(what, result, "bookmark"),
            previous_bookmark=previous if isinstance(previous, str) else None,
            message=str(result.get("message") or ""),
        )

    # -- export -------------------------------------------------------------------------
    @_scrubbed
    def export(
        self,
        database_id: str,
        options: ExportOptions,
        on_message: MessageCallback | None = None,
    ) -> ExportHandle:
        """Run the export flow to completion and return a handle to download the dump."""
        what = f"export of database {database_id}"
        dump: dict[str, Any] = {"no_data": options.no_data, "no_schema": options.no_schema}
        if options.tables:
            dump["tables"] = list(options.tables)
        first = {"output_format": "polling", "dump_options": dump}
        path = self._path(database_id, "export")
        # Starting an export reads the database only: safe to re-send.
        started = self._result(_Call(what, "POST", path, idempotent=True, body=first))
        result = self._poll(
            what, path, started, lambda bm: {**first, "current_bookmark": bm}, on_message
        )
        if result.get("success") is False or result.get("status") == "error":
            text = _failure_text(result)
            if _VIRTUAL_TABLES.search(text):
                raise errors.UsageError(
                    f"{what} failed: {text}",
                    hint="D1 cannot export a database that has virtual tables (FTS5); "
                    "export the other tables with --table NAME (repeatable)",
                )
            raise errors.ServerError(
                f"{what} failed: {text}",
                hint="D1's export log: " + (" | ".join(_messages(result)) or "(empty)"),
            )
        if result.get("status") != "complete":
            raise _malformed(what, f"unknown export status {result.get('status')!r}")
        done = _dict(what, result.get("result"), "result.result")
        url = _str(what, done, "signed_url")
        filename = done.get("filename")
        return ExportHandle(
            bookmark=result.get("at_bookmark"),
            filename=filename if isinstance(filename, str) else None,
            size=None,
            download=functools.partial(self._download, url, what),
        )

    def _download(self, url: str, what: str) -> Iterator[bytes]:
        shown = _redact_url(url)
        try:
            # Ask for the bytes as stored, so Content-Length counts what we yield.
            headers = {"Accept-Encoding": "identity"}
            with self._signed.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    raise errors.DownloadError(
                        f"download of the {what} from {shown} failed: HTTP {response.status_code}",
                        hint="the signed link is valid for one hour; run the backup again",
                    )
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media == "text/html" or media == "application/json" or media.endswith("+json"):
                    # An error page or an API answer under the dump's name: refused before
                    # a byte of it is written.
                    raise errors.InvalidDump(
                        f"download of the {what} from {shown} answered {media}, not a SQL dump",
                        hint="the storage behind the signed link may be unavailable; run the "
                        "backup again",
                    )
                got = 0
                # As the transport hands them over (64 KiB reads from a socket):
                # re-chunking to a fixed size would copy every byte through a buffer.
                for chunk in response.iter_bytes():
                    got += len(chunk)
                    # Only a body handed over whole (or inflated) is split, so callers
                    # still get bounded chunks; a smaller chunk is yielded as is.
                    for start in range(0, len(chunk), DOWNLOAD_CHUNK):
                        yield chunk[start : start + DOWNLOAD_CHUNK]
                if response.headers.get("content-encoding", "identity") != "identity":
                    got = response.num_bytes_downloaded
                expected = response.headers.get("content-length", "")
                if expected.isdigit() and got != int(expected):
                    raise errors.DownloadError(
                        f"download of the {what} from {shown} ended after {got} of "
                        f"{expected} bytes",
                        hint="the transfer was cut short; run the backup again",
                    )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # `from None`: httpx's own message may quote the signed URL in full.
            raise errors.DownloadError(
                f"download of the {what} from {shown} failed: connection lost "
                f"({type(exc).__name__})",
                hint="run the backup again",
            ) from None

    # -- import -------------------------------------------------------------------------
    @_scrubbed
    def import_file(
        self, database_id: str, path: Path, on_message: MessageCallback | None = None
    ) -> ImportResult:
        """Execute a SQL file through D1's import flow (all-or-nothing, per Cloudflare)."""
        what = f"import of {path.name} into database {database_id}"
        try:
            with path.open("rb") as fh:
                etag = hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False))
            size = path.stat().st_size
        except OSError as exc:
            raise errors.InputError(f"cannot read {path}: {exc.strerror}", file=str(path)) from None
        md5 = etag.hexdigest()
        api_path = self._path(database_id, "import")
        init = {"action": "init", "etag": md5}
        result = self._result(_Call(what, "POST", api_path, idempotent=False, body=init))
        if result.get("upload_url"):
            filename = _str(what, result, "filename")
            self._upload(what, str(result["upload_url"]), path, md5, size)
            ingest = {"action": "ingest", "etag": md5, "filename": filename}
            result = self._result(_Call(what, "POST", api_path, idempotent=False, body=ingest))
        elif on_message:
            on_message("File already uploaded. Processing.")
        result = self._poll(
            what,
            api_path,
            result,
            lambda bm: {"action": "poll", "current_bookmark": bm},
            on_message,
        )
        if result.get("success") is not False and result.get("status") not in ("complete", "error"):
            raise _malformed(what, f"unknown import status {result.get('status')!r}")
        if result.get("success") is False or result.get("status") == "error":
            text = _failure_text(result)
            suffix = _SQLITE_SUFFIX.search(text)
            log = " | ".join(_messages(result))
            raise errors.SqlError(
                f"{what} failed: {text}" + (f" (D1's log: {log})" if log else ""),
                sqlite_code=suffix.group(1) if suffix else None,
                file=str(path),
                hint="D1 returns the database to its state before the import when one "
                "fails; fix the file and run again",
            )
        done = _dict(what, result.get("result"), "result.result")
        meta = _obj(done.get("meta"))
        final = done.get("final_bookmark")
        return ImportResult(
            num_queries=int(_num(done.get("num_queries"))),
            rows_read=int(_num(meta.get("rows_read"))),
            rows_written=int(_num(meta.get("rows_written"))),
            final_bookmark=final if isinstance(final, str) else None,
            duration_ms=_num(meta.get("duration")),
        )

    def _upload(self, what: str, url: str, path: Path, md5: str, size: int) -> None:
        shown = _redact_url(url)
        try:
            with path.open("rb") as fh:
                # An explicit Content-Length keeps httpx from chunked encoding, which
                # presigned R2 uploads do not accept; the file is still streamed.
                response = self._signed.put(url, content=fh, headers={"Content-Length": str(size)})
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise errors.NetworkError(
                f"upload for the {what} to {shown} failed: connection lost ({type(exc).__name__})",
                hint="run the command again",
            ) from None
        if response.status_code != 200:
            raise errors.NetworkError(
                f"upload for the {what} to {shown} failed: HTTP {response.status_code}",
                hint="the signed upload link may have expired; run the command again",
            )
        stored = response.headers.get("etag", "").strip().removeprefix("W/").strip('"')
        if stored != md5:
            raise errors.NetworkError(
                f"upload corrupted: the {what} stored a file whose md5 is {stored or 'unknown'}, "
                f"but the local file's md5 is {md5}",
                hint="run the command again to upload the file anew",
            )

    # -- polling ------------------------------------------------------------------------
    def _poll(
        self,
        what: str,
        path: str,
        result: dict[str, Any],
        poll_body: Callable[[str], dict[str, Any]],
        on_message: MessageCallback | None,
    ) -> dict[str, Any]:
        """Re-POST while the task is `active`; return its final result object."""
        started = self._clock()
        while True:
            if on_message:
                for line in _messages(result):
                    on_message(line)
            if result.get("success") is False or result.get("status") != "active":
                return result
            if self._clock() - started >= self._poll_timeout:
                raise errors.PollTimeout(
                    f"{what} did not finish within {self._poll_timeout:.0f} s",
                    hint="D1 may still be running it, and a running export or import blocks "
                    "the database's other queries until it ends; D1 cancels an export "
                    "nobody polls, so wait a few minutes before running again",
                )
            self._sleep(self._poll_interval)
            bookmark = _str(what, result, "at_bookmark")
            call = _Call(what, "POST", path, idempotent=True, body=poll_body(bookmark))
            result = self._result(call)

    def _result(self, call: _Call) -> dict[str, Any]:
        return _dict(call.what, self._request(call).get("result"), "result")

    # -- one request, with retries -------------------------------------------------------
    def _path(self, database: str | None = None, action: str | None = None) -> str:
        path = f"/accounts/{quote(self._account_id, safe='')}/d1/database"
        if database is not None:
            path += "/" + quote(database, safe="")
        return f"{path}/{action}" if action else path

    def _request(self, call: _Call) -> dict[str, Any]:
        """Send `call` under the retry policy; the envelope of the successful reply."""
        call.started = self._clock()
        try:
            return self._retrying(self._attempt, call)
        except errors.D1DeployError as exc:
            self._finish(exc, call)
            raise

    def _attempt(self, call: _Call) -> dict[str, Any]:
        call.attempts += 1
        call.last_status = call.last_transport_error = None
        left = interrupts.remaining()
        if left is not None and left <= 0:
            raise errors.OutOfTime(
                f"{call.what} was not sent: the {interrupts.SETTLE_SECONDS:g} s d1deploy"
                " allows itself to settle ran out"
            )
        if self._budget is not None:
            self._budget()
        if self._gate is not None:
            self._gate.wait()
        # While settling, a request may take only what is left of the settle's time.
        timeout = httpx.USE_CLIENT_DEFAULT if left is None else min(self._timeout, left)
        try:
            response = self._api.request(
                call.method, call.path, params=call.params, json=call.body, timeout=timeout
            )
        except httpx.TransportError as exc:
            call.last_transport_error = type(exc).__name__
            raise _map_error(call.what, exc) from exc
        call.last_status = response.status_code
        try:
            return _envelope(call.what, response)
        except errors.RateLimited as exc:
            if self._gate is not None:
                self._gate.pause(min(MAX_RETRY_AFTER, max(1.0, exc.retry_after or 1.0)))
            raise

    def _should_retry(self, state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        call: _Call = state.args[0]
        if isinstance(exc, errors.Unreachable):
            return False
        if isinstance(exc, errors.RateLimited):
            # D1 did not run a rate-limited request, so even a write may go again.
            return exc.retry_after is None or exc.retry_after <= MAX_RETRY_AFTER
        if isinstance(exc, errors.ServerError | errors.NetworkError) and call.idempotent:
            return True
        return isinstance(exc, errors.NetworkError) and isinstance(exc.__cause__, _NOT_SENT)

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, errors.RateLimited) and exc.retry_after is not None:
            base = max(1.0, exc.retry_after)
        else:
            base = min(MAX_BACKOFF, 2.0 ** (state.attempt_number - 1))
        return base + min(1.0, max(0.0, self._jitter()))

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        call: _Call = state.args[0]
        elapsed = self._clock() - call.started
        left = interrupts.remaining()
        return (
            state.attempt_number >= self._max_attempts
            or elapsed + state.upcoming_sleep > self._max_retry_time
            or (left is not None and state.upcoming_sleep >= left)
        )

    def _announce(self, state: tenacity.RetryCallState) -> None:
        if self._on_retry is None:
            return
        call: _Call = state.args[0]
        reason = (
            f"{call.last_status} from D1"
            if call.last_status is not None
            else f"network error ({call.last_transport_error})"
        )
        self._on_retry(
            f"{reason}, retrying in {state.upcoming_sleep:.1f} s "
            f"(attempt {state.attempt_number + 1}/{self._max_attempts})"
        )

    def _finish(self, exc: errors.D1DeployError, call: _Call) -> None:
        """Say in the error how hard we tried, or why a write was not sent again."""
        if isinstance(exc, errors.Unavailable) and call.attempts > 1:
            elapsed = self._clock() - call.started
            exc.message += f" (gave up after {call.attempts} attempts over {elapsed:.1f} s)"
            exc.args = (exc.message,)
        elif (
            isinstance(exc, errors.ServerError | errors.NetworkError)
            and not call.idempotent
            and not isinstance(exc.__cause__, _NOT_SENT)
        ):
            exc.hint = (
                "the request may or may not have run on D1, so d1deploy did not send it "
                f"again; check the database (`{suggest.command('status')}`) before running again"
            )

    def _scrub(self, exc: errors.D1DeployError) -> None:
        """Defence in depth: D1 or a proxy echoing the token must not put it in an error."""
        exc.message = exc.message.replace(self._token, "[redacted]")
        exc.hint = exc.hint.replace(self._token, "[redacted]") if exc.hint else exc.hint
        exc.args = (exc.message,)
