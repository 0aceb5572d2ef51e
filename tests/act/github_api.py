"""A loopback stand-in for the part of GitHub's REST API the workflows call: a pull
request's issue comments (list with pagination, create, edit), as GitHub answers them.

Requests without the expected token get 401, a token without write access gets 403 on
writes; anything else is 404. Every request is recorded, so a test sees exactly what a
workflow asked for. Comments written with the workflow token are by
`github-actions[bot]`, as GitHub shows comments made with `GITHUB_TOKEN`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT = "github-actions[bot]"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    """Path and query, as sent."""
    authorized: bool


@dataclass
class GitHubApi:
    """Issue comments of one repository, served to callers holding `token`."""

    repository: str
    token: str
    can_write: bool = True
    comments: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_comment(self, issue: int, body: str, login: str) -> dict[str, Any]:
        with self._lock:
            comment = {
                "id": 1000 + len(self.comments),
                "issue": issue,
                "body": body,
                "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
                "html_url": f"https://github.com/{self.repository}/pull/{issue}"
                f"#issuecomment-{1000 + len(self.comments)}",
                "edits": 0,
            }
            self.comments.append(comment)
            return comment

    def on(self, issue: int) -> list[dict[str, Any]]:
        """The comments of one pull request, oldest first."""
        return [c for c in self.comments if c["issue"] == issue]

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1; yields the API base URL (GITHUB_API_URL)."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                authorized = self.headers.get("Authorization") in (
                    f"Bearer {api.token}",
                    f"token {api.token}",
                )
                api.calls.append(Call(method, self.path, authorized))
                status, body = api.handle(method, self.path, raw, authorized)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def do_PATCH(self) -> None:
                self._answer("PATCH")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            self.url = f"http://127.0.0.1:{server.server_address[1]}"
            yield self.url
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    def handle(self, method: str, target: str, raw: bytes, authorized: bool) -> tuple[int, Any]:
        if not authorized:
            return 401, {"message": "Bad credentials"}
        url = urlsplit(target)
        repo = re.escape(self.repository)
        listing = re.fullmatch(rf"/repos/{repo}/issues/(\d+)/comments", url.path)
        single = re.fullmatch(rf"/repos/{repo}/issues/comments/(\d+)", url.path)
        if method == "GET" and listing:
            query = parse_qs(url.query)
            per_page = min(int(query.get("per_page", ["30"])[0]), 100)
            page = int(query.get("page", ["1"])[0])
            found = self.on(int(listing.group(1)))
            return 200, [_public(c) for c in found[(page - 1) * per_page : page * per_page]]
        if method in ("POST", "PATCH") and (listing or single):
            if not self.can_write:
                return 403, {"message": "Resource not accessible by integration"}
            body = json.loads(raw)["body"]
            if listing and method == "POST":
                return 201, _public(self.add_comment(int(listing.group(1)), body, BOT))
            if single and method == "PATCH":
                with self._lock:
                    ours = [c for c in self.comments if c["id"] == int(single.group(1))]
                    if not ours:
                        return 404, {"message": "Not Found"}
                    ours[0]["body"] = body
                    ours[0]["edits"] += 1
                return 200, _public(ours[0])
        return 404, {"message": "Not Found"}


def _public(comment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in comment.items() if k not in ("issue", "edits")}
