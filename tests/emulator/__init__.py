"""A Cloudflare D1 REST API emulator backed by real SQLite, for tests and benchmarks.

`D1Emulator` (api.py) plays the API over SQLite files (engine.py: statements run by
D1's rules from `d1deploy.d1sqlite`, and Time Travel; exports written by
`d1deploy.dumpsql` with D1's JavaScript numbers), with fault injection (faults.py), mounted in
process or on loopback HTTP (server.py). `python -m tests.emulator` serves it by hand.
"""

from __future__ import annotations

from .api import D1Emulator, DatabaseRef, RecordedRequest, RequestLog, Response
from .faults import Fault, Faults
from .server import ServedEmulator

__all__ = [
    "D1Emulator",
    "DatabaseRef",
    "Fault",
    "Faults",
    "RecordedRequest",
    "RequestLog",
    "Response",
    "ServedEmulator",
]
