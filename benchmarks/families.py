"""Step time and peak memory of stage 2 per model family, against ``pipeline.estimate``.

Builds a tiny random model of each family (pipeline.models.tiny), trains stage 2 for ``--steps``
steps in the family's own output format, and prints one JSON record per family: seconds a step,
peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS so far, which only
grows) and the estimate the job logs before training. ``--big`` adds one LoRA run of a random
~0.5B Qwen2.5-VL configuration (GPU only), to check the estimate at a size where it matters.

    OMP_NUM_THREADS=1 python benchmarks/families.py [--steps 5] [--big] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import build_config
from pipeline.device import pick_device
from pipeline.estimate import GIB, stage_estimates
from pipeline.job import make_codec, run_job
from pipeline.models.tiny import build_tiny_vlm

FAMILIES = {"llava": "loc", "idefics3": "text", "qwen2_5_vl": "auto", "paligemma": "auto", "florence2": "auto"}
BIG = dict(hidden=1024, layers=24, vision_hidden=256, vision_layers=4, image_size=224, patch=14)


def one(family: str, codec: str, steps: int, root: Path, lora: bool, size: dict) -> dict:
    raw = {"task": "detect", "codec": codec, "budget_minutes": None,
           "data": {"dataset": "synthetic://retail-shelf?n=48&seed=1", "split": [0.7, 0.15, 0.15]},
           "domain": {"max_steps": steps, "batch_size": 4, "lora": lora, "val_checks": 0, "max_seconds": None},
           "rl": {"enabled": False}, "evaluate": {"enabled": False}}  # fmt: skip
    model = build_tiny_vlm(root / family, family=family, extra_words=["cola", "water", "chips", "soap"], **size)
    cfg = build_config({**raw, "model": str(model)})
    device = pick_device()
    if device.kind == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    record = run_job(cfg, root / f"{family}-out", stages=[2])
    domain = record["stages"]["domain"]
    cuda = torch.cuda.get_device_properties(0).total_memory / GIB if device.kind == "cuda" else None
    from pipeline.data import load_dataset

    codec = make_codec(cfg, load_dataset(cfg.data.dataset, cfg.task))
    est = stage_estimates(cfg, model, {"domain"}, cuda, codec.max_new_tokens())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    peak = torch.cuda.max_memory_allocated() / GIB if device.kind == "cuda" else rss
    return {"family": family, "format": codec.format, "device": device.kind, "lora": lora,
            "steps": domain["steps"],
            "step_seconds": round(domain["train_seconds"] / max(domain["steps"], 1), 3),
            "peak_gib": round(peak, 3), "peak_is": "cuda allocated" if device.kind == "cuda" else "process RSS",
            "estimate": est[0].line() if est else None, "estimate_gib": est[0].memory_gib if est else None,
            "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--big", action="store_true", help="also a LoRA run of a ~0.5B random Qwen2.5-VL (GPU)")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, codec in FAMILIES.items():
            rows.append(one(family, codec, args.steps, Path(tmp), lora=False, size={"layers": 1}))
            print(json.dumps(rows[-1]), flush=True)
        if args.big:
            rows.append(one("qwen2_5_vl", "auto", args.steps, Path(tmp) / "big", lora=True, size=BIG))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
