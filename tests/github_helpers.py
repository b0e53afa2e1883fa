"""Shared pieces of the GitHub tests: event payloads shaped like GitHub's, signed Action posts."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from conftest import ROOT

from dreamforge.github.webhooks import signature

# The fixture lives in ../shared beside the repository (in CI as on a developer's machine).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PUSH_FIXTURE = SHARED / "fixtures" / "github" / "push.with-new-branch.json"
SECRET = "s3cret-for-tests-only-0123456789"


def sha() -> str:
    return secrets.token_hex(20)


def link(stack, key: str, repos: list[dict], secret: str | None = SECRET) -> httpx.Response:
    body: dict = {"repos": repos}
    if secret:
        body["webhook_secret"] = secret
    return httpx.put(stack.api_url + "/api/github", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def action_body(repo: str, branch: str, commit: str, config: dict, *, pr: int | None = None, head_repo: str | None = None,
                event: str = "push", delivery: str | None = None, ts: float | None = None) -> dict:  # fmt: skip
    return {"repository": repo, "repository_id": None, "event": event, "ref": f"refs/heads/{branch}", "branch": branch,
            "sha": commit, "pr": pr, "head_repository": head_repo, "run_id": "42", "run_attempt": 1,
            "delivery": delivery or str(uuid.uuid4()), "timestamp": time.time() if ts is None else ts, "config": config}  # fmt: skip


def post_action(stack, key: str, body: dict | bytes, *, secret: str = SECRET, sig: str | None = None,
                headers: dict | None = None) -> httpx.Response:  # fmt: skip
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
         "X-DreamForge-Signature-256": sig if sig is not None else signature(secret, raw), **(headers or {})}  # fmt: skip
    h = {k: v for k, v in h.items() if v != ""}
    return httpx.post(stack.api_url + "/api/webhooks/github-action", content=raw, headers=h, timeout=30)


def pull_request_event(base_repo: str, head_repo: str, number: int, branch: str, head_sha: str, action: str = "opened") -> dict:
    """A ``pull_request`` event as GitHub sends it (the fields DreamForge and the Action read)."""
    owner = head_repo.split("/")[0]
    return {
        "action": action, "number": number,
        "pull_request": {
            "number": number, "state": "open", "title": "Try a lower learning rate",
            "head": {"ref": branch, "sha": head_sha, "label": f"{owner}:{branch}",
                     "repo": {"full_name": head_repo, "fork": head_repo != base_repo}},
            "base": {"ref": "main", "sha": "0" * 40, "repo": {"full_name": base_repo, "fork": False}},
        },
        "repository": {"full_name": base_repo, "id": 4242, "name": base_repo.split("/")[1]},
        "sender": {"login": owner},
    }  # fmt: skip


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, tmp: Path) -> None:
        self.rc, self.stdout = proc.returncode, proc.stdout + proc.stderr
        self.summary = (tmp / "summary.md").read_text() if (tmp / "summary.md").exists() else ""
        self.outputs = parse_outputs((tmp / "output.txt").read_text() if (tmp / "output.txt").exists() else "")


def parse_outputs(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as the runner reads it (``name<<DELIM`` … ``DELIM`` blocks)."""
    out, lines = {}, iter(text.splitlines())
    for ln in lines:
        name, _, delim = ln.partition("<<")
        body = []
        for b in lines:
            if b == delim:
                break
            body.append(b)
        out[name] = "\n".join(body)
    return out


def run_action(tmp: Path, *, endpoint: str, event_name: str, event: dict | Path, config: dict | str | None,
               inputs: dict[str, str], env: dict[str, str] | None = None, timeout: float = 60) -> Run:  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    workspace = tmp / "workspace"
    workspace.mkdir(exist_ok=True)
    if config is not None:
        (workspace / "dreamforge.config.json").write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    event_path = event if isinstance(event, Path) else tmp / "event.json"
    if not isinstance(event, Path):
        event_path.write_text(json.dumps(event))
    ev = json.loads(event_path.read_text())
    ref = ev.get("ref") or f"refs/pull/{ev.get('number')}/merge"
    runner = {
        "PATH": os.environ["PATH"], "HOME": str(tmp), "PYTHONPATH": str(ROOT),  # action.yml: PYTHONPATH=action_path
        "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": event_name, "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": ev["repository"]["full_name"], "GITHUB_REPOSITORY_ID": str(ev["repository"]["id"]),
        "GITHUB_REF": ref, "GITHUB_SHA": ev.get("after") or "f" * 40, "GITHUB_RUN_ID": "9001", "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_WORKSPACE": str(workspace), "GITHUB_OUTPUT": str(tmp / "output.txt"),
        "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"), "DREAMFORGE_ACTION_BACKOFF_S": "0.05",
        "INPUT_ENDPOINT": endpoint, "INPUT_CONFIG": "dreamforge.config.json", "INPUT_WAIT": "false",
        "INPUT_TIMEOUT_MINUTES": "5",
        **{f"INPUT_{k.upper().replace('-', '_')}": v for k, v in inputs.items()}, **(env or {}),
    }  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "github_action"], cwd=workspace, env=runner, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return Run(proc, tmp)


class Proxy:
    """A proxy in front of the API: answers 502 to the first ``fail`` requests without passing
    them on, then passes the next ``lose`` on and answers 502 anyway (the answer lost on the way
    back), then passes everything."""

    def __init__(self, target: str, fail: int = 0, lose: int = 0) -> None:
        self.hits, proxy = 0, self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.hits += 1
                r = None
                if proxy.hits > fail:
                    r = httpx.request(self.command, target + self.path, content=body, timeout=30,
                                      headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
                if r is None or proxy.hits <= fail + lose:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(r.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
