"""A small synchronous client of the DreamForge API, for the CLI (and scripts).

Where to connect: ``DREAMFORGE_URL`` and ``DREAMFORGE_API_KEY``, else the local stack that
``dreamforge up`` recorded in ``$DREAMFORGE_HOME/stack.json``.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from dreamforge.schemas import FINAL_STATUSES, JobStatus
from dreamforge.settings import Settings

STACK_FILE = "stack.json"


class ApiError(Exception):
    """The API refused a request; ``message`` is written for the user."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def stack_info(home: Path | None = None) -> dict[str, Any] | None:
    path = (home or Settings().home) / STACK_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        return r.text[:500]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []) if p != 'body')}: {e.get('msg')}" for e in detail)
    return str(detail)


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 30.0) -> None:
        info = stack_info() or {}
        self.url = (url or os.environ.get("DREAMFORGE_URL") or info.get("url") or "").rstrip("/")
        self.key = key or os.environ.get("DREAMFORGE_API_KEY") or info.get("key")
        if not self.url or not self.key:
            raise ApiError(0, "no DreamForge API to talk to: run `dreamforge up`, or set DREAMFORGE_URL and DREAMFORGE_API_KEY")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ApiError(0, f"cannot reach the DreamForge API at {self.url}: {e}") from None
        if r.status_code >= 400:
            raise ApiError(r.status_code, _detail(r))
        return r.json()

    # -- jobs ----------------------------------------------------------------------------
    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/api/train", json=body, headers=headers)

    def status(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", "/api/train/status", params={"jobId": job_id})

    def jobs(self, **filters: Any) -> dict[str, Any]:
        return self.request("GET", "/api/jobs", params={k: v for k, v in filters.items() if v})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def approve(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/approve")

    def logs(self, job_id: str, after: int = 0) -> dict[str, Any]:
        return self.request("GET", f"/api/jobs/{job_id}/logs", params={"after": after})

    def follow(self, job_id: str, every: float = 0.5) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Yields ``(job, new log lines)`` until the job has finished and its last line was read."""
        after = 0
        while True:
            job = self.status(job_id)
            body = self.logs(job_id, after)
            after = body["next"]
            yield job, body["lines"]
            # a paused job waits for its cap to be raised: nothing more to follow until then
            if (job["status"] in FINAL_STATUSES or job["status"] == JobStatus.PAUSED) and not body["lines"]:
                return
            if not body["lines"]:
                time.sleep(every)

    # -- datasets and rewards --------------------------------------------------------------
    def upload_dataset(self, path: Path, name: str | None = None, task: str = "detect") -> dict[str, Any]:
        """Upload a COCO ``.zip`` or folder (zipped on the fly)."""
        if path.is_dir():
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for p in sorted(path.rglob("*")):
                    if p.is_file() and not p.is_symlink():
                        z.write(p, p.relative_to(path))
            data = buf.getvalue()
        else:
            data = path.read_bytes()
        return self.request("POST", "/api/datasets", params={"name": name or path.stem, "task": task}, content=data,
                            headers={"Content-Type": "application/zip"}, timeout=600)  # fmt: skip

    def store_reward(self, path: Path) -> dict[str, Any]:
        return self.request("POST", "/api/rewards", json={"name": path.stem, "source": path.read_text()})
