"""Preflight's view of each stage's peak GPU memory and whether it fits its GPU.

The numbers come from the one estimator, :mod:`pipeline.estimate` (the same one a job logs
before training and submit refuses with); this module shapes them for the preflight report:
each term in GiB, so a wrong one can be seen, and a finding naming the largest term and a fix
for a stage that does not fit. A model of unknown shape is reported as unknown, not guessed.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import CurriculumConfig
from pipeline.estimate import GPUS, fix_for, stage_estimate


def stage_memory(cfg: CurriculumConfig, stage: str, gpu: str) -> dict[str, Any]:
    """``{peak_gib, gpu_gib, fits, terms}`` of ``stage`` on ``gpu``; peak None for an unknown model."""
    name = gpu.partition(":")[0].upper()
    out: dict[str, Any] = {"peak_gib": None, "gpu_gib": GPUS[name][1] if name in GPUS else None, "fits": None, "terms": {}}
    e = stage_estimate(cfg, stage, gpu=gpu)
    if e is None:
        return out
    out.update(peak_gib=e.memory_gib, terms=e.terms)
    if out["gpu_gib"] is not None:
        # Several GPUs run data-parallel replicas (accelerate launch): each holds the whole model.
        out["fits"] = e.memory_gib <= out["gpu_gib"]
    return out


def memory_findings(cfg: CurriculumConfig, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(severity, message, fix)`` for each stage whose estimate does not fit its GPU."""
    out = []
    for row in rows:
        mem = row.get("memory") or {}
        if mem.get("fits") is not False:
            continue
        stage, gpu = row["stage"], row["gpu"]
        cause, size = max(mem["terms"].items(), key=lambda kv: kv[1])
        e = stage_estimate(cfg, stage, gpu=gpu)
        assert e is not None  # a known shape gave the row its numbers
        out.append(("error", f"stage {stage} does not fit its {gpu}: about {mem['peak_gib']:.0f} GiB at its peak against "
                             f"{mem['gpu_gib']:.0f} GiB; most of it is {cause}: {size:.0f} GiB for {cfg.model}",
                    fix_for(cfg, stage, e)))  # fmt: skip
    return out
