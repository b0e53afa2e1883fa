"""GitHub's REST API as a loopback HTTP server that records every request.

PyGithub is pointed at it with ``base_url`` (``GITHUB_API_URL``). It answers the endpoints
DreamForge uses, shaped like GitHub's (every object carries loopback ``url`` fields, which
PyGithub follows), and keeps the rules of real GitHub that DreamForge must follow; each rule
cites the documentation page it copies. ``down`` makes it answer 503 to everything, as GitHub
does in an outage; ``unreachable`` makes it drop every connection without an answer.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ONE_MB = 1024 * 1024
APP_ID = 31337


def send_json(handler: BaseHTTPRequestHandler, status: int, body, headers: dict | None = None, raw: bytes | None = None) -> None:
    """Answer a request of a loopback fake server with ``body`` as JSON (or ``raw`` bytes)."""
    data = raw if raw is not None else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, str(v))
    handler.end_headers()
    handler.wfile.write(data)


class Raw(bytes):
    """A route's answer sent as is (the raw media type)."""


class FakeGitHub:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # {"method", "path", "query", "json", "auth"} in arrival order
        # (repo, ref, path) -> text, or {"type": "dir" | "symlink" | "submodule", ...}; ref "HEAD"
        # is the default branch (a request without ?ref=).
        self.files: dict[tuple[str, str, str], str | dict] = {}
        self.down = False
        self.unreachable = False
        # The App: its private key (PEM, as GitHub lets you download it) and its installations,
        # each {"id", "account", "repos": set of full names} (docs.github.com "About the
        # repository selection of a GitHub App installation": all or selected repositories).
        self.app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.app_pem = self.app_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode()  # fmt: skip
        self.installations: dict[int, dict] = {}
        self.tokens: dict[str, int] = {}  # installation access token -> installation id
        self.repos: dict[str, dict] = {}  # full name -> {"id", "private", "default_branch"}; unknown: public
        self.comments: dict[tuple[str, int], list[dict]] = {}  # (repo, issue) -> comments
        self.pulls: dict[tuple[str, str], list[int]] = {}  # (repo, sha) -> open pull requests with that head
        self.statuses_per_sha: dict[tuple[str, str, str], int] = {}
        self.max_statuses = 1000
        self.limited: list[tuple[int, dict, str]] = []  # answers for the next writes: (status, headers, message)
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
                headers: dict = {}
                with fake._lock:
                    fake.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                          "json": json.loads(raw) if raw else None,
                                          "auth": self.headers.get("Authorization"), "accept": self.headers.get("Accept")})  # fmt: skip
                    if fake.down:
                        status, body = 503, {"message": "Service Unavailable"}
                    elif self.command in ("POST", "PATCH") and fake.limited and "/access_tokens" not in url.path:
                        status, headers, message = fake.limited.pop(0)
                        body = {"message": message}
                    else:
                        status, body = fake.route(self.command, url.path, parse_qs(url.query), raw,
                                                  self.headers.get("Authorization") or "", self.headers.get("Accept") or "")  # fmt: skip
                send_json(self, status, None if isinstance(body, Raw) else body, headers, raw=body if isinstance(body, Raw) else None)

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

    # -- what a test sets up ----------------------------------------------------------------
    def install(self, inst_id: int, account: str, repos: list[str]) -> None:
        """The App installed on ``repos`` (selected repositories) of ``account``."""
        self.installations[inst_id] = {"id": inst_id, "account": account, "repos": set(repos)}

    def rate_limit(self, kind: str, n: int = 1, **over) -> None:
        """The next ``n`` writes are rate limited as docs.github.com "Rate limits for the REST API"
        describes: primary (403, ``x-ratelimit-remaining: 0`` and the reset time), secondary
        (403 or 429 with ``retry-after``, or with no header at all: wait at least a minute)."""
        reset = str(int(time.time()) + over.get("reset_in", 120))
        answer = {"primary": (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, "API rate limit exceeded"),
                  "secondary": (403, {"retry-after": str(over.get("retry_after", 90))}, "You have exceeded a secondary rate limit"),
                  "429": (429, {"retry-after": str(over.get("retry_after", 90))}, "Too many requests"),
                  "bare": (403, {}, "You have exceeded a secondary rate limit")}[kind]  # fmt: skip
        self.limited += [answer] * n

    # -- the API ----------------------------------------------------------------------------
    def _app_jwt_ok(self, auth: str) -> bool:
        """docs.github.com "Generating a JSON Web Token (JWT) for a GitHub App": RS256, iss = the App's id."""
        try:
            claims = jwt.decode(auth.removeprefix("Bearer ").strip(), self.app_key.public_key(), algorithms=["RS256"])
        except jwt.InvalidTokenError:
            return False
        return str(claims.get("iss")) == str(APP_ID) and claims["exp"] - claims["iat"] <= 660

    def _sees(self, auth: str, repo: str) -> bool:
        """An installation token reaches only its installation's repositories; another token
        (a PAT) reaches public ones. GitHub answers 404, not 403, for a private repository the
        token cannot read (docs.github.com "Troubleshooting the REST API": 404 for private)."""
        token = auth.split(" ", 1)[-1]
        if token in self.tokens:
            return repo in self.installations[self.tokens[token]]["repos"]
        return not self.repos.get(repo, {}).get("private")

    def route(self, method: str, path: str, query: dict, raw: bytes, auth: str = "", accept: str = "") -> tuple[int, object]:
        body = json.loads(raw) if raw else {}
        # docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app (JWT; 404 if not installed)
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/installation", path):
            if not self._app_jwt_ok(auth):
                return 401, {"message": "A JSON web token could not be decoded"}
            inst = next((i for i in self.installations.values() if m[1] in i["repos"]), None)
            if inst is None:
                return 404, {"message": "Not Found"}
            tokens_url = f"{self.url}/app/installations/{inst['id']}/access_tokens"
            return 200, {"id": inst["id"], "app_id": APP_ID, "account": {"login": inst["account"]},
                         "repository_selection": "selected", "access_tokens_url": tokens_url}  # fmt: skip
        # docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app (JWT; expires in 1 hour)
        if m := re.fullmatch(r"/app/installations/(\d+)/access_tokens", path):
            if not self._app_jwt_ok(auth) or int(m[1]) not in self.installations:
                return 401 if not self._app_jwt_ok(auth) else 404, {"message": "Not Found"}
            token = "ghs_" + secrets.token_hex(16)
            self.tokens[token] = int(m[1])
            expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            return 201, {"token": token, "expires_at": expires, "permissions": {"statuses": "write", "issues": "write",
                         "contents": "read"}, "repository_selection": "selected"}  # fmt: skip
        if (m := re.match(r"/repos/([^/]+/[^/]+)", path)) and not self._sees(auth, m[1]):
            return 404, {"message": "Not Found"}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)", path):
            r = self.repos.get(m[1], {})
            return 200, {"id": r.get("id", 1), "full_name": m[1], "name": m[1].split("/")[1], "private": bool(r.get("private")),
                         "default_branch": r.get("default_branch", "main"), "url": f"{self.url}{path}"}  # fmt: skip
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})", path):
            if method == "POST":
                # docs.github.com/rest/commits/statuses#create-a-commit-status: "a limit of 1000
                # statuses per sha and context"; beyond it, 422.
                k = (m[1], m[2], body.get("context") or "default")
                if self.statuses_per_sha.get(k, 0) >= self.max_statuses:
                    return 422, {"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom",
                                 "message": "This SHA and context has reached the maximum number of statuses."}]}  # fmt: skip
                self.statuses_per_sha[k] = self.statuses_per_sha.get(k, 0) + 1
                return 201, {"id": len(self.requests), "url": f"{self.url}{path}", "state": body["state"],
                             "description": body.get("description"), "target_url": body.get("target_url"),
                             "context": body.get("context")}  # fmt: skip
        # docs.github.com/rest/commits/commits#list-pull-requests-associated-with-a-commit
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/commits/([0-9a-f]{40})/pulls", path):
            return 200, [{"number": n, "state": "open", "url": f"{self.url}/repos/{m[1]}/pulls/{n}",
                          "head": {"sha": m[2], "ref": "x"}} for n in self.pulls.get((m[1], m[2]), [])]  # fmt: skip
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", path):
            listed = self.comments.setdefault((m[1], int(m[2])), [])
            if method == "POST":
                self._next_comment += 1
                cid = self._next_comment
                c = {"id": cid, "url": f"{self.url}/repos/{m[1]}/issues/comments/{cid}", "body": body["body"],
                     "user": {"login": "dreamforge[bot]", "type": "Bot"}}  # fmt: skip
                listed.append(c)
                return 201, c
            return 200, listed  # docs.github.com/rest/issues/comments#list-issue-comments
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", path):
            if method == "PATCH":
                for c in (c for cs in self.comments.values() for c in cs if c["id"] == int(m[2])):
                    c["body"] = body["body"]
                return 200, {"id": int(m[2]), "url": f"{self.url}{path}", "body": body["body"]}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/contents/(.+)", path):
            return self._contents(m[1], (query.get("ref") or ["HEAD"])[0], m[2], path, accept)
        return 404, {"message": f"fake GitHub: no route for {method} {path}"}

    def _contents(self, repo: str, ref: str, name: str, path: str, accept: str) -> tuple[int, object]:
        """docs.github.com/rest/repos/contents#get-repository-content: a directory is a list; a
        symlink outside the repository's files and a submodule are objects without content; a
        file over 1 MB has ``encoding: "none"`` and empty content, and only the raw media type
        (``application/vnd.github.raw+json``) returns its bytes."""
        got = self.files.get((repo, ref, name))
        if got is None:
            return 404, {"message": "Not Found"}
        base = {"name": name.rsplit("/", 1)[-1], "path": name, "url": f"{self.url}{path}", "sha": "0" * 40}
        if isinstance(got, dict):
            if got["type"] == "dir":
                return 200, [{**base, "type": "file", "name": "inner.json", "path": f"{name}/inner.json", "size": 2}]
            return 200, {**base, **got, "size": 0}
        if "raw" in accept:
            return 200, Raw(got.encode())
        data = got.encode()
        if len(data) > ONE_MB:
            return 200, {**base, "type": "file", "encoding": "none", "content": "", "size": len(data)}
        return 200, {**base, "type": "file", "encoding": "base64", "content": base64.b64encode(data).decode(), "size": len(data)}

    def calls(self, *, since: int = 0) -> list[tuple[str, str]]:
        """(method, path) of each request after the first ``since``."""
        return [(r["method"], r["path"]) for r in self.requests[since:]]

    def statuses(self, sha: str, *, since: int = 0) -> list[dict]:
        return [r["json"] for r in self.requests[since:] if r["method"] == "POST" and r["path"].endswith(f"/statuses/{sha}")]
