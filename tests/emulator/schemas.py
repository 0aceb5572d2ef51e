"""The request shapes the emulator accepts, as JSON Schemas checked with jsonschema.

Export, import, create and list follow Cloudflare's OpenAPI document (the tests check
that this module and `reference/cloudflare-d1-openapi.json` agree). Query and raw follow
the newer API instead: `{sql, params}` or `{batch: [{sql, params}]}`, with params of any
JSON scalar type.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator

_STRING = {"type": "string"}
_PARAMS = {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}}
_SINGLE = {"type": "object", "required": ["sql"], "properties": {"sql": _STRING, "params": _PARAMS}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "list": {
        "type": "object",
        "properties": {
            "name": _STRING,
            "page": {"type": "number", "minimum": 1},
            "per_page": {"type": "number", "minimum": 10, "maximum": 10000},
        },
    },
    "create": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-_]*$"},
            "primary_location_hint": {
                "type": "string",
                "enum": ["wnam", "enam", "weur", "eeur", "apac", "oc"],
            },
        },
    },
    "query": {
        "oneOf": [
            {**_SINGLE, "not": {"required": ["batch"]}},
            {
                "type": "object",
                "required": ["batch"],
                "not": {"required": ["sql"]},
                "properties": {"batch": {"type": "array", "minItems": 1, "items": _SINGLE}},
            },
        ]
    },
    "export": {
        "type": "object",
        "required": ["output_format"],
        "properties": {
            "output_format": {"type": "string", "enum": ["polling"]},
            "current_bookmark": _STRING,
            "dump_options": {
                "type": "object",
                "properties": {
                    "no_data": {"type": "boolean"},
                    "no_schema": {"type": "boolean"},
                    "tables": {"type": "array", "items": _STRING},
                },
            },
        },
    },
    "import": {
        "oneOf": [
            {
                "type": "object",
                "required": ["action", "etag"],
                "properties": {"action": {"type": "string", "enum": ["init"]}, "etag": _STRING},
            },
            {
                "type": "object",
                "required": ["action", "etag", "filename"],
                "properties": {
                    "action": {"type": "string", "enum": ["ingest"]},
                    "etag": _STRING,
                    "filename": _STRING,
                },
            },
            {
                "type": "object",
                "required": ["action", "current_bookmark"],
                "properties": {
                    "action": {"type": "string", "enum": ["poll"]},
                    "current_bookmark": _STRING,
                },
            },
        ]
    },
}
_VALIDATORS = {name: Draft4Validator(schema) for name, schema in SCHEMAS.items()}


def problem(kind: str, value: Any) -> str | None:
    """Why `value` is not an acceptable `kind` request, or None when it is."""
    errors = sorted(_VALIDATORS[kind].iter_errors(value), key=lambda e: list(e.path))
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
