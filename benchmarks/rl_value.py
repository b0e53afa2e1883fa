"""Does stage 3 pay where SFT cannot use the labels? The retail-shelf weak-label job, five arms.

Per seed, the `retail-shelf` preset (a few dozen boxed images plus several hundred clicked ones)
runs stages 1 and 2 once. Every arm then starts from that same stage-2 checkpoint and gets the
same wall-clock as stage 3 (the preset's ``rl.max_seconds``, or ``--seconds``):

1. ``stage2``: stage 2 alone;
2. ``sft``: SFT continued on the boxed images;
3. ``selftrain``: SFT on the boxed images plus the model's own unfiltered greedy answers for the
   clicked images (classic self-training; labelling time counts against its seconds);
4. ``grpo``: stage 3 with GRPO against the job's reward, on boxed and clicked images;
5. ``rft``: stage 3 with rejection-sampling fine-tuning, same images and reward.

Every arm is scored on ``--heldout`` in-domain images and as many shifted ones (other
backgrounds, lighting, object scale, distractors: ``synthetic://…&shift=1``), none of them in
the job's data. ``released`` is what the job's stage 4 would release between stage 2 and the
preset's stage-3 algorithm, chosen on the job's validation split.

    python benchmarks/rl_value.py [--seeds 0 1 2] [--seconds S] [--heldout 500] [--clicked N] [--output DIR]

``--clicked N`` keeps the preset's boxed images and changes how many clicked ones there are
(the crossover: how many clicks it takes for stage 3 to win).

The last line is one JSON object: per arm, lists over seeds of ``iou_<arm>``, ``f1_<arm>``,
``iou_<arm>_shifted``, ``f1_<arm>_shifted``, ``reward_<arm>``; plus ``released``, ``seeds``,
``wall_s`` and the margins of the better stage-3 arm over ``sft`` and ``selftrain``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("stage2", "sft", "selftrain", "grpo", "rft")
STAGE3 = ("grpo", "rft")


def _context(cfg, out: Path):
    from pipeline.device import pick_device
    from pipeline.job import load_data, make_codec, resolve_reward
    from pipeline.reporter import BaseReporter
    from pipeline.stages.common import Context

    reporter = BaseReporter()
    domain, _ = load_data(cfg, {"domain"}, reporter)
    ctx = Context(cfg=cfg, device=pick_device(), reporter=reporter, out=out, domain=domain,
                  domain_codec=make_codec(cfg, domain), reward=resolve_reward(cfg, reporter, domain))  # fmt: skip
    return ctx


def _heldout(kind: str, n: int, seed: int, *, shift: bool, size: int) -> list:
    from pipeline.data import load_dataset

    uri = f"synthetic://{kind}?n={n}&seed={seed}&size={size}" + ("&shift=1" if shift else "")
    ds = load_dataset(uri, "detect", seed=seed, fractions=(1.0, 0.0, 0.0))
    return ds.splits["train"]


def _score(ctx, model_dir: Path, samples: list) -> dict:
    from pipeline.stages.evaluate import evaluate_model

    m = evaluate_model(ctx, model_dir, samples)[0]
    return {"iou": round(m["mean_iou"], 4), "f1": round(m["f1_50"], 4), "parse": round(m["parse_rate"], 3),
            "reward": round(m.get("reward_score", float("nan")), 4)}  # fmt: skip


def run_seed(preset: str, seed: int, seconds: float | None, heldout: int, out: Path, clicked: int | None = None) -> dict:
    from pipeline.config import RLConfig, build_config, load_preset
    from pipeline.job import augmented_train, reward_train, run_job, seed_everything
    from pipeline.stages.evaluate import pick_release
    from pipeline.stages.grpo import train_grpo
    from pipeline.stages.rft import pseudo_label, train_rft
    from pipeline.stages.sft import train_sft

    raw = load_preset(preset)
    raw["seed"] = seed
    raw["data"]["dataset"] = raw["data"]["dataset"].replace("seed=1", f"seed={seed + 1}")
    if clicked is not None:  # the crossover: the same boxed images (the first ones), fewer or more clicked
        uri = raw["data"]["dataset"]
        n, points = (int(re.search(rf"{k}=(\d+)", uri).group(1)) for k in ("n", "points"))
        uri = re.sub(r"n=\d+", f"n={n - points + clicked}", re.sub(r"points=\d+", f"points={clicked}", uri))
        raw["data"]["dataset"] = uri
        raw["reward"] = "points"  # what the preset's default resolves to with clicks, also at 0 of them
    cfg = build_config(raw)
    T = float(seconds or cfg.rl.max_seconds or 60)
    t0 = time.monotonic()
    run_job(cfg, out, stages=[1, 2])
    s2 = out / "stages" / "domain" / "model"
    ctx = _context(cfg, out)
    train = ctx.domain.splits["train"]
    boxed = [s for s in train if s.label_kind == "full"]
    weak = [s for s in train if s.label_kind != "full"]
    if hasattr(ctx.reward, "prepare"):
        ctx.reward.prepare(boxed)
    stage3 = reward_train(ctx, "reward")
    sft_cfg = cfg.domain.model_copy(update={"max_seconds": T, "max_steps": None, "epochs": 10_000, "min_steps": 0,
                                            "val_checks": 0})  # fmt: skip
    models = {"stage2": s2}
    info: dict[str, dict] = {}

    seed_everything(seed)
    models["sft"] = out / "arms" / "sft" / "model"
    info["sft"] = train_sft(ctx, "arm-sft", s2, [s for s in augmented_train(ctx, "domain") if s.label_kind == "full"],
                            ctx.domain_codec, sft_cfg, models["sft"])  # fmt: skip

    seed_everything(seed)
    t_label = time.monotonic()
    from pipeline.models.loading import load_model

    model, processor = load_model(s2, ctx.device)
    pseudo = pseudo_label(model, processor, weak, ctx.domain_codec, None, n=1, temperature=1.0, threshold=None,
                          greedy=True, batch_size=cfg.evaluate.batch_size)  # fmt: skip
    del model
    spent = time.monotonic() - t_label
    models["selftrain"] = out / "arms" / "selftrain" / "model"
    st_cfg = sft_cfg.model_copy(update={"max_seconds": max(1.0, T - spent)})
    info["selftrain"] = train_sft(ctx, "arm-selftrain", s2, boxed + pseudo, ctx.domain_codec, st_cfg, models["selftrain"])
    info["selftrain"]["label_seconds"] = round(spent, 1)

    for arm, fn in (("grpo", train_grpo), ("rft", train_rft)):
        seed_everything(seed)
        models[arm] = out / "arms" / arm / "model"
        # Each algorithm at its own learning rate: the preset's for its algorithm; GRPO's default
        # for GRPO; RFT trains with the supervised trainer, so the SFT arm's.
        grpo_lr = RLConfig.model_fields["lr"].default
        lr = cfg.rl.lr if arm == cfg.rl.algorithm else (grpo_lr if arm == "grpo" else cfg.domain.lr)
        rl = cfg.rl.model_copy(update={"algorithm": arm, "max_seconds": T, "max_steps": None, "epochs": 10_000, "lr": lr})
        info[arm] = fn(ctx, f"arm-{arm}", s2, stage3, ctx.domain_codec, rl, models[arm])

    size = ctx.domain.splits["train"][0].width
    kind = cfg.data.dataset.split("//", 1)[1].split("?", 1)[0]
    sets = {"": _heldout(kind, heldout, 10_000 + seed, shift=False, size=size),
            "_shifted": _heldout(kind, heldout, 20_000 + seed, shift=True, size=size)}
    scores = {arm: {suffix: _score(ctx, models[arm], samples) for suffix, samples in sets.items()} for arm in ARMS}
    # What the job's stage 4 releases: stage 2 or the preset's stage-3 algorithm, on validation.
    val = ctx.domain.splits["val"][: cfg.evaluate.max_samples or None]
    algo = cfg.rl.algorithm
    on_val = {name: {"mean_iou": _score(ctx, models[arm], val)["iou"]}
              for name, arm in (("domain", "stage2"), ("reward", algo))}  # fmt: skip
    released, reason = pick_release(on_val, "mean_iou", len(val))
    return {"seed": seed, "seconds_per_arm": T, "scores": scores, "released": released, "reason": reason,
            "train": {"boxed": len(boxed), "weak": len(weak), "stage3": len(stage3)},
            "arm_info": {a: {k: v for k, v in i.items() if isinstance(v, int | float)} for a, i in info.items()},
            "wall_s": round(time.monotonic() - t0, 1)}  # fmt: skip


def summarise(runs: list[dict], t0: float) -> dict:
    out: dict = {"seeds": [r["seed"] for r in runs], "released": [r["released"] for r in runs]}
    for arm in ARMS:
        for suffix in ("", "_shifted"):
            out[f"iou_{arm}{suffix}"] = [r["scores"][arm][suffix]["iou"] for r in runs]
            out[f"f1_{arm}{suffix}"] = [r["scores"][arm][suffix]["f1"] for r in runs]
        out[f"reward_{arm}"] = [r["scores"][arm][""]["reward"] for r in runs]
        out[f"parse_{arm}"] = [r["scores"][arm][""]["parse"] for r in runs]
    # The better stage-3 algorithm by mean in-domain IoU, and its margins over both baselines.
    best = max(STAGE3, key=lambda a: statistics.mean(out[f"iou_{a}"]))
    out["best_stage3"] = best
    for base in ("sft", "selftrain"):
        for metric in ("iou", "f1"):
            for suffix in ("", "_shifted"):
                d = [b - a for a, b in zip(out[f"{metric}_{base}{suffix}"], out[f"{metric}_{best}{suffix}"], strict=True)]
                out[f"margin_{metric}{suffix}_vs_{base}"] = {"mean": round(statistics.mean(d), 4),
                                                              "min": round(min(d), 4), "max": round(max(d), 4),
                                                              "wins": sum(x > 0 for x in d)}  # fmt: skip
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="retail-shelf")
    ap.add_argument("--seconds", type=float, default=None, help="wall-clock per arm (default: the preset's rl.max_seconds)")
    ap.add_argument("--heldout", type=int, default=500, help="in-domain and shifted held-out images each")
    ap.add_argument("--clicked", type=int, default=None,
                    help="clicked training images (default: the preset's); the boxed ones stay the same")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    root = args.output or Path(tempfile.mkdtemp(prefix="df-rl-value-"))
    t0 = time.monotonic()
    runs = []
    for seed in args.seeds:
        r = run_seed(args.preset, seed, args.seconds, args.heldout, root / f"seed-{seed}", args.clicked)
        print(json.dumps(r), flush=True)  # noqa: T201
        runs.append(r)
    print(json.dumps(summarise(runs, t0)))  # noqa: T201


if __name__ == "__main__":
    main()
