"""Did the job learn? A job whose released model is no better than the model it started from, or
that mostly answers outside the output format, must not read as a plain success. It still ends
``succeeded`` (the pipeline ran and the model is there), with ``verdict: did_not_learn``, the
numbers behind it, and the causes the job can check in its own data and schedule, each with the
fix to try.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.structures import Sample

LEARNED, DID_NOT_LEARN = "learned", "did_not_learn"
NOISY_SPLIT = 30  # below this many images a held-out figure moves by several points per image
FEW_STEPS = 200  # domain SFT runs measured on the presets needed 240+ steps to place boxes
# Answers for two different images overlapping this much (box IoU, Hungarian-matched), and this
# much more than their labels do, are one answer given to every image. Measured on the Hubble
# tiles (benchmarks/real_images.py): a model that had not learned gave 0.6-0.9, labels 0.05.
SAME_ANSWER, SAME_ANSWER_MARGIN = 0.5, 0.25
UNFIT = 0.2  # a training-image score under this (IoU-like metrics) is a model that fits nothing
SMALL_PX = 8  # objects whose smaller side the model sees under this many pixels
PAIRS = 400  # image pairs compared for answer sameness: a few ms of Hungarian matching


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


def answer_sameness(preds: list[dict], gts: list[dict], task: str, *, seed: int = 0) -> dict[str, float] | None:
    """How alike the model's answers for different images are, next to how alike their labels
    are: the mean Hungarian-matched box IoU between two images' answers (captions: the share of
    pairs answered identically). None under 3 images."""
    n = len(preds)
    if n < 3 or len(gts) != n:
        return None
    from pipeline.rewards.scores import soft_iou

    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(pairs) > PAIRS:
        pairs = [pairs[k] for k in rng.choice(len(pairs), PAIRS, replace=False)]
    alike = _same_caption if task == "caption" else soft_iou
    return {
        "answers": round(float(np.mean([alike(preds[i], preds[j]) for i, j in pairs])), 4),
        "labels": round(float(np.mean([alike(gts[i], gts[j]) for i, j in pairs])), 4),
        "pairs": len(pairs),
    }


def _same_caption(a: dict, b: dict) -> float:
    return float((a.get("caption") or "") == (b.get("caption") or ""))


def evidence_causes(
    *,
    key: str,
    sameness: dict[str, float] | None,
    fit: dict[str, Any] | None,
    held: dict[str, float],
    object_px: float | None,
    gap_warning: float,
    released: str = "reward",
) -> list[dict[str, str]]:
    """Causes read off what the trained model did, strongest evidence first: the same answer
    for every image, no fit even on its training images, memorised training images, objects
    too small for the model's input. ``fit``: the ``train_fit`` record; ``held``: the held-out
    score of each trained stage; ``object_px``: the median object's smaller side as the
    model sees it; ``released``: the stage whose fit is read when it was scored."""
    causes = []
    if sameness and sameness["answers"] >= SAME_ANSWER and sameness["answers"] - sameness["labels"] >= SAME_ANSWER_MARGIN:
        causes.append(_cause(
            f"the model gives nearly the same answer for every image: its answers for two different images "
            f"overlap by {sameness['answers']:.2f} IoU on average, their labels by {sameness['labels']:.2f}. "
            "It has not learned to look at the images",
            "train longer (domain.max_seconds, domain.patience), add labelled images, or start from a "
            "pretrained model (model: a Hugging Face model id); DreamForge's built-in model starts from random "
            "weights",
        ))  # fmt: skip
    stages = [n for n in (released, "reward", "domain") if fit and n in fit and n in held]
    if stages:
        name = stages[0]
        train_score, held_score = fit[name][key], held[name]
        if train_score < UNFIT:
            causes.append(_cause(
                f"the {name} model scores {train_score:.3f} {key} on {fit['n']} of its own training images, "
                f"{held_score:.3f} held-out: it has not fit even the images it trained on",
                "give it more steps (domain.max_seconds, domain.patience) or objects it can see better (crop "
                "large images into tiles); a pretrained model learns from far fewer steps",
            ))  # fmt: skip
        elif train_score - held_score > gap_warning:
            causes.append(_cause(
                f"the {name} model scores {train_score:.2f} {key} on its training images but {held_score:.2f} "
                "held-out: it memorised them instead of learning what generalises",
                "add labelled images (each new one helps more than more epochs); data.augment: [\"hflip\"] where "
                "mirroring keeps the meaning",
            ))  # fmt: skip
    if object_px is not None and object_px < SMALL_PX:
        causes.append(_cause(
            f"the objects are small: the median box's smaller side is {object_px:.1f} px as the model sees the image",
            "crop the images into tiles so each object spans more pixels, or raise image_size",
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
    evidence: list[dict[str, str]] | None = None,
    min_f1: float = 0.0,
) -> dict[str, Any]:
    """``scores`` holds ``base`` and the released stage, scored on ``split`` (``n`` images).
    ``evidence``: causes read off the trained model (:func:`evidence_causes`), listed first.
    ``min_f1``: the least F1@0.5 of a model that learned, where ``scores`` has one (tasks with
    boxes): a mean IoU can rise well over the base model's with boxes near the objects that
    overlap none of them by half (the nuclei tiles: +0.085 IoU, F1 0.02)."""
    rel, base = scores[released], scores.get("base") or {}
    gain = rel.get(key, 0.0) - base.get(key, 0.0)
    problems = []
    if gain < min_gain:
        problems.append(f"{key} {rel.get(key, 0.0):.3f} on {split} against {base.get(key, 0.0):.3f} for the base "
                        f"model: a gain of {gain:+.3f}, below the {min_gain} that counts as learning")  # fmt: skip
    f1 = rel.get("f1_50")
    if f1 is not None and f1 < min_f1:
        problems.append(f"F1@0.5 {f1:.2f} on {split}: it finds almost none of the objects with a box overlapping "
                        f"them by half (below evaluate.min_f1 {min_f1})")  # fmt: skip
    parse = rel.get("parse_rate")
    unparsed = parse is not None and parse < min_parse_rate
    if unparsed:
        problems.append(f"only {parse:.0%} of answers are in the output format (below {min_parse_rate:.0%})")
    causes: list[dict[str, str]] = []
    if problems:
        if domain_steps is not None and domain_steps < FEW_STEPS:
            causes.append(_cause(f"the domain stage ran {domain_steps} optimizer steps",
                                 f"train longer: raise domain.epochs or domain.min_steps to at least {FEW_STEPS}"))  # fmt: skip
        causes += evidence or []
        # the warm start teaches the format; on real photos it did not help placing boxes (README)
        if unparsed and not warm_started:
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
