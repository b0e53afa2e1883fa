"""How fast does ``dreamforge serve`` answer, and what does dynamic batching buy?

For each export (``model/`` full, ``model-4bit/``) and each mode (batched: the requests waiting
when the model frees up share one ``generate``, up to 8 images; unbatched: ``--max-batch 1``), a
real ``dreamforge serve`` process answers ``POST /v1/detect`` at concurrency 1 and 8. Prints one
JSON line: images/s, p50 and p99 latency (ms) and the server's batch count per setting, and the
ratios measured in the same run (``batched_over_unbatched_c8`` per export: the batching gain;
``4bit_over_full_c1``: the 4-bit export's speed against the full one).

    python benchmarks/serve.py JOB_OUTPUT_FOLDER [--requests 64] [--formats full 4bit] [--size 64]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODES = {"batched": ["--batch-window-ms", "10", "--max-batch", "8"], "unbatched": ["--max-batch", "1"]}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_url(size: int, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    b = io.BytesIO()
    Image.fromarray(pixels).save(b, "PNG")
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()


def start(out: Path, fmt: str, mode: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "dreamforge.cli", "serve", str(out), "--format", fmt, "--port", str(port), *MODES[mode]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dreamforge serve {out} --format {fmt} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"dreamforge serve {out} did not start in 180 s")


def measure(url: str, images: list[str], concurrency: int) -> dict:
    # One keep-alive client, as a real client holds one: ``httpx.post`` would build a client (and
    # its SSL context) per request, ~25 ms of this machine's 2 cores that the server then lacks.
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=concurrency))

    def one(img: str) -> float:
        t = time.perf_counter()
        r = client.post(url + "/v1/detect", json={"image_url": img})
        r.raise_for_status()
        return time.perf_counter() - t

    before = httpx.get(url + "/health").json()["batching"]["batches"]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = sorted(pool.map(one, images))
    wall = time.perf_counter() - t0
    client.close()
    batches = httpx.get(url + "/health").json()["batching"]["batches"] - before
    return {"images_per_s": round(len(images) / wall, 3), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1), "batches": batches}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("output", type=Path, help="a job's output folder (model/ and model-4bit/)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--formats", nargs="+", default=["full", "4bit"], choices=["full", "4bit"])
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = ap.parse_args()
    images = [image_url(args.size, i) for i in range(args.requests)]
    results: dict = {}
    for fmt in args.formats:
        for mode in MODES:
            proc, url = start(args.output, fmt, mode)
            try:
                measure(url, images[:2], 1)  # warm-up: the first forward pass pays for lazy init
                results.setdefault(fmt, {})[mode] = {f"c{c}": measure(url, images, c) for c in (1, 8)}
            finally:
                proc.terminate()
                proc.wait(30)
    ratios = {f"{fmt}_batched_over_unbatched_c8": round(r["batched"]["c8"]["images_per_s"] / r["unbatched"]["c8"]["images_per_s"], 3)
              for fmt, r in results.items()}  # fmt: skip
    if {"full", "4bit"} <= set(results):
        ratios["4bit_over_full_c1"] = round(results["4bit"]["unbatched"]["c1"]["images_per_s"]
                                            / results["full"]["unbatched"]["c1"]["images_per_s"], 3)  # fmt: skip
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(json.dumps({"device": device, "requests": args.requests, "image_size": args.size, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
