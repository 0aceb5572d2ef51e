"""Reading d1deploy's and wrangler's config files: TOML, JSON and JSONC (wrangler's JSON
with comments and trailing commas), every failure a `ConfigFileError` naming the file
and line, and values checked by kind without ever echoing one (a file can hold secrets).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from d1deploy import errors


def strip_jsonc(text: str) -> str:
    """JSONC -> JSON: blank out `//` and `/* */` comments and trailing commas.

    Comments and removed commas become spaces (newlines are kept), so the JSON parser's
    line and column numbers still point into the original file. Text inside strings is
    never touched, so `"https://example.com"` survives.

    :raises json.JSONDecodeError: for a `/*` comment that is never closed.
    """
    out: list[str] = []
    pending_comma: int | None = None  # index in `out` of a comma that may be trailing
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            pending_comma, i = None, end + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end == -1:
                raise json.JSONDecodeError("Unterminated /* comment", text, i)
            out.append(re.sub(r"[^\n]", " ", text[i : end + 2]))
            i = end + 2
        else:
            if c in "}]" and pending_comma is not None:
                out[pending_comma] = " "
            if c == ",":
                pending_comma = len(out)
            elif not c.isspace():
                pending_comma = None
            out.append(c)
            i += 1
    return "".join(out)


def parse_file(path: Path, label: str) -> dict[str, Any]:
    """Parse a TOML or JSON(C) file, turning every failure into a ConfigFileError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigFileError(
            f"cannot read the file ({exc.__class__.__name__})",
            file=label,
            hint="make sure the file is readable UTF-8 text",
        ) from None
    if path.suffix in (".json", ".jsonc"):
        try:
            data = json.loads(strip_jsonc(text))
        except json.JSONDecodeError as exc:
            raise errors.ConfigFileError(
                f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                file=label,
                line=exc.lineno,
                hint="fix the syntax there (comments and trailing commas are allowed)",
            ) from None
        if not isinstance(data, dict):
            raise errors.ConfigFileError(
                "the top level is not a JSON object", file=label, hint="wrap the settings in { }"
            )
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError has no lineno attribute; its message ends with
        # "(at line N, column M)".
        message = str(exc)
        found = re.search(r"at line (\d+)", message)
        raise errors.ConfigFileError(
            f"not valid TOML: {message}",
            file=label,
            line=int(found.group(1)) if found else None,
            hint="fix the syntax there",
        ) from None


def type_error(label: str, key: str, expected: str, value: object) -> errors.ConfigFileError:
    # Only the kind of the value is named, never the value: config files can hold secrets.
    return errors.ConfigFileError(
        f"`{key}` must be {expected}, not {kind(value)}",
        file=label,
        hint=f"change `{key}` to {expected}",
    )


def kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "an empty string" if value == "" else "a string"
    if isinstance(value, int):
        return "an integer that is not positive" if value <= 0 else "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, list):
        return "an array of something else" if value else "an empty array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def is_text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def join(base: Path, relative: str) -> Path:
    """`base / relative` with `..` folded lexically, as node's `path.resolve` does for wrangler."""
    return Path(os.path.normpath(base / relative))


def display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)
