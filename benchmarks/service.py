"""Service throughput on the embedded database (SecantusDB), over real HTTP.

- ``submit_per_s`` / ``submit_p99_ms``: ``POST /api/train`` (validate, enqueue) from an aiohttp
  load generator with 32 connections in a child process, against the API under uvicorn.
  Baseline, same run: bare ``insert_one`` of the same job documents from one client
  (``ratio_submit_vs_raw_insert``: how much of the database's own rate the API keeps).
- ``pickup_p50_ms``: queued → running (``created_at`` to ``claimed_at``) while jobs arrive at
  10/s, with a claimer that waits as the worker does between claims (``wakeup.Wakeup``: a change
  stream, polling at the worker's interval as a fallback) and claims with the worker's own
  ``queue.claim``.
- ``claim_ms_10_queued``: one claim with >10k jobs in the collection but a short queue (the
  claim's filter matches only queued jobs); ``claim_ms_10k_queued``: with a 10,000-job backlog
  (SecantusDB fetches everything a filter matches before the limit, so the claim reads short
  windows of keys from the queue's head instead of the whole ready range; see ``queue.py``).
- ``log_lines_per_s``: lines written through the worker's fenced ``append`` in batches of 500
  and read back through ``GET /api/jobs/{id}/logs``, end to end.

    python benchmarks/service.py [--submits 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

LOADGEN = r"""
import asyncio, json, sys, time
import aiohttp
url, key, n, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = json.loads(sys.stdin.read())
async def main():
    lat = []
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn, headers={"Authorization": "Bearer " + key}) as s:
        todo = iter(range(n))
        async def w():
            for _ in todo:
                t = time.perf_counter()
                async with s.post(url + "/api/train", json=body) as r:
                    await r.read()
                    assert r.status == 201, (r.status, await r.text())
                lat.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        await asyncio.gather(*(w() for _ in range(conc)))
        wall = time.perf_counter() - t0
    print(json.dumps({"n": n, "wall": wall, "lat": sorted(lat)}))
asyncio.run(main())
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--submits", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()

    from dreamforge.jobs import queue, streams, wakeup
    from dreamforge.local.stack import start_stack
    from dreamforge.store import JOBS, client

    home = Path(tempfile.mkdtemp(prefix="df-svc-bench-"))
    stack = start_stack(home, workers=0)
    out: dict = {"submits": args.submits, "concurrency": args.concurrency}
    try:
        c = client(stack.uri)
        db = c["dreamforge"]
        body = {"preset": "retail-shelf", "overrides": {"name": "bench"}}
        # warm the API (imports on first use) before timing
        with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.dev_key}"}) as h:
            for _ in range(20):
                assert h.post("/api/train", json=body).status_code == 201
        template = db[JOBS].find_one({"project_id": "prj_dev"})

        # -- pickup latency, measured while submits arrive --------------------------------
        pickups: list[float] = []
        stop = threading.Event()
        db[JOBS].update_many({"status": "queued"}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})

        wake = wakeup.Wakeup(db, stop)

        def claimer() -> None:
            while not stop.is_set():
                job = queue.claim(db, "bench", 60)
                if job is None:
                    wake.wait(0.2)  # as Worker.run_forever, at the default poll interval
                    continue
                pickups.append((job["claimed_at"] - job["created_at"]).total_seconds() * 1000)

        # -- pickup: jobs arriving at a steady 10/s, one claimer at the worker's poll interval --
        th = threading.Thread(target=claimer)
        th.start()
        with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.dev_key}"}) as h:
            for _ in range(100):
                h.post("/api/train", json=body)
                time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        th.join()
        wake.close()

        # -- submit throughput over HTTP ------------------------------------------------------
        r = subprocess.run([sys.executable, "-c", LOADGEN, stack.api_url, stack.dev_key, str(args.submits), str(args.concurrency)],
                           input=json.dumps(body), capture_output=True, text=True, check=True)  # fmt: skip
        res = json.loads(r.stdout.strip().splitlines()[-1])
        lat = res["lat"]
        out["submit_per_s"] = round(res["n"] / res["wall"], 1)
        out["submit_p50_ms"] = round(statistics.median(lat) * 1000, 1)
        out["submit_p99_ms"] = round(lat[int(len(lat) * 0.99) - 1] * 1000, 1)
        out["pickup_p50_ms"] = round(statistics.median(pickups), 1)
        out["pickup_p95_ms"] = round(sorted(pickups)[int(len(pickups) * 0.95) - 1], 1)

        # -- baseline: the database's own insert rate for the same documents ----------------
        n_raw = min(args.submits, 1000)
        docs = [{**template, "_id": f"raw_{i}", "status": "done"} for i in range(n_raw)]
        for d in docs:
            d.pop("queue_key", None)
            d.pop("idempotency_key", None)
        t = time.perf_counter()
        for d in docs:
            db[JOBS].insert_one(d)
        raw = n_raw / (time.perf_counter() - t)
        out["raw_insert_per_s"] = round(raw, 1)
        out["ratio_submit_vs_raw_insert"] = round(out["submit_per_s"] / raw, 3)

        # -- claim with >10k jobs in the collection and a short queue (the normal case) -------
        db[JOBS].update_many({"status": "queued"}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})
        db[JOBS].insert_many([queue.new_job("prj_dev", template["config"], "h", source={}) for _ in range(10)])
        times = []
        for _ in range(10):
            t = time.perf_counter()
            assert queue.claim(db, "bench", 60) is not None
            times.append((time.perf_counter() - t) * 1000)
        out["jobs_in_collection"] = db[JOBS].estimated_document_count()
        out["claim_ms_10_queued"] = round(statistics.median(times), 2)

        # -- claim with 10k queued (a backlog) -------------------------------------------------
        batch = [queue.new_job("prj_dev", template["config"], "h", source={}) for _ in range(10_000)]
        db[JOBS].insert_many(batch, ordered=False)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            assert queue.claim(db, "bench", 60) is not None
            times.append((time.perf_counter() - t) * 1000)
        out["claim_ms_10k_queued"] = round(statistics.median(times), 2)
        out["claim_ms_10k_queued_max"] = round(max(times), 2)  # the first: it steps from the old head into the backlog
        db[JOBS].update_many({"status": "queued"}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})

        # -- log lines: fenced writes in, HTTP reads out ------------------------------------
        job = db[JOBS].find_one({"status": "running"})
        n_lines = 20_000
        lines = [{"t": time.time(), "level": "info", "stage": "reward", "message": f"step {i} loss=0.{i % 997:03d} reward=0.5"}
                 for i in range(n_lines)]  # fmt: skip
        t = time.perf_counter()
        for i in range(0, n_lines, 500):
            streams.append(db, job["_id"], job["attempt"], "logs", lines[i:i + 500])
        read, after = 0, 0
        with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.dev_key}"}) as h:
            while read < n_lines:
                b = h.get(f"/api/jobs/{job['_id']}/logs", params={"after": after, "limit": 5000}).json()
                read += len(b["lines"])
                after = b["next"]
        out["log_lines_per_s"] = round(n_lines / (time.perf_counter() - t), 1)
        assert read == n_lines
    finally:
        stack.stop()
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
