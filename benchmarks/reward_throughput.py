"""How fast are JavaScript rewards, and what share of a GRPO step do they take?

- ``js_rewards_per_s``: the shipped IoU example (``example:iou``), batched as GRPO calls it
  (one call per batch), through the sandboxed worker process, on one core.
- ``python_rewards_per_s``: the same metric as the built-in Python ``iou`` reward (numpy +
  scipy Hungarian), same pairs, same run: the baseline. ``ratio`` = js / python.
- ``reward_share_of_grpo_step``: the demo's RL stage (retail-shelf preset, 16 completions per
  step) run for a few steps with the JavaScript IoU reward: time inside the reward (decoding
  the completions + scoring) over the stage's training time.

    OMP_NUM_THREADS=1 python benchmarks/reward_throughput.py [--pairs 4096] [--batch 512] [--grpo-steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path


def targets(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        k = rng.randint(1, 4)
        boxes = []
        for _ in range(k):
            x, y = rng.uniform(0, 56), rng.uniform(0, 56)
            boxes.append([round(x, 1), round(y, 1), round(x + rng.uniform(4, 20), 1), round(y + rng.uniform(4, 20), 1)])
        out.append({"boxes": boxes, "labels": [rng.choice(["cola", "soap", "chips"]) for _ in boxes], "points": [],
                    "keypoints": [], "masks": [], "text": "", "image": {"width": 64, "height": 64}})  # fmt: skip
    return out


def rate(fn, n: int, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--grpo-steps", type=int, default=8, help="0 skips the GRPO share")
    args = ap.parse_args()

    from pipeline.rewards.builtin import get_reward
    from pipeline.rewards.js import load_js_reward

    rng = random.Random(0)
    gts = targets(args.pairs, rng)
    outs = [{**g, "boxes": [[v + rng.uniform(-3, 3) for v in b] for b in g["boxes"]]} for g in gts]
    js = load_js_reward("example:iou")
    py = get_reward("iou")
    batches = [(outs[i:i + args.batch], gts[i:i + args.batch]) for i in range(0, args.pairs, args.batch)]

    def run_js() -> None:
        for o, g in batches:
            js.score(o, g)

    def run_py() -> None:
        py.score(outs, gts)

    # same numbers first: the benchmark compares one metric in two languages
    a, b = js.score(outs[:256], gts[:256]), py.score(outs[:256], gts[:256])
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-9
    res: dict = {"pairs": args.pairs, "batch": args.batch}
    res["js_rewards_per_s"] = round(rate(run_js, args.pairs))
    res["python_rewards_per_s"] = round(rate(run_py, args.pairs))
    res["ratio"] = round(res["js_rewards_per_s"] / res["python_rewards_per_s"], 2)
    grpo_batch = [(outs[i:i + 16], gts[i:i + 16]) for i in range(0, 16 * 64, 16)]
    res["js_ms_per_grpo_batch_16"] = round(1000 / rate(lambda: [js.score(o, g) for o, g in grpo_batch], 64), 3)
    js.close()

    if args.grpo_steps:
        from pipeline.config import build_config
        from pipeline.job import run_job
        from pipeline.run import quiet_libraries

        quiet_libraries()
        cfg = build_config({"reward": "example:iou", "rl": {"max_steps": args.grpo_steps}}, preset="retail-shelf")
        out = Path(tempfile.mkdtemp(prefix="df-reward-bench-"))
        rec = run_job(cfg, out, stages=[3])
        st = rec["stages"]["reward"]
        res["grpo_steps"] = st["steps"]
        res["grpo_step_s"] = round(st["train_seconds"] / st["steps"], 3)
        res["reward_s_per_step"] = round(st["reward_seconds"] / st["steps"], 4)
        res["reward_share_of_grpo_step"] = round(st["reward_seconds"] / st["train_seconds"], 4)
    res["cpu_count"] = os.cpu_count()
    res["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
