"""The canonical structures every part of the pipeline speaks.

One coordinate convention everywhere: boxes are ``[x1, y1, x2, y2]`` (xyxy), half-open
(``x2`` is the first column *outside* the box), in pixels of the ORIGINAL image, whatever
size the model's processor resizes to. The codec, the SFT targets, the rewards, the
evaluator and ``predict`` all convert through ``pipeline.codec`` — mismatched box spaces are
the field's most common silent bug.

A ``Target`` is what a reward sees for both ``out`` (the parsed model output) and ``gt``::

    {"boxes":  [[x1, y1, x2, y2], ...],     # one per instance
     "labels": ["cola", ...],               # one per instance (same order as boxes)
     "points": [[x, y], ...],               # every visible keypoint of every instance, flat
     "keypoints": [[[x, y, v], ...], ...],  # per instance, K keypoints, v=0 absent / 2 visible
     "masks":  [[x1, y1, x2, y2, ...], ...],# per instance, one polygon (flat xy list)
     "text":   "a caption",
     "image":  {"width": W, "height": H}}

Missing parts are empty lists / empty string, never absent keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Task = Literal["detect", "segment", "keypoints", "caption"]
TASKS: tuple[str, ...] = ("detect", "segment", "keypoints", "caption")


def empty_target(width: int, height: int) -> dict[str, Any]:
    """A target with nothing in it, for an image of the given size."""
    return {
        "boxes": [],
        "labels": [],
        "points": [],
        "keypoints": [],
        "masks": [],
        "text": "",
        "image": {"width": int(width), "height": int(height)},
    }


@dataclass
class Sample:
    """One image with its ground truth.

    ``image`` holds the decoded RGB PIL image once loaded (datasets decode every image
    once at load time: the images are small and decoding each step is wasted CPU).
    """

    id: int
    file_name: str
    width: int
    height: int
    target: dict[str, Any]
    image: Any = None  # PIL.Image.Image, RGB
    path: Path | None = None


@dataclass
class Dataset:
    """A COCO-style dataset, decoded: the samples of each split plus the category names."""

    name: str
    task: str
    categories: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)  # "train" / "val" / "test"
    keypoint_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prompt: str = ""  # the instruction the model sees; built by the codec when empty
