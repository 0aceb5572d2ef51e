"""D1's REST wire format as Cloudflare's official Python SDK (`cloudflare`) types it.

The tests' oracle for request and response shapes:

- `request_problem(kind, value)`: a request body (or, for the endpoints that take them,
  the query parameters) checked against the SDK's `*Params` TypedDicts, strictly: a key
  the SDK does not know, a wrong type or a missing required key is a problem.
- `response_problem(kind, status, body)`: a reply envelope parsed by the SDK's own models
  (`ResultWrapper`, `SyncSinglePage`, `SyncV4PagePaginationArray` around the
  `cloudflare.types.d1` models, `AaaAPIResponseCommon` for the envelope, `ResponseInfo`
  for errors), in pydantic's strict mode, with every field the models do not declare
  reported. The SDK's models accept unknown fields silently, so that is checked here.

Where D1 is known to differ from the SDK's types, the difference is named once, below
(`WIDENED`, `BEYOND_SDK`, `ACTIVE`), with the reason; nothing else is let through.
"""

from __future__ import annotations

import collections.abc
import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import pydantic
from cloudflare._utils import PropertyInfo
from cloudflare._wrappers import ResultWrapper
from cloudflare.pagination import SyncSinglePage, SyncV4PagePaginationArray
from cloudflare.types.d1 import (
    D1,
    DatabaseCreateParams,
    DatabaseExportParams,
    DatabaseExportResponse,
    DatabaseGetParams,
    DatabaseImportParams,
    DatabaseImportResponse,
    DatabaseListParams,
    DatabaseListResponse,
    DatabaseQueryParams,
    DatabaseRawParams,
    DatabaseRawResponse,
    QueryResult,
)
from cloudflare.types.d1.database import (
    TimeTravelGetBookmarkParams,
    TimeTravelGetBookmarkResponse,
    TimeTravelRestoreParams,
    TimeTravelRestoreResponse,
)
from cloudflare.types.shared.response_info import ResponseInfo
from cloudflare.types.shared.result import AaaAPIResponseCommon
from typing_extensions import TypedDict, is_typeddict

Kind = Literal["list", "get", "create", "query", "raw", "export", "import", "bookmark", "restore"]


@dataclass(frozen=True)
class _Endpoint:
    """How an endpoint is addressed, where its parameters travel, and the SDK's types for
    them and for its reply (as the SDK's resource methods declare them)."""

    method: str
    suffix: str | None  # after /database/{id}; None: the collection itself
    params_in: Literal["query", "body"]
    params: Any
    reply: Any


_ENDPOINTS: dict[Kind, _Endpoint] = {
    "list": _Endpoint(
        "GET", None, "query", DatabaseListParams, SyncV4PagePaginationArray[DatabaseListResponse]
    ),
    "get": _Endpoint("GET", "", "query", DatabaseGetParams, ResultWrapper[D1]),
    "create": _Endpoint("POST", None, "body", DatabaseCreateParams, ResultWrapper[D1]),
    "query": _Endpoint("POST", "/query", "body", DatabaseQueryParams, SyncSinglePage[QueryResult]),
    "raw": _Endpoint(
        "POST", "/raw", "body", DatabaseRawParams, SyncSinglePage[DatabaseRawResponse]
    ),
    "export": _Endpoint(
        "POST", "/export", "body", DatabaseExportParams, ResultWrapper[DatabaseExportResponse]
    ),
    "import": _Endpoint(
        "POST", "/import", "body", DatabaseImportParams, ResultWrapper[DatabaseImportResponse]
    ),
    "bookmark": _Endpoint(
        "GET",
        "/time_travel/bookmark",
        "query",
        TimeTravelGetBookmarkParams,
        ResultWrapper[TimeTravelGetBookmarkResponse],
    ),
    "restore": _Endpoint(
        "POST",
        "/time_travel/restore",
        "query",
        TimeTravelRestoreParams,
        ResultWrapper[TimeTravelRestoreResponse],
    ),
}
_PATH = re.compile(r"/accounts/[^/]+/d1/database(?:/(?P<db>[^/]+)(?P<sub>/[a-z_/]*)?)?/?$")

JsonScalar = str | int | float | bool | None

WIDENED: dict[str, Any] = {"params": list[JsonScalar]}
"""Request fields D1 takes wider than the SDK types them. `params`: the SDK says strings
only, but d1deploy binds numbers and NULL natively (a string would bind as TEXT, and no
string can bind NULL), as D1's Worker binding and third-party REST clients do."""

BEYOND_SDK: dict[tuple[Kind, str], str] = {
    ("list", "result_info.count"): "Cloudflare's documented list reply carries it",
    ("list", "result_info.total_count"): "documented list reply; d1deploy pages by it",
    ("get", "result.running_in_region"): "named by the SDK's own DatabaseGetParams.fields",
    ("query", "result[].meta.served_by"): "in Cloudflare's API reference /query example",
    ("query", "result[].meta.total_attempts"): "in the API reference /query example",
    ("raw", "result[].meta.served_by"): "/raw's meta is /query's",
    ("raw", "result[].meta.total_attempts"): "/raw's meta is /query's",
    ("import", "result.errors"): "wrangler's ImportPollingResponse type; wrangler reads it",
    ("import", "result.result.meta.served_by"): "an import's meta is a query's",
}
"""Reply fields D1 sends that the SDK's models do not declare (path: `[]` for any item)."""

ACTIVE = "active"
"""The status of a running export or import, sent with HTTP 202. The SDK types `status`
as "complete" | "error" only; Cloudflare's 202 schema and wrangler's types have "active"."""


def endpoint(method: str, path: str) -> Kind:
    """Which endpoint a request is for, from its method and URL path."""
    if found := _PATH.search(path):
        suffix = None if found["db"] is None else (found["sub"] or "").rstrip("/")
        for kind, known in _ENDPOINTS.items():
            if known.method == method.upper() and known.suffix == suffix:
                return kind
    raise ValueError(f"not a D1 endpoint the oracle knows: {method} {path}")


def params_travel_in(kind: Kind) -> Literal["query", "body"]:
    return _ENDPOINTS[kind].params_in


# -- requests ------------------------------------------------------------------------------


def _iso8601(value: str) -> str:
    datetime.fromisoformat(value)
    return value


def _wire(hint: Any, widened: bool) -> Any:
    """The type of a value as it travels on the wire, from an SDK annotation."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        if any(isinstance(e, PropertyInfo) and e.format == "iso8601" for e in extras):
            return Annotated[str, pydantic.AfterValidator(_iso8601)]
        return _wire(base, widened)
    if is_typeddict(hint):
        return _strict(hint, widened)
    if origin in (collections.abc.Sequence, collections.abc.Iterable, list):
        return list[_wire(get_args(hint)[0], widened)]  # type: ignore[misc]
    if origin is Union:
        return Union[tuple(_wire(arg, widened) for arg in get_args(hint))]  # noqa: UP007
    return hint


_typed_dict: Any = TypedDict  # called with a name and fields known only at run time


def _strict(params: Any, widened: bool) -> Any:
    """An SDK TypedDict as a closed one: unknown keys refused, `account_id` (a path
    parameter) left out, aliases applied, SDK-only sequence protocols as lists."""
    fields: dict[str, Any] = {}
    for name, hint in get_type_hints(params, include_extras=True).items():
        if name == "account_id":
            continue
        required = get_origin(hint) is Required
        bare = get_args(hint)[0] if get_origin(hint) in (Required, NotRequired) else hint
        aliases = [e.alias for e in get_args(bare) if isinstance(e, PropertyInfo) and e.alias]
        wire = WIDENED[name] if widened and name in WIDENED else _wire(bare, widened)
        fields[aliases[0] if aliases else name] = Required[wire] if required else NotRequired[wire]
    closed = _typed_dict(params.__name__, fields, total=False)
    closed.__pydantic_config__ = pydantic.ConfigDict(extra="forbid")
    return closed


@cache
def _request_adapter(kind: Kind, widened: bool) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(_wire(_ENDPOINTS[kind].params, widened))


def request_problem(kind: Kind, value: Any, *, widened: bool = True) -> str | None:
    """Why `value` is not what the SDK's types let a client send to `kind`, or None.

    A body is checked strictly (JSON types as they are); query parameters arrive as
    text, so numbers may be numeric strings. `widened=False` leaves out `WIDENED`.
    """
    strict = params_travel_in(kind) == "body"
    try:
        _request_adapter(kind, widened).validate_python(value, strict=strict)
    except pydantic.ValidationError as exc:
        return _explain(exc)
    return None


# -- responses -----------------------------------------------------------------------------


class _Failure(pydantic.BaseModel):
    """A failure envelope: `AaaAPIResponseCommon` with `success: false` and no result."""

    model_config = pydantic.ConfigDict(extra="forbid")

    success: Literal[False]
    errors: Annotated[list[ResponseInfo], pydantic.Field(min_length=1)]
    messages: list[ResponseInfo]
    result: None


def response_problem(
    kind: Kind, status: int, body: Any, used: set[tuple[Kind, str]] | None = None
) -> str | None:
    """Why `body` (a reply with HTTP `status`) does not parse into the SDK's types, or
    None. The `BEYOND_SDK` fields met are added to `used`."""
    if not isinstance(body, dict):
        return f"the body is {type(body).__name__}, not an object"
    if body.get("success") is False:
        return _parse(_Failure, body, kind, used)
    envelope = {k: body[k] for k in ("success", "errors", "messages") if k in body}
    rest = {k: v for k, v in body.items() if k not in envelope}
    if kind in ("export", "import") and status == 202:
        result = rest.get("result")
        if not isinstance(result, dict) or result.get("status") != ACTIVE:
            return f"a 202 reply must be a running task (status {ACTIVE!r})"
        rest = {**rest, "result": {k: v for k, v in result.items() if k != "status"}}
    return _parse(AaaAPIResponseCommon, envelope, kind, used) or _parse(
        _ENDPOINTS[kind].reply, rest, kind, used
    )


def _parse(model: Any, value: Any, kind: Kind, used: set[tuple[Kind, str]] | None) -> str | None:
    try:
        # JSON mode, strict: the text as sent, with no coercion ("5" is not a number).
        parsed = model.model_validate_json(json.dumps(value), strict=True)
    except pydantic.ValidationError as exc:
        return _explain(exc)
    for path in _extras(parsed, ""):
        if (kind, path) not in BEYOND_SDK:
            return f"{path}: a field the SDK's types do not declare"
        if used is not None:
            used.add((kind, path))
    return None


def _extras(value: Any, path: str) -> list[str]:
    """Dotted paths of every field a parsed SDK model holds without declaring it."""
    if isinstance(value, pydantic.BaseModel):
        found = [f"{path}{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{path}{name}.")
        return found
    if isinstance(value, list):
        return sorted({p for item in value for p in _extras(item, path.rstrip(".") + "[].")})
    return []


def _explain(exc: pydantic.ValidationError) -> str:
    # Every error: for a union (query, import) each member's, so the right one is there.
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(the value)'}: {e['msg']}" for e in exc.errors()
    )
