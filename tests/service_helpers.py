"""Helpers for tests that drive the real local stack over HTTP."""

from __future__ import annotations

import time

import httpx

from dreamforge.schemas import FINAL_STATUSES as FINAL


def api(stack, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key or stack.dev_key}"}, timeout=30)


def wait_job(c: httpx.Client, job_id: str, until=FINAL, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get("/api/train/status", params={"jobId": job_id})
        r.raise_for_status()
        job = r.json()
        if job["status"] in until:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['status']} (stage {job['stage']}) after {timeout} s")


def wait_for(pred, timeout: float = 60.0, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def all_logs(c: httpx.Client, job_id: str) -> list[dict]:
    lines, after = [], 0
    while True:
        r = c.get(f"/api/jobs/{job_id}/logs", params={"after": after})
        r.raise_for_status()
        body = r.json()
        if not body["lines"]:
            return lines
        lines += body["lines"]
        after = body["next"]
