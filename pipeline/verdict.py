"""Did the job learn? A job whose released model is no better than the model it started from, or
that mostly answers outside the output format, must not read as a plain success. It still ends
``succeeded`` (the pipeline ran and the model is there), with ``verdict: did_not_learn``, the
numbers behind it, and the causes the job can check in its own data and schedule, each with the
fix to try.
"""

from __future__ import annotations

from typing import Any

from pipeline.structures import Sample

LEARNED, DID_NOT_LEARN = "learned", "did_not_learn"
NOISY_SPLIT = 30  # below this many images a held-out figure moves by several points per image
FEW_STEPS = 200  # domain SFT runs measured on the presets needed 240+ steps to place boxes


def _cause(cause: str, fix: str) -> dict[str, str]:
    return {"cause": cause, "fix": fix}


def label_limits(samples: list[Sample], max_objects: int, num_bins: int) -> list[dict[str, str]]:
    """Labels the model cannot express: more objects than one answer holds, boxes under one bin."""
    causes = []
    over = [s for s in samples if len(s.target.get("boxes") or []) > max_objects]
    if over:
        most = max(len(s.target["boxes"]) for s in over)
        causes.append(_cause(
            f"{len(over)} of {len(samples)} training images hold more than data.max_objects={max_objects} "
            f"objects (up to {most}); the rest cannot be answered",
            f"raise data.max_objects to {most}, or tile large images",
        ))  # fmt: skip
    boxes = [(b, s.width, s.height) for s in samples for b in s.target.get("boxes") or []]
    tiny = [b for b, w, h in boxes if (b[2] - b[0]) < w / num_bins or (b[3] - b[1]) < h / num_bins]
    if boxes and len(tiny) > 0.2 * len(boxes):
        causes.append(_cause(
            f"{len(tiny)} of {len(boxes)} boxes are narrower than one location bin (1/{num_bins} of the image)",
            "raise num_bins, or crop the images into tiles so objects are larger",
        ))  # fmt: skip
    return causes


def learning_verdict(
    *,
    key: str,
    scores: dict[str, dict[str, float]],
    split: str,
    n: int,
    released: str,
    min_gain: float,
    min_parse_rate: float,
    domain_steps: int | None,
    warm_started: bool,
    label_causes: list[dict[str, str]],
) -> dict[str, Any]:
    """``scores`` holds ``base`` and the released stage, scored on ``split`` (``n`` images)."""
    rel, base = scores[released], scores.get("base") or {}
    gain = rel.get(key, 0.0) - base.get(key, 0.0)
    problems = []
    if gain < min_gain:
        problems.append(f"{key} {rel.get(key, 0.0):.3f} on {split} against {base.get(key, 0.0):.3f} for the base "
                        f"model: a gain of {gain:+.3f}, below the {min_gain} that counts as learning")  # fmt: skip
    parse = rel.get("parse_rate")
    if parse is not None and parse < min_parse_rate:
        problems.append(f"only {parse:.0%} of answers are in the output format (below {min_parse_rate:.0%})")
    causes: list[dict[str, str]] = []
    if problems:
        if domain_steps is not None and domain_steps < FEW_STEPS:
            causes.append(_cause(f"the domain stage ran {domain_steps} optimizer steps",
                                 f"train longer: raise domain.epochs or domain.min_steps to at least {FEW_STEPS}"))  # fmt: skip
        if not warm_started:
            causes.append(_cause("the warm-start stage did not run; it teaches the output format",
                                 "run stage 1 (warm_start.enabled: true)"))  # fmt: skip
        causes += label_causes
    if problems and n < NOISY_SPLIT:
        causes.append(small_split(split, n))
    return {
        "verdict": DID_NOT_LEARN if problems else LEARNED,
        "split": split,
        "n": n,
        "gain": round(gain, 4),
        "problems": problems,
        "causes": causes,
    }


def small_split(split: str, n: int) -> dict[str, str]:
    return _cause(f"the {split} split has {n} images: its figures are noise-level",
                  f"add labelled images or raise data.split's share for {split} to reach {NOISY_SPLIT}")  # fmt: skip


def verdict_line(verdict: dict[str, Any]) -> str:
    """One line for logs, commit statuses and summaries."""
    if verdict.get("verdict") != DID_NOT_LEARN:
        return f"learned: {verdict.get('gain', 0):+.3f} over the base model on {verdict.get('split', 'val')}"
    return "did not learn: " + "; ".join(verdict.get("problems") or [])
