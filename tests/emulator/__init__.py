"""A Cloudflare D1 REST API emulator backed by real SQLite, for tests and benchmarks.

`D1Emulator` (api.py) plays the API over SQLite files (engine.py: D1's SQL behaviour and
Time Travel; dump.py: D1's export format), with fault injection (faults.py), mounted in
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
