"""Augmentations of the labelled domain images (``data.augment`` in the config).

Why: a domain set of tens of labelled images is memorised within a few hundred steps (train
IoU 0.9, held-out 0.25, see README), and more labels are what helps. A mirrored copy of each
image is a new image with an exact label for free: on 42 labelled shelf images, stage 2 with
mirrored copies scored 0.301 / 0.300 held-out IoU on two domain sets against 0.253 / 0.270
without, for the same 240 steps.

``hflip`` mirrors left to right: boxes, mask polygons, points (clicks too) and keypoints
follow, counts and the image's label kind stay (a mirrored clicked image is clicked), and
keypoints whose names say left or right swap names (``left_eye`` <-> ``right_eye``), so a
mirrored person keeps a left eye on the left of its face. Captions cannot follow (they say
"on the left"), so the job skips ``hflip`` for the caption task and logs a warning
(``pipeline.job.augmented_train``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from typing import Any

from PIL import Image

from pipeline.structures import ImageRef, Sample

STATIC: tuple[str, ...] = ("hflip",)  # copies added once, before training
ONLINE: tuple[str, ...] = ("mosaic", "rot90")  # drawn at each read (pipeline.online_augment)
AUGMENTATIONS: tuple[str, ...] = STATIC + ONLINE
# Ids of mirrored copies: far above any COCO image id, so split hashing and logs never collide.
_MIRROR_ID = 1 << 40


def mirror_permutation(names: list[str]) -> list[int]:
    """For each keypoint index, the index it takes in the mirrored image.

    >>> mirror_permutation(["nose", "left_eye", "right_eye", "Left Hand", "Right Hand"])
    [0, 2, 1, 4, 3]
    >>> mirror_permutation(["top", "label", "bottom"])
    [0, 1, 2]
    """
    index = {n.lower(): i for i, n in enumerate(names)}
    swap = {"left": "right", "right": "left", "l_": "r_", "r_": "l_"}
    perm = []
    for i, name in enumerate(names):
        low = name.lower()
        other = re.sub(r"left|right|^l_|^r_", lambda m: swap[m.group(0)], low)
        perm.append(index.get(other, i) if other != low else i)
    return perm


def map_points(t: dict[str, Any], f: Callable[[float, float], tuple[float, float]]) -> None:
    """Move every coordinate of target ``t`` through ``f``, in place: boxes and crowd boxes (kept
    corner-ordered), points, mask polygons and parts, visible keypoints."""

    def box(b: list[float]) -> list[float]:
        (ax, ay), (bx, by) = f(b[0], b[1]), f(b[2], b[3])
        return [min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)]

    def poly(p: list[float]) -> list[float]:
        return [c for k in range(0, len(p) - 1, 2) for c in f(p[k], p[k + 1])]

    t["boxes"] = [box(b) for b in t.get("boxes") or []]
    t["points"] = [list(f(p[0], p[1])) for p in t.get("points") or []]
    t["masks"] = [poly(p) for p in t.get("masks") or []]
    t["mask_parts"] = [[poly(p) for p in parts] for parts in t.get("mask_parts") or []]
    t["crowd"] = [{**c, "box": box(c["box"])} for c in t.get("crowd") or []]
    t["keypoints"] = [[[*f(x, y), v] if v else [x, y, v] for x, y, v in inst] for inst in t.get("keypoints") or []]


def mirror_target(t: dict[str, Any], width: float, keypoint_perm: list[int] | None = None) -> None:
    """Target ``t`` of a ``width``-wide image mirrored left to right, in place; keypoints take
    their mirrored names (:func:`mirror_permutation`)."""
    map_points(t, lambda x, y: (width - x, y))
    if keypoint_perm:
        t["keypoints"] = [[inst[keypoint_perm[k]] for k in range(len(inst))] if len(inst) == len(keypoint_perm)
                          else inst for inst in t["keypoints"]]  # fmt: skip


def hflip(sample: Sample, keypoint_perm: list[int] | None = None) -> Sample:
    """``sample`` mirrored left to right, as a new sample (the original is not touched)."""
    t: dict[str, Any] = copy.deepcopy(sample.target)
    mirror_target(t, float(t["image"]["width"]), keypoint_perm)
    if isinstance(sample.pixels, ImageRef):  # a lazy image stays lazy: mirrored when decoded
        image = sample.pixels.mirrored()
    else:
        image = sample.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if sample.image is not None else None
    return dataclasses.replace(sample, id=sample.id + _MIRROR_ID, file_name=f"{sample.file_name} (mirrored)",
                               target=t, image=image, path=None)  # fmt: skip


def augment(samples: list[Sample], names: list[str], keypoint_names: list[str] | None = None) -> list[Sample]:
    """``samples`` followed by one augmented copy of each, per augmentation named."""
    out = list(samples)
    for name in names:
        if name == "hflip":
            perm = mirror_permutation(keypoint_names or [])
            out += [hflip(s, perm) for s in samples]
        else:  # the config only lets the names above through
            raise ValueError(f"unknown augmentation {name!r}; known here: {', '.join(STATIC)}")
    return out
