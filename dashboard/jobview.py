"""What the job page computes from a job and its metric points: curves, thinning, timings."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dashboard import ui

# Points drawn per curve: a browser draws 5,000-point lines fine, but the spec travels on every
# refresh, so long runs are thinned evenly (first and last points kept).
MAX_CHART_POINTS = 2000


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def timing(job: dict[str, Any], final: Collection[str]) -> tuple[float | None, float | None]:
    """(elapsed, remaining estimate) in seconds; the estimate extrapolates the overall progress.
    ``final``: the statuses of a finished job (``GET /api/meta``)."""
    starts = [ui.parse_time(s.get("started_at")) for s in job["stages"].values() if s.get("started_at")]
    if not starts:
        return None, None
    end = ui.parse_time(job.get("finished_at")) or datetime.now(UTC)
    elapsed = (end - min(starts)).total_seconds()
    p = float(job.get("progress") or 0)
    if job["status"] in final:
        return elapsed, 0.0
    return elapsed, (elapsed * (100 - p) / p if p > 0 else None)


def thin(df: pd.DataFrame, n: int = MAX_CHART_POINTS) -> pd.DataFrame:
    if len(df) <= n:
        return df
    step = len(df) / n
    idx = sorted({int(i * step) for i in range(n)} | {len(df) - 1})
    return df.iloc[idx]


def validation_names(points: list[dict[str, Any]]) -> tuple[str, ...]:
    """The validation score a stage reports (``val_<its primary metric>``; the RL watch's too)."""
    side = ("val_parse_rate", "val_boxes_per_image")  # reported beside the score, on another scale
    return tuple(sorted({k for p in points for k in p["values"] if k.startswith("val_") and k not in side}))


def curves(points: list[dict[str, Any]], names: tuple[str, ...]) -> pd.DataFrame:
    """Long table (stage, step, metric, value) of the first of ``names`` each point carries.
    A stage's end-of-training summary (it carries ``train_runtime``) is drawn only when the stage
    logged no step of its own, as a tiny run does."""
    rows, summaries = [], []
    for p in points:
        for k in names:
            v = p["values"].get(k)
            if v is not None:
                row = {"stage": p["stage"], "step": p["step"], "metric": k, "value": v}
                (summaries if "train_runtime" in p["values"] else rows).append(row)
                break
    stepped = {r["stage"] for r in rows}
    rows += [r for r in summaries if r["stage"] not in stepped]
    return pd.DataFrame(rows, columns=["stage", "step", "metric", "value"])
