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
     "point_labels": ["cola", ...],         # one per point when the points are clicks (weak labels)
     "counts": {"cola": 3, ...},            # objects per category in the image (weak labels)
     "crowd":  [{"box": [x1, y1, x2, y2], "label": "person"}, ...],  # crowd regions (ground truth)
     "areas":  [812.5, ...],                # per instance, COCO's "area" (ground truth; [] = unknown)
     "mask_parts": [[[x1, y1, ...], ...], ...],  # per instance, every polygon of its mask (ground truth)
     "text":   "a caption",
     "image":  {"width": W, "height": H}}

Missing parts are empty lists / empty string / empty dict, never absent keys.

``mask_parts`` holds every part of each instance's mask (COCO's list of polygons: an object
split by an occluder has several; RLE masks give one per connected component, holes filled,
since COCO polygons add up and cannot cut holes). ``masks`` keeps one polygon per instance,
the largest part, because the codec writes one polygon per object: that part is what the
model learns, and the other parts are dropped from training (the load says so in a warning).
Scoring uses every part (:func:`instance_masks`); ``[]`` means ``masks`` are whole.

``areas`` is the object's size as the annotation gives it (COCO's ``"area"``: the segment's
area, not the box's), one per instance when a dataset was loaded from COCO (the box area where
an annotation has none), ``[]`` otherwise. It is OKS's scale s² (``pipeline.geometry.oks``);
with ``[]`` the box area stands in.

Crowd regions (COCO ``iscrowd: 1``: "many objects here, not boxed one by one") are kept out of
``boxes`` (so out of every training target: the codec encodes ``boxes`` only) and carried in
``crowd`` instead. Evaluation passes them to COCOeval as ignore regions: a detection of that
label covering a crowd region (intersection over the detection's area >= 0.5) that matches no
real object is neither a true nor a false positive, for ``map50`` / ``ap`` and for the pooled
``f1_50``, ``mean_iou`` and ``mean_count_error`` alike (``pipeline.metrics``); stage 3's
rewards, built-in and JavaScript, are given the answer without those detections too
(``pipeline.rewards.base.without_crowd_hits``), so a box on a crowd is neither rewarded nor
penalised.

Weak labels (detect and segment tasks): an image's ``Sample.label_kind`` says what its target
can be trusted for. ``"full"``: boxes (and masks) of every object, as above. ``"points"``: one
click per object in ``points`` (pixels, ``point_labels`` alongside, "" when the click has no
category) and ``counts`` derived from them; ``boxes`` empty. ``"counts"``: only ``counts``.
``"none"``: unlabelled, nothing is known (an image with no annotations and no marker is a
*negative*, ``"full"`` with no objects). Only fully labelled images are used for SFT and for
evaluation; stage 3 uses every image its reward can score (``pipeline.rewards``).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, Literal

Task = Literal["detect", "segment", "keypoints", "caption"]
LabelKind = Literal["full", "points", "counts", "none"]
LABEL_KINDS: tuple[str, ...] = ("full", "points", "counts", "none")
WEAK_TASKS: tuple[str, ...] = ("detect", "segment")  # tasks whose images may carry weak labels
KIND_WORDS = {"full": "boxed", "points": "clicked", "counts": "counted", "none": "unlabelled"}  # what people read
TASKS: tuple[str, ...] = ("detect", "segment", "keypoints", "caption")


def empty_target(width: int, height: int) -> dict[str, Any]:
    """A target with nothing in it, for an image of the given size."""
    return {
        "boxes": [],
        "labels": [],
        "points": [],
        "keypoints": [],
        "masks": [],
        "point_labels": [],
        "counts": {},
        "crowd": [],
        "areas": [],
        "mask_parts": [],
        "text": "",
        "image": {"width": int(width), "height": int(height)},
    }


def instance_masks(target: dict[str, Any]) -> list[Any]:
    """Each instance's whole mask, to score against: its parts (a list of flat polygons) when
    the target has ``mask_parts`` for every instance, else its polygon in ``masks``.

    >>> instance_masks({"masks": [[0, 0, 4, 0, 4, 4]], "mask_parts": []})
    [[0, 0, 4, 0, 4, 4]]
    """
    masks = target.get("masks") or []
    parts = target.get("mask_parts") or []
    return list(parts) if parts and len(parts) == len(masks) else list(masks)


class ImageRef:
    """An image not decoded yet: ``decode()`` gives it as an RGB PIL image
    (``pipeline.data.images.LazyImage``)."""

    size: tuple[int, int]
    key: Any  # equal for refs that decode to the same pixels

    def decode(self) -> Any:
        raise NotImplementedError


@dataclass
class Sample:
    """One image with its ground truth.

    ``image`` is the decoded, upright RGB PIL image. A set small enough to hold decoded is
    decoded once at load (decoding each step is wasted CPU); a larger one keeps an
    :class:`ImageRef` in ``pixels``, and reading ``image`` decodes it through a bounded cache
    (``pipeline.data.images``). A sample made by ``dataclasses.replace`` stays lazy (replace
    reads ``image``, which decodes through the cache, but the decoded image is known by its
    ref's key and not kept).
    """

    id: int
    file_name: str
    width: int
    height: int
    target: dict[str, Any]
    image: InitVar[Any] = None  # PIL.Image.Image (RGB) or an ImageRef; read back as a PIL image
    path: Path | None = None
    label_kind: str = "full"  # one of LABEL_KINDS: what ``target`` holds (see the module doc)
    pixels: Any = field(default=None, repr=False, compare=False)  # what ``image`` holds

    def __post_init__(self, image: Any) -> None:
        if image is None:
            return
        if isinstance(self.pixels, ImageRef) and getattr(image, DECODED_FROM, None) == self.pixels.key:
            return  # dataclasses.replace handing back what ``pixels`` decodes to: stay lazy
        self.pixels = image


DECODED_FROM = "_dreamforge_ref_key"  # set on an image decoded from a ref (not copied by PIL operations)


def _sample_image(sample: Sample) -> Any:
    pixels = sample.pixels
    if not isinstance(pixels, ImageRef):
        return pixels
    image = pixels.decode()
    setattr(image, DECODED_FROM, pixels.key)
    return image


def _set_sample_image(sample: Sample, value: Any) -> None:
    sample.pixels = value


Sample.image = property(_sample_image, _set_sample_image)  # type: ignore[assignment,method-assign]  # after @dataclass: the field stays an init argument


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
