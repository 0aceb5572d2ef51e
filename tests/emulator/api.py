"""`D1Emulator`: the Cloudflare D1 REST API, played over real SQLite files.

Owns routing, authentication, the v4 envelope, the database registry, the export and
import jobs with their polling, the presigned (`/__signed/...`) download and upload
URLs, Time Travel endpoints, the request log and fault handling. It is transport-free:
`handle()` takes a request's parts and returns a `Response`; `server.py` mounts it in
process (`httpx.MockTransport`) or on a loopback HTTP server.

Error codes follow Cloudflare's (7404 not found, 7500 SQL error, 10000 authentication,
429/971 overloaded...). Where Cloudflare's code is unknown
the emulator uses 7400 for a malformed request (bad JSON, schema violation, bad
parameter) and 7502 for a duplicate database name.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from d1deploy import dumpsql

from . import schemas
from .engine import D1SqlError, Database, StatementResult, split_statements
from .faults import Fault, Faults

if TYPE_CHECKING:
    import httpx

IN_PROCESS_ORIGIN = "https://d1-emulator.local"
API_PREFIX = "/client/v4"
SIGNED_PREFIX = "/__signed/"
SIGNED_URL_LIFETIME = 3600.0
BAD_REQUEST = 7400
_ROUTE = re.compile(
    r"/client/v4/accounts/(?P<account>[^/]+)/d1/database"
    r"(?:/(?P<db>[^/]+)(?P<sub>/query|/raw|/export|/import|/time_travel/bookmark"
    r"|/time_travel/restore)?)?/?"
)
_AUTH_HEADERS = ("authorization", "x-auth-key", "x-auth-email")
_LISTED = ("uuid", "name", "created_at", "version", "jurisdiction")


@dataclass(frozen=True)
class Response:
    """What to send back. `file` streams a file; `drop` closes without answering."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    truncate: int | None = None
    """Send only this many bytes of `file`, then close: with a Content-Length that
    announces more, a cut the client sees; without one, a body that looks whole."""
    drop: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int | None  # None when the connection was dropped without an answer


class RequestLog(list[RecordedRequest]):
    """Every request the emulator answered (or dropped), in completion order."""

    def count(self, method: object = None, path_contains: str | None = None) -> int:
        """How many requests had this method and a path containing `path_contains`."""
        if isinstance(method, RecordedRequest):  # plain list.count(item) still works
            return super().count(method)
        return sum(
            1
            for r in list(self)
            if (method is None or r.method == str(method).upper())
            and (path_contains is None or path_contains in r.path)
        )


class DatabaseRef(str):
    """A database's uuid (it *is* the uuid string) that also knows its name and file."""

    name: str
    path: Path

    def __new__(cls, uuid: str, name: str, path: Path) -> DatabaseRef:
        ref = super().__new__(cls, uuid)
        ref.name, ref.path = name, path
        return ref

    @property
    def uuid(self) -> str:
        return str(self)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _ExportJob:
    db: str
    bookmark: str
    filename: str
    error: str | None = None
    never_completes: bool = False
    polls: int = 0
    signed_url: str | None = None


@dataclass
class _ImportJob:
    at_bookmark: str
    error: str | None = None
    result: dict[str, Any] | None = None
    polls: int = 0
    reported: bool = False


@dataclass
class _Tally:
    """An import's statement results summed into one `meta`."""

    queries: int = 0
    changes: int = 0
    rows_read: int = 0
    rows_written: int = 0
    last_row_id: int = 0
    changed_db: bool = False

    def add(self, result: StatementResult) -> None:
        meta = result.meta
        self.queries += 1
        self.changes += meta["changes"]
        self.rows_read += meta["rows_read"]
        self.rows_written += meta["rows_written"]
        self.last_row_id = meta["last_row_id"]
        self.changed_db = self.changed_db or meta["changed_db"]

    def meta(self, duration: float, size_after: int) -> dict[str, Any]:
        return {
            "served_by": "d1-emulator",
            "duration": duration,
            "changes": self.changes,
            "last_row_id": self.last_row_id,
            "changed_db": self.changed_db,
            "size_after": size_after,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
        }


@dataclass
class _Upload:
    path: Path
    md5: str | None = None


def _envelope(result: Any, status: int = 200, **extra: Any) -> Response:
    body = {"success": True, "errors": [], "messages": [], "result": result, **extra}
    return _json(status, body)


def _failure(status: int, code: int, message: str) -> Response:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return _json(status, body)


def _json(status: int, body: Any) -> Response:
    return Response(status, {"Content-Type": "application/json"}, json.dumps(body).encode())


def _s3_error(status: int, code: str, message: str) -> Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(status, {"Content-Type": "application/xml"}, xml.encode())


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class D1Emulator:
    """An in-memory Cloudflare account holding D1 databases backed by SQLite files.

    Tunables that tests may change at any time: `latency` (seconds added to every API
    request), `atomic_batches` (False: each statement of a request commits on its own,
    modelling the undocumented REST case), `export_polls`/`import_polls` (polls before a
    job completes; 0 completes on the first call), `faults`.
    """

    def __init__(
        self,
        root: Path,
        *,
        account_id: str = "0123456789abcdef0123456789abcdef",
        token: str = "test-token",
        latency: float = 0.0,
        export_polls: int = 1,
        import_polls: int = 1,
        snapshots: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.account_id, self.token = account_id, token
        self.latency = latency
        self.export_polls, self.import_polls = export_polls, import_polls
        self.snapshots = snapshots
        self.atomic_batches = True
        self.faults = Faults()
        self.requests = RequestLog()
        self.auth_leaks = 0
        self.signed_origin = IN_PROCESS_ORIGIN
        self._default_db: DatabaseRef | None = None
        self._clock, self._sleep = clock, sleep
        self._lock = threading.RLock()
        self._dbs: dict[str, Database] = {}
        self._exports: dict[tuple[str, str], _ExportJob] = {}
        self._imports: dict[tuple[str, str], _ImportJob] = {}
        self._uploads: dict[str, _Upload] = {}
        self._signatures: dict[str, dict[str, float]] = {}  # path -> signature -> expiry

    @property
    def default_db(self) -> DatabaseRef:
        """The database tests work on: the first one created unless set explicitly."""
        if self._default_db is None:
            raise LookupError("the emulator has no database yet; call create_database()")
        return self._default_db

    @default_db.setter
    def default_db(self, ref: DatabaseRef) -> None:
        self._default_db = ref

    @property
    def base_url(self) -> str:
        """The API base to use with `transport()` (in-process)."""
        return IN_PROCESS_ORIGIN + API_PREFIX

    # -- test-facing helpers ---------------------------------------------------------------

    def create_database(self, name: str) -> DatabaseRef:
        with self._lock:
            if any(db.name == name for db in self._dbs.values()):
                raise ValueError(f"a database named {name!r} already exists")
            uuid = str(uuidlib.uuid4())
            db = Database(
                uuid=uuid,
                name=name,
                path=self.root / f"{uuid}.sqlite",
                snapshot_dir=self.root / "snapshots" / uuid,
                created_at=self._clock(),
                eager_snapshots=self.snapshots,
                clock=self._clock,
            )
            self._dbs[uuid] = db
            ref = DatabaseRef(uuid, name, db.path)
            self._default_db = self._default_db or ref
            return ref

    def db_path(self, name_or_uuid: str) -> Path:
        return self._find(name_or_uuid, by_name=True).path

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        return self.requests.count(method, path_contains)

    def reset_log(self) -> None:
        """Forget logged requests; `auth_leaks` is kept, so a leak can never be wiped."""
        self.requests.clear()

    def close(self) -> None:
        with self._lock:
            for db in self._dbs.values():
                db.close()
            self._dbs.clear()

    def transport(self) -> httpx.MockTransport:
        """An httpx transport serving the API and the signed URLs in process."""
        from .server import mock_transport

        return mock_transport(self)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> AbstractContextManager[str]:
        """Serve on loopback in a background thread; yields the API base URL."""
        from .server import serve

        return serve(self, host, port)

    # -- request handling ------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], chunks: Iterable[bytes]
    ) -> Response:
        """Answer one HTTP request. `chunks` is the body; uploads consume it as a stream."""
        url = urlsplit(target)
        path, query = unquote(url.path), dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in headers.items()}
        upload = method == "PUT" and path.startswith(SIGNED_PREFIX)
        raw = b"" if upload else b"".join(chunks)
        parsed = _parse_json(raw)
        fault = self.faults.take("http", method, path, raw, parsed)
        response = self._respond(method, path, query, headers, raw, parsed, chunks, fault)
        self.requests.append(
            RecordedRequest(
                method, path, query, headers, parsed, None if response.drop else response.status
            )
        )
        return response

    def _respond(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
        parsed: Any,
        chunks: Iterable[bytes],
        fault: Fault | None,
    ) -> Response:
        if fault and fault.delay:
            self._sleep(fault.delay)
        if fault and fault.drop_before:
            return Response(0, drop=True)
        if fault and fault.status is not None:
            return _fault_response(fault)
        if path.startswith(API_PREFIX):
            if self.latency:
                self._sleep(self.latency)
            response = self._api(method, path, query, headers, raw, parsed)
        elif path.startswith(SIGNED_PREFIX):
            response = self._signed(method, path, query, headers, chunks)
        else:
            response = _failure(404, 7003, "No route for the URI")
        if fault and fault.drop_after:
            return Response(0, drop=True)
        if fault and fault.truncate is not None and response.file is not None:
            return Response(
                response.status, response.headers, file=response.file, truncate=fault.truncate
            )
        if fault and fault.end_before is not None and response.file is not None:
            mark = fault.end_before.encode()
            with response.file.open("rb") as source:
                end = 0
                for line in source:
                    if line.startswith(mark):
                        break
                    end += len(line)
            headers = {k: v for k, v in response.headers.items() if k != "Content-Length"}
            headers["Connection"] = "close"
            return Response(response.status, headers, file=response.file, truncate=end)
        return response

    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
        parsed: Any,
    ) -> Response:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _failure(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        if not secrets.compare_digest(auth[len("Bearer ") :].encode(), self.token.encode()):
            return _failure(403, 10000, "Authentication error")
        route = _ROUTE.fullmatch(path)
        if route is None:
            return _failure(404, 7003, "No route for the URI")
        if route["account"] != self.account_id:
            return _failure(
                403,
                7403,
                "The given account is not valid or is not authorized to access this service",
            )
        if method in ("POST", "PUT", "PATCH") and raw and parsed is None:
            return _failure(400, BAD_REQUEST, "Malformed JSON in request body")
        try:
            return self._dispatch(method, route["db"], route["sub"], query, parsed)
        except ApiError as exc:
            return _failure(exc.status, exc.code, exc.message)

    def _dispatch(
        self, method: str, db_id: str | None, sub: str | None, query: dict[str, str], body: Any
    ) -> Response:
        if db_id is None:
            if method == "GET":
                return self._list(query)
            if method == "POST":
                return self._create(body)
        elif sub is None:
            if method == "GET":
                return self._get(db_id, query)
            if method == "DELETE":
                return self._delete(db_id)
        elif method == "POST" and sub in ("/query", "/raw"):
            return self._query(self._find(db_id), body, raw=sub == "/raw")
        elif method == "POST" and sub == "/export":
            return self._export(self._find(db_id), body)
        elif method == "POST" and sub == "/import":
            return self._import(self._find(db_id), body)
        elif method == "GET" and sub == "/time_travel/bookmark":
            return self._bookmark(self._find(db_id), query)
        elif method == "POST" and sub == "/time_travel/restore":
            return self._restore(self._find(db_id), query)
        return _failure(404, 7003, "No route for the URI")

    def _find(self, ident: str, *, by_name: bool = False) -> Database:
        with self._lock:
            db = self._dbs.get(ident)
            if db is None and by_name:
                db = next((d for d in self._dbs.values() if d.name == ident), None)
        if db is None:
            raise ApiError(404, 7404, "Not Found")
        return db

    # -- databases -------------------------------------------------------------------------

    def _describe(self, db: Database) -> dict[str, Any]:
        return {
            "uuid": db.uuid,
            "name": db.name,
            "created_at": _iso(db.created_at),
            "version": "production",
            **db.info(),
            "jurisdiction": None,
            "read_replication": {"mode": "disabled"},
            "running_in_region": "WEUR",
        }

    def _list(self, query: dict[str, str]) -> Response:
        params = schemas.list_params(query)
        _check("list", params)
        page, per_page = int(params.get("page", 1)), int(params.get("per_page", 1000))
        with self._lock:
            dbs = [d for d in self._dbs.values() if params.get("name", "") in d.name]
        chunk = dbs[(page - 1) * per_page : page * per_page]
        info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(dbs)}
        # Listed databases are summaries: size and table count come only from GET, as on D1.
        listed = [{k: v for k, v in self._describe(d).items() if k in _LISTED} for d in chunk]
        return _envelope(listed, result_info=info)

    def _create(self, body: Any) -> Response:
        _check("create", body)
        try:
            ref = self.create_database(body["name"])
        except ValueError:
            raise ApiError(400, 7502, "A database with that name already exists") from None
        hint = body.get("primary_location_hint", "weur").upper()
        result = {**self._describe(self._find(ref)), "created_in_region": hint}
        return _envelope(result)

    def _get(self, ident: str, query: dict[str, str]) -> Response:
        described = self._describe(self._find(ident, by_name=True))
        if fields := query.get("fields"):
            described = {k: v for k, v in described.items() if k in fields.split(",")}
        return _envelope(described)

    def _delete(self, ident: str) -> Response:
        db = self._find(ident)
        with self._lock:
            del self._dbs[db.uuid]
        db.close()
        db.path.unlink(missing_ok=True)
        shutil.rmtree(self.root / "snapshots" / db.uuid, ignore_errors=True)
        return _envelope(None)

    # -- query -----------------------------------------------------------------------------

    def _query(self, db: Database, body: Any, *, raw: bool) -> Response:
        _check("query", body)
        statements: list[tuple[str, list[Any]]] = []
        for item in body.get("batch", [body]):
            parts = list(split_statements([item["sql"]]))
            params = item.get("params") or []
            if params and len(parts) > 1:
                raise ApiError(
                    400, 7500, "cannot bind parameters to several statements: SQLITE_ERROR"
                )
            statements += [(sql, params) for sql in parts]
        if not statements:
            raise ApiError(400, 7500, "No SQL statements detected.")
        results: list[StatementResult] = []
        try:
            db.execute(statements, atomic=self.atomic_batches, on_result=results.append)
        except D1SqlError as exc:
            raise ApiError(400, 7500, str(exc)) from None
        return _envelope([r.raw_shape() if raw else r.query_shape() for r in results])

    # -- export ----------------------------------------------------------------------------

    def _export(self, db: Database, body: Any) -> Response:
        _check("export", body)
        bookmark = body.get("current_bookmark")
        if bookmark is None:
            return self._export_status(self._start_export(db, body))
        with self._lock:
            job = self._exports.get((db.uuid, bookmark))
        if job is None:
            return _envelope({"success": False, "error": "Not currently exporting anything."})
        job.polls += 1
        return self._export_status(job)

    def _start_export(self, db: Database, body: Any) -> _ExportJob:
        options = body.get("dump_options") or {}
        with db.lock:
            bookmark = db.current_bookmark()
            job = _ExportJob(db.uuid, bookmark, f"{db.uuid}-{bookmark}.sql")
            fault = self.faults.take("export", "POST", f"/{db.uuid}/export", b"", body)
            if fault and fault.export_fails is not None:
                job.error = fault.export_fails
            job.never_completes = bool(fault and fault.export_never_completes)
            if job.error is None:
                job.error = self._write_dump(db, job.filename, options)
        with self._lock:
            self._exports[(db.uuid, bookmark)] = job
        return job

    def _write_dump(self, db: Database, filename: str, options: dict[str, Any]) -> str | None:
        target = self.root / "exports" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # D1's exporter prints numbers as JavaScript does (dumpsql's `javascript`).
            statements = dumpsql.dump(
                db.connection(),
                no_data=bool(options.get("no_data")),
                no_schema=bool(options.get("no_schema")),
                tables=options.get("tables") or (),
                numbers="javascript",
            )
        except dumpsql.DumpRefused as exc:
            return str(exc)
        with target.open("w", encoding="utf-8", newline="\n", buffering=1 << 20) as out:
            for statement in statements:
                out.write(statement)
                out.write("\n")
        return None

    def _export_status(self, job: _ExportJob) -> Response:
        base = {"success": True, "type": "export", "at_bookmark": job.bookmark}
        if job.never_completes or job.polls < self.export_polls:
            line = f"Generating {job.filename}" if job.polls == 0 else f"Uploaded part {job.polls}"
            return _envelope({**base, "status": "active", "messages": [line]}, status=202)
        if job.error is not None:
            return _envelope({**base, "status": "error", "error": job.error, "messages": []})
        parts = max(job.polls, 1)
        job.signed_url = job.signed_url or self._sign(f"{SIGNED_PREFIX}exports/{job.filename}")
        return _envelope(
            {
                **base,
                "status": "complete",
                "result": {"filename": job.filename, "signed_url": job.signed_url},
                "messages": [
                    f"Uploaded part {parts}",
                    f"Finished uploading {job.filename} in {parts} parts.",
                ],
            }
        )

    # -- import ----------------------------------------------------------------------------

    def _import(self, db: Database, body: Any) -> Response:
        _check("import", body)
        action = body["action"]
        if action == "poll":
            with self._lock:
                job = self._imports.get((db.uuid, body["current_bookmark"]))
            if job is None or job.reported:
                return _envelope({"success": False, "error": "Not currently importing anything."})
            job.polls += 1
            return self._import_status(job)
        etag = body["etag"]
        filename = f"{db.uuid}-{re.sub(r'[^0-9A-Za-z]', '_', etag)[:64]}.sql"
        with self._lock:
            upload = self._uploads.get(filename)
        if action == "init":
            if upload is not None and upload.md5 == etag:
                return self._import_status(self._start_import(db, upload, body))
            with self._lock:
                self._uploads[filename] = _Upload(self.root / "imports" / filename)
            upload_url = self._sign(f"{SIGNED_PREFIX}imports/{filename}")
            return _envelope({"filename": filename, "upload_url": upload_url})
        if body["filename"] != filename or upload is None or upload.md5 is None:
            return _envelope({"success": False, "error": "No uploaded file matches that etag."})
        if upload.md5 != etag:
            return _envelope(
                {"success": False, "error": "The uploaded file does not match its etag."}
            )
        return self._import_status(self._start_import(db, upload, body))

    def _start_import(self, db: Database, upload: _Upload, body: Any) -> _ImportJob:
        """Run the whole file now, in one transaction (Cloudflare promises all-or-nothing)."""
        with db.lock:
            job = _ImportJob(db.current_bookmark())
            fault = self.faults.take("import", "POST", f"/{db.uuid}/import", b"", body)
            if fault and fault.import_fails is not None:
                job.error = fault.import_fails
            else:
                tally = _Tally()
                started = time.perf_counter()
                try:
                    with upload.path.open(encoding="utf-8", newline="") as lines:
                        statements = ((sql, ()) for sql in split_statements(lines))
                        db.execute(statements, atomic=True, on_result=tally.add, bulk=True)
                except (D1SqlError, UnicodeDecodeError) as exc:
                    job.error = str(exc)
                else:
                    duration = round((time.perf_counter() - started) * 1000, 4)
                    job.result = {
                        "final_bookmark": db.current_bookmark(),
                        "num_queries": tally.queries,
                        "meta": tally.meta(duration, db.info()["file_size"]),
                    }
        with self._lock:
            self._imports[(db.uuid, job.at_bookmark)] = job
        return job

    def _import_status(self, job: _ImportJob) -> Response:
        base = {"success": True, "type": "import", "at_bookmark": job.at_bookmark, "errors": []}
        if job.polls < self.import_polls:
            line = "Starting import." if job.polls == 0 else "Processing."
            return _envelope({**base, "status": "active", "messages": [line]}, status=202)
        job.reported = True
        if job.error is not None:
            failed = {"status": "error", "error": job.error, "errors": [job.error]}
            return _envelope({**base, **failed, "messages": []})
        return _envelope(
            {**base, "status": "complete", "result": job.result, "messages": ["Import complete."]}
        )

    # -- time travel -----------------------------------------------------------------------

    def _bookmark(self, db: Database, query: dict[str, str]) -> Response:
        if not query.get("timestamp"):
            return _envelope({"bookmark": db.current_bookmark()})
        return _envelope({"bookmark": self._bookmark_at(db, query["timestamp"])})

    def _bookmark_at(self, db: Database, timestamp: str) -> str:
        try:
            at = datetime.fromisoformat(timestamp)
        except ValueError:
            raise ApiError(400, BAD_REQUEST, f"Invalid timestamp: {timestamp}") from None
        seconds = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
        if seconds > self._clock():
            raise ApiError(400, BAD_REQUEST, "The timestamp is in the future.")
        bookmark = db.bookmark_at(seconds)
        if bookmark is None:
            raise ApiError(400, BAD_REQUEST, "No bookmark exists at or before that timestamp.")
        return bookmark

    def _restore(self, db: Database, query: dict[str, str]) -> Response:
        given = [k for k in ("bookmark", "timestamp") if query.get(k)]
        if len(given) != 1:
            raise ApiError(400, BAD_REQUEST, "Give exactly one of bookmark or timestamp.")
        target = query.get("bookmark") or self._bookmark_at(db, query["timestamp"])
        restored = db.restore(target)
        if restored is None:
            raise ApiError(400, BAD_REQUEST, f"Invalid bookmark: {target}")
        bookmark, previous = restored
        return _envelope(
            {
                "bookmark": bookmark,
                "previous_bookmark": previous,
                "message": "Database restored successfully",
            }
        )

    # -- presigned URLs --------------------------------------------------------------------

    def _sign(self, path: str) -> str:
        signature = secrets.token_hex(32)
        with self._lock:
            self._signatures.setdefault(path, {})[signature] = self._clock() + SIGNED_URL_LIFETIME
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600"
            f"&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
        )
        return f"{self.signed_origin}{path}?{query}"

    def _signed(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        chunks: Iterable[bytes],
    ) -> Response:
        if any(h in headers for h in _AUTH_HEADERS):
            # A presigned URL never needs (and must never be sent) the API token.
            with self._lock:
                self.auth_leaks += 1
            return _s3_error(403, "AccessDenied", "Access Denied")
        with self._lock:
            expires = self._signatures.get(path, {}).get(query.get("X-Amz-Signature", ""))
        if expires is None:
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if self._clock() > expires:
            return _s3_error(403, "AccessDenied", "Request has expired")
        kind, _, filename = path[len(SIGNED_PREFIX) :].partition("/")
        if method == "GET" and kind == "exports":
            target = self.root / "exports" / filename
            if not target.is_file():
                return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
            size = str(target.stat().st_size)
            headers_out = {"Content-Type": "application/sql", "Content-Length": size}
            return Response(200, headers_out, file=target)
        if method == "PUT" and kind == "imports":
            return self._receive_upload(filename, headers, chunks)
        return _s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")

    def _receive_upload(
        self, filename: str, headers: dict[str, str], chunks: Iterable[bytes]
    ) -> Response:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _s3_error(501, "NotImplemented", "Transfer-Encoding: chunked is not supported.")
        if "content-length" not in headers:
            return _s3_error(411, "MissingContentLength", "You must provide the Content-Length.")
        with self._lock:
            upload = self._uploads.get(filename)
        if upload is None:
            return _s3_error(404, "NoSuchUpload", "The specified upload does not exist.")
        upload.path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5()
        with upload.path.open("wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        upload.md5 = digest.hexdigest()
        return Response(200, {"ETag": f'"{upload.md5}"'})


def _check(kind: str, value: Any) -> None:
    if (problem := schemas.problem(kind, value)) is not None:
        raise ApiError(400, BAD_REQUEST, f"Invalid request: {problem}")


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _fault_response(fault: Fault) -> Response:
    assert fault.status is not None
    headers = {"Content-Type": "application/json", **fault.headers}
    if isinstance(fault.reply, bytes | str):
        body = fault.reply.encode() if isinstance(fault.reply, str) else fault.reply
        return Response(fault.status, headers, body)
    if fault.reply is not None:
        return Response(fault.status, headers, json.dumps(fault.reply).encode())
    if fault.status == 429:
        code, message = 971, "Please wait and consider throttling your request speed"
    else:
        code, message = 7500, f"internal error; reference = {secrets.token_hex(8)}"
    return Response(fault.status, headers, _failure(fault.status, code, message).body)


def iter_file(path: Path, limit: int | None = None, size: int = 1 << 20) -> Iterator[bytes]:
    """A file's bytes in chunks, stopping after `limit` bytes when given."""
    remaining = limit
    with path.open("rb") as source:
        while remaining is None or remaining > 0:
            chunk = source.read(size if remaining is None else min(size, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
