"""The backup's download path end to end in one process: `D1Client`'s signed-URL stream
(no re-chunking, still decoded and length-checked, no token) and `backups._download`'s
write path (sha256 hashed in a thread over exactly the bytes written, in order; fsync
before returning; 0600; nothing left behind and no thread left running on failure)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import random
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from d1deploy import backups, errors
from d1deploy.backend import ExportHandle, ExportOptions
from d1deploy.client import DOWNLOAD_CHUNK, D1Client

BASE = "https://api.test/client/v4"
ACCOUNT = "acc"
DB = "db-1"
SIGNED = "https://r2.test/bucket/dump.sql?X-Amz-Signature=sig-SECRET"
EXPORT = f"{BASE}/accounts/{ACCOUNT}/d1/database/{DB}/export"


def dump_bytes(size: int, seed: int = 1) -> bytes:
    """A D1 dump of about `size` bytes: one table, rows of random hex of random length."""
    rng = random.Random(seed)
    lines = [b"PRAGMA defer_foreign_keys=TRUE;\n", b"CREATE TABLE t (id INTEGER, b BLOB);\n"]
    total = sum(map(len, lines))
    while total < size:
        line = b'INSERT INTO "t" ("id","b") VALUES(%d,X\'%s\');\n' % (
            len(lines),
            rng.randbytes(rng.randrange(1, 3000)).hex().encode(),
        )
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def irregular(data: bytes, seed: int = 2) -> Iterator[bytes]:
    """`data` in chunks from 1 byte to 300 KB, so hash batches end mid-chunk."""
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        step = rng.choice((1, 17, 4096, 65536, 300_000))
        yield data[at : at + step]
        at += step


def handle(chunks: Callable[[], Iterator[bytes]]) -> ExportHandle:
    return ExportHandle(bookmark="bm", filename="d.sql", download=chunks)


def hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "d1deploy-sha256"]


# -- backups._download -------------------------------------------------------------------


def test_many_chunks_are_written_and_hashed_in_order(tmp_path: Path) -> None:
    data = dump_bytes(5_300_000)  # several hash batches
    part = tmp_path / "b.sql.part"
    size, digest, contents = backups._download(
        handle(lambda: irregular(data)), part, gz=False, on_bytes=None
    )
    assert part.read_bytes() == data
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert contents.rows == {"t": data.count(b"\n") - 2} and contents.bytes == len(data)
    assert part.stat().st_mode & 0o777 == 0o600
    assert hashing_threads() == []


def test_gzip_output_is_hashed_as_written(tmp_path: Path) -> None:
    data = dump_bytes(2_000_000) + b'INSERT INTO "t" ("id","b") VALUES(0,NULL);\n' * 200_000
    part = tmp_path / "b.sql.gz.part"
    size, digest, contents = backups._download(
        handle(lambda: irregular(data)), part, gz=True, on_bytes=None
    )
    on_disk = part.read_bytes()
    assert gzip.decompress(on_disk) == data
    assert contents.rows == {"t": data.count(b"\n") - 2}
    assert (size, digest) == (len(on_disk), hashlib.sha256(on_disk).hexdigest())


def test_the_file_is_complete_when_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dump_bytes(3_000_000)
    part = tmp_path / "b.sql.part"
    seen: list[bytes] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        seen.append(part.read_bytes())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    backups._download(handle(lambda: irregular(data)), part, gz=False, on_bytes=None)
    assert seen == [data]


def test_failure_mid_stream_removes_the_part_and_stops_the_thread(tmp_path: Path) -> None:
    data = dump_bytes(4_000_000)

    def cut() -> Iterator[bytes]:
        yield from irregular(data)
        raise errors.DownloadError("connection closed")

    part = tmp_path / "b.sql.part"
    with pytest.raises(errors.DownloadError):
        backups._download(handle(cut), part, gz=False, on_bytes=None)
    assert not part.exists() and hashing_threads() == []


def test_a_hashing_failure_surfaces_without_blocking_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def update(self, data: bytes) -> None:
            raise MemoryError

        def hexdigest(self) -> str:
            raise AssertionError("never reached")

    monkeypatch.setattr(hashlib, "sha256", Broken)
    data = dump_bytes(12_000_000)  # more batches than the queue holds
    part = tmp_path / "b.sql.part"
    with pytest.raises(MemoryError):
        backups._download(handle(lambda: irregular(data)), part, gz=False, on_bytes=None)
    assert not part.exists() and hashing_threads() == []


def test_a_closed_writer_refuses_late_writes(tmp_path: Path) -> None:
    # A gzip writer finalised after the download failed must not write to a reused fd.
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with backups._HashingWriter(fd) as sink:
            sink.write(b"abc")
        assert sink.hexdigest() == hashlib.sha256(b"abc").hexdigest()
        with pytest.raises(ValueError, match="closed"):
            sink.write(b"more")
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abc"


def test_bytearray_chunks_are_hashed_as_they_were_written(tmp_path: Path) -> None:
    buffer = bytearray(b"a" * 100)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with backups._HashingWriter(fd) as sink:
            sink.write(buffer)  # type: ignore[arg-type]  # a caller reusing its buffer
            buffer[:] = b"b" * 100
            digest = sink.hexdigest()
    finally:
        os.close(fd)
    assert digest == hashlib.sha256(b"a" * 100).hexdigest()


# -- D1Client: the signed-URL stream ----------------------------------------------------


class Pieces(httpx.SyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


def client_for(download: httpx.Response) -> tuple[D1Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    done: dict[str, Any] = {
        "success": True,
        "errors": [],
        "messages": [],
        "result": {
            "success": True,
            "type": "export",
            "at_bookmark": "bm-1",
            "status": "complete",
            "result": {"filename": "dump.sql", "signed_url": SIGNED},
        },
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if str(request.url) == EXPORT:
            return httpx.Response(200, json=done)
        assert str(request.url) == SIGNED
        return download

    client = D1Client(
        token="tok-SECRET",
        account_id=ACCOUNT,
        base_url=BASE,
        transport=httpx.MockTransport(handler),
        sleep=lambda _s: None,
    )
    return client, seen


def test_the_stream_is_passed_on_as_the_transport_delivers_it() -> None:
    pieces = [dump_bytes(65_536, seed) for seed in range(5)] + [b"tail"]
    length = str(sum(map(len, pieces)))
    reply = httpx.Response(200, headers={"content-length": length}, stream=Pieces(pieces))
    client, seen = client_for(reply)
    got = list(client.export(DB, ExportOptions()).download())
    assert got == pieces
    assert "authorization" not in seen[-1].headers
    assert seen[-1].headers["accept-encoding"] == "identity"


def test_a_body_handed_over_whole_is_split() -> None:
    data = dump_bytes(3 * DOWNLOAD_CHUNK + 5)
    client, _ = client_for(httpx.Response(200, content=data))
    got = list(client.export(DB, ExportOptions()).download())
    assert b"".join(got) == data and max(map(len, got)) == DOWNLOAD_CHUNK


def test_a_compressed_reply_is_still_decoded_and_length_checked() -> None:
    # A server that ignores `Accept-Encoding: identity` must not put gzip into a .sql file.
    data = b"INSERT INTO t VALUES (1);\n" * 50_000
    packed = gzip.compress(data)
    headers = {"content-encoding": "gzip", "content-length": str(len(packed))}
    client, _ = client_for(httpx.Response(200, headers=headers, stream=Pieces([packed])))
    assert b"".join(client.export(DB, ExportOptions()).download()) == data

    headers["content-length"] = str(len(packed) + 10)
    client, _ = client_for(httpx.Response(200, headers=headers, stream=Pieces([packed])))
    with pytest.raises(errors.DownloadError, match="ended after"):
        b"".join(client.export(DB, ExportOptions()).download())


@pytest.mark.parametrize("media", ["text/html; charset=utf-8", "application/json"])
def test_an_error_page_or_api_answer_is_refused_before_a_byte_is_passed_on(media: str) -> None:
    reply = httpx.Response(200, headers={"content-type": media}, content=b"<html>503</html>")
    client, _ = client_for(reply)
    download = client.export(DB, ExportOptions()).download()
    with pytest.raises(errors.InvalidDump, match=f"answered {media.split(';')[0]}, not a SQL dump"):
        next(download)


def test_a_full_disk_is_named_with_its_folder_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = dump_bytes(3_000_000)
    real_write = os.write
    written = [0]

    def filling(fd: int, chunk: Any) -> int:
        if written[0] > 1_000_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += len(chunk)
        return real_write(fd, chunk)

    monkeypatch.setattr(os, "write", filling)
    part = tmp_path / "b.sql.part"
    with pytest.raises(errors.DiskFull) as caught:
        backups._download(
            handle(lambda: irregular(data)), part, gz=False, on_bytes=None, estimate=len(data)
        )
    message = str(caught.value)
    assert f"writing the backup {tmp_path / 'b.sql'} failed after" in message
    assert f"the disk is full (No space left on device): {tmp_path} has " in message
    assert f"it needs about {len(data) / 1e6:.1f} MB" in message
    assert caught.value.exit_code == 4 and "--backup-dir" in (caught.value.hint or "")
    assert list(tmp_path.iterdir()) == [] and hashing_threads() == []


def test_a_download_that_is_not_a_dump_stops_early_and_leaves_nothing(tmp_path: Path) -> None:
    sent = [0]

    def page() -> Iterator[bytes]:
        for _ in range(100):
            sent[0] += 1
            yield b"<html><body>" + b"x" * 2_000_000 + b"</body></html>"

    part = tmp_path / "b.sql.part"
    with pytest.raises(errors.InvalidDump, match="not a complete D1 dump: it is an HTML page"):
        backups._download(handle(page), part, gz=False, on_bytes=None)
    assert sent[0] < 10  # refused as the first bytes were checked, not after all of it
    assert list(tmp_path.iterdir()) == [] and hashing_threads() == []


def test_both_http_clients_share_one_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    with D1Client(token="tok", account_id=ACCOUNT, base_url=BASE):
        pass
    assert len(made) == 1
