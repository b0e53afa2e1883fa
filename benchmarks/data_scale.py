"""Big datasets: peak memory and images/s of loading plus one SFT epoch, lazy against eager.

Generates a COCO folder of N JPEG photos of M megapixels (gradients, boxed rectangles and
sensor-like grain: about 0.15 MB per megapixel at quality 90, as phone photos), then, each in its own
process so the peak resident memory is that mode's alone:

* ``load_dataset(..., images="lazy")`` (a LazyImage per sample, decoded on use through the
  bounded cache, ``--cache-mb``) and ``images="eager"`` (every image decoded at load);
* one epoch of stage-2 SFT of dreamforge-tiny over the whole set.

Eager is skipped, and says why, when its decoded images alone would not fit in the
machine's available memory. Prints one JSON object on its last line with ``ratio_peak``
(eager peak / lazy peak) and ``ratio_images_per_s`` (lazy / eager, over load + epoch).

    python benchmarks/data_scale.py                          # modest: 200 x 2 MP, a few minutes
    python benchmarks/data_scale.py --n 5000 --megapixels 12 # the issue's set (eager is skipped)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(folder: Path, n: int, megapixels: float, seed: int) -> Path:
    """``folder`` with images/ and annotations.json; reused when it already holds the set."""
    import numpy as np
    from PIL import Image

    done = folder / "annotations.json"
    if done.exists() and json.loads(done.read_text()).get("info", {}).get("made") == [n, megapixels, seed]:
        return folder
    rng = np.random.default_rng(seed)
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))  # 4:3, as phone photos
    h = int(round(w * 3 / 4))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = rng.normal(0, 6, size=(h, w, 1)).astype(np.float32)  # one field, shifted per image: cheap to make
    images, anns = [], []
    for i in range(n):
        base = rng.uniform(40, 200, size=3)
        tilt = rng.uniform(-60, 60, size=(2, 3))
        pixels = base + xx[..., None] / w * tilt[0] + yy[..., None] / h * tilt[1]
        pixels += np.roll(grain, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
        for _ in range(int(rng.integers(1, 5))):
            bw, bh = int(rng.integers(w // 10, w // 3)), int(rng.integers(h // 10, h // 3))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            cid = int(rng.integers(1, 3))
            pixels[y : y + bh, x : x + bw] = (220, 40, 40) if cid == 1 else (40, 60, 220)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cid, "bbox": [x, y, bw, bh]})
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "images" / f"{i:05d}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{i:05d}.jpg", "width": w, "height": h})
    cats = [{"id": 1, "name": "red box"}, {"id": 2, "name": "blue box"}]
    info = {"made": [n, megapixels, seed]}
    done.write_text(json.dumps({"info": info, "images": images, "annotations": anns, "categories": cats}))
    return folder


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, data: Path, out: Path, batch_size: int) -> dict:
    """Load ``data`` in ``mode``, train one SFT epoch over it; the numbers of this process."""
    from pipeline.run import quiet_libraries

    quiet_libraries()
    from pipeline.config import build_config
    from pipeline.data import load_dataset
    from pipeline.data.images import CACHE
    from pipeline.device import pick_device
    from pipeline.job import make_codec, prepare_base_model
    from pipeline.reporter import BaseReporter
    from pipeline.stages.common import Context
    from pipeline.stages.sft import train_sft

    t0 = time.monotonic()
    ds = load_dataset(data, "detect", fractions=(1.0, 0.0, 0.0), images=mode)
    load_s = time.monotonic() - t0
    samples = ds.splits["train"]
    load_peak = peak_mb()
    cfg = build_config({"task": "detect", "data": {"dataset": str(data)},
                        "domain": {"epochs": 1, "batch_size": batch_size, "val_checks": 0}})  # fmt: skip
    ctx = Context(cfg=cfg, device=pick_device(), reporter=BaseReporter(), out=out, domain=ds,
                  domain_codec=make_codec(cfg, ds))  # fmt: skip
    base = prepare_base_model(ctx)
    t1 = time.monotonic()
    info = train_sft(ctx, "domain", base, samples, ctx.domain_codec, cfg.domain, out / "model")
    epoch_s = time.monotonic() - t1
    n = len(samples)
    return {
        "mode": mode, "n": n, "load_s": round(load_s, 2), "load_images_per_s": round(n / load_s, 1),
        "epoch_s": round(epoch_s, 2), "epoch_images_per_s": round(n / epoch_s, 2), "steps": info["steps"],
        "images_per_s": round(2 * n / (load_s + epoch_s), 2),  # each image read twice: at load and in the epoch
        "peak_load_mb": round(load_peak), "peak_mb": round(peak_mb()),
        "cache_mb": CACHE.max_bytes >> 20, "cache_hits": CACHE.hits, "cache_misses": CACHE.misses,
    }  # fmt: skip


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images (the issue's set: 5000)")
    ap.add_argument("--megapixels", type=float, default=2.0, help="size of each photo (the issue's: 12)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cache-mb", type=float, default=256, help="the lazy image cache ($DREAMFORGE_IMAGE_CACHE_MB)")
    ap.add_argument("--modes", default="lazy,eager")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None, help="folder for the generated set and the runs")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = args.output or Path(tempfile.gettempdir()) / f"df-data-scale-{args.n}x{args.megapixels:g}mp"
    data = out / "data"
    if args.child:
        print(json.dumps(child(args.child, data, out / args.child, args.batch_size)))
        return

    t0 = time.monotonic()
    generate(data, args.n, args.megapixels, args.seed)
    generate_s = time.monotonic() - t0
    decoded_mb = args.n * args.megapixels * 3
    env = {**os.environ, "DREAMFORGE_IMAGE_CACHE_MB": str(args.cache_mb), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    runs: dict[str, dict] = {}
    for mode in args.modes.split(","):
        if mode == "eager" and decoded_mb > 0.8 * available_mb():
            runs[mode] = {"skipped": f"{decoded_mb:.0f} MB of decoded images, {available_mb():.0f} MB available"}
            continue
        cmd = [sys.executable, __file__, "--child", mode, "--output", str(out), "--batch-size", str(args.batch_size),
               "--n", str(args.n), "--megapixels", str(args.megapixels)]  # fmt: skip
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            runs[mode] = {"failed": res.returncode, "stderr": res.stderr[-1500:]}
            continue
        runs[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    lazy, eager = runs.get("lazy", {}), runs.get("eager", {})
    both = "peak_mb" in lazy and "peak_mb" in eager
    jpeg_mb = sum(p.stat().st_size for p in (data / "images").iterdir()) / 2**20
    result = {
        "n": args.n, "megapixels": args.megapixels, "jpeg_mb": round(jpeg_mb), "decoded_mb": round(decoded_mb),
        "generate_s": round(generate_s, 1),
        "cache_mb": args.cache_mb, "lazy": lazy, "eager": eager,
        "ratio_peak": round(eager["peak_mb"] / lazy["peak_mb"], 2) if both else None,
        "ratio_images_per_s": round(lazy["images_per_s"] / eager["images_per_s"], 2) if both else None,
        "wall_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
