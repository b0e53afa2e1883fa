"""What a curriculum costs before it runs: each stage's wall time, GPU-seconds and dollars on its
Modal GPU, from measured step times (:data:`STEP_TIMES`, each row citing its source) and Modal's
per-second prices, with the stage's memory fit beside it. Part of the preflight report
(``pipeline.preflight``); the worker bills with the same prices (``dreamforge.jobs.budgets``).
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.config import REWARD_SCOPES, CurriculumConfig
from pipeline.findings import finding
from pipeline.memory import memory_findings, stage_memory
from pipeline.stage_table import SECTION, STAGE_TABLE
from pipeline.structures import Dataset

# Seconds per optimizer step at 16 examples a step (completions, for RL), measured. A row is the
# number in its source divided by that run's steps; ``dreamforge-tiny`` only: no other model has
# been timed yet, so its cost is reported as unknown rather than guessed.
STEP_TIMES: tuple[dict[str, Any], ...] = (
    {"model": "dreamforge-tiny", "device": "H100", "kind": "sft", "seconds_per_step": 0.0528,
     "source": "benchmarks/results/2026-11-27-h100-gpu.json: sft_baseline_seconds 33.13 / sft_baseline_steps 628"},
    {"model": "dreamforge-tiny", "device": "H100", "kind": "rl", "seconds_per_step": 0.234,
     "source": "benchmarks/results/2026-11-27-h100-gpu.json: rl_seconds 32.77 / 140 GRPO steps "
               "(the retail-shelf preset's rl.max_steps on 2026-11-27, commit adba2b9)"},
    {"model": "dreamforge-tiny", "device": "cpu", "kind": "sft", "seconds_per_step": 0.139,
     "source": "benchmarks/results/2026-12-01-cpu-demo.json: sft_baseline_seconds 44.21 / sft_baseline_steps 318 "
               "(2-core CPU)"},
    {"model": "dreamforge-tiny", "device": "cpu", "kind": "rl", "seconds_per_step": 0.31,
     "source": "benchmarks/results/2026-12-01-cpu-demo.json: rl_seconds 43.44 / 140 GRPO steps (2-core CPU)"},
)  # fmt: skip
# The tiny model is bound by per-step overhead, not by the GPU: its H100 time stands in for any GPU.
STAND_IN_DEVICE = "H100"
EVAL_SECONDS = 30.0  # evaluation + 4-bit export of the demo (README: "evaluate + 4-bit ~1.5 min" with start)
CONTAINER_START_S = 60.0  # README "What a job costs by default": about a minute of container start per stage

# Modal list prices, USD per GPU-hour, billed per second (modal.com/pricing). Recorded in the
# README's cost table with the 2026-11-27 H100 run; the H100's $3.9492/h matches a 2026-05-07
# copy of that page. Check the page before trusting a total: prices change.
PRICES_AS_OF = "2026-11-27 (modal.com/pricing)"
GPU_USD_PER_HOUR = {"H100": 3.95, "H100!": 3.95, "L40S": 1.95, "L4": 0.80, "A10G": 1.10, "A10": 1.10, "T4": 0.59}
CPU_MEMORY_USD_PER_HOUR = 0.32  # 4 cores + 16 GiB reserved per GPU (dreamforge/executors/modal_limits.py)



def reward_name(cfg: CurriculumConfig, ds: Dataset) -> str:
    """The reward a job would run: ``default`` resolved against the data's labels, as the job does."""
    from pipeline.rewards.builtin import default_reward

    return default_reward(cfg.task, ds) if cfg.reward == "default" else cfg.reward


def step_time(model: str, device: str, kind: str) -> dict[str, Any] | None:
    """The measured row for ``model`` on ``device`` (a stand-in GPU's for the tiny model), or None."""
    dev = device.partition(":")[0].upper() if device != "cpu" else "cpu"
    for want in (dev, STAND_IN_DEVICE if dev != "cpu" else None):
        for row in STEP_TIMES:
            if row["model"] == model and row["device"] == want and row["kind"] == kind:
                return {**row, "stand_in": want != dev}
    return None


def _train_count(cfg: CurriculumConfig, ds: Dataset, stage: str) -> int:
    train = ds.splits.get("train") or []
    if stage == "domain":
        return sum(s.label_kind == "full" for s in train)
    kinds = cfg.rl.label_kinds or REWARD_SCOPES.get(reward_name(cfg, ds), REWARD_SCOPES["default"]).label_kinds
    return sum(s.label_kind in kinds for s in train)


def _steps(cfg: CurriculumConfig, ds: Dataset, stage: str) -> int | None:
    sc = cfg.stage(stage)
    if getattr(sc, "max_steps", None):
        return sc.max_steps
    if stage == "warm_start":
        return None  # its generic set is not loaded by a preflight
    n = _train_count(cfg, ds, stage)
    per_step = sc.batch_size // cfg.rl.num_generations if stage == "reward" else sc.batch_size
    steps = math.ceil(sc.epochs * n / max(1, per_step))
    return max(steps, getattr(sc, "min_steps", None) or 0)


def cost_estimate(cfg: CurriculumConfig, ds: Dataset, findings: list, default_gpu: dict[str, str]) -> dict[str, Any]:
    """Wall time, GPU-seconds and dollars per stage on its Modal GPU, from :data:`STEP_TIMES` and
    :data:`GPU_USD_PER_HOUR`; ``None`` where no measurement or price exists (never a guess)."""
    rows, unknown = [], []
    for st in STAGE_TABLE:
        sc = cfg.stage(st.name)
        if not sc.enabled:
            continue
        gpu = sc.compute or default_gpu.get(st.name) or "H100"
        name, _, count = gpu.partition(":")
        n_gpu = int(count) if count.isdigit() else 1
        row: dict[str, Any] = {"stage": st.name, "gpu": gpu, "steps": None, "seconds_per_step": None,
                               "seconds": None, "gpu_seconds": None, "usd": None, "source": None,
                               "memory": stage_memory(cfg, st.name, gpu)}  # fmt: skip
        if st.name == "evaluate":
            seconds = EVAL_SECONDS if cfg.model == "dreamforge-tiny" else None
            row["source"] = "README 'What a job costs by default' (demo evaluate + 4-bit)" if seconds else None
        else:
            steps = _steps(cfg, ds, st.name)
            kind = "rl" if st.name == "reward" else "sft"
            measured = step_time(cfg.model, gpu, kind)
            seconds = None
            row["steps"] = steps
            if measured and steps is not None:
                per = measured["seconds_per_step"] * sc.batch_size / 16  # rows are at 16 examples a step
                seconds = steps * per
                if getattr(sc, "max_seconds", None):
                    seconds = min(seconds, sc.max_seconds)
                row["seconds_per_step"] = round(per, 4)
                row["source"] = measured["source"] + (f" (its {STAND_IN_DEVICE} time stands in for {name})"
                                                      if measured["stand_in"] else "")  # fmt: skip
            elif getattr(sc, "max_seconds", None):
                seconds = sc.max_seconds  # the stage's own budget bounds it even without a measurement
                row["source"] = f"{SECTION[st.name]}.max_seconds (no measured step time)"
        if seconds is None:
            unknown.append(st.name)
        else:
            seconds += CONTAINER_START_S
            row["seconds"] = round(seconds, 1)
            row["gpu_seconds"] = round(seconds * n_gpu, 1)
            price = GPU_USD_PER_HOUR.get(name)
            if price is not None:
                row["usd"] = round(seconds * n_gpu * (price + CPU_MEMORY_USD_PER_HOUR) / 3600, 4)
            else:
                unknown.append(f"{st.name} (no price for {name})")
        rows.append(row)
    if unknown:
        findings.append(finding("cost", "info",
                                f"no measured step time or price for {cfg.model!r} in: {', '.join(unknown)}; their cost "
                                "is left out of the total",
                                "time one short run (max_steps 20) of the model on that GPU and add it to "
                                "pipeline/cost.py STEP_TIMES"))  # fmt: skip
    for severity, message, fix in memory_findings(cfg, rows):
        findings.append(finding("memory", severity, message, fix))
    known = [r for r in rows if r["seconds"] is not None]
    total_s = sum(r["seconds"] for r in known)
    running = total_s - CONTAINER_START_S * len(known)  # the job's budget starts with its stages, not their containers
    if cfg.budget_minutes and running > cfg.budget_minutes * 60:
        findings.append(finding("budget", "warning",
                                f"the stages need about {running / 60:.1f} min but budget_minutes is {cfg.budget_minutes:g}: "
                                "later stages will be cut short",
                                f"raise budget_minutes to {math.ceil(running / 60)}, or lower the stages' steps"))  # fmt: skip
    return {"stages": rows, "seconds": round(total_s, 1), "usd": round(sum(r["usd"] or 0 for r in known), 4),
            "prices_as_of": PRICES_AS_OF, "complete": not unknown}  # fmt: skip

