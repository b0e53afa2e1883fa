"""Geometry with one convention, used by the codec, the rewards and the metrics.

Boxes are ``[x1, y1, x2, y2]`` in ORIGINAL-image pixels, half-open: ``x2`` is the first
column outside the box, so ``area = (x2 - x1) * (y2 - y1)`` and a box against itself has IoU
exactly 1.0. Boxes with zero or negative area score 0.0 against anything (no division by
zero). Polygons are flat ``[x1, y1, x2, y2, ...]`` lists in the same pixel space; they are
rasterised with pycocotools, whose polygon vertices are pixel *edges* (the polygon
``[0,0, 10,0, 10,10, 0,10]`` covers exactly the 100 pixels of the box ``[0, 0, 10, 10]``).

VLM-R1's ``iou()`` mixed inclusive and exclusive corners (a box against itself scored < 1)
and divided by zero on degenerate boxes; ``tests/test_rewards.py`` pins both cases here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

# COCO person keypoint sigmas (cocoapi PythonAPI/pycocotools/cocoeval.py, computeOks), in
# the order of COCO_PERSON_KEYPOINTS. Other skeletons get DEFAULT_SIGMA per keypoint.
COCO_PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_PERSON_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107,
    0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
DEFAULT_SIGMA = 0.05


def box_area(box: Sequence[float]) -> float:
    """Area of a half-open xyxy box; 0.0 for degenerate (inverted or empty) boxes."""
    w = box[2] - box[0]
    h = box[3] - box[1]
    return float(w * h) if w > 0 and h > 0 else 0.0


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two half-open xyxy boxes; 0.0 when either has no area.

    >>> box_iou([0, 0, 10, 10], [0, 0, 10, 10])
    1.0
    >>> box_iou([0, 0, 10, 10], [5, 0, 15, 10])  # 50 / 150
    0.3333333333333333
    >>> box_iou([3, 3, 3, 9], [0, 0, 10, 10])  # zero width
    0.0
    """
    area_a, area_b = box_area(a), box_area(b)
    if area_a == 0.0 or area_b == 0.0:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = float(iw * ih)
    # For a == b, inter and both areas are the same float, and (x + x) - x == x exactly.
    return inter / (area_a + area_b - inter)


def iou_matrix(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[float]]) -> np.ndarray:
    """``(len(preds), len(gts))`` matrix of :func:`box_iou`, vectorised, same arithmetic."""
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    pa = np.where((pw > 0) & (ph > 0), pw * ph, 0.0)
    ga = np.where((gw > 0) & (gh > 0), gw * gh, 0.0)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0])
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = pa[:, None] + ga[None, :] - inter
    valid = (pa[:, None] > 0) & (ga[None, :] > 0) & (inter > 0)
    return np.where(valid, inter / np.where(valid, union, 1.0), 0.0)


def ioa_matrix(preds: Sequence[Sequence[float]], regions: Sequence[Sequence[float]]) -> np.ndarray:
    """``(len(preds), len(regions))``: the share of each prediction's area inside each region
    (COCO's overlap with a crowd region); 0.0 for a prediction with no area.

    >>> ioa_matrix([[0, 0, 10, 10]], [[0, 0, 100, 5]]).tolist()
    [[0.5]]
    """
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 4)
    r = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    pa = np.where((pw > 0) & (ph > 0), pw * ph, 0.0)
    iw = np.minimum(p[:, None, 2], r[None, :, 2]) - np.maximum(p[:, None, 0], r[None, :, 0])
    ih = np.minimum(p[:, None, 3], r[None, :, 3]) - np.maximum(p[:, None, 1], r[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    return np.where(pa[:, None] > 0, inter / np.where(pa > 0, pa, 1.0)[:, None], 0.0)


def match_matrix(sim: np.ndarray, thr: float = 0.0) -> list[tuple[int, int, float]]:
    """Hungarian matching on a similarity matrix (rows: predictions, columns: ground truth).

    Entries below ``thr`` are treated as unmatchable before the assignment, so the matching
    maximises the total similarity among pairs that pass the threshold (for F1@0.5 this is
    never worse than thresholding a matching made without it). Returns ``(pred, gt, sim)``
    for every assigned pair with ``sim > 0`` and ``sim >= thr``, sorted by ``pred``.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.size == 0:
        return []
    work = np.where(sim >= thr, sim, 0.0)
    rows, cols = linear_sum_assignment(work, maximize=True)
    return [
        (int(r), int(c), float(sim[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if work[r, c] > 0.0
    ]


def class_mask(labels_pred: Sequence[str], labels_gt: Sequence[str]) -> np.ndarray:
    """Boolean ``(len(pred), len(gt))`` matrix: True where the labels agree."""
    p = np.asarray(list(labels_pred), dtype=object).reshape(-1, 1)
    g = np.asarray(list(labels_gt), dtype=object).reshape(1, -1)
    return (p == g).astype(bool)


def hungarian_match(
    preds: Sequence[Sequence[float]],
    gts: Sequence[Sequence[float]],
    iou_thr: float = 0.0,
    labels_pred: Sequence[str] | None = None,
    labels_gt: Sequence[str] | None = None,
    class_aware: bool = False,
) -> list[tuple[int, int, float]]:
    """One-to-one box matching maximising total IoU: ``[(pred_index, gt_index, iou), ...]``.

    Only pairs with IoU > 0 and IoU >= ``iou_thr`` are returned; with ``class_aware`` a pair
    whose labels differ cannot match.

    >>> hungarian_match([[0, 0, 10, 10], [20, 20, 30, 30]], [[20, 20, 30, 30]])
    [(1, 0, 1.0)]
    """
    sim = iou_matrix(preds, gts)
    if class_aware:
        if labels_pred is None or labels_gt is None:
            raise ValueError("hungarian_match(class_aware=True) needs labels_pred and labels_gt")
        sim = np.where(class_mask(labels_pred, labels_gt), sim, 0.0)
    return match_matrix(sim, iou_thr)


def polygon_to_rle(poly: Sequence[float], width: int, height: int) -> dict:
    """Rasterise one flat polygon with pycocotools; fewer than 3 vertices gives an empty mask."""
    coords = [float(v) for v in poly]
    if len(coords) % 2:
        coords = coords[:-1]
    if len(coords) >= 6 and width > 0 and height > 0:
        # pycocotools reads a 4-number list as a box, hence the >= 6 guard above.
        return mask_utils.merge(mask_utils.frPyObjects([coords], int(height), int(width)))
    empty = np.zeros((max(int(height), 0), max(int(width), 0)), dtype=np.uint8, order="F")
    return mask_utils.encode(empty)


def is_multipart(mask: Sequence) -> bool:
    """Whether an instance mask is a list of polygons (COCO's parts) rather than one flat polygon."""
    return bool(mask) and isinstance(mask[0], (list, tuple))


def instance_rle(mask: Sequence, width: int, height: int) -> dict:
    """Rasterise one instance mask, one flat polygon or a list of them (their union, as COCO's)."""
    if not is_multipart(mask):
        return polygon_to_rle(mask, width, height)
    return mask_utils.merge([polygon_to_rle(part, width, height) for part in mask])


def mask_iou_matrix(
    polys_pred: Sequence[Sequence],
    polys_gt: Sequence[Sequence],
    width: int,
    height: int,
) -> np.ndarray:
    """``(len(pred), len(gt))`` mask IoU of instance masks rasterised on a ``width × height``
    grid; each mask is one flat polygon or a list of them (every part of a split object).

    >>> two = [[0, 0, 10, 0, 10, 10, 0, 10], [20, 0, 25, 0, 25, 10, 20, 10]]
    >>> mask_iou_matrix([two, two[0]], [two], 32, 32).ravel().tolist()  # 150 pixels, 100 of them
    [1.0, 0.6666666666666666]
    """
    out = np.zeros((len(polys_pred), len(polys_gt)), dtype=np.float64)
    if out.size == 0 or width <= 0 or height <= 0:
        return out
    rp = [instance_rle(p, width, height) for p in polys_pred]
    rg = [instance_rle(g, width, height) for g in polys_gt]
    ap = mask_utils.area(rp)
    ag = mask_utils.area(rg)
    ious = np.asarray(mask_utils.iou(rp, rg, [0] * len(rg)), dtype=np.float64)
    ious = ious.reshape(len(rp), len(rg))
    # pycocotools scores two empty masks 0 already; keep it explicit for the convention.
    return np.where((ap[:, None] > 0) & (ag[None, :] > 0), ious, 0.0)


def polygon_mask_iou(
    poly_a: Sequence[float], poly_b: Sequence[float], width: int, height: int
) -> float:
    """Mask IoU of two flat polygons rasterised at the image size (pycocotools).

    >>> polygon_mask_iou([0, 0, 10, 0, 10, 10, 0, 10], [0, 0, 10, 0, 10, 10, 0, 10], 32, 32)
    1.0
    >>> polygon_mask_iou([0, 0, 10, 0, 10, 10, 0, 10], [0, 0, 5, 0, 5, 10, 0, 10], 32, 32)
    0.5
    """
    return float(mask_iou_matrix([poly_a], [poly_b], width, height)[0, 0])


def oks(
    pred_kps: Sequence[Sequence[float]],
    gt_kps: Sequence[Sequence[float]],
    area: float,
    sigmas: Sequence[float] | None = None,
) -> float:
    """COCO object keypoint similarity of one instance.

    ``kps`` are ``[[x, y, v], ...]``. As in COCO, ground-truth keypoints with ``v == 0`` are
    ignored and the predicted visibility is not scored, except that a keypoint the model
    marked absent (``v == 0``) where the ground truth has one scores 0 for it. ``area`` is
    the object scale s² (COCO's annotation ``area``, the segment's; the box area when the
    data has none). ``sigmas`` default to ``DEFAULT_SIGMA`` each (:func:`default_sigmas`
    gives COCO's for its person skeleton). Unlike pycocotools, a predicted keypoint marked
    absent scores 0 instead of being placed where it was written; with every predicted
    keypoint present the two agree (``tests/test_coco_standard.py``). A ground truth with no labelled keypoint
    scores 1.0 if the prediction also has none, else 0.0.

    >>> oks([[10, 10, 2]], [[10, 10, 2]], area=100.0)
    1.0
    >>> round(oks([[11, 10, 2]], [[10, 10, 2]], area=100.0), 4)  # exp(-1 / (2*100*0.1**2))
    0.6065
    """
    k = len(gt_kps)
    sig = [DEFAULT_SIGMA] * k if sigmas is None else list(sigmas)
    if len(sig) < k:
        raise ValueError(f"oks: {len(sig)} sigmas for {k} keypoints; pass one per keypoint")
    scale = max(float(area), np.spacing(1))
    total, n_vis = 0.0, 0
    for i, g in enumerate(gt_kps):
        if len(g) < 3 or g[2] <= 0:
            continue
        n_vis += 1
        p = pred_kps[i] if i < len(pred_kps) else None
        if p is None or len(p) < 3 or p[2] <= 0:
            continue
        d2 = (p[0] - g[0]) ** 2 + (p[1] - g[1]) ** 2
        var = (2.0 * sig[i]) ** 2  # COCO: vars = (sigmas * 2) ** 2
        total += math.exp(-d2 / var / scale / 2.0)
    if n_vis == 0:
        pred_vis = any(len(p) >= 3 and p[2] > 0 for p in pred_kps)
        return 0.0 if pred_vis else 1.0
    return total / n_vis


def oks_matrix(
    pred_kps: Sequence[Sequence[Sequence[float]]],
    gt_kps: Sequence[Sequence[Sequence[float]]],
    gt_areas: Sequence[float],
    sigmas: Sequence[float] | None = None,
) -> np.ndarray:
    """``(len(pred), len(gt))`` matrix of :func:`oks`; ``gt_areas`` one per ground truth."""
    out = np.zeros((len(pred_kps), len(gt_kps)), dtype=np.float64)
    for j, (g, a) in enumerate(zip(gt_kps, gt_areas, strict=True)):
        for i, p in enumerate(pred_kps):
            out[i, j] = oks(p, g, a, sigmas)
    return out


def default_sigmas(keypoint_names: Sequence[str] | None) -> list[float] | None:
    """COCO's person sigmas when the skeleton is COCO's person (its 17 keypoint names in
    order), else None: ``DEFAULT_SIGMA`` (0.05) each, COCO's own sigma for mid-sized joints,
    since a new skeleton has no measured annotator spread. The one place both the evaluation
    (``pipeline.metrics.evaluate``) and the ``oks`` reward (``pipeline.job``) take them from.

    >>> default_sigmas(COCO_PERSON_KEYPOINTS)[:2], default_sigmas(["tip", "base"])
    ([0.026, 0.025], None)
    """
    if keypoint_names is not None and tuple(keypoint_names) == COCO_PERSON_KEYPOINTS:
        return list(COCO_PERSON_SIGMAS)
    return None


def center_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance between the centres of two xyxy boxes, in pixels.

    >>> center_distance([0, 0, 10, 10], [3, 4, 13, 14])
    5.0
    """
    dx = (a[0] + a[2]) / 2.0 - (b[0] + b[2]) / 2.0
    dy = (a[1] + a[3]) / 2.0 - (b[1] + b[3]) / 2.0
    return math.hypot(dx, dy)
