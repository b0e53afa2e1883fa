"""GitHub's REST API as a loopback HTTP server that records every request.

PyGithub is pointed at it with ``base_url`` (``GITHUB_API_URL``). It answers the few endpoints
DreamForge uses, shaped like GitHub's (every object carries loopback ``url`` fields, which
PyGithub follows): commit statuses, issue comments (create, edit) and file contents. ``down``
makes it answer 503 to everything, as GitHub does in an outage; ``unreachable`` makes it drop
every connection without an answer, as a network failure does.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def send_json(handler: BaseHTTPRequestHandler, status: int, body) -> None:
    """Answer a request of a loopback fake server with ``body`` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class FakeGitHub:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # {"method", "path", "query", "json", "auth"} in arrival order
        self.files: dict[tuple[str, str, str], str] = {}  # (repo, sha, path) -> text
        self.down = False
        self.unreachable = False
        self._next_comment = 1000
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _handle(self):
                url = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if fake.unreachable:
                    self.close_connection = True
                    return
                with fake._lock:
                    fake.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                          "json": json.loads(raw) if raw else None,
                                          "auth": self.headers.get("Authorization")})  # fmt: skip
                    if fake.down:
                        status, body = 503, {"message": "Service Unavailable"}
                    else:
                        status, body = fake.route(self.command, url.path, parse_qs(url.query), raw)
                send_json(self, status, body)

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, dict]:
        body = json.loads(raw) if raw else {}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})", path):
            if method == "POST":
                return 201, {"id": len(self.requests), "url": f"{self.url}{path}", "state": body["state"],
                             "description": body.get("description"), "target_url": body.get("target_url"),
                             "context": body.get("context")}  # fmt: skip
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", path):
            if method == "POST":
                self._next_comment += 1
                cid = self._next_comment
                return 201, {"id": cid, "url": f"{self.url}/repos/{m[1]}/issues/comments/{cid}", "body": body["body"]}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", path):
            if method == "PATCH":
                return 200, {"id": int(m[2]), "url": f"{self.url}{path}", "body": body["body"]}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/contents/(.+)", path):
            text = self.files.get((m[1], (query.get("ref") or [""])[0], m[2]))
            if text is None:
                return 404, {"message": "Not Found"}
            return 200, {"type": "file", "encoding": "base64", "name": m[2].rsplit("/", 1)[-1], "path": m[2],
                         "content": base64.b64encode(text.encode()).decode(), "size": len(text),
                         "url": f"{self.url}{path}", "sha": "0" * 40}  # fmt: skip
        return 404, {"message": f"fake GitHub: no route for {method} {path}"}

    def calls(self, *, since: int = 0) -> list[tuple[str, str]]:
        """(method, path) of each request after the first ``since``."""
        return [(r["method"], r["path"]) for r in self.requests[since:]]

    def statuses(self, sha: str, *, since: int = 0) -> list[dict]:
        return [r["json"] for r in self.requests[since:] if r["method"] == "POST" and r["path"].endswith(f"/statuses/{sha}")]
