"""Does the default config learn on a user's own photographs?

Trains the **default** curriculum (no preset, no tuning: what `python -m pipeline.run --dataset
DIR` does) on COCO sets cut from real photographs that ship inside scikit-image (coins on a tray,
stained cell nuclei, the Hubble deep field; tests/realsets.py), with fixed seeds, and scores the
base model and every stage on a held-out test split of its own region of the photograph. A bare
config skips the warm start; ``--warm`` runs each set a second time with stage 1 on (the generic
set, or ``--warm-set URI``): what the warm start contributes.

    python benchmarks/real_images.py [--sets coins galaxies] [--seed 0] [--warm [--warm-set URI]] [--train 120]

The last line is one JSON object: per set, iou_base, iou_best (the released model), f1_best,
parse_rate_best, released, verdict and wall_s (and the same with `_warm`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run_default(folder: Path, out: Path, seed: int, *, warm_set: str | None = None) -> dict:
    cfg: dict = {"seed": seed, "data": {"dataset": str(folder)}}
    if warm_set:
        cfg["warm_start"] = {"enabled": True}
        cfg["data"]["warm_start_dataset"] = warm_set
    (out.parent / f"{out.name}.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pipeline.run", "--config", str(out.parent / f"{out.name}.json"),
                          "--output", str(out), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"{folder.name}: the job failed:\n{res.stderr[-3000:]}")
    ev = json.loads((out / "metrics.json").read_text())["evaluation"]
    models, released = ev["models"], ev["release"]["stage"]
    rel = models[released]
    return {"iou_base": models["base"]["mean_iou"], "iou_best": rel["mean_iou"], "f1_best": rel["f1_50"],
            "parse_rate_best": rel["parse_rate"], "released": released, "verdict": ev["verdict"]["verdict"],
            "iou_by_stage": {k: v["mean_iou"] for k, v in models.items()}, "n_test": ev["n"],
            "domain_steps": json.loads((out / "metrics.json").read_text())["stages"].get("domain", {}).get("steps"),
            "wall_s": round(wall, 1)}  # fmt: skip


def main() -> None:
    import realsets

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["coins", "galaxies"], choices=realsets.SETS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=120, help="labelled training tiles per set")
    ap.add_argument("--test", type=int, default=60, help="held-out test tiles per set (>= 60)")
    ap.add_argument("--warm", action="store_true", help="also run each set with stage 1 on")
    ap.add_argument("--warm-set", default="synthetic://generic?n=4000&seed=7", help="the warm start's data with --warm")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    out = args.output or Path(tempfile.mkdtemp(prefix="df-real-"))
    result: dict = {"seed": args.seed}
    for name in args.sets:
        folder = realsets.write(name, out / f"{name}-data", tile=96, seed=args.seed,
                                counts={"train": args.train, "val": max(30, args.train // 4), "test": args.test})  # fmt: skip
        r = run_default(folder, out / f"{name}-job", args.seed)
        print(name, json.dumps(r), flush=True)  # noqa: T201
        result[name] = r
        if args.warm:
            r = run_default(folder, out / f"{name}-job-warm", args.seed, warm_set=args.warm_set)
            print(name, "with the warm start", json.dumps(r), flush=True)  # noqa: T201
            result[name].update({f"{k}_warm": v for k, v in r.items()})
    print(json.dumps(result))  # noqa: T201


if __name__ == "__main__":
    main()
