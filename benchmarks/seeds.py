"""RL vs more SFT over several seeds: is the difference bigger than seed noise?

Runs benchmarks/curriculum.py once per seed, in parallel subprocesses (each pinned to
`--threads` CPU threads, or on the GPU where there is one and `--gpu` is given), and reports the
paired difference stage 3 − SFT baseline per seed, its mean and standard error. One JSON object
on the last line.

    python benchmarks/seeds.py --seeds 0 1 2 3 --jobs 4 [--dataset URI] [--preset retail-shelf]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "curriculum.py"), "--preset", args.preset, "--seed", str(seed)]
    if args.dataset:
        cmd += ["--dataset", args.dataset]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if not args.gpu:
        env["DREAMFORGE_FORCE_CPU"] = "1"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        result = {"seed": seed, "error": proc.stderr[-2000:]}
    else:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)  # each seed as it lands
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default="retail-shelf")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda s: run_seed(s, args), args.seeds))
    ok = [r for r in runs if "error" not in r]
    diffs = [r["iou_stage3"] - r["iou_sft_baseline"] for r in ok]

    def mean_se(xs: list[float]) -> tuple[float | None, float | None]:
        if not xs:
            return None, None
        se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None
        return round(statistics.fmean(xs), 4), (round(se, 4) if se is not None else None)

    out: dict = {"preset": args.preset, "dataset": args.dataset, "seeds": [r["seed"] for r in ok],
                 "failed": [r["seed"] for r in runs if "error" in r]}
    for key in ("iou_stage1", "iou_stage2", "iou_stage3", "iou_sft_baseline", "iou_stage2_capped"):
        out[key + "_mean"], out[key + "_se"] = mean_se([r[key] for r in ok])
    out["rl_minus_sft_per_seed"] = [round(d, 4) for d in diffs]
    out["rl_minus_sft_mean"], out["rl_minus_sft_se"] = mean_se(diffs)
    out["rl_wins"] = sum(d > 0 for d in diffs)
    out["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
