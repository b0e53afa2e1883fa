"""Few-label: short stage 2 (format/labels) + long GRPO, against SFT from the warm start for the
same total seconds, and against the current recipe (stage 2 240 steps + GRPO 140).
fromwarm.py --ds 1 2 3 --s2steps 24 --rlsteps 280 [--rl k=v ...]"""
import sys; sys.path.insert(0, "/work/exp2")
import lib
from lib import *
import argparse
lib.RESULTS = Path("/work/exp4/results.jsonl")
ap = argparse.ArgumentParser()
ap.add_argument("--ds", type=int, nargs="+", default=[1, 2, 3])
ap.add_argument("--s2steps", type=int, default=24)
ap.add_argument("--rlsteps", type=int, default=280)
ap.add_argument("--variant", default="fw")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--rl", nargs="*", default=[])
a = ap.parse_args()
kw = {"max_steps": a.rlsteps}
for x in a.rl:
    k, v = x.split("=")
    kw[k] = v if k == "loss_type" else (int(v) if k in ("num_generations", "batch_size", "max_steps") else float(v))
for ds in a.ds:
    ctx = make_ctx(ds, train_seed=a.seed, out=Path(f"/work/exp4/runs/ds{ds}"))
    t0 = time.time()
    s2out = ctx.out / f"s2_{a.s2steps}" / "model"
    if s2out.exists():
        shutil.rmtree(s2out.parent)
    seed_everything(a.seed)
    scfg = ctx.cfg.domain.model_copy(update={"max_steps": a.s2steps, "min_steps": 0, "max_seconds": None})
    i1 = train_sft(ctx, "s2short", WARM, ctx.domain.splits["train"], ctx.domain_codec, scfg, s2out)
    log({"phase": "fw", "ds": ds, "arm": f"s2short{a.s2steps}", "seconds": i1["train_seconds"], "steps": i1["steps"], **evaluate_all(ctx, s2out)})
    out = ctx.out / "rl" / "model"
    i2 = rl(ctx, s2out, out, seed=a.seed, **kw)
    total = i1["train_seconds"] + i2["train_seconds"]
    log({"phase": "fw", "ds": ds, "arm": f"s2short+rl:{a.variant}", "rlkw": kw, "seconds": total, "steps": i2["steps"], **evaluate_all(ctx, out)})
    out2 = ctx.out / "sft" / "model"
    i3 = sft_more(ctx, WARM, total, out2, seed=a.seed)
    log({"phase": "fw", "ds": ds, "arm": f"sft_from_warm_same_s({a.variant})", "seconds": i3["train_seconds"], "steps": i3["steps"], **evaluate_all(ctx, out2)})
