"""`RateLimitTransport`: the D1 API's rate limits, as an httpx transport.

The only rate logic of d1deploy. It wraps another transport, as httpx transports stack,
and before each request it waits (1) until a pause set by a 429 on any request through
it is over, then (2) until the request fits the account's budget, at most `limit`
requests in any `window` seconds (Cloudflare's API allows 1200 per 5 minutes). A 429
reply sets the pause from its `Retry-After` (at least 1 s, at most `MAX_RETRY_AFTER`).

One transport shared by every thread of a run (fleet mode) paces them all: a 429 seen by
one database's worker pauses every worker, instead of N independent backoffs, and the
fleet as a whole keeps to the account's budget. The client's own retry policy
(`client.D1Client`) still decides whether and when a failed request goes again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from d1deploy import errors
from d1deploy.limits import API_LIMIT, API_WINDOW

MAX_RETRY_AFTER = 60.0
"""A 429 asking for a longer pause fails at once instead of blocking the run."""


def retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by `Retry-After` (delta-seconds or HTTP date), if present."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        until = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # Measure against the server's own Date header when present: no clock-skew guess.
    now = datetime.now(UTC)
    if server_date := response.headers.get("date"):
        try:
            now = parsedate_to_datetime(server_date)
        except (TypeError, ValueError):
            pass
    return max(0.0, (until - now).total_seconds())


class _FromEnvironment(httpx.BaseTransport):
    """The transport `httpx.Client` builds from the environment (proxies, NO_PROXY,
    SSL_CERT_FILE), which it skips as soon as it is handed a transport of its own."""

    def __init__(self) -> None:
        # Loading the CA bundle once is a good part of a short command's start-up.
        verify = httpx.create_ssl_context(trust_env=True)
        self._client = httpx.Client(verify=verify, trust_env=True)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # The request's own timeout (set by the client that built it) travels with it.
        return self._client.send(request, stream=True)

    def close(self) -> None:
        self._client.close()


class RateLimitTransport(httpx.BaseTransport):
    """Waits out 429 pauses and keeps to the request budget, then sends through
    `transport` (the real one, from the environment, when not given).

    `limit=None` keeps no budget, only the 429 pause. The budget is a sliding window
    rather than a token bucket: a bucket that starts full lets through its capacity plus
    a window's refill, twice the limit, in the first window.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        limit: int | None = API_LIMIT,
        window: float = API_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit is not None and (limit < 1 or window <= 0):
            raise errors.UsageError(
                f"a request budget needs a limit of at least 1 and a positive window "
                f"(got {limit} per {window} s)"
            )
        self.wrapped = transport if transport is not None else _FromEnvironment()
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._sent: deque[float] = deque()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._wait_for_pause()
        self._take_budget()
        response = self.wrapped.handle_request(request)
        if response.status_code == 429:
            asked = retry_after(response)
            self.pause(min(MAX_RETRY_AFTER, max(1.0, asked or 1.0)))
        return response

    def pause(self, seconds: float) -> None:
        """Hold every request through this transport for `seconds` (the longest wins)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _wait_for_pause(self) -> None:
        with self._lock:
            remaining = self._paused_until - self._clock()
        # Sleep outside the lock so that another 429 can extend the pause meanwhile.
        if remaining > 0:
            self._sleep(remaining)

    def _take_budget(self) -> None:
        """Record one request, first waiting until it fits in the window."""
        if self._limit is None:
            return
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self._window:
                    self._sent.popleft()
                if len(self._sent) < self._limit:
                    self._sent.append(now)
                    return
                wait_for = self._sent[0] + self._window - now
            # Sleep outside the lock so that other threads can check the window too.
            self._sleep(wait_for)

    def close(self) -> None:
        self.wrapped.close()
