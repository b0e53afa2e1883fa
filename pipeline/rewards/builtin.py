"""Built-in rewards: one per-pair function each, a picklable class around it, one registry.

Every matching reward is *soft F1*: predictions and ground truths are matched one-to-one
(Hungarian, maximising the total similarity) and the matched similarities are summed and
divided by ``max(len(pred), len(gt))``, so a missed object and an extra object cost the
same. Without that denominator a model learns to spray boxes (see
``tests/test_rewards.py::test_spraying_boxes_games_an_unpenalised_reward_but_not_iou_or_f1``).
Rewards are continuous where the task allows: a 0/1 reward leaves GRPO groups with no
variance, hence no gradient (FACTS.md, "Does it learn").

Each reward declares the ``label_kinds`` of the images it can score (``pipeline.structures``):
box, mask and keypoint rewards need full annotations; ``points`` scores against clicks and
``count`` against per-category counts, so stage 3 can train on images nobody boxed. A reward
limited to some tasks declares ``tasks``; the config refuses it for the others. Both come
from ``pipeline.config.REWARD_SCOPES``, which the config checks without importing this module.

The registry's names are the metric keys TRL logs (``rewards/<name>``); a test pins them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import BOXED, REWARD_SCOPES
from pipeline.geometry import (
    box_area,
    class_mask,
    iou_matrix,
    mask_iou_matrix,
    match_matrix,
    oks_matrix,
)
from pipeline.rewards.base import Reward, RewardError
from pipeline.structures import KIND_WORDS, WEAK_TASKS, Dataset, instance_masks

if TYPE_CHECKING:
    from pipeline.reporter import Reporter

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


class _PairReward:
    """A reward computed pair by pair from a module-level function (picklable)."""

    name = ""
    tasks, label_kinds = BOXED  # what it can score (pipeline.config.REWARD_SCOPES)

    def __init__(self, **params: Any) -> None:
        self.params = params

    def pair(self, out: Target, gt: Target) -> float:
        raise NotImplementedError

    def score(self, outs: list[Target], gts: list[Target]) -> list[float]:
        if len(outs) != len(gts):
            raise RewardError(self.name, None, f"{len(outs)} outputs but {len(gts)} gts")
        return [self.pair(o, g) for o, g in zip(outs, gts, strict=True)]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class IoUReward(_PairReward):
    """``"iou"``: :func:`soft_iou` (class-agnostic unless ``class_aware=True``).

    >>> IoUReward().score([{"boxes": [[0, 0, 4, 4]]}], [{"boxes": [[0, 0, 4, 2]]}])
    [0.5]
    """

    name = "iou"

    def __init__(self, class_aware: bool = False) -> None:
        super().__init__(class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return soft_iou(out, gt, **self.params)


class F1Reward(_PairReward):
    """``"f1"``: :func:`f1_at` at IoU 0.5, class-aware.

    >>> F1Reward().score([{"boxes": [[0, 0, 4, 4]], "labels": ["a"]}],
    ...                  [{"boxes": [[0, 0, 4, 3]], "labels": ["a"]}])
    [1.0]
    """

    name = "f1"

    def __init__(self, iou_thr: float = 0.5, class_aware: bool = True) -> None:
        super().__init__(iou_thr=iou_thr, class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return f1_at(out, gt, **self.params)


class MaskIoUReward(_PairReward):
    """``"mask_iou"``: :func:`soft_mask_iou`.

    >>> sq = [0, 0, 4, 0, 4, 4, 0, 4]
    >>> gt = {"masks": [sq], "image": {"width": 8, "height": 8}}
    >>> MaskIoUReward().score([{"masks": [sq]}, {"masks": []}], [gt, gt])
    [1.0, 0.0]
    """

    name = "mask_iou"

    def __init__(self, class_aware: bool = False) -> None:
        super().__init__(class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return soft_mask_iou(out, gt, **self.params)


class OKSReward(_PairReward):
    """``"oks"``: :func:`soft_oks`.

    >>> gt = {"boxes": [[0, 0, 10, 10]], "keypoints": [[[5, 5, 2]]]}
    >>> OKSReward().score([{"keypoints": [[[5, 5, 2]]]}, {"keypoints": []}], [gt, gt])
    [1.0, 0.0]
    """

    name = "oks"

    def __init__(self, sigmas: Sequence[float] | None = None, class_aware: bool = False) -> None:
        super().__init__(sigmas=sigmas, class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return soft_oks(out, gt, **self.params)


class FormatReward(_PairReward):
    """``"format"``: 1.0 if the text parsed cleanly under the codec's grammar (the ``parsed``
    flags of ``Codec.decode``, passed by ``as_trl_reward``) and the target is well formed
    (:func:`target_is_well_formed`), else 0.0. Binary: use it next to a continuous reward.

    >>> gt = {"image": {"width": 8, "height": 8}}
    >>> FormatReward().score([{"boxes": [[0, 0, 4, 4]], "labels": ["a"]}] * 2, [gt, gt],
    ...                      parsed=[True, False])
    [1.0, 0.0]
    """

    name = "format"
    needs_parsed = True

    def score(
        self, outs: list[Target], gts: list[Target], parsed: list[bool] | None = None
    ) -> list[float]:
        if len(outs) != len(gts) or (parsed is not None and len(parsed) != len(outs)):
            raise RewardError(self.name, None, "outs, gts and parsed differ in length")
        flags = parsed if parsed is not None else [True] * len(outs)
        return [
            float(bool(ok) and target_is_well_formed(o, g))
            for o, g, ok in zip(outs, gts, flags, strict=True)
        ]


class CaptionReward(_PairReward):
    """``"caption"``: :func:`caption_f1`.

    >>> CaptionReward().score([{"text": "two cats"}], [{"text": "two dogs"}])
    [0.5]
    """

    name = "caption"

    def pair(self, out: Target, gt: Target) -> float:
        return caption_f1(out, gt)

# -- weak-label rewards -------------------------------------------------------------------

FORMAT_WEIGHT = 0.1  # the share of a weak reward paid for a well-formed answer
CENTRE_WEIGHT = 0.3  # a click on a box's edge scores 0.7 of one at its centre
SIZE_MARGIN = 0.15  # log units (~16%) either side of the sizes seen in the boxed images
SIZE_SIGMA = 0.3  # log units: a box twice the largest size seen scores ~0.07
MIN_PRIOR_BOXES = 3  # fewer boxes of a category than this: its size comes from all categories
FALLBACK_AREA = 0.5  # without a prior, the image area that all the clicked objects may share


def with_format(task_score: float, parsed: bool, well_formed: bool) -> float:
    """A weak reward combined with the format reward: text that did not parse scores 0, so
    every parsed answer (at least ``FORMAT_WEIGHT / 2``) beats every unparsed one; a parsed
    answer earns ``FORMAT_WEIGHT`` when well formed (half when not) plus the rest of the scale
    times ``task_score``.

    >>> with_format(1.0, True, True), with_format(0.0, True, True), with_format(1.0, False, True)
    (1.0, 0.1, 0.0)
    """
    if not parsed:
        return 0.0
    return FORMAT_WEIGHT * (1.0 if well_formed else 0.5) + (1.0 - FORMAT_WEIGHT) * task_score


def clicks(gt: Target) -> tuple[list[list[float]], list[str]]:
    """The clicks of ``gt`` and their categories ("" when a click has none): its points, or
    for a fully labelled image without points, the centres of its boxes."""
    pts = gt.get("points") or []
    if pts:
        labels = [str(x or "") for x in gt.get("point_labels") or []]
        return [[float(p[0]), float(p[1])] for p in pts], (labels + [""] * len(pts))[: len(pts)]
    boxes = gt.get("boxes") or []
    return [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes], _labels(gt, len(boxes))


def _size_range(sizes: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    a = np.asarray(sizes, dtype=np.float64)
    lo, hi = np.quantile(a, 0.05, axis=0) - SIZE_MARGIN, np.quantile(a, 0.95, axis=0) + SIZE_MARGIN
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def size_prior(samples: Sequence[Any]) -> dict[str | None, tuple[float, float, float, float]]:
    """The box sizes seen in fully labelled samples (``Sample`` or bare targets), per category
    and overall (key None): ``(lo_w, hi_w, lo_h, hi_h)`` in log fractions of the image side."""
    sizes: dict[str | None, list[tuple[float, float]]] = {}
    for s in samples:
        if getattr(s, "label_kind", "full") != "full":
            continue
        t = getattr(s, "target", s)
        img = t.get("image") or {}
        w, h = float(img.get("width") or 0), float(img.get("height") or 0)
        boxes = t.get("boxes") or []
        for b, lab in zip(boxes, _labels(t, len(boxes)), strict=True):
            bw, bh = b[2] - b[0], b[3] - b[1]
            if w > 0 and h > 0 and bw > 0 and bh > 0:
                v = (math.log(bw / w), math.log(bh / h))
                sizes.setdefault(lab, []).append(v)
                sizes.setdefault(None, []).append(v)
    return {k: _size_range(v) for k, v in sizes.items() if k is None or len(v) >= MIN_PRIOR_BOXES}


def size_fit(box: Sequence[float], label: str, width: float, height: float, n_clicks: int,
             prior: dict[str | None, tuple[float, float, float, float]] | None) -> float:  # fmt: skip
    """1.0 for a box of a size the boxed images show for ``label`` (or for any category),
    falling off outside that range on a log scale. Without a prior: 1.0 up to an equal share
    of ``FALLBACK_AREA`` of the image per click, less beyond it."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw <= 0 or bh <= 0 or width <= 0 or height <= 0:
        return 0.0
    rng = (prior or {}).get(label) or (prior or {}).get(None)
    if rng is None:
        limit = FALLBACK_AREA / max(n_clicks, 1)
        return min(1.0, limit / (bw * bh / (width * height)))
    lw, hw, lh, hh = rng
    x, y = math.log(bw / width), math.log(bh / height)
    zw, zh = max(lw - x, x - hw, 0.0), max(lh - y, y - hh, 0.0)
    return math.exp(-(zw * zw + zh * zh) / (2 * SIZE_SIGMA**2))


def points_f1(out: Target, gt: Target, prior: dict | None = None) -> float:
    """Soft F1 of boxes against clicks: a box and a click match when the click lies in the box
    (and, when the click has a category, the box carries it). A matched pair scores the box's
    size fit (:func:`size_fit`), times how central the click is, divided by the number of
    clicks the box covers: a box around two objects earns half, a whole-image box almost
    nothing. Summed over a one-to-one matching, over ``max(#boxes, #clicks)``; 1.0 when both
    are empty.

    >>> gt = {"points": [[5, 5], [25, 5]], "point_labels": ["a", "a"], "image": {"width": 40, "height": 40}}
    >>> points_f1({"boxes": [[0, 0, 10, 10], [20, 0, 30, 10]], "labels": ["a", "a"]}, gt)
    1.0
    >>> round(points_f1({"boxes": [[0, 0, 30, 10]], "labels": ["a"]}, gt), 3)  # one box, both clicks
    0.217
    """
    pts, plabs = clicks(gt)
    boxes = out.get("boxes") or []
    if not boxes or not pts:
        return 1.0 if not boxes and not pts else 0.0
    img = gt.get("image") or out.get("image") or {}
    w, h = float(img.get("width") or 0), float(img.get("height") or 0)
    blabs = _labels(out, len(boxes))
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    px, py = p[None, :, 0], p[None, :, 1]
    x1, y1, x2, y2 = (b[:, k : k + 1] for k in range(4))
    inside = (px >= x1) & (px < x2) & (py >= y1) & (py < y2)
    same = np.array([[not pl or pl == bl for pl in plabs] for bl in blabs], dtype=bool)
    cover = inside & same
    covered = np.maximum(cover.sum(axis=1, keepdims=True), 1)
    half_w, half_h = np.maximum((x2 - x1) / 2, 1e-9), np.maximum((y2 - y1) / 2, 1e-9)
    r = np.clip(np.maximum(np.abs(px - (x1 + x2) / 2) / half_w, np.abs(py - (y1 + y2) / 2) / half_h), 0, 1)
    fit = np.array([[size_fit(bx, lab, w, h, len(pts), prior)] for bx, lab in zip(boxes, blabs, strict=True)])
    sim = np.where(cover, (1.0 - CENTRE_WEIGHT * r**2) * fit / covered, 0.0)
    return _soft_match(sim, len(boxes), len(pts))


def gt_counts(gt: Target) -> dict[str, int]:
    """Objects per category of ``gt``: its ``counts``, else counted from its labels or its
    clicks' categories ("" for clicks without one)."""
    if gt.get("counts"):
        return {str(k): int(v) for k, v in gt["counts"].items() if v and v > 0}
    boxes = gt.get("boxes") or []
    if boxes:
        return dict(Counter(_labels(gt, len(boxes))))
    return dict(Counter(clicks(gt)[1]))


def _closeness(a: int, b: int) -> float:
    return min(a, b) / max(a, b) if max(a, b) else 1.0


def count_match(out: Target, gt: Target) -> float:
    """Per-category count closeness ``min(pred, gt) / max(pred, gt)``, averaged over every
    category either side names; 1.0 when both are empty. Objects counted without a category
    ("" in the counts) are compared with the predictions of the categories the counts do not
    name.

    >>> count_match({"labels": ["a", "a", "b"]}, {"counts": {"a": 2, "b": 2}})
    0.75
    >>> count_match({"labels": ["a"] * 20}, {"counts": {"a": 2}})  # spraying
    0.1
    """
    g = gt_counts(gt)
    pred = Counter(_labels(out, max(len(out.get("boxes") or []), len(out.get("labels") or []))))
    anonymous = g.pop("", 0)
    if anonymous:
        rest = sum(v for k, v in pred.items() if k not in g)
        scores = [_closeness(pred.get(c, 0), n) for c, n in g.items()] + [_closeness(rest, anonymous)]
    else:
        scores = [_closeness(pred.get(c, 0), g.get(c, 0)) for c in set(g) | set(pred)]
    return sum(scores) / len(scores) if scores else 1.0


class _WeakReward(_PairReward):
    """A weak-label reward, combined with the format reward (:func:`with_format`)."""

    needs_parsed = True

    def score(
        self, outs: list[Target], gts: list[Target], parsed: list[bool] | None = None
    ) -> list[float]:
        if len(outs) != len(gts) or (parsed is not None and len(parsed) != len(outs)):
            raise RewardError(self.name, None, "outs, gts and parsed differ in length")
        flags = parsed if parsed is not None else [True] * len(outs)
        return [
            with_format(self.pair(o, g), True, target_is_well_formed(o, g)) if ok else 0.0
            for o, g, ok in zip(outs, gts, flags, strict=True)
        ]


class PointsReward(_WeakReward):
    """``"points"``: :func:`points_f1` with the format reward. Before training, ``prepare``
    learns the box sizes of the fully labelled training images (:func:`size_prior`), so tight
    boxes of a plausible size beat huge ones.

    >>> gt = {"points": [[5, 5]], "point_labels": [""], "image": {"width": 40, "height": 40}}
    >>> PointsReward().score([{"boxes": [[0, 0, 10, 10]], "labels": ["a"]}] * 2, [gt, gt], parsed=[True, False])
    [1.0, 0.0]
    """

    name = "points"
    tasks, label_kinds = REWARD_SCOPES["points"]

    def __init__(self) -> None:
        super().__init__()
        self.prior: dict[str | None, tuple[float, float, float, float]] = {}

    def prepare(self, samples: Sequence[Any]) -> None:
        """Learn the size prior from fully labelled samples (``Sample`` or bare targets)."""
        self.prior = size_prior(samples)

    def pair(self, out: Target, gt: Target) -> float:
        return points_f1(out, gt, self.prior)


class CountReward(_WeakReward):
    """``"count"``: :func:`count_match` with the format reward.

    >>> CountReward().score([{"boxes": [[0, 0, 4, 4]], "labels": ["a"]}, {}], [{"counts": {"a": 1}}] * 2)
    [1.0, 0.1]
    """

    name = "count"
    tasks, label_kinds = REWARD_SCOPES["count"]

    def pair(self, out: Target, gt: Target) -> float:
        return count_match(out, gt)


BUILTIN_REWARDS: dict[str, Callable[..., Reward]] = {
    "iou": IoUReward,
    "f1": F1Reward,
    "mask_iou": MaskIoUReward,
    "oks": OKSReward,
    "format": FormatReward,
    "caption": CaptionReward,
    "points": PointsReward,
    "count": CountReward,
}

DEFAULT_REWARD: dict[str, str] = {
    "detect": "iou",
    "segment": "mask_iou",
    "keypoints": "oks",
    "caption": "caption",
}


def get_reward(name: str, **params: Any) -> Reward:
    """A built-in reward by name, e.g. ``get_reward("f1", iou_thr=0.75)``.

    >>> get_reward("iou").name
    'iou'
    """
    try:
        factory = BUILTIN_REWARDS[name]
    except KeyError:
        raise ValueError(
            f"unknown reward {name!r}; built-in rewards are: {', '.join(BUILTIN_REWARDS)}"
        ) from None
    return factory(**params)


def default_reward(task: str, domain: Dataset | None = None, reporter: Reporter | None = None) -> str:
    """The reward ``"default"`` stands for: the task's own (``DEFAULT_REWARD``), or, when the
    training split holds clicked or counted images, the weak reward that can score them too
    (``points``, else ``count``), so stage 3 learns from every label the user has."""
    name = DEFAULT_REWARD[task]
    if domain is None or task not in WEAK_TASKS:
        return name
    train = domain.splits.get("train") or []
    for kind, weak in (("points", "points"), ("counts", "count")):
        n = sum(s.label_kind == kind for s in train)
        if n:
            if reporter is not None:
                reporter.log(f"reward: default is {weak}, which scores the {n} {KIND_WORDS[kind]} training images "
                             f"as well as the boxed ones (set reward to {name} to train stage 3 on boxed images only)")  # fmt: skip
            return weak
    return name
