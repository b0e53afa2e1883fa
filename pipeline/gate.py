"""Preview gates: is a branch's model better than the released model of the repository's default branch?

Defined once here, below the service, because three places read it: the curriculum config (a
project may set its gate in the default branch's ``dreamforge.config.json``), the evaluate stage
(which scores the base branch's model on the same held-out images as the branch's) and the
service (the commit status, the PR comment, the API and CLI). Imports nothing heavy: the
GitHub Action reads it too.

The comparison is fair only on the same images: :func:`split_fingerprint` names a held-out
set by its content, so a base model scored on another set (a different dataset, split or
``evaluate.max_samples``) is scored again on the branch's (``pipeline.stages.evaluate``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Metrics where less is better; every other metric DreamForge reports grows with quality.
LOWER_IS_BETTER = frozenset({"mean_count_error"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class GateConfig(_Strict):
    """When a branch's preview passes: its released model against the default branch's, on the same
    held-out images. The same fields are the project's setting (``PUT /api/gate``,
    ``dreamforge gate``) and the ``gate`` section of the default branch's config; the project's wins."""

    enabled: bool = Field(True, description="Compare branch previews with the default branch's released model.")
    metric: str | None = Field(
        None, max_length=100,
        description="Held-out metric compared (mean_iou, f1_50, map50, reward_score …); default: the task's primary metric.",
    )  # fmt: skip
    margin: float = Field(
        0.0, ge=-1e6, le=1e6,
        description="The branch passes when it beats the base by at least this much (0: at least as good).",
    )  # fmt: skip
    tolerance: float | None = Field(
        None, ge=0, le=1e6,
        description="When set, the branch also passes when it is at most this much worse than the base.",
    )  # fmt: skip
    branch: str | None = Field(
        None, max_length=255, description="The base branch; default: the repository's default branch (main when unknown)."
    )


class BaselineModel(_Strict):
    """The base branch's released model, as the service hands it to the evaluate stage of a branch's job."""

    name: str = Field(..., max_length=300, description="How tables show it: main@abc1234.")
    model: str = Field(..., max_length=4096, description="Folder of its released 16-bit model (with its codec).")
    job_id: str | None = Field(None, max_length=100)
    sha: str | None = Field(None, max_length=64)
    split_fingerprint: str | None = Field(None, max_length=64, description="The held-out set its metrics were computed on.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Its held-out metrics on that set.")


def split_fingerprint(samples: Iterable[Any], split: str) -> str:
    """A short hash of a held-out set's content: each image's name, size and ground truth, in
    order. Equal fingerprints mean the same images scored against the same labels."""
    h = hashlib.sha256(split.encode())
    for s in samples:
        h.update(json.dumps([s.file_name, s.width, s.height, s.target], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def decide(gate: GateConfig, key: str, value: float, base_value: float, base_name: str) -> dict[str, Any]:
    """The gate's verdict: ``passed`` when the branch gains at least ``margin`` (or loses at most
    ``tolerance``) on ``key``; ``text`` is what the commit status says."""
    sign = -1.0 if key in LOWER_IS_BETTER else 1.0
    delta = value - base_value
    need = -gate.tolerance if gate.tolerance is not None else gate.margin
    passed = sign * delta >= need - 1e-9
    text = f"{key} {value:.3f}, {delta:+.3f} vs {base_name}"
    if not passed:
        text += f" (needs {'≤' if sign < 0 else '≥'} {sign * need:+.3f})"
    return {"metric": key, "value": round(value, 6), "base_value": round(base_value, 6), "delta": round(delta, 6),
            "margin": gate.margin, "tolerance": gate.tolerance, "passed": passed, "base": base_name, "text": text}  # fmt: skip
