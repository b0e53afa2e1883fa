"""Rewards of weakly labelled images: clicks (``points``, with a box-size prior learnt from the
boxed images) and per-category counts (``count``), each paying a share for a well-formed answer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.config import REWARD_SCOPES
from pipeline.rewards.base import parsed_flags
from pipeline.rewards.labelled import _PairReward
from pipeline.rewards.scores import Target, _labels, _soft_match, target_is_well_formed

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
        flags = parsed_flags(self.name, outs, gts, parsed)
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
