"""The request shapes the emulator accepts, as JSON Schemas checked with jsonschema.

`SCHEMAS` are the shapes Cloudflare's Python SDK types (its `*Params` TypedDicts, in
`cloudflare.types.d1`), closed: a key the SDK does not know is refused. The tests hold
them to the SDK itself (tests/wire.py). One widening: `params` items may be any JSON
scalar, not only strings (see `tests.wire.WIDENED`). `RULES` are D1's limits that the
SDK's types do not carry; a body must pass its shape first.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator


def _closed(required: list[str], **properties: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": required} if required else schema


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


_STRING = {"type": "string"}
_PARAMS = {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}}
_MODE = _closed(["mode"], mode=_enum("auto", "disabled"))

SCHEMAS: dict[str, dict[str, Any]] = {
    "list": _closed([], name=_STRING, page={"type": "number"}, per_page={"type": "number"}),
    "create": _closed(
        ["name"],
        name=_STRING,
        jurisdiction=_enum("eu", "fedramp", "us"),
        primary_location_hint=_enum("wnam", "enam", "weur", "eeur", "apac", "oc"),
        read_replication=_MODE,
    ),
    "query": {
        "anyOf": [
            _closed(["sql"], sql=_STRING, params=_PARAMS),
            _closed(
                ["batch"],
                batch={"type": "array", "items": _closed(["sql"], sql=_STRING, params=_PARAMS)},
            ),
        ]
    },
    "export": _closed(
        ["output_format"],
        output_format=_enum("polling"),
        current_bookmark=_STRING,
        dump_options=_closed(
            [],
            no_data={"type": "boolean"},
            no_schema={"type": "boolean"},
            tables={"type": "array", "items": _STRING},
        ),
    ),
    "import": {
        "anyOf": [
            _closed(["action", "etag"], action=_enum("init"), etag=_STRING),
            _closed(
                ["action", "etag", "filename"],
                action=_enum("ingest"),
                etag=_STRING,
                filename=_STRING,
            ),
            _closed(["action", "current_bookmark"], action=_enum("poll"), current_bookmark=_STRING),
        ]
    },
}

RULES: dict[str, dict[str, Any]] = {
    # Bounds from Cloudflare's published OpenAPI document (2024); the SDK types plain numbers.
    "list": {
        "properties": {
            "page": {"minimum": 1},
            "per_page": {"minimum": 10, "maximum": 10000},
        }
    },
    # The name pattern of the same document; the SDK types a plain string.
    "create": {"properties": {"name": {"pattern": "^[a-z0-9][a-z0-9-_]*$"}}},
}
_SHAPES = {name: Draft4Validator(schema) for name, schema in SCHEMAS.items()}
_RULES = {name: Draft4Validator(schema) for name, schema in RULES.items()}


def shape_problem(kind: str, value: Any) -> str | None:
    """Why `value` does not have the shape of a `kind` request, or None when it does."""
    return _first(_SHAPES[kind], value)


def problem(kind: str, value: Any) -> str | None:
    """Why `value` is not an acceptable `kind` request, or None when it is."""
    return shape_problem(kind, value) or (_first(_RULES[kind], value) if kind in _RULES else None)


def _first(validator: Draft4Validator, value: Any) -> str | None:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    return errors[0].message if errors else None


def list_params(query: dict[str, str]) -> dict[str, Any]:
    """List query parameters with numeric values as numbers (they arrive as text)."""
    converted: dict[str, Any] = dict(query)
    for key in ("page", "per_page"):
        if key in query:
            try:
                number = float(query[key])
            except ValueError:
                continue
            converted[key] = int(number) if number.is_integer() else number
    return converted
