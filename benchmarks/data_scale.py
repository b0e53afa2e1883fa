"""Big datasets: peak memory and images/s of loading plus one SFT epoch, lazy against eager.

Generates a COCO folder of N JPEG photos of M megapixels (distinct content made small and
upscaled, boxed rectangles, full-resolution sensor-like grain: about 2 MB at quality 85 for
12 MP, as a phone writes; see ``generate``), kept under ``--sets`` by its parameters so reruns
reuse it, then, each in its own process so the peak resident memory is that mode's alone:

* ``load_dataset(..., images="lazy")`` (a LazyImage per sample, decoded on use through the
  bounded cache, ``--cache-mb``) and ``images="eager"`` (every image decoded at load);
* one epoch of stage-2 SFT of dreamforge-tiny over the whole set. Lazy training rows decode
  each photo straight to the model's 64×64 input (JPEG at 1/8 scale); ``lazy-whole`` is the
  same run decoding each photo whole, as before, to show what that saves.

Eager cannot hold 5,000 12-MP photos (180 GB decoded): ``--eager-n`` measures lazy, lazy-whole
and eager on a set small enough for eager, and lazy alone on the big set. Eager is skipped,
and says why, when its decoded images would pass half the available memory. The last line
is one JSON object: per set and mode the figures, ``decode_ms`` (one photo, whole against
decoded to the model's size), and the ratios (``ratio_peak``: eager / lazy peak memory;
``ratio_images_per_s``: lazy / eager, over load + epoch; the big lazy run against both).

    python benchmarks/data_scale.py                                       # 200 x 2 MP, a few minutes
    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/data_scale.py \
        --n 5000 --eager-n 48 --megapixels 12                            # the issue's set
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

GEN_VERSION = 2  # bump when the images change: the cache folder's name carries it


def set_folder(root: Path, n: int, megapixels: float, seed: int) -> Path:
    """Where the set of these parameters is kept between runs."""
    return root / f"set-{n}x{megapixels:g}mp-seed{seed}-v{GEN_VERSION}"


def generate(folder: Path, n: int, megapixels: float, seed: int) -> Path:
    """``folder`` with images/ and annotations.json; reused when it already holds the set, and
    resumed where an interrupted run stopped (each image depends on ``(seed, i)`` alone).

    Cheap but honest: each photo's content (a tilted gradient with coarse colour noise, its
    boxed rectangles) is distinct, made at 1/16 of the side and upscaled, then drawn on and
    given full-resolution sensor-like grain (one field, cropped at a random offset per image),
    so the JPEG holds real high-frequency detail: about 2 MB at quality 85 for 12 MP, as a
    phone writes. About 0.3 s an image on one core, against 12 s when every pixel was made in
    numpy floats.
    """
    import numpy as np
    from PIL import Image, ImageChops, ImageDraw

    done = folder / "annotations.json"
    if done.exists() and json.loads(done.read_text()).get("info", {}).get("made") == [n, megapixels, seed, GEN_VERSION]:
        return folder
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))  # 4:3, as phone photos
    h = int(round(w * 3 / 4))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    pad = 64
    noise = np.random.default_rng([seed, 2**31]).normal(128, 6, size=(h + pad, w + pad, 3))
    grain = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    del noise
    images, anns = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            bw, bh = int(rng.integers(w // 10, w // 3)), int(rng.integers(h // 10, h // 3))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            boxes.append((int(rng.integers(1, 3)), [x, y, bw, bh]))
        for cid, box in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cid, "bbox": box})
        images.append({"id": i + 1, "file_name": f"{i:05d}.jpg", "width": w, "height": h})
        path = folder / "images" / f"{i:05d}.jpg"
        if path.exists():
            continue  # written whole by an earlier run (renamed into place)
        lw, lh = max(2, w // 16), max(2, h // 16)
        yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
        base, tilt = rng.uniform(40, 200, size=3), rng.uniform(-60, 60, size=(2, 3))
        small = base + xx[..., None] / lw * tilt[0] + yy[..., None] / lh * tilt[1] + rng.normal(0, 20, (lh, lw, 3))
        photo = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(photo)
        for cid, (x, y, bw, bh) in boxes:
            draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=(220, 40, 40) if cid == 1 else (40, 60, 220))
        ox, oy = int(rng.integers(pad)), int(rng.integers(pad))
        photo = ImageChops.add(photo, grain.crop((ox, oy, ox + w, oy + h)), scale=1.0, offset=-128)
        part = path.with_suffix(f".part{os.getpid()}")  # whole files only, even with two makers at once
        photo.save(part, format="JPEG", quality=85)
        part.replace(path)
    cats = [{"id": 1, "name": "red box"}, {"id": 2, "name": "blue box"}]
    info = {"made": [n, megapixels, seed, GEN_VERSION]}
    done.write_text(json.dumps({"info": info, "images": images, "annotations": anns, "categories": cats}))
    return folder


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def decode_times(data: Path, k: int = 12) -> dict:
    """Milliseconds to read one photo of ``data`` for the tiny model: whole (then the processor
    resizes it), and straight to its 64×64 input (a JPEG decoded at 1/8 scale, ``Image.draft``)."""
    from PIL import Image

    from pipeline.data.images import ImageCache, LazyImage

    doc = json.loads((data / "annotations.json").read_text())
    images = [(data / "images" / im["file_name"], (im["width"], im["height"])) for im in doc["images"][:k]]
    out = {}
    for name, fit in (("whole", None), ("to_64x64", (64, 64))):
        t = time.perf_counter()
        for path, size in images:
            image = LazyImage(path, size, cache=ImageCache(0)).decode(fit=fit)
            if fit is None:
                image.resize((64, 64), Image.Resampling.BICUBIC)  # what the processor then does
        out[name] = round((time.perf_counter() - t) / len(images) * 1000, 1)
    out["speedup"] = round(out["whole"] / out["to_64x64"], 1)
    return out


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

    if mode == "lazy-whole":  # as before training decoded to the model's size: each photo whole
        from pipeline.data.images import LazyImage

        whole = LazyImage.decode
        LazyImage.decode = lambda self, fit=None, resample=None: whole(self)  # type: ignore[method-assign]
    t0 = time.monotonic()
    ds = load_dataset(data, "detect", fractions=(1.0, 0.0, 0.0), images="lazy" if mode == "lazy-whole" else mode)
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


def run_child(mode: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "DREAMFORGE_IMAGE_CACHE_MB": str(args.cache_mb),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # fmt: skip
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--output", str(out / mode),
           "--batch-size", str(args.batch_size)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        return {"failed": res.returncode, "stderr": res.stderr[-1500:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images (the issue's set: 5000)")
    ap.add_argument("--eager-n", type=int, default=None,
                    help="also measure lazy and eager on a set this small (eager cannot hold 5000 x 12 MP)")
    ap.add_argument("--megapixels", type=float, default=2.0, help="size of each photo (the issue's: 12)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cache-mb", type=float, default=256, help="the lazy image cache ($DREAMFORGE_IMAGE_CACHE_MB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", type=Path, default=Path(tempfile.gettempdir()) / "df-data-scale-sets",
                    help="where generated sets are kept, one folder per (n, megapixels, seed), reused by reruns")
    ap.add_argument("--output", type=Path, default=None, help="folder for the runs' models")
    ap.add_argument("--generate-only", action="store_true", help="make (or finish) the sets and stop")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.output, args.batch_size)))
        return

    out = args.output or Path(tempfile.mkdtemp(prefix="df-data-scale-"))
    sizes = sorted({args.n, args.eager_n or args.n})
    t0 = time.monotonic()
    sets = {n: set_folder(args.sets, n, args.megapixels, args.seed) for n in sizes}
    if args.generate_only:
        for n in sizes:
            generate(sets[n], n, args.megapixels, args.seed)
        print(json.dumps({"sets": {n: str(p) for n, p in sets.items()}, "wall_s": round(time.monotonic() - t0, 1)}))
        return
    result: dict = {"megapixels": args.megapixels, "cache_mb": args.cache_mb, "batch_size": args.batch_size, "runs": {}}
    for n in sizes:  # the small set first: its runs do not wait for the big set to be made
        t = time.monotonic()
        generate(sets[n], n, args.megapixels, args.seed)
        generate_s = round(time.monotonic() - t, 1)
        if n == sizes[0]:
            result["decode_ms"] = decode_times(sets[n])
        decoded_mb = n * args.megapixels * 3
        jpeg_mb = sum(p.stat().st_size for p in (sets[n] / "images").iterdir()) / 2**20
        runs: dict = {"jpeg_mb": round(jpeg_mb), "decoded_mb": round(decoded_mb), "generate_s": generate_s}
        for mode in ("lazy", "lazy-whole", "eager") if n == sizes[0] else ("lazy", "eager"):
            if mode == "eager" and decoded_mb > 0.5 * available_mb():
                runs[mode] = {"skipped": f"{decoded_mb:.0f} MB of decoded images, {available_mb():.0f} MB available"}
                continue
            runs[mode] = run_child(mode, sets[n], out / str(n), args)
            print(json.dumps({str(n): {mode: runs[mode]}}), flush=True)  # progress, for a long run's log
        result["runs"][str(n)] = runs
    result.update(ratios(result["runs"], sizes))
    result["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result))


def ratios(runs: dict, sizes: list[int]) -> dict:
    """Eager against lazy where both ran (peak memory: eager / lazy; images/s: lazy / eager),
    and the big lazy run against the small eager one."""
    out: dict = {}
    small, big = runs[str(sizes[0])], runs[str(sizes[-1])]
    lazy, eager = small.get("lazy", {}), small.get("eager", {})
    if "peak_mb" in lazy and "peak_mb" in eager:
        out["ratio_peak"] = round(eager["peak_mb"] / lazy["peak_mb"], 2)
        out["ratio_images_per_s"] = round(lazy["images_per_s"] / eager["images_per_s"], 2)
        out["eager_mb_per_image"] = round((eager["peak_mb"] - lazy["peak_mb"]) / lazy["n"], 1)
    if len(sizes) > 1 and "peak_mb" in big.get("lazy", {}) and "peak_mb" in eager:
        out["ratio_peak_lazy_big_to_eager_small"] = round(big["lazy"]["peak_mb"] / eager["peak_mb"], 2)
        out["ratio_images_per_s_lazy_big_to_eager_small"] = round(big["lazy"]["images_per_s"] / eager["images_per_s"], 2)
    if "epoch_s" in small.get("lazy-whole", {}) and "epoch_s" in lazy:
        out["ratio_epoch_images_per_s_decoded_to_model_size"] = round(small["lazy-whole"]["epoch_s"] / lazy["epoch_s"], 2)
    if len(sizes) > 1 and "peak_mb" in big.get("lazy", {}) and "peak_mb" in lazy:
        out["ratio_peak_lazy_big_to_lazy_small"] = round(big["lazy"]["peak_mb"] / lazy["peak_mb"], 2)
    return out


if __name__ == "__main__":
    main()
