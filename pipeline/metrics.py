"""Dataset-level evaluation of parsed predictions against ground truth.

All inputs are canonical targets in ORIGINAL-image pixels (``pipeline.codec.Codec.decode``
gives them for model text). Per task:

* detect: ``mean_iou`` (mean over images of the ``iou`` reward), ``map50`` (COCO mAP at IoU
  0.5, pycocotools), ``f1_50`` (pooled over the dataset: 2·TP / (#pred + #gt), class-aware),
  ``parse_rate``, ``mean_count_error`` (mean |#pred − #gt| per image);
* segment: the detect metrics plus ``mask_iou`` (mean of the ``mask_iou`` reward);
* keypoints: the detect metrics plus ``oks`` (mean of the ``oks`` reward);
* caption: ``caption_f1`` (mean of the ``caption`` reward), ``accuracy`` (the share of captions
  that match exactly, ignoring case, punctuation and spacing), ``parse_rate``.

Tasks with objects also report ``label_accuracy``: of the objects found (a prediction matched
one-to-one to a ground truth at IoU ≥ 0.5, whatever its label), the share labelled right; absent
when nothing was found.

Every task with objects also reports COCO's standard metrics through COCOeval
(``pipeline.coco_eval``): ``ap`` (box AP@[.5:.95]) and ``ap50`` (= ``map50``), ``mask_ap`` /
``mask_ap50`` for segment (every part of a split mask), ``kp_ap`` / ``kp_ap50`` for keypoints
(OKS with the annotation's area), and ``ap_per_class``: ``[{"label", "ap", "ap50", ...}]``.

Tasks with objects also report ``confusion_matrix`` (:func:`confusion_matrix`): ground-truth
label against predicted label for predictions matched one-to-one at box IoU ≥ 0.5, with a
``background`` row (predictions matching nothing) and column (objects nothing found).

Detections on crowd regions are left out of every metric (``without_crowd_hits``; COCOeval
is given the regions as ``iscrowd`` ground truth and does the same).

mAP without confidences: a VLM's answer has no scores, so every prediction gets score 1.0.
pycocotools sorts detections with a stable sort, so ties keep the input order: images in
dataset order, objects in the order the model emitted them (reading order). The precision–
recall curve therefore has a single operating point per category, and mAP@0.5 is 1.0 only
when every object is found with no extra. Categories with no ground truth are left out of
the mean (COCO's rule); predictions with labels outside ``categories`` are false positives
in ``f1_50`` and ignored by the AP metrics (they have no category to be evaluated in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.coco_eval import standard_metrics
from pipeline.geometry import default_sigmas, iou_matrix, match_matrix
from pipeline.rewards.base import without_crowd_hits
from pipeline.rewards.builtin import (
    caption_f1,
    caption_words,
    f1_counts,
    soft_iou,
    soft_mask_iou,
    soft_oks,
)
from pipeline.structures import TASKS

Target = dict[str, Any]

PRIMARY_METRIC = {
    "detect": "mean_iou",
    "segment": "mask_iou",
    "keypoints": "oks",
    "caption": "caption_f1",
}


def primary_metric(task: str) -> str:
    """The metric a run is judged (and checkpoints chosen) by, for ``task``."""
    if task not in PRIMARY_METRIC:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return PRIMARY_METRIC[task]


def evaluate(
    preds: list[Target],
    gts: list[Target],
    parsed: list[bool],
    task: str,
    categories: list[str],
    sigmas: Sequence[float] | None = None,
    keypoint_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of ``preds[i]`` against ``gts[i]`` (see the module docstring).

    ``sigmas`` are the OKS sigmas per keypoint; by default ``geometry.default_sigmas`` of
    ``keypoint_names`` (COCO's for its person skeleton, else 0.05 each).

    >>> gt = {"boxes": [[0, 0, 8, 8]], "labels": ["a"], "image": {"width": 16, "height": 16}}
    >>> m = evaluate([gt], [gt], [True], "detect", ["a"])
    >>> m["mean_iou"], m["map50"], m["f1_50"], m["parse_rate"], m["mean_count_error"]
    (1.0, 1.0, 1.0, 1.0, 0.0)
    """
    if task not in PRIMARY_METRIC:
        raise ValueError(f"evaluate: unknown task {task!r}; use one of {', '.join(TASKS)}")
    if not (len(preds) == len(gts) == len(parsed)):
        raise ValueError(
            f"evaluate: {len(preds)} predictions, {len(gts)} ground truths and {len(parsed)} "
            "parsed flags; pass one of each per image"
        )
    if not gts:
        raise ValueError("evaluate: no images to evaluate")
    parse_rate = float(np.mean([bool(p) for p in parsed]))
    if sigmas is None:
        sigmas = default_sigmas(keypoint_names)
    if task == "caption":
        return {
            "caption_f1": _mean(caption_f1(p, g) for p, g in zip(preds, gts, strict=True)),
            "accuracy": _mean(caption_words(p.get("text", "")) == caption_words(g.get("text", ""))
                              for p, g in zip(preds, gts, strict=True)),  # fmt: skip
            "parse_rate": parse_rate,
        }
    raw_preds = preds
    preds = [without_crowd_hits(p, g) for p, g in zip(preds, gts, strict=True)]
    tp = n_pred = n_gt = 0
    for p, g in zip(preds, gts, strict=True):
        t, a, b = f1_counts(p, g, 0.5, class_aware=True)
        tp, n_pred, n_gt = tp + t, n_pred + a, n_gt + b
    out = {
        "mean_iou": _mean(soft_iou(p, g) for p, g in zip(preds, gts, strict=True)),
        "f1_50": 1.0 if n_pred + n_gt == 0 else 2.0 * tp / (n_pred + n_gt),
        "parse_rate": parse_rate,
        "mean_count_error": _mean(
            abs(len(p.get("boxes") or []) - len(g.get("boxes") or []))
            for p, g in zip(preds, gts, strict=True)
        ),
    }
    out["confusion_matrix"] = confusion_matrix(preds, gts, categories)
    accuracy = label_accuracy(preds, gts)
    if accuracy is not None:
        out["label_accuracy"] = accuracy
    if task == "segment":
        out["mask_iou"] = _mean(soft_mask_iou(p, g) for p, g in zip(preds, gts, strict=True))
    elif task == "keypoints":
        out["oks"] = _mean(soft_oks(p, g, sigmas) for p, g in zip(preds, gts, strict=True))
    standard = standard_metrics(raw_preds, gts, categories, task, sigmas)  # COCOeval ignores crowd hits itself
    out["map50"] = standard["ap50"]  # box mAP@0.5, the same COCOeval run
    out.update(standard)
    return out


def label_accuracy(preds: list[Target], gts: list[Target], iou_thr: float = 0.5) -> float | None:
    """Of the objects found, the share labelled right: predictions are matched one-to-one to
    ground truths by box IoU whatever their labels (Hungarian, as the rewards match), pairs
    under ``iou_thr`` do not count; None when no pair reaches it.

    >>> gt = {"boxes": [[0, 0, 8, 8], [10, 0, 18, 8]], "labels": ["a", "b"]}
    >>> label_accuracy([{"boxes": [[0, 0, 8, 8], [10, 0, 18, 8]], "labels": ["a", "a"]}], [gt])
    0.5
    """
    found = right = 0
    for p, g in zip(preds, gts, strict=True):
        pb, gb = p.get("boxes") or [], g.get("boxes") or []
        if not pb or not gb:
            continue
        pl, gl = list(p.get("labels") or []), list(g.get("labels") or [])
        for i, j, _ in match_matrix(iou_matrix(pb, gb), iou_thr):
            found += 1
            right += i < len(pl) and j < len(gl) and pl[i] == gl[j]
    return right / found if found else None


BACKGROUND = "background"  # the confusion matrix's row and column for "no object"
OTHER = "(other)"  # its column for predicted labels that are not categories


def confusion_matrix(
    preds: list[Target], gts: list[Target], categories: Sequence[str], iou_thr: float = 0.5
) -> dict[str, Any]:
    """Per-class confusion, pooled over images: ``matrix[i][j]`` counts objects whose true
    label is ``labels[i]`` and predicted label ``labels[j]``.

    Predictions are matched to ground truth one-to-one by box IoU whatever their labels
    (Hungarian, ``scipy.optimize.linear_sum_assignment``, as ``label_accuracy``), pairs under
    ``iou_thr`` left unmatched. An unmatched prediction counts in the ``background`` row (a
    false positive), an unmatched object in the ``background`` column (a miss). The
    background-to-background cell is always 0 (nothing to count). A predicted label that is
    no category counts in an ``(other)`` column, present only when needed.

    >>> gt = {"boxes": [[0, 0, 8, 8], [10, 0, 18, 8]], "labels": ["a", "b"]}
    >>> pred = {"boxes": [[0, 0, 8, 8], [10, 0, 18, 8], [30, 30, 40, 40]], "labels": ["a", "a", "b"]}
    >>> cm = confusion_matrix([pred], [gt], ["a", "b"])
    >>> cm["labels"], cm["matrix"]
    (['a', 'b', 'background'], [[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    """
    names = list(categories)
    index = {name: i for i, name in enumerate(names)}
    pairs: list[tuple[str, str]] = []  # (true, predicted)
    for p, g in zip(preds, gts, strict=True):
        pb, gb = p.get("boxes") or [], g.get("boxes") or []
        pl = ([str(x) for x in p.get("labels") or []] + [""] * len(pb))[: len(pb)]
        gl = ([str(x) for x in g.get("labels") or []] + [""] * len(gb))[: len(gb)]
        matched = match_matrix(iou_matrix(pb, gb), iou_thr) if pb and gb else []
        pairs += [(gl[j], pl[i]) for i, j, _ in matched]
        pairs += [(BACKGROUND, pl[i]) for i in sorted(set(range(len(pb))) - {i for i, _, _ in matched})]
        pairs += [(gl[j], BACKGROUND) for j in sorted(set(range(len(gb))) - {j for _, j, _ in matched})]
    extra = [OTHER] if any(x not in index and x != BACKGROUND for pair in pairs for x in pair) else []
    labels = names + extra + [BACKGROUND]
    at = {name: i for i, name in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for true, pred in pairs:
        matrix[at.get(true, at.get(OTHER, 0))][at.get(pred, at.get(OTHER, 0))] += 1
    return {"labels": labels, "matrix": matrix, "rows": "ground truth", "columns": "prediction", "iou": iou_thr}


def _mean(values: Any) -> float:
    return float(np.mean(list(values)))
