"""Does the curriculum learn, and does RL beat more SFT?

Runs the demo (retail-shelf preset, dreamforge-tiny, all four stages) from a fixed seed, then
the fair baseline: stage 2 continued with SFT for the same wall-clock that stage 3 (GRPO)
took, from the same stage-2 checkpoint, evaluated on the same held-out split. Also reports the
free fix a user gets without RL: stage 2 decoded with a cap of as many objects as the domain
ever has. Prints one JSON object on its last line.

With ``--heldout URI`` the stage-2, stage-3, baseline and capped models are also scored on a
second held-out set (``iou_*_heldout``): the job's own test split of a few-label set holds about
60 images, too few to tell RL from SFT (one image moves the mean by ~0.01). The benchmark checks
that no image of that set is in the job's dataset. ``iou_train_*`` are the same models on their
own training images: how much they memorised.

    python benchmarks/curriculum.py [--preset retail-shelf] [--seed 0] [--dataset URI] [--output DIR]
        [--heldout "synthetic://retail-shelf?n=600&seed=1000"]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipeline.run import quiet_libraries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="retail-shelf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--dataset", default=None, help="override the preset's domain dataset, e.g. a few-label set")
    ap.add_argument("--heldout", default=None, help="a second, larger held-out set (all of it is scored)")
    args = ap.parse_args()
    quiet_libraries()

    from pipeline.codec import Codec
    from pipeline.config import build_config
    from pipeline.job import run_job
    from pipeline.reporter import ConsoleReporter
    from pipeline.stages.common import Context
    from pipeline.stages.evaluate import evaluate_model, held_out
    from pipeline.stages.sft import train_sft

    out = args.output or Path(tempfile.mkdtemp(prefix="df-bench-"))
    over: dict = {"seed": args.seed}
    if args.dataset:
        over["data"] = {"dataset": args.dataset}
    cfg = build_config(over, preset=args.preset)
    t0 = time.monotonic()
    reporter = ConsoleReporter()
    record = run_job(cfg, out / "job", reporter=reporter)
    ev = record["evaluation"]
    models = ev["models"]
    rl_seconds = record["stages"]["reward"]["train_seconds"]

    # Rebuild the job's context to train and evaluate the baseline on identical data.
    from pipeline.device import pick_device
    from pipeline.job import augmented_train, load_data, make_codec, resolve_reward

    domain, _ = load_data(cfg, {"domain"}, reporter)
    ctx = Context(
        cfg=cfg, device=pick_device(), reporter=reporter, out=out / "baseline", domain=domain,
        domain_codec=make_codec(cfg, domain), reward=resolve_reward(cfg, reporter, domain),
    )
    stage2 = out / "job" / "stages" / "domain" / "model"
    more = cfg.domain.model_copy(update={"max_seconds": rl_seconds, "max_steps": None, "epochs": 10_000})
    (out / "baseline").mkdir(parents=True, exist_ok=True)
    # the baseline is stage 2 continued: the same (augmented) training images as stages 2 and 3
    base_info = train_sft(ctx, "sft_baseline", stage2, augmented_train(ctx, "sft_baseline"), ctx.domain_codec, more,
                          out / "baseline" / "model", epoch_examples=len(domain.splits["train"]))
    samples = held_out(ctx)
    baseline = evaluate_model(ctx, out / "baseline" / "model", samples)[0]

    # The free fix: cap the decoded objects at the most the domain's training images hold.
    cap = max(len(s.target["boxes"]) for s in domain.splits["train"])
    capped_codec = Codec(cfg.task, domain.categories, cfg.num_bins, cap)
    ctx_cap = Context(**{**ctx.__dict__, "domain_codec": capped_codec})
    capped = evaluate_model(ctx_cap, stage2, samples)[0]

    key = ev["primary_metric"]
    extra: dict = {}
    fit = ev.get("train_fit") or {}
    for name, label in (("domain", "stage2"), ("reward", "stage3")):
        if name in fit:
            extra[f"iou_train_{label}"] = fit[name][key]
    if args.heldout:
        import hashlib

        from pipeline.data import load_dataset

        big = load_dataset(args.heldout, cfg.task, seed=0, fractions=(0.0, 0.0, 1.0)).splits["test"]
        digest = lambda s: hashlib.sha256(s.image.tobytes()).hexdigest()  # noqa: E731
        seen = {digest(s) for split in domain.splits.values() for s in split}
        overlap = sum(digest(s) in seen for s in big)
        if overlap:
            raise SystemExit(f"--heldout {args.heldout}: {overlap} of its images are in the job's dataset")
        extra["n_heldout_big"] = len(big)
        for label, model_dir, c in (
            ("stage2", stage2, ctx), ("stage3", out / "job" / "stages" / "reward" / "model", ctx),
            ("sft_baseline", out / "baseline" / "model", ctx), ("stage2_capped", stage2, ctx_cap),
        ):  # fmt: skip
            m = evaluate_model(c, model_dir, big)[0]
            extra[f"iou_{label}_heldout"] = m[key]
            extra[f"f1_50_{label}_heldout"] = m["f1_50"]
    result = {
        "preset": args.preset,
        "dataset": cfg.data.dataset,
        "n_train": len(domain.splits["train"]),
        "seed": args.seed,
        "n_heldout": ev["n"],
        "iou_base": models["base"][key],
        "iou_stage1": models["warm_start"][key],
        "iou_stage2": models["domain"][key],
        "iou_stage3": models["reward"][key],
        "iou_sft_baseline": baseline[key],
        "iou_stage2_capped": capped[key],
        "iou_4bit": models.get("4bit", {}).get(key),
        "f1_50_stage2": models["domain"]["f1_50"],
        "f1_50_stage3": models["reward"]["f1_50"],
        "f1_50_sft_baseline": baseline["f1_50"],
        "map50_stage3": models["reward"]["map50"],
        "map50_sft_baseline": baseline["map50"],
        "rl_seconds": rl_seconds,
        "sft_baseline_seconds": base_info["train_seconds"],
        "sft_baseline_steps": base_info["steps"],
        "ratio_rl_vs_sft": round(models["reward"][key] / max(baseline[key], 1e-9), 3),
        "size_ratio_4bit": ev["release"].get("size_ratio"),
        "release_format": ev["release"].get("release_format"),
        "demo_wall_s": record["wall_seconds"],
        **extra,
        "wall_s": round(time.monotonic() - t0, 1),
        "output": str(out),
    }
    reporter.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
