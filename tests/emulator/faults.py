"""Fault injection rules for the D1 emulator.

A `Fault` matches requests on method, a regex searched in the path, and optionally the
body (a substring of the raw text, or a predicate on the parsed JSON). Rules are tried
in the order they were added; `after=K` lets the first K matches through and `times=N`
retires the rule after it fired N times (None: never).

HTTP-level actions act on the matched request: `status` (+ `headers`, and `reply`: a
JSON value, str or bytes, by default a Cloudflare failure envelope) answers instead of
D1; `drop_before` closes the connection without running anything; `drop_after` runs
and commits the request, then closes without answering; `delay` sleeps first;
`truncate` cuts a signed download after that many bytes while still announcing the
full Content-Length; `end_before` ends one cleanly right before the first line that
starts with that text, announcing no length (the connection closes: the body looks
whole, and in a dump it ends at a statement boundary). Job-level actions are consulted only when an
export or import job starts: `export_never_completes`, `export_fails`, `import_fails`
(the latter two carry the error text to report).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Stage = Literal["http", "export", "import"]


@dataclass
class Fault:
    method: str | None = None
    path: str = ""
    body: str | Callable[[Any], bool] | None = None
    times: int | None = None
    after: int = 0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reply: Any = None
    drop_before: bool = False
    drop_after: bool = False
    delay: float = 0.0
    truncate: int | None = None
    end_before: str | None = None
    export_never_completes: bool = False
    export_fails: str | None = None
    import_fails: str | None = None
    matched: int = 0
    fired: int = 0

    @property
    def stage(self) -> Stage:
        if self.export_never_completes or self.export_fails is not None:
            return "export"
        return "import" if self.import_fails is not None else "http"

    @property
    def expired(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, method: str, path: str, raw: bytes, parsed: Any) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if not re.search(self.path, path):
            return False
        if isinstance(self.body, str):
            return self.body in raw.decode("utf-8", "replace")
        return self.body is None or bool(self.body(parsed))


class Faults:
    """The emulator's ordered, thread-safe list of fault rules."""

    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, method: str | None = None, path: str = "", **options: Any) -> Fault:
        """Add a rule, e.g. `add("POST", r"/query$", status=429, headers={"Retry-After": "1"})`."""
        rule = Fault(method, path, **options)
        actions = (
            rule.status is not None,
            rule.drop_before,
            rule.drop_after,
            rule.delay > 0,
            rule.truncate is not None,
            rule.end_before is not None,
            rule.export_never_completes,
            rule.export_fails is not None,
            rule.import_fails is not None,
        )
        if not any(actions):
            raise ValueError("a fault needs an action")
        if rule.drop_before and rule.drop_after:
            raise ValueError("drop_before and drop_after exclude each other")
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def take(self, stage: Stage, method: str, path: str, raw: bytes, parsed: Any) -> Fault | None:
        """The first live rule of `stage` matching the request, counting the match."""
        with self._lock:
            for rule in self.rules:
                if rule.stage != stage or rule.expired:
                    continue
                if not rule.matches(method, path, raw, parsed):
                    continue
                rule.matched += 1
                if rule.matched <= rule.after:
                    continue
                rule.fired += 1
                return rule
        return None
