"""The emulator's two transports: in process (`httpx.MockTransport`) and loopback HTTP.

Both serve the API and the signed URLs, and both surface faults the same way to an httpx
client: a dropped connection (`drop_before`/`drop_after`) raises
`httpx.RemoteProtocolError` ("Server disconnected without sending a response."), and a
truncated download raises `httpx.RemoteProtocolError` ("peer closed connection without
sending complete message body") part-way through the body. The loopback server really
closes the socket; it only ever binds to loopback addresses.
"""

from __future__ import annotations

import ipaddress
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any

import httpx

from .api import API_PREFIX, iter_file

if TYPE_CHECKING:
    from .api import D1Emulator, Response

_BUFFER = 1 << 20


@dataclass(frozen=True)
class ServedEmulator:
    """An emulator listening on loopback; `base_url` ends in /client/v4."""

    base_url: str
    emulator: D1Emulator


class _FileStream(httpx.SyncByteStream):
    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response, self._request = response, request

    def __iter__(self) -> Iterator[bytes]:
        assert self._response.file is not None
        sent = 0
        for chunk in iter_file(self._response.file, self._response.truncate):
            sent += len(chunk)
            yield chunk
        if self._response.truncate is not None and "Content-Length" in self._response.headers:
            expected = self._response.headers["Content-Length"]
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body: "
                f"received {sent} bytes, expected {expected}",
                request=self._request,
            )


def mock_transport(emulator: D1Emulator) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        response = emulator.handle(
            request.method,
            request.url.raw_path.decode("ascii"),
            dict(request.headers),
            [request.content],
        )
        if response.drop:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if response.file is not None:
            stream = _FileStream(response, request)
            return httpx.Response(response.status, headers=response.headers, stream=stream)
        return httpx.Response(response.status, headers=response.headers, content=response.body)

    return httpx.MockTransport(handler)


def _read_exact(rfile: BufferedIOBase, length: int) -> Iterator[bytes]:
    while length > 0:
        chunk = rfile.read(min(_BUFFER, length))
        if not chunk:
            return
        length -= len(chunk)
        yield chunk


def _read_chunked(rfile: BufferedIOBase) -> Iterator[bytes]:
    while size := int(rfile.readline().split(b";")[0].strip() or b"0", 16):
        yield from _read_exact(rfile, size)
        rfile.readline()
    while rfile.readline().strip():  # trailers, up to the blank line
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so fleets of requests reuse connections
    disable_nagle_algorithm = True  # else small replies wait ~40 ms for a delayed ACK
    server: _Server

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = _read_chunked(self.rfile)
        else:
            body = _read_exact(self.rfile, int(self.headers.get("Content-Length") or 0))
        response = self.server.emulator.handle(self.command, self.path, dict(self.headers), body)
        for _ in body:  # drain what the handler did not read, so the socket stays in sync
            pass
        if response.drop:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.file is None:
                self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.file is None:
                self.wfile.write(response.body)
            elif response.truncate is None:
                with response.file.open("rb") as source:
                    shutil.copyfileobj(source, self.wfile, _BUFFER)
            else:
                for chunk in iter_file(response.file, response.truncate):
                    self.wfile.write(chunk)
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the emulator keeps its own request log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: D1Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


@contextmanager
def serve(emulator: D1Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the emulator on `host:port` (port 0: any free one); yield the API base URL.

    While serving, signed URLs point at this server.
    """
    address = "127.0.0.1" if host == "localhost" else host
    if not ipaddress.ip_address(address).is_loopback or ":" in address:
        raise ValueError(f"the emulator only binds to IPv4 loopback, not {host!r}")
    server = _Server((address, port), emulator)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    origin = f"http://{address}:{server.server_address[1]}"
    previous, emulator.signed_origin = emulator.signed_origin, origin
    try:
        yield origin + API_PREFIX
    finally:
        emulator.signed_origin = previous
        server.shutdown()
        server.server_close()
        thread.join()
