"""How long does a preflight take? It must be cheap enough to run on every push.

Times ``pipeline.preflight.run_preflight`` on a synthetic set of ``--n`` images (default 5,000):
``load_s`` (decode and split, as a job's load does), ``preflight_s`` (every check: class
balance, box sizes, objects, image sizes, the duplicate search across splits, the reward on
``--samples`` perturbed ground truths, the cost table), ``total_s``.

    OMP_NUM_THREADS=1 python benchmarks/preflight.py [--n 5000] [--samples 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time

from pipeline.config import build_config
from pipeline.data import load_dataset
from pipeline.preflight import load_reward, preflight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--out")
    args = ap.parse_args()
    uri = f"synthetic://retail-shelf?n={args.n}&seed=1"
    cfg = build_config({"data": {"dataset": uri}}, preset="retail-shelf")
    t0 = time.perf_counter()
    ds = load_dataset(uri, cfg.task, seed=cfg.seed, fractions=tuple(cfg.data.split))
    t1 = time.perf_counter()
    report = preflight(cfg, ds, load_reward(cfg, ds), samples=args.samples)
    t2 = time.perf_counter()
    out = {"dataset": uri, "images": {k: len(v) for k, v in ds.splits.items()}, "load_s": round(t1 - t0, 2),
           "preflight_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
           "findings": [f"{f['severity']}: {f['message']}" for f in report["findings"]]}  # fmt: skip
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
