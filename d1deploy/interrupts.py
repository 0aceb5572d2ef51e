"""Stopping a run: SIGINT and SIGTERM as an exception, and the settle that follows.

The CLI wraps each command in `handling(say)`. The first SIGINT (Ctrl-C) or SIGTERM (what
a CI cancel sends) then raises `errors.Interrupt` in the main thread, wherever the run
stands, and marks the process as stopping, which a fleet's worker threads (signals only
reach the main thread) notice at their next `checkpoint()`. The engine catches it like
any other way out of its change phase and settles: it judges what landed, undoes this
run's migrations, releases the lock and reports (`migrations._Run.settle`).

A settle must not be cut short: inside `settling(what)` no checkpoint fires, and a
signal, while the main thread settles or once the process is stopping, is refused with a
line saying what is being finished (`say`). A settle is bounded in time instead: its
thread gets a deadline (`remaining()`, which `client.D1Client` holds each request to),
and the engine says so when it gives up. After it (`finishing(what)`), signals stay
refused until the command has written its report.

Core modules only call `checkpoint`, `settling`, `finishing` and `remaining`: without
`handling` (a library caller) none of them changes anything but the deadline.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from d1deploy.errors import Interrupt

SETTLE_SECONDS = 60.0
"""How long a settle (judging what landed, undoing this run's migrations) may take."""
RELEASE_SECONDS = 15.0
"""And releasing the lock after it, which a settle that ran out of time still tries."""

SIGNALS = ("SIGINT", "SIGTERM")

_lock = threading.RLock()
"""Reentrant: the signal handler, which reads `_doing`, may run while its own thread
holds the lock."""
_handling = False
"""Whether `handling` is active (the CLI), so that `finishing` means something."""
_stopping: str | None = None
"""The signal that asked the process to stop, once one did."""
_doing: dict[int, str] = {}
"""What each settling or finishing thread is doing, for the line a refused signal prints."""
_local = threading.local()


def _now() -> float:
    return time.monotonic()


def stopping() -> str | None:
    """The signal that asked this process to stop, if one did."""
    return _stopping


def checkpoint() -> None:
    """Raise `Interrupt` when a signal asked the process to stop, unless this thread is
    settling: the main thread got it where it stood; a worker gets it here."""
    signal_name = _stopping
    if signal_name is not None and getattr(_local, "deadline", None) is None:
        raise Interrupt(signal_name)


def remaining() -> float | None:
    """Seconds left to this thread's settle, or None when it is not settling."""
    deadline: float | None = getattr(_local, "deadline", None)
    return None if deadline is None else deadline - _now()


def out_of_time() -> bool:
    left = remaining()
    return left is not None and left <= 0


@contextmanager
def settling(what: str, seconds: float | None = None) -> Iterator[None]:
    """Settle `what` within `seconds` (SETTLE_SECONDS): no checkpoint fires and signals
    are refused meanwhile. Nested, the inner bound is a fresh one (releasing the lock
    after an undo ran out of time)."""
    ident = threading.get_ident()
    previous = getattr(_local, "deadline", None), _doing.get(ident)
    _local.deadline = _now() + (SETTLE_SECONDS if seconds is None else seconds)
    with _lock:
        _doing[ident] = what
    try:
        yield
    finally:
        _local.deadline = previous[0]
        with _lock:
            if getattr(_local, "finishing", False):
                pass  # `finishing` said what this thread does from now on
            elif previous[1] is None:
                _doing.pop(ident, None)
            else:
                _doing[ident] = previous[1]


def finishing(what: str) -> None:
    """From now on, until the command ends, a signal to this thread is refused: the run
    has settled (or succeeded) and is reporting `what`."""
    if not _handling:
        return
    with _lock:
        _doing[threading.get_ident()] = what
    _local.finishing = True


def _refusal(signal_name: str) -> str:
    with _lock:
        doing = list(dict.fromkeys(_doing.values()))
    what = "; ".join(doing) if doing else "stopping"
    left = remaining()
    bound = (
        f"; it stops by itself within {left + RELEASE_SECONDS:.0f} s"
        if left is not None and left > 0
        else ""
    )
    return f"{signal_name} refused: d1deploy is finishing ({what}){bound}"


@contextmanager
def handling(say: Callable[[str], None]) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupt` while the block runs (main thread only;
    elsewhere it changes nothing), refusing them while settling or stopping."""
    global _stopping, _handling
    if _handling or threading.current_thread() is not threading.main_thread():
        yield  # already handled (the console script wraps the command too), or a thread
        return
    _handling = True

    def handler(signum: int, frame: FrameType | None) -> None:
        global _stopping
        name = signal.Signals(signum).name
        settling_here = getattr(_local, "deadline", None) is not None
        if _stopping is not None or settling_here or getattr(_local, "finishing", False):
            _stopping = _stopping or name
            say(_refusal(name))
            return
        _stopping = name
        raise Interrupt(name)

    previous = {name: signal.getsignal(getattr(signal, name)) for name in SIGNALS}
    for name in SIGNALS:
        signal.signal(getattr(signal, name), handler)
    try:
        yield
    finally:
        for name, old in previous.items():
            signal.signal(getattr(signal, name), old)
        with _lock:
            _stopping = None
            _handling = False
            _doing.clear()
        _local.finishing = False
        _local.deadline = None
