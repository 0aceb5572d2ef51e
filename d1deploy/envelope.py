"""What the D1 API's answers mean: the Cloudflare envelope, the one mapping of every HTTP,
envelope and transport failure to `errors.*` (`map_error`), and the shapes of results
(query rows and their cells, database facts, export/import task logs), read leniently
where D1 varies and refused as malformed where it must not.

Pure functions of a response or its JSON: `client.D1Client` sends the requests and
decides what to retry, this module says what came back.
"""

from __future__ import annotations

import json
import math
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from d1deploy import errors, limits
from d1deploy.backend import DatabaseInfo, QueryResult, SqlValue, Statement
from d1deploy.ratelimit import MAX_RETRY_AFTER, retry_after

_AUTH_CODES = frozenset({9106, 9109, 10000, 7403})
_AUTH_HINT = (
    "check that CLOUDFLARE_API_TOKEN is valid and has the Account > D1 > Edit permission "
    "on this account (CLOUDFLARE_ACCOUNT_ID)"
)
# D1 ends SQLite messages with the result-code class, e.g. `...: SQLITE_CONSTRAINT`,
# sometimes followed by `(extended: ...)` or wrangler's `[code: 7500]`.
SQLITE_SUFFIX = re.compile(
    r":\s*(SQLITE_[A-Z_]+)\s*(?:\(extended:\s*SQLITE_[A-Z_]+\))?\s*(?:\[code:\s*\d+\])?\s*$"
)


def redact_url(url: str) -> str:
    """scheme://host/path of a signed URL: its query string is a credential."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def error_text(body: dict[str, Any]) -> tuple[str, set[int], str]:
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


def unreachable(exc: httpx.TransportError) -> str | None:
    """Why nothing could be reached at all, from the OS error under httpx's: a host name
    that does not resolve, or a refused connection (retrying changes neither soon)."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    # A chain may loop (an error re-raised from one that was raised from it).
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return f"its host name does not resolve (DNS: {cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "nothing accepts connections there (connection refused)"
        cause = cause.__cause__ or cause.__context__
    return None


def map_error(
    what: str, response: httpx.Response | httpx.TransportError, body: Any = None
) -> errors.D1DeployError:
    """The one place that turns a failed request into the right `errors.*` class."""
    if isinstance(response, httpx.TransportError):
        if (why := unreachable(response)) is not None:
            try:
                url = redact_url(str(response.request.url))
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
        asked = retry_after(response)
        detail = error_text(body)[2] if isinstance(body, dict) else "too many requests"
        if asked is not None and asked > MAX_RETRY_AFTER:
            return errors.RateLimited(
                f"{what} failed: rate limited by the D1 API, which asks to wait "
                f"{asked:.0f} s, longer than the {MAX_RETRY_AFTER:.0f} s d1deploy "
                f"waits ({detail})",
                retry_after=asked,
                hint=f"the account's API limit ({limits.API_LIMIT} requests per "
                f"{limits.API_WINDOW / 60:g} minutes) is used up; "
                "run again in a few minutes",
            )
        return errors.RateLimited(
            f"{what} failed: rate limited by the D1 API ({detail})",
            retry_after=asked,
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
    first, codes, joined = error_text(body)
    suffix = SQLITE_SUFFIX.search(first)
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


def envelope(what: str, response: httpx.Response) -> dict[str, Any]:
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
    raise map_error(what, response, body)


def malformed(what: str, detail: str) -> errors.ServerError:
    return errors.ServerError(
        f"{what} failed: malformed response from the D1 API ({detail})",
        hint="the API's reply did not have the documented shape; run again, and report it "
        "if it persists",
    )


def as_object(what: str, value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise malformed(what, f"`{name}` is not an object")
    return value


def text_field(what: str, obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise malformed(what, f"missing `{key}`")
    return value


def lenient_object(value: Any) -> dict[str, Any]:
    """An optional object of the reply, lenient: anything else reads as empty."""
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def param(value: SqlValue, stmt: Statement, position: int) -> int | float | str | None:
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


def cell(value: Any) -> SqlValue:
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


def query_result(what: str, item: Any, index: int) -> QueryResult:
    item = as_object(what, item, f"result[{index}]")
    if item.get("success") is False:
        first, _, _ = error_text(item)
        suffix = SQLITE_SUFFIX.search(first)
        raise errors.SqlError(first, sqlite_code=suffix.group(1) if suffix else None, index=index)
    rows = item.get("results") or []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise malformed(what, f"result[{index}].results is not a list of rows")
    # Rows are objects keyed by column name; duplicate names (joins) collapse to one.
    columns = tuple(rows[0]) if rows else ()
    meta = lenient_object(item.get("meta"))
    last_row_id = meta.get("last_row_id")
    changed_db = meta.get("changed_db")
    size_after = meta.get("size_after")
    return QueryResult(
        columns=columns,
        rows=tuple(tuple(cell(row.get(c)) for c in columns) for row in rows),
        changes=int(number(meta.get("changes"))),
        rows_read=int(number(meta.get("rows_read"))),
        rows_written=int(number(meta.get("rows_written"))),
        duration_ms=number(meta.get("duration")),
        last_row_id=last_row_id if isinstance(last_row_id, int) else None,
        changed_db=changed_db if isinstance(changed_db, bool) else None,
        size_after=int(size_after) if isinstance(size_after, int | float) else None,
    )


def database_info(what: str, item: Any) -> DatabaseInfo:
    item = as_object(what, item, "database")
    num_tables = item.get("num_tables")
    file_size = item.get("file_size")
    return DatabaseInfo(
        uuid=text_field(what, item, "uuid"),
        name=text_field(what, item, "name"),
        created_at=item.get("created_at"),
        version=item.get("version"),
        num_tables=int(num_tables) if isinstance(num_tables, int | float) else None,
        file_size=int(file_size) if isinstance(file_size, int | float) else None,
    )


def task_messages(result: dict[str, Any]) -> list[str]:
    found = result.get("messages") or []
    return [str(m.get("message", m)) if isinstance(m, dict) else str(m) for m in found]


def failure_text(result: dict[str, Any]) -> str:
    """`error` (the spec) and `errors[]` (wrangler's type), joined; D1 may put the same
    text in both, which is said once."""
    parts = [str(result["error"])] if result.get("error") else []
    parts += [str(e) for e in result.get("errors") or []]
    return "; ".join(dict.fromkeys(parts)) or "no error message"
