"""The job's time budget (``budget_minutes``), shared out over its training stages.

Each training stage keeps its own ``max_seconds`` (the per-stage budget) and is also capped by
its share of what is left of the job's budget when it starts, so a job ends in about the time
its owner gave it whatever the data's size: a stage that finishes early leaves its time to the
stages after it, and a resumed job counts the seconds its finished stages already took.
"""

from __future__ import annotations

from pipeline.config import CurriculumConfig
from pipeline.stage_table import SECTION, TRAINED

# Shares of the training time, by stage, among the stages still to run. Stage 2 is where a
# user's own labels are learned; the warm start is step-bounded by default and RL refines.
SHARES = {"warm_start": 0.3, "domain": 0.5, "reward": 0.2}
EVAL_RESERVE = 0.1  # of the job budget, kept for stage 4 (scoring every model, the 4-bit export)
MIN_STAGE_SECONDS = 10.0  # a stage that starts at all gets at least this long


def stage_seconds(cfg: CurriculumConfig, stage: str, spent_seconds: float) -> tuple[float | None, str]:
    """``(seconds, why)``: the training budget of ``stage`` given the seconds the job's earlier
    stages took; None when neither the stage nor the job has a budget."""
    own = cfg.stage(stage).max_seconds  # type: ignore[union-attr]
    if not cfg.budget_minutes:
        return own, f"{own:.0f} s (its max_seconds)" if own else "no time budget"
    total = cfg.budget_minutes * 60.0
    left = total * (1.0 - EVAL_RESERVE) - spent_seconds
    to_run = [s for s in TRAINED[TRAINED.index(stage):] if cfg.stage(s).enabled]
    share = SHARES[stage] / sum(SHARES[s] for s in to_run)
    cap = max(MIN_STAGE_SECONDS, left * share)
    why = f"{share:.0%} of the {max(left, 0):.0f} s left of the job's {cfg.budget_minutes:g}-minute budget"
    if own is not None and own <= cap:
        return own, f"{own:.0f} s (its max_seconds, within {why})"
    return cap, f"{cap:.0f} s ({why})"


def with_stage_budget(cfg: CurriculumConfig, stage: str, spent_seconds: float) -> tuple[CurriculumConfig, str]:
    """The config with ``stage``'s ``max_seconds`` set to its budget, and the reason to log."""
    seconds, why = stage_seconds(cfg, stage, spent_seconds)
    section = cfg.stage(stage)
    if seconds == section.max_seconds:  # type: ignore[union-attr]
        return cfg, why
    return cfg.model_copy(update={SECTION[stage]: section.model_copy(update={"max_seconds": seconds})}), why


def spend_text(spend: dict | None, caps: dict | None) -> str:
    """``12.3 s of stages (cap 0.5 min) · 0 GPU-s · $0.00 (cap $5)``: a job's or project's spend
    against its caps (dreamforge/jobs/budgets.py), as the CLI and the dashboard show it."""
    spend, caps = spend or {}, caps or {}

    def cap(field: str, fmt: str) -> str:
        return f" (cap {fmt.format(caps[field])})" if caps.get(field) is not None else ""

    return (f"{float(spend.get('seconds') or 0):.1f} s of stages{cap('wall_minutes', '{:g} min')} · "
            f"{float(spend.get('gpu_seconds') or 0):.0f} GPU-s{cap('gpu_seconds', '{:g} GPU-s')} · "
            f"${float(spend.get('usd') or 0):.2f}{cap('usd', '${:g}')}")  # fmt: skip
