"""The base branch's released model beside this job's, on this job's held-out images.

A preview gate (``pipeline.gate``) compares a branch's model with the default branch's only
on the same images scored the same way. The service hands the evaluate stage that model's
folder, the fingerprint of the held-out set it was scored on and its metrics there. When the
fingerprints match, those metrics stand; when they differ (another dataset, split or
``evaluate.max_samples``), the model is scored again here, on this job's images, decoding its
answers with its own codec (its categories and bins may differ from this job's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.codec import CODEC_FILE, Codec
from pipeline.gate import BaselineModel
from pipeline.stages.common import Context


def _own_codec(model_dir: Path) -> Codec | None:
    path = model_dir / CODEC_FILE
    if not path.exists():
        return None
    c = json.loads(path.read_text())
    return Codec(c["task"], c["categories"], c["num_bins"], c["max_objects"], c.get("keypoint_names") or None)


def score_baseline(ctx: Context, base: BaselineModel, samples, record: dict[str, Any]) -> dict[str, Any]:
    """The baseline's metrics on ``samples`` (the record's held-out set): reused when it was
    scored on the same set, else scored now. A baseline that cannot be scored is reported, and
    the job goes on: the gate then says why it could not compare."""
    from pipeline.stages.evaluate import evaluate_model

    fp = record["split_fingerprint"]
    out: dict[str, Any] = {"name": base.name, "job_id": base.job_id, "sha": base.sha, "split_fingerprint": fp}
    key = record["primary_metric"]
    if base.split_fingerprint == fp and base.metrics:
        ctx.reporter.log(f"{base.name}: scored on the same {record['n']} {record['split']} images "
                         f"({key} {base.metrics.get(key, float('nan')):.3f})", stage="evaluate")  # fmt: skip
        return {**out, "metrics": dict(base.metrics), "rescored": False}
    model_dir = Path(base.model)
    if not (model_dir / "config.json").exists():
        ctx.reporter.log(f"{base.name}: its released model ({model_dir.name}) is gone; not compared", level="warning",
                         stage="evaluate")  # fmt: skip
        return {**out, "error": f"the released model of {base.name} is no longer stored"}
    ctx.reporter.log(f"{base.name} was scored on other held-out images (split {base.split_fingerprint or 'unknown'}, "
                     f"this job's {fp}): scoring it on this job's {record['n']} {record['split']} images",
                     stage="evaluate")  # fmt: skip
    metrics, _, _ = evaluate_model(ctx, model_dir, samples, codec=_own_codec(model_dir))
    ctx.reporter.log(f"{base.name}: {key} {metrics[key]:.3f} on this job's images", stage="evaluate")
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {**out, "metrics": numbers, "rescored": True}
