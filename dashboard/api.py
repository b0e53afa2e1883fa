"""The dashboard's only way to the service: HTTP to the DreamForge API with the user's key.

The dashboard never opens MongoDB, so it can be deployed anywhere the API is reachable.
Errors come back as :class:`ApiError` with a message a person can act on (the API's
``detail``, field paths included), never a traceback.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
LOG_PAGE, METRIC_PAGE = 5000, 20000  # the API's largest pages


class ApiError(Exception):
    """An API call that did not succeed; ``status`` 0 means the API was unreachable."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


def describe(detail: Any) -> str:
    """The API's ``detail`` (a string, or FastAPI's list of ``{loc, msg}``) as one readable line."""
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(p) for p in d.get("loc") or [] if p != "body")
                parts.append(f"{loc}: {d.get('msg')}" if loc else str(d.get("msg")))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    return str(detail)


class Api:
    """A thin client over the routes the dashboard uses. Keep one per session (connection reuse)."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 15.0) -> None:
        self.url = (url or os.environ.get("DREAMFORGE_URL") or DEFAULT_URL).rstrip("/")
        self.key = key if key is not None else os.environ.get("DREAMFORGE_API_KEY", "")
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ApiError(0, f"cannot reach the DreamForge API at {self.url} ({type(e).__name__}); is `dreamforge up` running?") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if r.status_code == 401:
                msg = f"the API refused the key ({describe(detail)}); paste a valid API key in the sidebar"
            else:
                msg = describe(detail)
            raise ApiError(r.status_code, msg, detail)
        return r.json()

    # -- jobs ------------------------------------------------------------------------------
    def train(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/train", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", "/api/train/status", params={"jobId": job_id})

    def jobs(self, *, repo: str | None = None, branch: str | None = None, status: str | None = None,
             limit: int = 100, cursor: str | None = None) -> dict[str, Any]:  # fmt: skip
        params = {k: v for k, v in {"repo": repo, "branch": branch, "status": status, "cursor": cursor}.items() if v}
        return self._call("GET", "/api/jobs", params={**params, "limit": limit})

    def logs(self, job_id: str, after: int = 0, limit: int = LOG_PAGE, last: int | None = None) -> dict[str, Any]:
        params = {"after": after, "limit": limit, **({"last": last} if last else {})}
        return self._call("GET", f"/api/jobs/{job_id}/logs", params=params)

    def metrics(self, job_id: str, after: int = 0, limit: int = METRIC_PAGE) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{job_id}/metrics", params={"after": after, "limit": limit})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/cancel")

    def approve(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/approve")

    def set_caps(self, job_id: str, caps: dict[str, float]) -> dict[str, Any]:
        return self._call("PUT", f"/api/jobs/{job_id}/caps", json=caps)

    def samples(self, job_id: str, n: int = 6) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{job_id}/samples", params={"n": n})

    # -- datasets, rewards, presets --------------------------------------------------------
    def try_model(self, job_id: str, skill: str, body: dict[str, Any]) -> dict[str, Any]:
        """The job's model's answer for one image (the first call starts its model server)."""
        return self._call("POST", f"/api/jobs/{job_id}/try/{skill}", json=body, timeout=300)

    def upload_dataset(self, data: bytes, name: str, task: str = "detect") -> dict[str, Any]:
        return self._call("POST", "/api/datasets", params={"name": name, "task": task}, content=data,
                          headers={"Content-Type": "application/zip"}, timeout=300)  # fmt: skip

    def datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/datasets")

    def store_reward(self, name: str, source: str) -> dict[str, Any]:
        return self._call("POST", "/api/rewards", json={"name": name, "source": source})

    def rewards(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/rewards")

    def test_reward(self, *, source: str | None, reward: str | None, dataset: str, task: str, samples: int = 8) -> dict[str, Any]:
        body = {"source": source, "reward": reward, "dataset": dataset, "task": task, "samples": samples}
        return self._call("POST", "/api/rewards/test", json=body, timeout=60)

    def preflight(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/preflight", json=body, timeout=120)

    def presets(self) -> dict[str, Any]:
        return self._call("GET", "/api/presets")

    def meta(self) -> dict[str, Any]:
        """The service's vocabulary: stages, statuses and their sets (final, active, held …)."""
        return self._call("GET", "/api/meta")
