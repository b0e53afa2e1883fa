"""The limits a COCO file is held to, the small checks every part of the reader uses, and
the shapes of a parsed (not yet opened) annotation file.
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_MODES = ("auto", "eager", "lazy")
EAGER_ENV = "DREAMFORGE_EAGER_IMAGES_MB"
DEFAULT_EAGER_MB = 2048  # decoded images a set may hold in memory before it is read lazily


def eager_budget() -> int:
    """Bytes of decoded images a load keeps before it turns lazy (``$DREAMFORGE_EAGER_IMAGES_MB``)."""
    return int(float(os.environ.get(EAGER_ENV, DEFAULT_EAGER_MB)) * (1 << 20))


BOX_TOLERANCE = 1.0  # pixels a box / polygon / keypoint may stick out of the image before it is an error
# What each task needs from an instance annotation (captions are image-level).
_REQUIRED = {"detect": "bbox", "segment": "segmentation", "keypoints": "keypoints"}
# Caps on what a dataset may declare: category names become labels in every prompt and are
# stored with the dataset, so a 1 MB name or 100k categories must be refused, not kept.
MAX_CATEGORIES = 2000  # LVIS, the largest common detection vocabulary, has 1203
MAX_NAME_CHARS = 200  # a category or keypoint name
MAX_KEYPOINTS = 256  # named keypoints of a category (COCO-WholeBody has 133)
MAX_FILE_NAME_CHARS = 1024
MAX_COUNT = 100_000  # objects of one category in one image (a dense crowd is ~10k); bounds BSON and JS numbers
# User values quoted in messages: short, and never recursing into deeply nested JSON.
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 2, 60, 60, 4, 4
_show = _repr.repr


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _box_area(box: Sequence[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _polygon_area(flat: Sequence[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


@dataclass
class _ImageEntry:
    id: int
    file_name: str
    width: int | None
    height: int | None
    counts: dict[str, Any] | None = None  # the image's "counts" as written (keys resolved later)
    unlabeled: bool = False


@dataclass
class _Parsed:
    """One annotation file, checked but with no image opened yet."""

    path: Path
    where: str  # "shelf.zip: annotations.json", the prefix of every message about this file
    split: str
    images: list[_ImageEntry]
    categories: dict[int, tuple[str, list[str]]]  # id -> (name, keypoint names)
    # image id -> [(annotation id, annotation)], in file order
    instances: dict[int, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)
    captions: dict[int, list[str]] = field(default_factory=dict)
    clicks: dict[int, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)  # same shape
    crowds: dict[int, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)  # iscrowd=1, same shape
    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # image id -> {category name: n}, no zeros
    kinds: dict[int, str] = field(default_factory=dict)  # image id -> label kind
    origins: dict[Any, str] = field(default_factory=dict)  # annotation id -> its place in a non-COCO file

    def ann_at(self, ann_id: Any, entry: _ImageEntry, extra: str = "") -> str:
        """How messages name an annotation: its file and line where it was not COCO."""
        if ann_id in self.origins:
            return self.origins[ann_id] + (f" ({extra})" if extra else "")
        return f"{self.where}: annotation {ann_id} (image {entry.id} '{entry.file_name}'{extra and ', ' + extra})"
