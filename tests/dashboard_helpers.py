"""Helpers for the dashboard tests and benchmark: jobs in every state, made through the API and
the queue's own functions (what a worker calls), without training."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
from streamlit.testing.v1 import AppTest

from dreamforge.jobs import queue

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "streamlit_app.py")


def app(stack, page: str, *, job: str | None = None, key: str | None = None, timeout: float = 60) -> AppTest:
    """The dashboard at ``page`` (e.g. "app_pages/job.py"), pointed at the stack's API."""
    os.environ["DREAMFORGE_URL"] = stack.api_url
    os.environ["DREAMFORGE_API_KEY"] = key if key is not None else stack.dev_key
    at = AppTest.from_file(APP, default_timeout=timeout)
    if job:
        at.query_params["job"] = job
    return at.switch_page(page).run()


def chart_data(at: AppTest, title: str):
    """The data frame behind the vega-lite chart titled ``title`` (None if there is no such chart)."""
    for c in at.get("vega_lite_chart"):
        if json.loads(c.proto.spec).get("title") == title:
            return pa.ipc.open_stream(c.proto.data.data).read_pandas()
    return None


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def submit(c, cfg: dict, **source) -> str:
    r = c.post("/api/train", json={"config": cfg, "source": {"kind": "github", **source} if source else {"kind": "api"}})
    assert r.status_code == 201, r.text
    return r.json()["jobId"]


def claim(db, job_id: str) -> int:
    """Claim ``job_id`` as a worker would (it must be the only queued job); returns the attempt."""
    job = queue.claim(db, "test-worker-1", lease_s=3600)
    assert job is not None and job["_id"] == job_id, job
    return job["attempt"]


def log_rows(n: int, stage: str, start: int = 0) -> list[dict]:
    return [{"t": time.time(), "level": "info", "stage": stage, "message": f"{stage} line {start + i}"} for i in range(n)]


def metric_rows(n: int, stage: str, start: int = 0, key: str = "loss") -> list[dict]:
    return [{"t": time.time(), "stage": stage, "step": start + i + 1, "values": {key: 5.0 / (start + i + 1), "lr": 1e-3}}
            for i in range(n)]  # fmt: skip


def frame(at: AppTest, column: str):
    """The first data frame on the page with ``column`` (read-only frames carry no key)."""
    for d in at.dataframe:
        if column in d.value.columns:
            return d.value
    return None
