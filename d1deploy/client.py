"""`D1Client`: the one HTTP boundary of d1deploy (`envelope` reads its answers and
`ratelimit` is a transport it may be given: the only other modules that import httpx).

It owns the requests of every endpoint, the retry policy (one tenacity `Retrying`,
built in `D1Client.__init__`), the export/import polling flows, and the
signed-URL transfers, which go through a second httpx client that never carries the
API token.

Retry policy (README, "What d1deploy guarantees"): a 429 is retried for every request,
because D1 did not run it; 5xx and network errors only for idempotent calls (GET, polls,
bookmark, list, read-only queries); a write is re-sent only after a connect error, when
the request never left this machine. A host name that does not resolve and a refused
connection are not retried at all (`errors.Unreachable`, naming the URL). Attempts and
total time are both bounded, and while a run settles after a failure or an interrupt
each request is held to what is left of the settle's time (`interrupts.remaining`).

Rate limits are not here: the account's request budget and the pause after a 429 are a
transport, `ratelimit.RateLimitTransport`, that fleet mode hands every client it shares.

Why one module over 500 lines: it is one class. Every endpoint, the export and import
polling flows included, is a method that sends through the same retrying request core
(`_request`, `_poll`) and is scrubbed of the token the same way (`_scrubbed`); the flows
apart would be a mixin reaching into that core's private state.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar
from urllib.parse import quote

import httpx
import tenacity

from d1deploy import __version__, defaults, errors, interrupts, suggest
from d1deploy.backend import (
    DatabaseInfo,
    ExportHandle,
    ExportOptions,
    ImportResult,
    MessageCallback,
    QueryResult,
    RestoreResult,
    Statement,
)
from d1deploy.config import validate_base_url
from d1deploy.envelope import (
    SQLITE_SUFFIX,
    as_object,
    database_info,
    envelope,
    failure_text,
    lenient_object,
    malformed,
    map_error,
    number,
    param,
    query_result,
    redact_url,
    task_messages,
    text_field,
)
from d1deploy.ratelimit import MAX_RETRY_AFTER, RateLimitTransport

MAX_BACKOFF = 10.0
DOWNLOAD_CHUNK = 1 << 20

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
        base_url: str = defaults.API_BASE_URL,
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
        # Authorization header, so the API token can never reach them. They are storage,
        # not the API, so they wait on none of its rate limits.
        if isinstance(transport, RateLimitTransport):
            common["transport"] = transport.wrapped
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
            raise malformed(what, "`result` is not a list")
        info = lenient_object(body.get("result_info"))
        total = info.get("total_count")
        return [database_info(what, i) for i in items], total if isinstance(total, int) else None

    @_scrubbed
    def get_database(self, id_or_name: str) -> DatabaseInfo:
        what = f"looking up database {id_or_name}"
        body = self._request(_Call(what, "GET", self._path(id_or_name), idempotent=True))
        return database_info(what, body.get("result"))

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
                item["params"] = [param(v, stmt, n) for n, v in enumerate(stmt.params, 1)]
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
            raise malformed(what, f"{got} results for {len(statements)} statements")
        return [query_result(what, item, i) for i, item in enumerate(results)]

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
        return text_field(
            what, as_object(what, self._request(call).get("result"), "result"), "bookmark"
        )

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
        result = as_object(what, self._request(call).get("result"), "result")
        previous = result.get("previous_bookmark")
        return RestoreResult(
            bookmark=text_field(what, result, "bookmark"),
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
            text = failure_text(result)
            if _VIRTUAL_TABLES.search(text):
                raise errors.UsageError(
                    f"{what} failed: {text}",
                    hint="D1 cannot export a database that has virtual tables (FTS5); "
                    "export the other tables with --table NAME (repeatable)",
                )
            raise errors.ServerError(
                f"{what} failed: {text}",
                hint="D1's export log: " + (" | ".join(task_messages(result)) or "(empty)"),
            )
        if result.get("status") != "complete":
            raise malformed(what, f"unknown export status {result.get('status')!r}")
        done = as_object(what, result.get("result"), "result.result")
        url = text_field(what, done, "signed_url")
        filename = done.get("filename")
        return ExportHandle(
            bookmark=result.get("at_bookmark"),
            filename=filename if isinstance(filename, str) else None,
            download=functools.partial(self._download, url, what),
        )

    def _download(self, url: str, what: str) -> Iterator[bytes]:
        shown = redact_url(url)
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
            filename = text_field(what, result, "filename")
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
            raise malformed(what, f"unknown import status {result.get('status')!r}")
        if result.get("success") is False or result.get("status") == "error":
            text = failure_text(result)
            suffix = SQLITE_SUFFIX.search(text)
            log = " | ".join(task_messages(result))
            raise errors.SqlError(
                f"{what} failed: {text}" + (f" (D1's log: {log})" if log else ""),
                sqlite_code=suffix.group(1) if suffix else None,
                file=str(path),
                hint="D1 returns the database to its state before the import when one "
                "fails; fix the file and run again",
            )
        done = as_object(what, result.get("result"), "result.result")
        meta = lenient_object(done.get("meta"))
        final = done.get("final_bookmark")
        return ImportResult(
            num_queries=int(number(done.get("num_queries"))),
            rows_read=int(number(meta.get("rows_read"))),
            rows_written=int(number(meta.get("rows_written"))),
            final_bookmark=final if isinstance(final, str) else None,
            duration_ms=number(meta.get("duration")),
        )

    def _upload(self, what: str, url: str, path: Path, md5: str, size: int) -> None:
        shown = redact_url(url)
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
                for line in task_messages(result):
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
            bookmark = text_field(what, result, "at_bookmark")
            call = _Call(what, "POST", path, idempotent=True, body=poll_body(bookmark))
            result = self._result(call)

    def _result(self, call: _Call) -> dict[str, Any]:
        return as_object(call.what, self._request(call).get("result"), "result")

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
        # While settling, a request may take only what is left of the settle's time.
        timeout = httpx.USE_CLIENT_DEFAULT if left is None else min(self._timeout, left)
        try:
            response = self._api.request(
                call.method, call.path, params=call.params, json=call.body, timeout=timeout
            )
        except httpx.TransportError as exc:
            call.last_transport_error = type(exc).__name__
            raise map_error(call.what, exc) from exc
        call.last_status = response.status_code
        return envelope(call.what, response)

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
