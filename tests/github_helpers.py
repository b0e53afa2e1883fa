"""Shared pieces of the GitHub tests: event payloads shaped like GitHub's, signed Action posts."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from pathlib import Path

import httpx

from dreamforge.webhooks import signature

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
