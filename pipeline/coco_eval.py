"""COCO's standard metrics through pycocotools, and the COCO results format for exports.

Canonical targets become one COCO ground-truth document and one results list
(:func:`to_coco`), which :func:`coco_ap` hands to ``COCOeval``: AP averaged over IoU
0.50:0.05:0.95 (``ap``) and at IoU 0.5 (``ap50``), for boxes (``bbox``), masks (``segm``,
every part of a split object, ``Target["mask_parts"]``) or keypoints (``keypoints``, OKS with
the annotation's area and the given sigmas), overall and per category. These are COCOeval's
own ``stats[0]`` and ``stats[1]`` (area range "all"), with ``maxDets`` raised from 100 to the
most predictions in one image when an answer holds more.

Scores: a VLM's answer has no confidences, so every prediction is scored 1.0, a constant.
pycocotools sorts detections with a stable sort, so ties keep the input order: images in
dataset order, objects in the order the model wrote them. The precision-recall curve then has
one operating point per category, and AP is 1.0 only when every object is found with no extra.
The export says the same (``SCORE``): tools that break ties another way may rank differently.

Category ids are 1..N in the order of ``categories`` (then any label only the ground truth
has); image ids are the dataset's own when given. Crowd regions (``Target["crowd"]``) are
``iscrowd: 1`` ground truth, which COCOeval ignores detections on.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.geometry import DEFAULT_SIGMA, instance_rle, is_multipart
from pipeline.structures import instance_masks

Target = dict[str, Any]
SCORE = 1.0  # every prediction's score: the model gives none (module docstring)
IOU_TYPES = {"detect": ("bbox",), "segment": ("bbox", "segm"), "keypoints": ("bbox", "keypoints")}
PREFIX = {"bbox": "", "segm": "mask_", "keypoints": "kp_"}  # metric keys: ap, mask_ap, kp_ap


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)]


def _polygons(mask: Sequence) -> list[list[float]]:
    """COCO's list of polygons for an instance mask; parts with fewer than 3 vertices dropped."""
    parts = mask if is_multipart(mask) else [mask]
    return [[float(v) for v in p][: len(p) // 2 * 2] for p in parts if len(p) >= 6]


def _box_polygon(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def _rle(mask: Sequence, width: int, height: int) -> dict[str, Any]:
    rle = instance_rle(mask, width, height)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}  # JSON-ready


def _flat_keypoints(kps: Sequence[Sequence[float]], k: int) -> list[float]:
    """``[x, y, v] * k`` (COCO's flat form), padded with absent keypoints or cut to ``k``."""
    rows = [[float(p[0]), float(p[1]), int(p[2])] if len(p) >= 3 else [0.0, 0.0, 0] for p in kps][:k]
    rows += [[0.0, 0.0, 0]] * (k - len(rows))
    return [v for row in rows for v in row]


def _labels(t: Target, n: int) -> list[str]:
    return ([str(x) for x in t.get("labels") or []] + [""] * n)[:n]


def to_coco(
    preds: Sequence[Target],
    gts: Sequence[Target],
    categories: Sequence[str],
    task: str,
    image_ids: Sequence[int] | None = None,
    file_names: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(ground-truth document, results)`` in COCO's formats, for ``task``.

    Results carry ``bbox`` for every task, plus an RLE ``segmentation`` (segment) or flat
    ``keypoints`` (keypoints); predictions whose label is not a category are left out (they
    have no category to be evaluated in).
    """
    names = list(categories)
    for g in gts:
        names += [lab for lab in _labels(g, len(g.get("boxes") or [])) if lab not in names]
    cat_id = {name: i + 1 for i, name in enumerate(names)}
    k = max((len(kps) for g in gts for kps in g.get("keypoints") or []), default=0)
    cats = [{"id": i, "name": n, **({"keypoints": [f"kp{j}" for j in range(k)]} if task == "keypoints" else {})}
            for n, i in cat_id.items()]  # fmt: skip
    images, anns, results = [], [], []
    ids = list(image_ids) if image_ids is not None else list(range(1, len(gts) + 1))
    for index, (img_id, p, g) in enumerate(zip(ids, preds, gts, strict=True)):
        size = g.get("image") or {}
        w, h = int(size.get("width", 0)), int(size.get("height", 0))
        image = {"id": int(img_id), "width": w, "height": h}
        if file_names is not None:
            image["file_name"] = file_names[index]
        images.append(image)
        boxes = g.get("boxes") or []
        masks, areas, kps = instance_masks(g), g.get("areas") or [], g.get("keypoints") or []
        for j, (box, label) in enumerate(zip(boxes, _labels(g, len(boxes)), strict=True)):
            ann: dict[str, Any] = {"id": len(anns) + 1, "image_id": int(img_id), "category_id": cat_id[label],
                                   "bbox": _xywh(box), "iscrowd": 0}  # fmt: skip
            ann["area"] = float(areas[j]) if j < len(areas) and areas[j] > 0 else ann["bbox"][2] * ann["bbox"][3]
            if task == "segment":
                ann["segmentation"] = (_polygons(masks[j]) if j < len(masks) else []) or [_box_polygon(box)]
            if task == "keypoints":
                ann["keypoints"] = _flat_keypoints(kps[j] if j < len(kps) else [], k)
                ann["num_keypoints"] = sum(v > 0 for v in ann["keypoints"][2::3])
            anns.append(ann)
        for region in g.get("crowd") or []:
            if region["label"] not in cat_id:
                continue
            ann = {"id": len(anns) + 1, "image_id": int(img_id), "category_id": cat_id[region["label"]],
                   "bbox": _xywh(region["box"]), "iscrowd": 1, "segmentation": [_box_polygon(region["box"])]}  # fmt: skip
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            if task == "keypoints":
                ann["keypoints"], ann["num_keypoints"] = [0.0] * (3 * k), 0
            anns.append(ann)
        p_boxes = p.get("boxes") or []
        p_masks, p_kps = p.get("masks") or [], p.get("keypoints") or []
        for j, (box, label) in enumerate(zip(p_boxes, _labels(p, len(p_boxes)), strict=True)):
            if label not in cat_id:
                continue
            res: dict[str, Any] = {"image_id": int(img_id), "category_id": cat_id[label], "bbox": _xywh(box),
                                   "score": SCORE}  # fmt: skip
            if task == "segment":
                res["segmentation"] = _rle(p_masks[j] if j < len(p_masks) else [], w, h)
            if task == "keypoints":
                res["keypoints"] = _flat_keypoints(p_kps[j] if j < len(p_kps) else [], k)
            results.append(res)
    return {"images": images, "annotations": anns, "categories": cats}, results


def coco_ap(
    gt_doc: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: str = "bbox",
    sigmas: Sequence[float] | None = None,
) -> dict[str, Any]:
    """``{"ap", "ap50", "per_class": {name: (ap, ap50)}}`` from COCOeval (module docstring).

    ``sigmas``: OKS sigmas per keypoint for ``keypoints`` (``DEFAULT_SIGMA`` each when None).
    With no ground-truth object (crowds aside): 1.0 without predictions, else 0.0; with
    objects but no prediction: 0.0. Categories without ground truth are left out (COCO's rule).
    """
    real = [a for a in gt_doc["annotations"] if not a["iscrowd"]]
    if not real or not results:
        value = 1.0 if not real and not results else 0.0
        names = {c["id"]: c["name"] for c in gt_doc["categories"]}
        return {"ap": value, "ap50": value,
                "per_class": {names[cid]: (0.0, 0.0) for cid in sorted({a["category_id"] for a in real})}}  # fmt: skip
    per_image: dict[int, int] = {}
    for r in results:
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    # pycocotools prints progress ("creating index...", "Running per image evaluation...").
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: list(v) for k, v in gt_doc.items()}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds ids and areas in place
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.params.maxDets = [max(100, *per_image.values())]
        ev.params.areaRng = [ev.params.areaRng[0]]  # "all" only
        ev.params.areaRngLbl = ["all"]
        if iou_type == "keypoints":
            k = len(gt_doc["annotations"][0]["keypoints"]) // 3
            ev.params.kpt_oks_sigmas = np.asarray(sigmas if sigmas is not None else [DEFAULT_SIGMA] * k, float)
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 0]  # [IoU thresholds, recall thresholds, categories]

    def mean(p: np.ndarray) -> float | None:
        # COCOeval divides by (tp + fp + spacing(1)), so a perfect answer scores 1 − 2e-16.
        return round(float(np.mean(p[p > -1])), 10) if (p > -1).any() else None

    names = {c["id"]: c["name"] for c in gt_doc["categories"]}
    per_class = {}
    for index, cid in enumerate(ev.params.catIds):
        ap = mean(precision[:, :, index])
        if ap is not None:
            per_class[names[cid]] = (ap, mean(precision[0, :, index]))
    return {"ap": mean(precision) or 0.0, "ap50": mean(precision[0]) or 0.0, "per_class": per_class}


def standard_metrics(
    preds: Sequence[Target],
    gts: Sequence[Target],
    categories: Sequence[str],
    task: str,
    sigmas: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The COCOeval metrics of ``task``: ``ap``, ``ap50`` (boxes), ``mask_ap``, ``mask_ap50``
    (segment) or ``kp_ap``, ``kp_ap50`` (keypoints), and ``ap_per_class``, a list of
    ``{"label", "ap", "ap50", ...}`` with the same keys per category that has ground truth."""
    out: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    gt_doc, results = to_coco(preds, gts, categories, task)
    for iou_type in IOU_TYPES[task]:
        got = coco_ap(gt_doc, results, iou_type, sigmas)
        pre = PREFIX[iou_type]
        out[f"{pre}ap"], out[f"{pre}ap50"] = got["ap"], got["ap50"]
        for name, (ap, ap50) in got["per_class"].items():
            rows.setdefault(name, {"label": name}).update({f"{pre}ap": ap, f"{pre}ap50": ap50})
    out["ap_per_class"] = list(rows.values())
    return out



PREDICTIONS_FILE = "predictions_coco.json"
GROUND_TRUTH_FILE = "ground_truth_coco.json"


def write_export(
    folder: Path,
    preds: Sequence[Target],
    gts: Sequence[Target],
    categories: Sequence[str],
    task: str,
    image_ids: Sequence[int],
    file_names: Sequence[str],
) -> dict[str, Any]:
    """Write the held-out predictions in COCO's results format (``predictions_coco.json``)
    and the ground truth they are scored against (``ground_truth_coco.json``: its images
    carry the dataset's ids and file names, its categories the ids the results use), so
    ``COCO(gt).loadRes(predictions)`` and any COCO tool evaluate them as the job did."""
    gt_doc, results = to_coco(preds, gts, categories, task, image_ids=image_ids, file_names=file_names)
    gt_doc["info"] = {"description": "DreamForge held-out ground truth; every prediction is scored "
                      f"{SCORE} (the model gives no confidences), so ties keep the model's order"}  # fmt: skip
    (folder / PREDICTIONS_FILE).write_text(json.dumps(results))
    (folder / GROUND_TRUTH_FILE).write_text(json.dumps(gt_doc))
    return {"predictions": PREDICTIONS_FILE, "ground_truth": GROUND_TRUTH_FILE, "images": len(gt_doc["images"]),
            "predictions_n": len(results), "score": SCORE}  # fmt: skip
