"""The per-pair scores of fully labelled answers: soft IoU and F1 (one-to-one Hungarian
matching, so a missed and an extra object cost the same), masks, keypoints (OKS), captions, and
whether an answer is well formed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.geometry import box_area, class_mask, iou_matrix, mask_iou_matrix, match_matrix, oks_matrix
from pipeline.structures import instance_masks

Target = dict[str, Any]


def _soft_match(sim: np.ndarray, n_pred: int, n_gt: int) -> float:
    if n_pred == 0 and n_gt == 0:
        return 1.0
    return sum(s for _, _, s in match_matrix(sim)) / max(n_pred, n_gt)


def _labels(t: Target, n: int) -> list[str]:
    labels = list(t.get("labels") or [])
    return (labels + [""] * n)[:n]


def _restrict(sim: np.ndarray, out: Target, gt: Target, class_aware: bool) -> np.ndarray:
    if not class_aware or sim.size == 0:
        return sim
    n_pred, n_gt = sim.shape
    return np.where(class_mask(_labels(out, n_pred), _labels(gt, n_gt)), sim, 0.0)


def soft_iou(out: Target, gt: Target, class_aware: bool = False) -> float:
    """Hungarian-matched box IoU summed, over ``max(#pred, #gt)``; 1.0 when both are empty.

    >>> gt = {"boxes": [[0, 0, 10, 10], [20, 0, 30, 10]], "labels": ["a", "a"]}
    >>> soft_iou({"boxes": [[0, 0, 10, 10]], "labels": ["a"]}, gt)  # one of two found
    0.5
    >>> soft_iou({"boxes": [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]}, gt)  # one extra
    0.6666666666666666
    """
    p, g = out.get("boxes") or [], gt.get("boxes") or []
    sim = _restrict(iou_matrix(p, g), out, gt, class_aware)
    return _soft_match(sim, len(p), len(g))


def f1_at(out: Target, gt: Target, iou_thr: float = 0.5, class_aware: bool = True) -> float:
    """F1 of one image: a prediction is a true positive when it is matched one-to-one to a
    ground truth of the same label with IoU ≥ ``iou_thr``; 1.0 when both are empty.

    >>> gt = {"boxes": [[0, 0, 10, 10]], "labels": ["cat"]}
    >>> f1_at({"boxes": [[0, 0, 10, 10]], "labels": ["cat"]}, gt)
    1.0
    >>> f1_at({"boxes": [[0, 0, 10, 10]], "labels": ["dog"]}, gt)  # right box, wrong label
    0.0
    """
    return _f1_from_counts(*f1_counts(out, gt, iou_thr, class_aware))


def f1_counts(
    out: Target, gt: Target, iou_thr: float = 0.5, class_aware: bool = True
) -> tuple[int, int, int]:
    """``(true positives, #pred, #gt)`` at ``iou_thr``, for per-image or pooled F1."""
    p, g = out.get("boxes") or [], gt.get("boxes") or []
    sim = _restrict(iou_matrix(p, g), out, gt, class_aware)
    return len(match_matrix(sim, iou_thr)), len(p), len(g)


def _f1_from_counts(tp: int, n_pred: int, n_gt: int) -> float:
    return 1.0 if n_pred + n_gt == 0 else 2.0 * tp / (n_pred + n_gt)


def soft_mask_iou(out: Target, gt: Target, class_aware: bool = False) -> float:
    """Soft F1 on polygon mask IoU, rasterised at the ground truth's image size.

    >>> sq = [0, 0, 10, 0, 10, 10, 0, 10]
    >>> gt = {"masks": [sq], "image": {"width": 32, "height": 32}}
    >>> soft_mask_iou({"masks": [sq]}, gt)
    1.0
    >>> soft_mask_iou({"masks": [[0, 0, 5, 0, 5, 10, 0, 10]]}, gt)  # half the square
    0.5
    """
    p, g = out.get("masks") or [], instance_masks(gt)  # every part of a split object counts
    img = gt.get("image") or {}
    sim = mask_iou_matrix(p, g, int(img.get("width", 0)), int(img.get("height", 0)))
    return _soft_match(_restrict(sim, out, gt, class_aware), len(p), len(g))


def _kp_area(gt: Target, j: int) -> float:
    """OKS scale of ground-truth instance ``j``: its annotated ``area`` (COCO's, the segment's),
    else its box area, else its keypoints' extent."""
    areas = gt.get("areas") or []
    if j < len(areas) and areas[j] > 0:
        return float(areas[j])
    boxes = gt.get("boxes") or []
    if j < len(boxes) and box_area(boxes[j]) > 0:
        return box_area(boxes[j])
    vis = [k for k in gt["keypoints"][j] if len(k) >= 3 and k[2] > 0]
    if not vis:
        return 1.0
    xs, ys = [k[0] for k in vis], [k[1] for k in vis]
    return max((max(xs) - min(xs)) * (max(ys) - min(ys)), 1.0)


def soft_oks(
    out: Target, gt: Target, sigmas: Sequence[float] | None = None, class_aware: bool = False
) -> float:
    """Soft F1 on COCO OKS (scale = the ground truth's annotated area, its box area when it has
    none; sigma 0.05 per keypoint unless given: ``geometry.default_sigmas``).

    >>> gt = {"boxes": [[0, 0, 10, 10]], "keypoints": [[[2, 2, 2], [8, 8, 2]]]}
    >>> soft_oks({"keypoints": [[[2, 2, 2], [8, 8, 2]]]}, gt)
    1.0
    >>> soft_oks({"keypoints": [[[2, 2, 2], [0, 0, 0]]]}, gt)  # one keypoint missed
    0.5
    """
    p, g = out.get("keypoints") or [], gt.get("keypoints") or []
    areas = [_kp_area(gt, j) for j in range(len(g))]
    sim = _restrict(oks_matrix(p, g, areas, sigmas), out, gt, class_aware)
    return _soft_match(sim, len(p), len(g))


def caption_words(text: str) -> list[str]:
    """The words of a caption, lower-cased, without punctuation."""
    return re.findall(r"\w+", str(text).lower())


def caption_f1(out: Target, gt: Target) -> float:
    """Token-level F1 between the caption words (bag of words, as SQuAD's F1); 1.0 when both
    are empty.

    >>> caption_f1({"text": "a red car"}, {"text": "A red car."})
    1.0
    >>> caption_f1({"text": "a red bus"}, {"text": "a red car"})
    0.6666666666666666
    """
    p, g = caption_words(out.get("text", "")), caption_words(gt.get("text", ""))
    if not p and not g:
        return 1.0
    common = sum((Counter(p) & Counter(g)).values())
    return 2.0 * common / (len(p) + len(g))


def target_is_well_formed(out: Target, gt: Target) -> bool:
    """Whether ``out`` is a usable answer for ``gt``'s image: one label per box, boxes with
    positive area inside the image, non-empty labels; for captions, non-empty text.

    >>> img = {"width": 64, "height": 64}
    >>> target_is_well_formed({"boxes": [[0, 0, 8, 8]], "labels": ["a"]}, {"image": img})
    True
    >>> target_is_well_formed({"boxes": [[0, 0, 80, 8]], "labels": ["a"]}, {"image": img})
    False
    """
    boxes, labels = out.get("boxes") or [], out.get("labels") or []
    if not boxes and not gt.get("boxes") and (gt.get("text") or out.get("text")):
        return bool(str(out.get("text", "")).strip())  # a caption
    if len(boxes) != len(labels) or any(not str(lab).strip() for lab in labels):
        return False
    img = gt.get("image") or out.get("image") or {}
    w, h = img.get("width", math.inf), img.get("height", math.inf)
    tol = 1e-6
    for b in boxes:
        if len(b) != 4 or not all(math.isfinite(float(v)) for v in b):
            return False
        x1, y1, x2, y2 = (float(v) for v in b)
        if not (-tol <= x1 < x2 <= w + tol and -tol <= y1 < y2 <= h + tol):
            return False
    return True
