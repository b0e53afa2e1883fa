"""Turning the annotations of each usable image into its canonical ``Target``.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any

import numpy as np

from pipeline.data.coco.checks import (
    _REQUIRED,
    BOX_TOLERANCE,
    _box_area,
    _fmt,
    _ImageEntry,
    _is_number,
    _Parsed,
    _polygon_area,
    _show,
)
from pipeline.data.errors import DataError
from pipeline.data.masks import mask_to_polygons, rle_string_counts
from pipeline.data.splits import check_evaluable
from pipeline.structures import WEAK_TASKS, Sample, empty_target

logger = logging.getLogger(__name__)


class TargetBuilding:
    """Build samples and their targets (part of ``_CocoReader``)."""

    def build_samples(self, part: _Parsed) -> list[Sample]:
        samples: list[Sample] = []
        split_objects = 0
        for entry in part.images:
            captions = [c for c in part.captions.get(entry.id, []) if c]
            if self.task == "caption" and not captions:
                self.warn(
                    f"{part.where}: image {entry.id} '{entry.file_name}' has no caption, "
                    "which task caption needs; image skipped"
                )
                continue
            opened = self._open_image(entry, part)
            if opened is None:
                continue
            image, path, width, height = opened
            target = empty_target(width, height)
            if captions:
                target["text"] = captions[0]
            for ann_id, ann in part.instances.get(entry.id, []):
                at = part.ann_at(ann_id, entry)
                instance = self._instance(ann, at, width, height, part.categories[ann["category_id"]][1])
                if instance is None:
                    continue
                box, parts, keypoints = instance
                target["boxes"].append(box)
                target["labels"].append(part.categories[ann["category_id"]][0])
                area = ann.get("area")
                target["areas"].append(float(area) if _is_number(area) and area > 0 else _box_area(box))
                if self.task == "segment":
                    # The codec writes one polygon per object: it learns the largest part, and
                    # the metrics score the whole mask (pipeline.structures, "mask_parts").
                    target["masks"].append(max(parts, key=_polygon_area))
                    target["mask_parts"].append(parts)
                    split_objects += len(parts) > 1
                if self.task == "keypoints":
                    target["keypoints"].append(keypoints)
                    target["points"].extend([[x, y] for x, y, v in keypoints if v > 0])
                self.instances_kept += 1
            for ann_id, ann in part.crowds.get(entry.id, []):
                at = part.ann_at(ann_id, entry, "iscrowd=1")
                box = self._crowd_box(ann, at, width, height)
                if box is not None:
                    target["crowd"].append({"box": box, "label": part.categories[ann["category_id"]][0]})
            kind = part.kinds.get(entry.id, "full")
            if kind == "points":
                self._fill_clicks(target, part, entry, width, height)
            elif kind == "counts":
                target["counts"] = dict(part.counts[entry.id])
            elif kind == "full" and self.task in WEAK_TASKS:
                target["counts"] = dict(Counter(target["labels"]))
            samples.append(
                Sample(
                    id=entry.id,
                    file_name=entry.file_name,
                    width=width,
                    height=height,
                    target=target,
                    image=image,
                    path=path,
                    label_kind=kind,
                )
            )
            self.made.append(samples[-1])
        if split_objects:
            self.warn(
                f"{part.where}: {split_objects} object{'s have' if split_objects > 1 else ' has'} a mask in "
                "several parts (split by an occluder); the model learns and writes one polygon per object, "
                "the largest part, and drops the others — evaluation scores every part, so such objects "
                "score below 1.0 mask IoU even when the largest part is exact"
            )
        return samples

    def _fill_clicks(
        self, target: dict[str, Any], part: _Parsed, entry: _ImageEntry, width: int, height: int
    ) -> None:
        """Points and point labels of a clicked image; its counts when every click names its
        category (a click without one says "an object", not which), else those of "counts"."""
        for ann_id, ann in part.clicks[entry.id]:
            x, y = (float(v) for v in ann["point"])
            if not (-BOX_TOLERANCE <= x <= width + BOX_TOLERANCE and -BOX_TOLERANCE <= y <= height + BOX_TOLERANCE):
                self.warn(
                    f"{part.where}: annotation {ann_id} (image {entry.id} '{entry.file_name}') has a click at "
                    f"({x:g}, {y:g}) outside the {width}×{height} image; annotation dropped — fix the click"
                )
                continue
            target["points"].append([min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))])
            cid = ann.get("category_id")
            target["point_labels"].append(part.categories[cid][0] if cid is not None else "")
        if all(target["point_labels"]):
            target["counts"] = dict(Counter(target["point_labels"]))
        else:
            target["counts"] = dict(part.counts.get(entry.id, {}))

    def _crowd_box(self, ann: dict[str, Any], at: str, width: int, height: int) -> list[float] | None:
        """The xyxy box of a crowd region, clipped to the image; None (with a warning) without one."""
        if ann.get("bbox") is None:
            self.warn(f'{at} has no "bbox"; crowd region dropped — add its box so evaluation can ignore it')
            return None
        x, y, w, h = self._numbers(ann, "bbox", at, length=4)
        box = [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]
        if box[2] <= box[0] or box[3] <= box[1]:
            self.warn(f"{at} has a box {_fmt([x, y, w, h])} with no area inside the {width}×{height} image; "
                      "crowd region dropped")  # fmt: skip
            return None
        return box

    def _numbers(
        self, ann: dict[str, Any], key: str, at: str, *, length: int | None = None, multiple: int = 1
    ) -> list[float]:
        value = ann[key]
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise DataError(
                f'{at}: "{key}" must be a list of finite numbers, got {_show(value)}; fix the annotation'
            )
        if (length is not None and len(value) != length) or len(value) % multiple:
            expected = f"{length} numbers" if length is not None else f"a multiple of {multiple} numbers"
            raise DataError(
                f'{at}: "{key}" has {len(value)} numbers, expected {expected}; fix the annotation'
            )
        return [float(v) for v in value]

    def _instance(
        self, ann: dict[str, Any], at: str, width: int, height: int, keypoint_names: list[str]
    ) -> tuple[list[float], list[float], list[list[Any]]] | None:
        """(box, polygon, keypoints) in canonical form, or None when dropped (with a warning)."""
        needed = _REQUIRED.get(self.task)
        if needed is not None and ann.get(needed) is None:
            self.warn(f'{at} has no "{needed}", which task {self.task} needs; annotation dropped')
            return None
        parts: list[list[float]] = []
        keypoints: list[list[Any]] = []
        if self.task == "segment":
            parts_or_none = self._mask(ann["segmentation"], at, width, height)
            if parts_or_none is None:
                return None
            parts = parts_or_none
        if self.task == "keypoints":
            keypoints_or_none = self._keypoints(ann, at, width, height, keypoint_names)
            if keypoints_or_none is None:
                return None
            keypoints = keypoints_or_none

        if ann.get("bbox") is not None:
            x, y, w, h = self._numbers(ann, "bbox", at, length=4)
            if w <= 0 or h <= 0:
                self.warn(
                    f"{at} has a box {_fmt([x, y, w, h])} with non-positive width or height; "
                    "annotation dropped — fix the box or drop the annotation"
                )
                return None
            box = [x, y, x + w, y + h]
        elif parts:  # segment: derive the box from the polygons, every part
            xs = [v for part in parts for v in part[0::2]]
            ys = [v for part in parts for v in part[1::2]]
            box = [min(xs), min(ys), max(xs), max(ys)]
        elif keypoints and any(v > 0 for _, _, v in keypoints):
            xs = [x for x, _, v in keypoints if v > 0]
            ys = [y for _, y, v in keypoints if v > 0]
            box = [min(xs), min(ys), max(xs) + 1, max(ys) + 1]  # +1: a lone keypoint is still a 1-px box
        elif self.task == "caption":
            return None  # caption datasets may carry instance annotations without boxes: nothing to keep
        else:
            self.warn(f'{at} has no "bbox" and nothing to derive one from; annotation dropped')
            return None

        x1, y1, x2, y2 = box
        if (
            x1 < -BOX_TOLERANCE
            or y1 < -BOX_TOLERANCE
            or x2 > width + BOX_TOLERANCE
            or y2 > height + BOX_TOLERANCE
        ):
            self.warn(
                f"{at} has a box [x, y, w, h] = {_fmt([x1, y1, x2 - x1, y2 - y1])} "
                f"outside the {width}×{height} image; "
                "annotation dropped — fix the box or drop the annotation"
            )
            return None
        # Clip the overhang the tolerance allowed (annotation tools often round to x + w = W + 0.5).
        box = [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]
        if box[2] <= box[0] or box[3] <= box[1]:
            self.warn(
                f"{at} has a box {_fmt(box)} with no area inside the {width}×{height} image; "
                "annotation dropped"
            )
            return None
        return box, parts, keypoints

    def _keypoints(self, ann: dict[str, Any], at: str, width: int, height: int,
                   keypoint_names: list[str]) -> list[list[Any]] | None:  # fmt: skip
        """The annotation's ``[x, y, v]`` keypoints, clipped to the image, or None when one lies
        outside it (the annotation is dropped, with a warning)."""
        keypoints: list[list[Any]] = []
        flat = self._numbers(ann, "keypoints", at, multiple=3)
        if keypoint_names and len(flat) != 3 * len(keypoint_names):
            raise DataError(
                f'{at}: "keypoints" has {len(flat) // 3} keypoints but its category names '
                f"{len(keypoint_names)} ({', '.join(keypoint_names)}); "
                "give x, y, v for each named keypoint"
            )
        for i in range(0, len(flat), 3):
            x, y, v = flat[i : i + 3]
            if v > 0 and not (
                -BOX_TOLERANCE <= x <= width + BOX_TOLERANCE
                and -BOX_TOLERANCE <= y <= height + BOX_TOLERANCE
            ):
                self.warn(
                    f"{at}: keypoint {i // 3} at ({x:g}, {y:g}) is outside the {width}×{height} image; "
                    "annotation dropped — fix the keypoint"
                )
                return None
            if v > 0:
                x, y = min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))
            keypoints.append([x, y, int(v)])
        return keypoints

    def _mask(self, segmentation: Any, at: str, width: int, height: int) -> list[list[float]] | None:
        """Every part of the instance's mask as flat polygons, clipped to the image; None
        (with a warning) when it has none or leaves the image."""
        if isinstance(segmentation, dict):
            polygons = self._rle_polygons(segmentation, at, width, height)
            if polygons is None:
                return None
        else:
            if not isinstance(segmentation, list) or not segmentation:
                raise DataError(
                    f'{at}: "segmentation" must be a list of polygons or an RLE object; fix the annotation'
                )
            # COCO nests polygons in a list; some tools write one flat polygon: accept both.
            polygons = segmentation if isinstance(segmentation[0], list) else [segmentation]
            valid = []
            for k, poly in enumerate(polygons):
                if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                    raise DataError(
                        f"{at}: segmentation polygon {k} must be a list of numbers; fix the annotation"
                    )
                if len(poly) >= 6 and len(poly) % 2 == 0:
                    valid.append([float(v) for v in poly])
            if not valid:
                self.warn(f"{at}: no segmentation polygon has 3 or more points; annotation dropped")
                return None
            polygons = valid
        xs = [v for polygon in polygons for v in polygon[0::2]]
        ys = [v for polygon in polygons for v in polygon[1::2]]
        if (
            min(xs) < -BOX_TOLERANCE
            or min(ys) < -BOX_TOLERANCE
            or max(xs) > width + BOX_TOLERANCE
            or max(ys) > height + BOX_TOLERANCE
        ):
            self.warn(
                f"{at}: the segmentation polygon leaves the {width}×{height} image; "
                "annotation dropped — fix the polygon"
            )
            return None
        return [
            [min(max(v, 0.0), float(width if i % 2 == 0 else height)) for i, v in enumerate(polygon)]
            for polygon in polygons
        ]

    def _rle_polygons(self, rle: dict[str, Any], at: str, width: int, height: int) -> list[list[float]] | None:
        from pycocotools import mask as mask_utils  # C extension; only RLE datasets need it

        size, counts = rle.get("size"), rle.get("counts")
        if not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
        ) or not isinstance(counts, (str, list)):
            raise DataError(
                f'{at}: RLE segmentation needs "size": [height, width] and "counts"; fix the annotation'
            )
        if size != [height, width]:
            self.warn(
                f"{at}: the RLE mask is {size[1]}×{size[0]} but the image is {width}×{height}; "
                "annotation dropped"
            )
            return None
        # pycocotools trusts its input (an empty or short "counts" decodes to garbage memory),
        # so the run lengths are parsed and checked here before it sees them.
        try:
            runs = rle_string_counts(counts) if isinstance(counts, str) else counts
            if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
                raise ValueError("run lengths must be non-negative integers")
            if sum(runs) != height * width:
                raise ValueError(
                    f"the runs cover {sum(runs)} pixels, not {height}×{width} = {height * width}"
                )
        except ValueError as exc:
            raise DataError(f"{at}: the RLE segmentation is invalid ({exc}); fix the annotation") from exc
        encoded = mask_utils.frPyObjects({"size": size, "counts": runs}, height, width)
        with warnings.catch_warnings():  # pycocotools' own NumPy-2 DeprecationWarning is not ours to show
            warnings.simplefilter("ignore", DeprecationWarning)
            binary = np.asarray(mask_utils.decode(encoded), dtype=bool)
        if binary.ndim == 3:
            binary = binary[:, :, 0]
        polygons = mask_to_polygons(binary)
        if not polygons:
            self.warn(f"{at}: the RLE mask is empty; annotation dropped")
            return None
        return polygons

    def check_usable(self, parts: dict[str, list[Sample]], held_out_wanted: bool = True) -> None:
        total = sum(len(samples) for samples in parts.values())
        if total == 0:
            raise DataError(
                f"{self.label}: no usable image (see the warnings above: {len(self.warnings)}); "
                "add images, or fix the ones that were skipped"
                + (f" — first: {self.warnings[0]}" if self.warnings else "")
            )
        everything = [s for samples in parts.values() for s in samples]
        if not any(s.label_kind == "full" for s in everything):  # before the check below blames "bbox"
            check_evaluable(self.label, {"all": everything}, held_out_wanted)
        if self.task in _REQUIRED and self.instances_kept == 0:
            raise DataError(
                f'{self.label}: no annotation has a usable "{_REQUIRED[self.task]}", which task '
                f"{self.task} needs; check the task or the annotations"
            )
